//! Incidents and their lifecycle: the state maintd keeps and persists.
//!
//! Everything here is a pure state machine over data passed in (observations, cluster
//! snapshots, job outcomes, the time); the event-registry actor owns one
//! [`MaintenanceState`] and persists it after every change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use super::{
    cluster::ClusterSnapshot,
    diagnose::{Diagnose, RepairAction},
    job::{JobId, JobStatus},
    opcode::Opcode,
};

/// Tag prefix marking an incident whose actions all succeeded.
pub const READY_TAG_PREFIX: &str = "maintd:repairready:";
/// Tag prefix marking an incident whose handling failed.
pub const FAILED_TAG_PREFIX: &str = "maintd:repairfailed:";

/// The part of a job's reason text that names its submission key. It ends with `)` so that
/// no key's marker is a prefix of another's (`r5-1)` vs `r5-10)`).
pub fn submission_marker(key: &str) -> String {
    format!("submission {key})")
}

/// Progress of an incident, as `/1/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepairStatus {
    /// Observed; no action taken yet.
    Noted,
    /// At least one job submitted, none failed.
    Pending,
    /// Ordered to be ignored; forgotten once no longer observed.
    Canceled,
    /// A job failed; no further action except tagging the node.
    Failed,
    /// Every action succeeded, including tagging the node.
    Completed,
}

impl RepairStatus {
    /// maintd may still act on the incident.
    pub fn is_open(self) -> bool {
        matches!(self, RepairStatus::Noted | RepairStatus::Pending)
    }
}

/// One repair event: a node's non-Ok diagnose object, from first sight until forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Identifier, also in every job's reason trail and in the node tag.
    pub uuid: Uuid,
    /// Name of the node that reported it.
    pub node: String,
    /// The diagnose object exactly as reported; identifies the incident.
    pub original: Value,
    /// The requested action.
    pub action: RepairAction,
    /// Repair command for `live-repair`.
    pub command: Option<String>,
    /// Progress.
    pub status: RepairStatus,
    /// Every job submitted for the incident, in order.
    pub jobs: Vec<JobId>,
    /// The tag set on the node when done (success tag until a job fails).
    pub tag: String,
    /// The tag has been set by a successful job.
    pub tagged: bool,
    /// The operator removed the success tag; forget once no longer observed.
    pub acknowledged: bool,
    /// The repair command ran successfully (live-repair).
    pub repair_done: bool,
    /// The last noteworthy thing that happened (why it failed, why it waits).
    pub message: Option<String>,
    /// When first observed (Unix seconds).
    pub ctime: f64,
    /// When last changed (Unix seconds).
    pub mtime: f64,
}

impl Incident {
    fn new(node: &str, diagnose: &Diagnose, now: f64) -> Self {
        let uuid = Uuid::new_v4();
        Incident {
            uuid,
            node: node.to_owned(),
            original: diagnose.original.clone(),
            action: diagnose.action,
            command: diagnose.command.clone(),
            status: RepairStatus::Noted,
            jobs: Vec::new(),
            tag: format!("{READY_TAG_PREFIX}{uuid}"),
            tagged: false,
            acknowledged: false,
            repair_done: false,
            message: None,
            ctime: now,
            mtime: now,
        }
    }

    /// The tag marking failure of this incident.
    pub fn failed_tag(&self) -> String {
        format!("{FAILED_TAG_PREFIX}{}", self.uuid)
    }

    fn fail(&mut self, why: String, now: f64) {
        if self.status.is_open() {
            self.status = RepairStatus::Failed;
            self.tag = self.failed_tag();
            self.tagged = false;
        }
        self.message = Some(why);
        self.mtime = now;
    }
}

/// What a job is for; decides what its outcome does to the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum JobPurpose {
    /// Drain the incident's node.
    Drain,
    /// Move a primary instance away (migrate, failover or move).
    MovePrimary {
        /// The instance.
        instance: String,
    },
    /// Move the secondary of an instance away.
    MoveSecondary {
        /// The instance.
        instance: String,
    },
    /// Run the live-repair command.
    RepairCommand,
    /// Tag the node `maintd:repairready:<uuid>`.
    TagReady,
    /// Tag the node `maintd:repairfailed:<uuid>`.
    TagFailed,
    /// A harep repair of an instance. Its `pending` tag, which names the job, is added by
    /// a follow-up job once the job id is known.
    HarepRepair {
        /// The instance.
        instance: String,
        /// harep's repair type (`fix-storage`, `migrate`, `failover`, `reinstall`).
        repair: String,
        /// The repair episode's uuid.
        uuid: String,
        /// Unix seconds of the decision.
        timestamp: i64,
        /// Tags of the records this repair supersedes, removed with the follow-up.
        replaces: Vec<String>,
    },
    /// harep tag bookkeeping of an instance (pending, result and superseded tags).
    HarepTags {
        /// The instance.
        instance: String,
    },
    /// A balancing move of an instance.
    Balance {
        /// The instance.
        instance: String,
    },
}

