//! Live repairs through each node's maintd agent, for Ganeti 3.x, which has no
//! `OP_REPAIR_COMMAND`. [`AgentRepairs`] wraps the cluster backend: a job that is exactly
//! one `OP_REPAIR_COMMAND` goes to the node's agent as a signed repair request
//! (`POST /1/repair`, see [`crate::agent`]) instead of the job queue, and the agent's
//! execution is then tracked like a job under an id of its own, far above any id Ganeti
//! hands out. Everything else passes through unchanged.
//!
//! The execution is identified by the incident's uuid, so a request sent again (after a
//! restart of maintd) finds the execution already there and runs nothing twice. The ids
//! given to executions, with their node and incident, are kept in a file of the state
//! directory, so a restarted maintd goes on tracking them.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    path::{Path, PathBuf},
    rc::Rc,
    time::Duration,
};

use awc::{http::StatusCode, Client};
use futures_util::{
    future::{join_all, ready, FutureExt, LocalBoxFuture},
    StreamExt,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::{BackendError, CancelOutcome, ClusterBackend, Submission};
use crate::{
    agent::repair::{Execution, ExecutionState, RepairRequest},
    clock::Clock,
    model::{
        cluster::ClusterSnapshot,
        job::{JobId, JobStatus},
        job_failure::JobFailure,
        opcode::{OpBody, Opcode},
    },
    signing::{self, HmacKey, SignedMessage},
};

/// The first id given to agent executions. Ganeti's job ids count up from 1; this is
/// beyond anything a cluster reaches.
pub const AGENT_JOB_ID_BASE: u64 = 1 << 52;

/// Why an agent execution cannot be canceled.
pub const AGENT_NOT_CANCELABLE: &str = "agent repair executions cannot be canceled";

/// The file in the state directory mapping execution ids to nodes and incidents.
pub const STATE_FILE: &str = "agent-repairs.json";

/// Executions remembered; the oldest beyond this are forgotten (long finished).
const KEEP: usize = 1000;

/// Largest agent answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// One repair sent to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentJob {
    /// The node whose agent runs it.
    pub node: String,
    /// The incident (the execution's identity on the agent).
    pub incident: Uuid,
    /// The reason text of the opcode, for finding the job by its submission marker.
    pub reason: String,
}

/// The ids given to agent executions, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentJobs {
    /// The next id to give.
    pub next: u64,
    /// Every remembered execution by id.
    pub jobs: BTreeMap<JobId, AgentJob>,
}

impl AgentJobs {
    /// The id of `job`: the existing one for its incident, else a new one.
    pub fn add(&mut self, job: AgentJob) -> JobId {
        if let Some((id, _)) = self.jobs.iter().find(|(_, j)| j.incident == job.incident) {
            return *id;
        }
        let id = JobId(AGENT_JOB_ID_BASE + self.next);
        self.next += 1;
        self.jobs.insert(id, job);
        while self.jobs.len() > KEEP {
            self.jobs.pop_first();
        }
        id
    }