/// A job of the current round, from planning until finalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedJob {
    /// Unique submission key, written in the reason trail before submission so that a
    /// restarted daemon finds the job even if it died before recording the id.
    pub key: String,
    /// The incident it serves.
    pub incident: Option<Uuid>,
    /// What it does.
    pub purpose: JobPurpose,
    /// Nodes it touches.
    pub nodes: BTreeSet<String>,
    /// Job id, once submitted.
    pub id: Option<JobId>,
    /// Last known status.
    pub status: Option<JobStatus>,
    /// For a harep repair: its `pending` tag job is part of the round.
    #[serde(default)]
    pub followed_up: bool,
}

impl TrackedJob {
    /// The job still needs watching.
    pub fn is_unfinished(&self) -> bool {
        !self.status.is_some_and(JobStatus::is_finalized)
    }
}

/// A job the planner wants submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// Unique submission key (also in the reason trail).
    pub key: String,
    /// The incident it serves.
    pub incident: Option<Uuid>,
    /// What it does.
    pub purpose: JobPurpose,
    /// Nodes it touches; no two jobs of a round share one.
    pub nodes: BTreeSet<String>,
    /// The opcodes, reason trails included.
    pub ops: Vec<Opcode>,
}

/// The result of planning one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundPlan {
    /// Jobs to submit, all at once.
    pub jobs: Vec<PlannedJob>,
    /// Incidents that fail without a job (e.g. live-repair without command).
    pub failures: Vec<(Uuid, String)>,
    /// Why an incident could not make progress this round.
    pub notes: Vec<(Uuid, String)>,
    /// Problems of the round not tied to an incident (harep, balancing).
    pub warnings: Vec<String>,
}

/// The round in progress (or the last one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Sequence number, starting at 1.
    pub number: u64,
    /// When it was planned (Unix seconds).
    pub started_at: f64,
    /// Its jobs.
    pub jobs: Vec<TrackedJob>,
}

/// What an observation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A new incident was opened.
    NewIncident(Uuid),
    /// Nothing new.
    Nothing,
}

/// Why a cancel request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CancelError {
    /// No such incident.
    #[error("no incident {0}")]
    NotFound(Uuid),
    /// The incident is already finished.
    #[error("incident {0} is already {1:?} and cannot be canceled")]
    Finished(Uuid, RepairStatus),
}

/// Everything maintd persists: incidents, the current round and recently evacuated instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Identifies this state across restarts; prefixes submission keys.
    pub state_id: String,
    /// Incidents not yet forgotten, oldest first.
    pub incidents: Vec<Incident>,
    /// The current or last round.
    pub round: Round,
    /// Instances moved off nodes under repair, until their incident is forgotten.
    pub evacuated: BTreeMap<String, Uuid>,
    /// The last diagnose object per node (absent: Ok or not yet known). Not persisted:
    /// after a restart every incident counts as still observed until the next poll.
    #[serde(skip)]
    pub reports: BTreeMap<String, Option<Value>>,
}

impl MaintenanceState {
    /// A fresh state with a new identity.
    pub fn new() -> Self {
        MaintenanceState {
            state_id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
            ..Default::default()
        }
    }

    /// Look an incident up.
    pub fn incident(&self, uuid: Uuid) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.uuid == uuid)
    }

    fn incident_mut(&mut self, uuid: Uuid) -> Option<&mut Incident> {
        self.incidents.iter_mut().find(|i| i.uuid == uuid)
    }

    /// Record a node's valid diagnose; open an incident for a new non-Ok object.
    pub fn observe(&mut self, node: &str, diagnose: &Diagnose, now: f64) -> Observed {
        let mut outcome = Observed::Nothing;
        if diagnose.action == RepairAction::Ok {
            self.reports.insert(node.to_owned(), None);
        } else {
            self.reports
                .insert(node.to_owned(), Some(diagnose.original.clone()));
            let known = self
                .incidents
                .iter()
                .any(|i| i.node == node && i.original == diagnose.original);
            if !known {
                let incident = Incident::new(node, diagnose, now);
                outcome = Observed::NewIncident(incident.uuid);
                self.incidents.push(incident);
            }
        }
        self.forget_unobserved();
        outcome
    }

    /// The node still reports the incident (unknown after a restart counts as yes).
    fn still_observed(&self, incident: &Incident) -> bool {
        match self.reports.get(&incident.node) {
            None => true,
            Some(current) => current.as_ref() == Some(&incident.original),
        }
    }

    /// Forget canceled and acknowledged incidents that are no longer observed.
    fn forget_unobserved(&mut self) -> Vec<Uuid> {
        let gone: Vec<Uuid> = self
            .incidents
            .iter()
            .filter(|i| {
                let done = i.status == RepairStatus::Canceled
                    || (i.status == RepairStatus::Completed && i.acknowledged);
                done && !self.still_observed(i)
            })
            .map(|i| i.uuid)
            .collect();
        self.forget(&gone);
        gone
    }

    fn forget(&mut self, uuids: &[Uuid]) {
        if uuids.is_empty() {
            return;
        }
        self.incidents.retain(|i| !uuids.contains(&i.uuid));
        self.evacuated.retain(|_, owner| !uuids.contains(owner));
    }

    /// Apply what the cluster shows: forget incidents of departed nodes, and act on removed
    /// tags (failed: forget at once; completed: forget once no longer observed).
    /// Returns the forgotten incidents.
    pub fn reconcile(&mut self, cluster: &ClusterSnapshot) -> Vec<Uuid> {
        let mut gone = Vec::new();
        for incident in &mut self.incidents {
            let Some(node) = cluster.node(&incident.node) else {
                gone.push(incident.uuid);
                continue;
            };
            if !incident.tagged || node.tags.contains(&incident.tag) {
                continue;
            }
            match incident.status {
                RepairStatus::Failed => gone.push(incident.uuid),
                RepairStatus::Completed => incident.acknowledged = true,
                _ => {}
            }
        }
        self.forget(&gone);
        self.reports.retain(|node, _| cluster.node(node).is_some());
        gone.extend(self.forget_unobserved());
        gone
    }

    /// Cancel an incident: no further action; forgotten once no longer observed.
    pub fn cancel(&mut self, uuid: Uuid, now: f64) -> Result<(), CancelError> {
        let incident = self.incident_mut(uuid).ok_or(CancelError::NotFound(uuid))?;
        match incident.status {
            RepairStatus::Noted | RepairStatus::Pending => {
                incident.status = RepairStatus::Canceled;
                incident.message = Some("canceled by request".into());
                incident.mtime = now;
            }
            RepairStatus::Canceled => {}
            finished => return Err(CancelError::Finished(uuid, finished)),
        }
        self.forget_unobserved();
        Ok(())
    }

    /// Mark incidents failed without a job (the planner found no way forward).
    pub fn fail_incident(&mut self, uuid: Uuid, why: String, now: f64) {
        if let Some(incident) = self.incident_mut(uuid) {
            incident.fail(why, now);
        }
    }

    /// Remember why an incident waits.
    pub fn note(&mut self, uuid: Uuid, message: String, now: f64) {
        if let Some(incident) = self.incident_mut(uuid) {
            if incident.message.as_ref() != Some(&message) {
                incident.message = Some(message);
                incident.mtime = now;
            }
        }
    }

    /// Start a new round with the planned jobs (not yet submitted).
    pub fn start_round(&mut self, jobs: &[PlannedJob], now: f64) {
        self.round = Round {
            number: self.round.number + 1,
            started_at: now,
            jobs: jobs
                .iter()
                .map(|j| TrackedJob {
                    key: j.key.clone(),
                    incident: j.incident,
                    purpose: j.purpose.clone(),
                    nodes: j.nodes.clone(),
                    id: None,
                    status: None,
                    followed_up: false,
                })
                .collect(),
        };
    }

    /// Submitted harep repairs of this round whose `pending` tag job is not planned yet:
    /// key, purpose and job id.
    pub fn repairs_awaiting_tags(&self) -> Vec<(String, JobPurpose, JobId)> {
        self.round
            .jobs
            .iter()
            .filter(|j| matches!(j.purpose, JobPurpose::HarepRepair { .. }) && !j.followed_up)
            .filter_map(|j| Some((j.key.clone(), j.purpose.clone(), j.id?)))
            .collect()
    }

    /// Add follow-up `jobs` to the current round, and mark the jobs with keys `origins`
    /// as followed up.
    pub fn extend_round(&mut self, origins: &[String], jobs: &[PlannedJob]) {
        for job in self.round.jobs.iter_mut() {
            if origins.contains(&job.key) {
                job.followed_up = true;
            }
        }
        self.round.jobs.extend(jobs.iter().map(|j| TrackedJob {
            key: j.key.clone(),
            incident: j.incident,
            purpose: j.purpose.clone(),
            nodes: j.nodes.clone(),
            id: None,
            status: None,
            followed_up: false,
        }));
    }

    /// Record the outcome of submitting the job with `key`.
    pub fn record_submission(&mut self, key: &str, result: Result<JobId, String>, now: f64) {
        let Some(job) = self.round.jobs.iter_mut().find(|j| j.key == key) else {
            return;
        };
        let incident = job.incident;
        match result {
            Ok(id) => {
                job.id = Some(id);
                if let Some(incident) = incident.and_then(|u| self.incident_mut(u)) {
                    incident.jobs.push(id);
                    if incident.status == RepairStatus::Noted {
                        incident.status = RepairStatus::Pending;
                    }
                    incident.mtime = now;
                }
            }
            Err(why) => {
                // Refused at submission: no job exists, so nothing waits for it.
                job.status = Some(JobStatus::Error);
                let purpose = job.purpose.clone();
                if let Some(uuid) = incident {
                    self.job_failed(uuid, &purpose, format!("job refused: {why}"), now);
                }
            }
        }
    }

    /// Drop a planned job that was never submitted (found missing after a restart).
    pub fn drop_unsubmitted(&mut self, key: &str) {
        self.round.jobs.retain(|j| j.key != key || j.id.is_some());
    }

    /// Record a job's status; `None` means the queue no longer knows the job.
    /// Returns whether anything changed.
    pub fn record_job_status(&mut self, id: JobId, status: Option<JobStatus>, now: f64) -> bool {
        self.record_job_outcome(id, status, None, now)
    }

    /// Like [`MaintenanceState::record_job_status`], with the backend's account of why a
    /// failed job failed (a node agent's message), which becomes part of the incident's.
    pub fn record_job_outcome(
        &mut self,
        id: JobId,
        status: Option<JobStatus>,
        detail: Option<&str>,
        now: f64,
    ) -> bool {
        let Some(job) = self.round.jobs.iter_mut().find(|j| j.id == Some(id)) else {
            return false;
        };
        if job.status.is_some_and(JobStatus::is_finalized) {
            return false;
        }
        let status_seen = status.unwrap_or(JobStatus::Error);
        let changed = job.status != Some(status_seen);
        job.status = Some(status_seen);
        if !status_seen.is_finalized() {
            return changed;
        }
        let (incident, purpose) = (job.incident, job.purpose.clone());
        let Some(uuid) = incident else { return true };
        match status {
            Some(JobStatus::Success) => self.job_succeeded(uuid, &purpose, now),
            Some(other) => {
                let why = match detail {
                    Some(detail) => format!("job {id} ended {other}: {detail}"),
                    None => format!("job {id} ended {other}"),
                };
                self.job_failed(uuid, &purpose, why, now)
            }
            None => self.job_failed(
                uuid,
                &purpose,
                format!("job {id} is unknown to the queue"),
                now,
            ),
        }
        true
    }

    fn job_succeeded(&mut self, uuid: Uuid, purpose: &JobPurpose, now: f64) {
        if let JobPurpose::MovePrimary { instance } = purpose {
            self.evacuated.insert(instance.clone(), uuid);
        }
        let Some(incident) = self.incident_mut(uuid) else {
            return;
        };
        incident.mtime = now;
        match purpose {
            JobPurpose::TagReady if incident.status.is_open() => {
                incident.status = RepairStatus::Completed;
                incident.tagged = true;
                incident.message = None;
            }
            JobPurpose::TagFailed if incident.status == RepairStatus::Failed => {
                incident.tagged = true;
            }
            JobPurpose::RepairCommand => incident.repair_done = true,
            _ => {}
        }
    }

    fn job_failed(&mut self, uuid: Uuid, purpose: &JobPurpose, why: String, now: f64) {
        let Some(incident) = self.incident_mut(uuid) else {
            return;
        };
        match purpose {
            // Tagging failure is retried next round; the incident is already failed.
            JobPurpose::TagFailed => {
                incident.message = Some(format!("{why}; tagging will be retried"));
                incident.mtime = now;
            }
            _ => incident.fail(why, now),
        }
    }

    /// Ids of submitted jobs that are not finalized: what the next round waits for.
    pub fn unfinished_jobs(&self) -> Vec<JobId> {
        self.round
            .jobs
            .iter()
            .filter(|j| j.is_unfinished())
            .filter_map(|j| j.id)
            .collect()
    }

    /// Planned jobs whose submission was never confirmed.
    pub fn unconfirmed_submissions(&self) -> Vec<String> {
        self.round
            .jobs
            .iter()
            .filter(|j| j.id.is_none() && j.status.is_none())
            .map(|j| j.key.clone())
            .collect()
    }

    /// Every job of the current round is finalized (or refused).
    pub fn round_finished(&self) -> bool {
        self.round.jobs.iter().all(|j| !j.is_unfinished())
            && self.repairs_awaiting_tags().is_empty()
    }
}

#[cfg(test)]
mod tests;