    /// Read the file at `path`; empty if there is none.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a valid record: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write the file at `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// The repair a job asks for, if it is exactly one `OP_REPAIR_COMMAND`:
/// (node, command, input, reason text).
pub fn repair_of(job: &[Opcode]) -> Option<(String, String, String, String)> {
    let [op] = job else { return None };
    let OpBody::RepairCommand {
        node_name,
        command,
        input,
    } = &op.body
    else {
        return None;
    };
    let reason = op
        .reason
        .iter()
        .map(|entry| entry.1.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Some((
        node_name.clone(),
        command.clone(),
        input.clone().unwrap_or_default(),
        reason,
    ))
}

/// The incident named in a reason text written by the planner (`... (incident <uuid>, ...`).
pub fn incident_in_reason(reason: &str) -> Option<Uuid> {
    let (_, rest) = reason.split_once("incident ")?;
    Uuid::parse_str(rest.get(..36)?).ok()
}

/// The job status an execution stands for.
pub fn job_status(state: ExecutionState) -> JobStatus {
    match state {
        ExecutionState::Queued => JobStatus::Queued,
        ExecutionState::Running => JobStatus::Running,
        ExecutionState::Succeeded => JobStatus::Success,
        ExecutionState::Failed => JobStatus::Error,
    }
}

/// The execution in a signed agent answer: signed with `key` and salted with `salt`.
pub fn open_answer(key: &HmacKey, body: &[u8], salt: &str) -> Result<Execution, String> {
    let signed: SignedMessage =
        serde_json::from_slice(body).map_err(|e| format!("not a signed answer: {e}"))?;
    signing::verify(key, &signed).map_err(|e| e.to_string())?;
    if signed.salt != salt {
        return Err(format!(
            "answer signed for another request (salt {:?})",
            signed.salt
        ));
    }
    serde_json::from_str(&signed.msg).map_err(|e| format!("not an execution: {e}"))
}

/// Longest part of a failed command's output quoted in the incident's message.
const OUTPUT_EXCERPT_CHARS: usize = 200;

/// The incident's account of a failed execution: which command, why, and the end of its
/// output (where the reason usually is).
pub fn failure_text(node: &str, execution: &Execution) -> String {
    let mut text = format!("repair command {} on {node} failed", execution.command);
    if let Some(message) = &execution.message {
        text.push_str(&format!(": {message}"));
    }
    let output = execution.output.trim();
    if !output.is_empty() {
        let chars = output.chars().count();
        let tail: String = output
            .chars()
            .skip(chars.saturating_sub(OUTPUT_EXCERPT_CHARS))
            .collect();
        let cut = if chars > OUTPUT_EXCERPT_CHARS {
            "..."
        } else {
            ""
        };
        text.push_str(&format!(" (output: {cut}{tail})"));
    }
    text
}

/// Settings of [`AgentRepairs`].
#[derive(Debug, Clone)]
pub struct AgentRepairSettings {
    /// The agent's base URL with `{node}`, e.g. `http://{node}:1817`.
    pub url_template: String,
    /// The cluster's HMAC key; without it no repair request can be sent.
    pub key: Option<HmacKey>,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Where the id record is kept.
    pub state_file: PathBuf,
}

struct Shared {
    settings: AgentRepairSettings,
    /// Dates the repair requests: the agent refuses one whose time is far from its own.
    clock: Clock,
    client: Client,
    jobs: RefCell<AgentJobs>,
    /// Why failed executions failed, by id, for the incident's message.
    failures: RefCell<BTreeMap<JobId, String>>,
}

impl Shared {
    fn url(&self, node: &str, path: &str) -> String {
        format!(
            "{}{path}",
            self.settings
                .url_template
                .replace("{node}", node)
                .trim_end_matches('/')
        )
    }

    async fn exchange(
        &self,
        request: awc::ClientRequest,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let url = request.get_uri().to_string();
        let send = async {
            let mut response = match body {
                Some(body) => request.send_body(body).await,
                None => request.send().await,
            }
            .map_err(|e| format!("{url}: {e}"))?;
            let mut bytes = Vec::new();
            while let Some(chunk) = response.next().await {
                let chunk = chunk.map_err(|e| format!("{url}: reading the answer: {e}"))?;
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!("{url}: answer over {MAX_ANSWER_BYTES} bytes"));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((response.status(), bytes))
        };
        tokio::time::timeout(self.settings.timeout, send)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{url}: no answer within {:?}",
                    self.settings.timeout
                ))
            })
    }

    /// Ask `node`'s agent to run `command`; the execution's id.
    async fn submit(
        &self,
        node: String,
        command: String,
        input: String,
        reason: String,
    ) -> Submission {
        let key = self.settings.key.as_ref().ok_or_else(|| {
            "live repair through the node agent needs the cluster's HMAC key (cluster.hmac_key)"
                .to_owned()
        })?;
        let incident = incident_in_reason(&reason)
            .ok_or_else(|| format!("repair job without an incident in its reason: {reason:?}"))?;
        let request = RepairRequest {
            node: node.clone(),
            incident: incident.to_string(),
            command: command.clone(),
            input,
        };
        let msg = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        let salt = signing::unix_salt(self.clock.now().max(0.0) as u64);
        let body =
            serde_json::to_vec(&signing::sign(key, &salt, &msg)).map_err(|e| e.to_string())?;
        let url = self.url(&node, "/1/repair");
        let post = self
            .client
            .post(&url)
            .insert_header(("Content-Type", "application/json"));
        let (status, answer) = self.exchange(post, Some(body)).await?;
        if !status.is_success() {
            return Err(format!(
                "the agent on {node} refused the repair ({status}): {}",
                String::from_utf8_lossy(&answer).trim()
            ));
        }
        let execution = open_answer(key, &answer, &salt)
            .map_err(|e| format!("the agent on {node} answered wrongly: {e}"))?;
        if execution.incident != incident {
            return Err(format!(
                "the agent on {node} answered about incident {} instead of {incident}",
                execution.incident
            ));
        }
        let id = self.jobs.borrow_mut().add(AgentJob {
            node: node.clone(),
            incident,
            reason,
        });
        if let Err(e) = self.jobs.borrow().save(&self.settings.state_file) {
            warn!(target: "maintd::repair", error = %e, "cannot record the agent repair ids");
        }
        info!(target: "maintd::repair", %node, %command, %incident, job = %id, state = ?execution.state, "repair handed to the node agent");
        Ok(id)
    }

    /// The status of agent execution `job`; `None` if the agent does not know it.
    async fn status(&self, id: JobId, job: AgentJob) -> Option<JobStatus> {
        let Some(key) = &self.settings.key else {
            return None;
        };
        let salt = Uuid::new_v4().simple().to_string();
        let url = self.url(
            &job.node,
            &format!("/1/repair/{}?salt={salt}", job.incident),
        );
        let answer = self.exchange(self.client.get(&url), None).await;
        let execution = match answer {
            Ok((StatusCode::NOT_FOUND, _)) => {
                warn!(target: "maintd::repair", node = %job.node, incident = %job.incident, "the node agent does not know this repair");
                return None;
            }
            Ok((status, body)) if status.is_success() => open_answer(key, &body, &salt),
            Ok((status, body)) => Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
            Err(e) => Err(e),
        };
        match execution {
            Ok(execution) => {
                if execution.state == ExecutionState::Failed {
                    warn!(target: "maintd::repair", node = %job.node, incident = %job.incident, job = %id, exit_code = ?execution.exit_code, message = ?execution.message, output = %execution.output, "repair command failed");
                    let mut failures = self.failures.borrow_mut();
                    failures.insert(id, failure_text(&job.node, &execution));
                    while failures.len() > KEEP {
                        failures.pop_first();
                    }
                }
                Some(job_status(execution.state))
            }
            Err(e) => {
                // Unknown for now: asked again at the next poll.
                warn!(target: "maintd::repair", node = %job.node, job = %id, error = %e, "cannot learn the repair's state from the node agent");
                Some(JobStatus::Running)
            }
        }
    }
}

/// The cluster backend with live repairs through node agents.
pub struct AgentRepairs {
    inner: Rc<dyn ClusterBackend>,
    shared: Rc<Shared>,
}

impl AgentRepairs {
    /// Wrap `inner`, dating requests by `clock`; reads the id record. Must be called
    /// inside the actix runtime.
    pub fn new(
        inner: Rc<dyn ClusterBackend>,
        settings: AgentRepairSettings,
        clock: Clock,
    ) -> Result<Self, String> {
        let jobs = AgentJobs::load(&settings.state_file)?;
        let client = Client::builder().timeout(settings.timeout).finish();
        Ok(AgentRepairs {
            inner,
            shared: Rc::new(Shared {
                settings,
                clock,
                client,
                jobs: RefCell::new(jobs),
                failures: RefCell::new(BTreeMap::new()),
            }),
        })
    }
}

impl ClusterBackend for AgentRepairs {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
        self.inner.snapshot()
    }

    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
        self.inner.master_node()
    }

    fn online_nodes(&self) -> LocalBoxFuture<'static, Result<Vec<String>, BackendError>> {
        self.inner.online_nodes()
    }

    fn submit_jobs(
        &self,
        jobs: Vec<Vec<Opcode>>,
    ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>> {
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        async move {
            let count = jobs.len();
            let mut repairs = Vec::new();
            let mut queue_jobs = Vec::new();
            let mut queue_slots = Vec::new();
            for (slot, job) in jobs.into_iter().enumerate() {
                match repair_of(&job) {
                    Some(repair) => repairs.push((slot, repair)),
                    None => {
                        queue_slots.push(slot);
                        queue_jobs.push(job);
                    }
                }
            }
            let mut results: Vec<Option<Submission>> = vec![None; count];
            if !queue_jobs.is_empty() {
                let submitted = inner.submit_jobs(queue_jobs).await?;
                for (slot, result) in queue_slots.into_iter().zip(submitted) {
                    results[slot] = Some(result);
                }
            }
            // One agent slow to answer must not hold up the requests to the others.
            let (slots, requests): (Vec<usize>, Vec<_>) = repairs
                .into_iter()
                .map(|(slot, (node, command, input, reason))| {
                    (slot, shared.submit(node, command, input, reason))
                })
                .unzip();
            for (slot, result) in slots.into_iter().zip(join_all(requests).await) {
                results[slot] = Some(result);
            }
            Ok(results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err("no answer for this job".into())))
                .collect())
        }
        .boxed_local()
    }

    fn job_statuses(
        &self,
        ids: Vec<JobId>,
    ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>> {
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        async move {
            let known: Vec<Option<AgentJob>> = {
                let jobs = shared.jobs.borrow();
                ids.iter().map(|id| jobs.jobs.get(id).cloned()).collect()
            };
            let queue_ids: Vec<JobId> = ids
                .iter()
                .zip(&known)
                .filter(|(_, job)| job.is_none())
                .map(|(id, _)| *id)
                .collect();
            let mut queue_statuses = if queue_ids.is_empty() {
                Vec::new()
            } else {
                inner.job_statuses(queue_ids).await?
            }
            .into_iter();
            let agent_statuses = join_all(
                ids.iter()
                    .zip(&known)
                    .filter_map(|(id, job)| job.clone().map(|job| shared.status(*id, job))),
            )
            .await;
            let mut agent_statuses = agent_statuses.into_iter();
            Ok(known
                .iter()
                .map(|job| match job {
                    Some(_) => agent_statuses.next().flatten(),
                    None => queue_statuses.next().flatten(),
                })
                .collect())
        }
        .boxed_local()
    }

    fn job_failure(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<Option<JobFailure>, BackendError>> {
        let told = self.shared.failures.borrow().get(&id).cloned();
        match told {
            // The agent's account: which command, why, and the end of its output.
            Some(text) => Box::pin(async move { Ok(Some(JobFailure::told(text))) }),
            None => self.inner.job_failure(id),
        }
    }

    fn find_jobs_by_reason(
        &self,
        marker: String,
    ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>> {
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        async move {
            let mut found = inner.find_jobs_by_reason(marker.clone()).await?;
            found.extend(
                shared
                    .jobs
                    .borrow()
                    .jobs
                    .iter()
                    .filter(|(_, job)| job.reason.contains(&marker))
                    .map(|(id, _)| *id),
            );
            Ok(found)
        }
        .boxed_local()
    }

    fn cancel_job(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<CancelOutcome, BackendError>> {
        // An agent runs its command as soon as it accepts it; there is no queue to leave.
        if id.0 >= AGENT_JOB_ID_BASE {
            return ready(Ok(CancelOutcome::NotCancelable(
                AGENT_NOT_CANCELABLE.to_owned(),
            )))
            .boxed_local();
        }
        self.inner.cancel_job(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(incident: Uuid) -> AgentJob {
        AgentJob {
            node: "node1".into(),
            incident,
            reason: format!("repair (incident {incident}, submission r1-0)"),
        }
    }

    #[actix_rt::test]
    async fn agent_executions_are_not_canceled_and_queue_jobs_are_passed_on() {
        use crate::{
            backend::sim::SimBackend,
            clock::Clock,
            sim::{lock_sim, SimCluster, SimSpec},
        };
        let spec = SimSpec {
            nodes: 3,
            instances: 3,
            seed: 5,
            job_seconds: 10.0,
            ..SimSpec::default()
        };
        let sim = std::sync::Arc::new(std::sync::Mutex::new(SimCluster::generate(&spec, 100.0)));
        let clock = Clock::starting_at(100.0);
        let dir = tempfile::tempdir().unwrap();
        let backend = AgentRepairs::new(
            Rc::new(SimBackend::new(sim.clone(), clock)),
            AgentRepairSettings {
                url_template: "http://{node}:1".into(),
                key: None,
                timeout: Duration::from_secs(1),
                state_file: dir.path().join(STATE_FILE),
            },
            clock,
        )
        .unwrap();
        let tag = |t: &str| OpBody::tag_node("node2", t).with_reason("t".into(), 1);
        let running = lock_sim(&sim).submit_job(vec![tag("a")], 100.0).unwrap();
        let waiting = lock_sim(&sim).submit_job(vec![tag("b")], 100.0).unwrap();
        // An id in the agents' range: answered here, the queue is not asked.
        for id in [AGENT_JOB_ID_BASE, AGENT_JOB_ID_BASE + 7] {
            assert_eq!(
                backend.cancel_job(JobId(id)).await,
                Ok(CancelOutcome::NotCancelable(AGENT_NOT_CANCELABLE.into()))
            );
        }
        assert_eq!(
            backend.cancel_job(waiting).await,
            Ok(CancelOutcome::Canceled)
        );
        assert!(matches!(
            backend.cancel_job(running).await,
            Ok(CancelOutcome::NotCancelable(why)) if why.contains("no longer waiting")
        ));
        assert_eq!(
            lock_sim(&sim).job_status(waiting, 100.0),
            Some(JobStatus::Canceled)
        );
    }

    #[test]
    fn ids_are_per_incident_above_ganetis_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut jobs = AgentJobs::load(&path).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = jobs.add(job(a));
        assert_eq!(first, JobId(AGENT_JOB_ID_BASE));
        assert_eq!(jobs.add(job(a)), first, "one execution per incident");
        let second = jobs.add(job(b));
        assert_eq!(second, JobId(AGENT_JOB_ID_BASE + 1));
        jobs.save(&path).unwrap();
        let mut again = AgentJobs::load(&path).unwrap();
        assert_eq!(again, jobs);
        assert_eq!(again.add(job(Uuid::new_v4())), JobId(AGENT_JOB_ID_BASE + 2));
        std::fs::write(&path, "{").unwrap();
        assert!(AgentJobs::load(&path)
            .unwrap_err()
            .contains("not a valid record"));
    }

    #[test]
    fn only_single_repair_opcodes_go_to_agents() {
        let incident = Uuid::new_v4();
        let repair =
            OpBody::repair_command("node1", "fix-disk", "{\"status\":\"live-repair\"}".into())
                .with_reason(
                    format!("repair requested by node (incident {incident}, submission r1-0)"),
                    1,
                );
        let (node, command, input, reason) = repair_of(std::slice::from_ref(&repair)).unwrap();
        assert_eq!((node.as_str(), command.as_str()), ("node1", "fix-disk"));
        assert_eq!(input, "{\"status\":\"live-repair\"}");
        assert_eq!(incident_in_reason(&reason), Some(incident));
        let tag = OpBody::tag_node("node1", "x").with_reason("t".into(), 1);
        assert!(repair_of(std::slice::from_ref(&tag)).is_none());
        assert!(repair_of(&[repair, tag]).is_none());
        assert_eq!(incident_in_reason("incident 1234"), None);
    }

    #[test]
    fn answers_must_be_signed_for_this_request() {
        let key = HmacKey::from_bytes(b"k\n".to_vec()).unwrap();
        let execution = serde_json::json!({
            "incident": Uuid::nil(), "node": "node1", "command": "fix", "state": "succeeded",
            "exit_code": 0, "output": "", "message": null, "submitted": 1.0,
            "started": 1.0, "finished": 2.0
        })
        .to_string();
        let body = serde_json::to_vec(&signing::sign(&key, "s1", &execution)).unwrap();
        assert_eq!(
            open_answer(&key, &body, "s1").unwrap().state,
            ExecutionState::Succeeded
        );
        assert!(open_answer(&key, &body, "s2")
            .unwrap_err()
            .contains("another request"));
        let other = HmacKey::from_bytes(b"other\n".to_vec()).unwrap();
        assert!(open_answer(&other, &body, "s1").is_err());
        assert!(open_answer(&key, execution.as_bytes(), "s1").is_err());
        assert_eq!(job_status(ExecutionState::Failed), JobStatus::Error);
        assert_eq!(job_status(ExecutionState::Succeeded), JobStatus::Success);
    }

    #[test]
    fn a_failure_is_told_with_its_message_and_the_end_of_its_output() {
        let execution: Execution = serde_json::from_value(serde_json::json!({
            "incident": Uuid::nil(), "node": "node1", "command": "fix-raid", "state": "failed",
            "exit_code": 2, "output": format!("{}controller not responding\n", "x".repeat(500)),
            "message": "command exited with code 2", "submitted": 1.0,
            "started": 1.0, "finished": 2.0
        }))
        .unwrap();
        let text = failure_text("node1", &execution);
        assert!(text.starts_with(
            "repair command fix-raid on node1 failed: command exited with code 2 (output: ..."
        ));
        assert!(text.ends_with("controller not responding)"), "{text}");
        assert!(text.len() < 320, "{text}");
    }
}
