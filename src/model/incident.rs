//! Incidents and their lifecycle: the state maintd keeps and persists.
//!
//! Everything here is a pure state machine over data passed in (observations, cluster
//! snapshots, job outcomes, the time); the event-registry actor owns one
//! [`MaintenanceState`] and persists it after every change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use super::{
    cluster::ClusterSnapshot,
    diagnose::{Diagnose, RepairAction},
    job::{JobId, JobStatus},
    opcode::{OpBody, Opcode},
    safety::SafetyState,
};

/// History entries kept per incident: the first one and the latest ones.
const HISTORY_PER_INCIDENT: usize = 200;

/// Who acts when maintd itself does something, in history entries.
pub const BY_MAINTD: &str = "maintd";

/// One thing that happened to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (Unix seconds).
    pub time: f64,
    /// What: `noted`, `confirmed`, `waiting`, `pending`, `job-submitted`,
    /// `job-finalized`, `canceled`, `paused`, `flapping`, `stuck`, `escalated`, `failed`,
    /// `completed`, `dropped`, `forgotten`.
    pub event: String,
    /// Who: `maintd`, the reporting node, or the API client that asked.
    pub by: String,
    /// Details (why it waits, which job, its status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// What the state machine is told by the settings; not persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct StatePolicy {
    /// Consecutive polls that must show a report before maintd acts on it (at least 1).
    pub confirm_polls: u32,
    /// New incidents per node and hour that are acted upon; `None`: no limit.
    pub flap_budget: Option<usize>,
    /// A failed live migration of an `evacuate` incident is retried as a failover.
    pub escalate_to_failover: bool,
    /// Forgotten incidents kept for `/1/history`.
    pub forgotten_kept: usize,
}

impl Default for StatePolicy {
    fn default() -> Self {
        StatePolicy {
            confirm_polls: 1,
            flap_budget: None,
            escalate_to_failover: false,
            forgotten_kept: 200,
        }
    }
}

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

    /// The status as the API and the design name it.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairStatus::Noted => "noted",
            RepairStatus::Pending => "pending",
            RepairStatus::Canceled => "canceled",
            RepairStatus::Failed => "failed",
            RepairStatus::Completed => "completed",
        }
    }
}

impl std::fmt::Display for RepairStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// Consecutive polls that showed this report, until it is confirmed.
    #[serde(default = "one")]
    pub seen_polls: u32,
    /// Seen in enough consecutive polls (`safety.confirm_polls`): maintd may act on it.
    #[serde(default = "yes")]
    pub confirmed: bool,
    /// Held back: more new incidents on its node within an hour than the flap budget
    /// allows; an operator's resume releases it.
    #[serde(default)]
    pub flapping: bool,
    /// Open when an operator resumed: no longer counts as new for the circuit breaker.
    #[serde(default)]
    pub breaker_acknowledged: bool,
    /// A job of the incident has been running longer than `rounds.job_timeout`; no
    /// further job until it ends.
    #[serde(default)]
    pub stuck_job: Option<JobId>,
    /// Instances whose live migration failed and that are failed over instead
    /// (`rounds.escalate_to_failover`).
    #[serde(default)]
    pub failover_instances: BTreeSet<String>,
    /// What happened to the incident, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

impl Incident {
    /// Record an event in the incident's history (bounded: the first entry and the
    /// latest ones are kept).
    pub fn record(&mut self, now: f64, event: &str, by: &str, detail: Option<String>) {
        if self.history.len() >= HISTORY_PER_INCIDENT {
            self.history.remove(1);
        }
        self.history.push(HistoryEntry {
            time: now,
            event: event.to_owned(),
            by: by.to_owned(),
            detail,
        });
    }

    /// The incident has had a job submitted (its node is in repair while it is open).
    pub fn started(&self) -> bool {
        !self.jobs.is_empty()
    }

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
            seen_polls: 1,
            confirmed: false,
            flapping: false,
            breaker_acknowledged: false,
            stuck_job: None,
            failover_instances: BTreeSet::new(),
            history: Vec::new(),
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
            self.record(now, "failed", BY_MAINTD, Some(why.clone()));
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

impl JobPurpose {
    /// A few words saying what the job does.
    pub fn describe(&self) -> String {
        match self {
            JobPurpose::Drain => "drain the node".into(),
            JobPurpose::MovePrimary { instance } => format!("move {instance} away"),
            JobPurpose::MoveSecondary { instance } => {
                format!("move the secondary of {instance} away")
            }
            JobPurpose::RepairCommand => "run the repair command".into(),
            JobPurpose::TagReady => "tag the node ready".into(),
            JobPurpose::TagFailed => "tag the node failed".into(),
            JobPurpose::HarepRepair {
                instance, repair, ..
            } => format!("harep {repair} of {instance}"),
            JobPurpose::HarepTags { instance } => format!("harep tags of {instance}"),
            JobPurpose::Balance { instance } => format!("balancing move of {instance}"),
        }
    }
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
    /// When the queue accepted it (Unix seconds).
    #[serde(default)]
    pub submitted_at: Option<f64>,
    /// It contains a live migration (escalated to a failover if it fails, when allowed).
    #[serde(default)]
    pub live_migration: bool,
    /// Running longer than `rounds.job_timeout`: later rounds go on without it.
    #[serde(default)]
    pub stuck: bool,
    /// Waited longer than `rounds.job_timeout` and was canceled by maintd: not a failure
    /// of its incident, whose next step is planned again.
    #[serde(default)]
    pub timed_out: bool,
}

impl TrackedJob {
    /// A planned job, not yet submitted.
    pub fn planned(job: &PlannedJob) -> Self {
        TrackedJob {
            key: job.key.clone(),
            incident: job.incident,
            purpose: job.purpose.clone(),
            nodes: job.nodes.clone(),
            id: None,
            status: None,
            followed_up: false,
            submitted_at: None,
            live_migration: job
                .ops
                .iter()
                .any(|op| matches!(op.body, OpBody::InstanceMigrate { .. })),
            stuck: false,
            timed_out: false,
        }
    }

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
    /// An unconfirmed incident was seen again, not yet often enough.
    Seen(Uuid),
    /// An incident was seen often enough to be acted upon.
    Confirmed(Uuid),
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
    /// Grows with every save ([`crate::model::replication::next_serial`]): the newest of
    /// the copies kept by the master candidates is the one with the highest serial.
    #[serde(default)]
    pub serial: u64,
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
    /// Pause and circuit breaker.
    #[serde(default)]
    pub safety: SafetyState,
    /// Forgotten incidents, latest last, bounded by [`StatePolicy::forgotten_kept`].
    #[serde(default)]
    pub forgotten: VecDeque<Incident>,
    /// Per node, when incidents were confirmed and acted upon (the flap budget's window).
    #[serde(default)]
    pub acted_upon: BTreeMap<String, Vec<f64>>,
    /// The settings' part of the rules; not persisted.
    #[serde(skip)]
    pub policy: StatePolicy,
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
    ///
    /// An incident is confirmed (actionable) once its report has been seen in
    /// [`StatePolicy::confirm_polls`] consecutive polls; an unconfirmed incident whose
    /// report is replaced by another (or by `Ok`) is dropped, so a report that changes
    /// at every poll never leads to any action.
    pub fn observe(&mut self, node: &str, diagnose: &Diagnose, now: f64) -> Observed {
        let mut outcome = Observed::Nothing;
        let current = (diagnose.action != RepairAction::Ok).then(|| diagnose.original.clone());
        let dropped: Vec<Uuid> = self
            .incidents
            .iter()
            .filter(|i| i.node == node && !i.confirmed && Some(&i.original) != current.as_ref())
            .map(|i| i.uuid)
            .collect();
        self.forget(
            &dropped,
            "dropped",
            "no longer reported before it was confirmed",
            now,
        );
        self.reports.insert(node.to_owned(), current.clone());
        if let Some(original) = current {
            let confirm_polls = self.policy.confirm_polls.max(1);
            match self
                .incidents
                .iter()
                .position(|i| i.node == node && i.original == original)
            {
                Some(pos) => {
                    let incident = &mut self.incidents[pos];
                    if !incident.confirmed {
                        incident.seen_polls = incident.seen_polls.saturating_add(1);
                        outcome = Observed::Seen(incident.uuid);
                        if incident.seen_polls >= confirm_polls {
                            let uuid = incident.uuid;
                            self.confirm(pos, now);
                            outcome = Observed::Confirmed(uuid);
                        }
                    }
                }
                None => {
                    let mut incident = Incident::new(node, diagnose, now);
                    incident.record(now, "noted", &format!("node {node}"), None);
                    outcome = Observed::NewIncident(incident.uuid);
                    self.incidents.push(incident);
                    if confirm_polls <= 1 {
                        self.confirm(self.incidents.len() - 1, now);
                    } else {
                        let last = self.incidents.len() - 1;
                        self.incidents[last].message = Some(format!(
                            "awaiting confirmation: seen in 1 of {confirm_polls} polls"
                        ));
                    }
                }
            }
        }
        self.forget_unobserved(now);
        outcome
    }

    /// Mark incident `pos` confirmed and apply the flap budget.
    fn confirm(&mut self, pos: usize, now: f64) {
        let budget = self.policy.flap_budget;
        let node = self.incidents[pos].node.clone();
        let recent = self.acted_upon.entry(node.clone()).or_default();
        recent.retain(|&t| now - t < 3600.0);
        let incident = &mut self.incidents[pos];
        incident.confirmed = true;
        incident.message = None;
        incident.mtime = now;
        incident.record(now, "confirmed", BY_MAINTD, None);
        if budget.is_some_and(|budget| recent.len() >= budget) {
            incident.flapping = true;
            let why = format!(
                "flapping: {} incidents on {node} acted upon within the last hour (safety.max_incidents_per_node_per_hour); held until an operator resumes",
                recent.len()
            );
            incident.record(now, "flapping", BY_MAINTD, Some(why.clone()));
            incident.message = Some(why);
        } else {
            recent.push(now);
        }
    }

    /// The node still reports the incident (unknown after a restart counts as yes).
    pub fn still_observed(&self, incident: &Incident) -> bool {
        match self.reports.get(&incident.node) {
            None => true,
            Some(current) => current.as_ref() == Some(&incident.original),
        }
    }

    /// Forget canceled and acknowledged incidents that are no longer observed.
    fn forget_unobserved(&mut self, now: f64) -> Vec<Uuid> {
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
        self.forget(&gone, "forgotten", "no longer reported", now);
        gone
    }

    /// Forget incidents: they move to [`MaintenanceState::forgotten`] with a last
    /// history entry `event` saying `why`.
    fn forget(&mut self, uuids: &[Uuid], event: &str, why: &str, now: f64) {
        if uuids.is_empty() {
            return;
        }
        let (gone, kept): (Vec<Incident>, Vec<Incident>) = std::mem::take(&mut self.incidents)
            .into_iter()
            .partition(|i| uuids.contains(&i.uuid));
        self.incidents = kept;
        self.evacuated.retain(|_, owner| !uuids.contains(owner));
        for mut incident in gone {
            incident.record(now, event, BY_MAINTD, Some(why.to_owned()));
            incident.mtime = now;
            self.forgotten.push_back(incident);
        }
        while self.forgotten.len() > self.policy.forgotten_kept {
            self.forgotten.pop_front();
        }
    }

    /// Apply what the cluster shows: forget incidents of departed nodes, and act on removed
    /// tags (failed: forget at once; completed: forget once no longer observed).
    /// Returns the forgotten incidents.
    pub fn reconcile(&mut self, cluster: &ClusterSnapshot, now: f64) -> Vec<Uuid> {
        let mut departed = Vec::new();
        let mut untagged = Vec::new();
        for incident in &mut self.incidents {
            let Some(node) = cluster.node(&incident.node) else {
                departed.push(incident.uuid);
                continue;
            };
            if !incident.tagged || node.tags.contains(&incident.tag) {
                continue;
            }
            match incident.status {
                RepairStatus::Failed => untagged.push(incident.uuid),
                RepairStatus::Completed if !incident.acknowledged => {
                    incident.acknowledged = true;
                    incident.record(
                        now,
                        "acknowledged",
                        "operator",
                        Some(format!("tag {} removed", incident.tag)),
                    );
                }
                _ => {}
            }
        }
        self.forget(&departed, "forgotten", "its node left the cluster", now);
        self.forget(
            &untagged,
            "forgotten",
            "the operator removed its failure tag",
            now,
        );
        let names = cluster.node_names();
        self.reports.retain(|node, _| names.contains(node.as_str()));
        let mut gone = departed;
        gone.extend(untagged);
        gone.extend(self.forget_unobserved(now));
        gone
    }

    /// Drop the planned jobs of incidents that have not started yet and that their node
    /// no longer reports (a stale signal): the incident is forgotten and nothing is done.
    /// Returns the dropped incidents.
    pub fn drop_stale(&mut self, plan: &mut RoundPlan, now: f64) -> Vec<Uuid> {
        let stale: Vec<Uuid> = self
            .incidents
            .iter()
            .filter(|i| i.status.is_open() && !i.started() && !self.still_observed(i))
            .map(|i| i.uuid)
            .filter(|uuid| plan.jobs.iter().any(|j| j.incident == Some(*uuid)))
            .collect();
        if stale.is_empty() {
            return stale;
        }
        plan.jobs
            .retain(|j| !j.incident.is_some_and(|u| stale.contains(&u)));
        plan.notes.retain(|(u, _)| !stale.contains(u));
        plan.failures.retain(|(u, _)| !stale.contains(u));
        self.forget(
            &stale,
            "dropped",
            "no longer reported by its node when its first job was due",
            now,
        );
        stale
    }

    /// Cancel an incident: no further action; forgotten once no longer observed.
    pub fn cancel(&mut self, uuid: Uuid, now: f64) -> Result<(), CancelError> {
        self.cancel_by(uuid, "unknown", now)
    }

    /// [`MaintenanceState::cancel`], recording `by` (the API client) in the history.
    pub fn cancel_by(&mut self, uuid: Uuid, by: &str, now: f64) -> Result<(), CancelError> {
        let incident = self.incident_mut(uuid).ok_or(CancelError::NotFound(uuid))?;
        match incident.status {
            RepairStatus::Noted | RepairStatus::Pending => {
                incident.status = RepairStatus::Canceled;
                incident.message = Some(format!("canceled by {by}"));
                incident.mtime = now;
                incident.record(now, "canceled", by, None);
            }
            RepairStatus::Canceled => {}
            finished => return Err(CancelError::Finished(uuid, finished)),
        }
        self.forget_unobserved(now);
        Ok(())
    }

    /// Mark incidents failed without a job (the planner found no way forward).
    pub fn fail_incident(&mut self, uuid: Uuid, why: String, now: f64) {
        if let Some(incident) = self.incident_mut(uuid) {
            incident.fail(why, now);
        }
    }

    /// Remember why an incident waits (a history entry when the reason changes).
    /// Returns whether anything changed.
    pub fn note(&mut self, uuid: Uuid, message: String, now: f64) -> bool {
        self.note_event(uuid, "waiting", message, now)
    }

    /// Like [`MaintenanceState::note`], with the history entry's event named.
    pub fn note_event(&mut self, uuid: Uuid, event: &str, message: String, now: f64) -> bool {
        let Some(incident) = self.incident_mut(uuid) else {
            return false;
        };
        if incident.message.as_ref() == Some(&message) {
            return false;
        }
        incident.record(now, event, BY_MAINTD, Some(message.clone()));
        incident.message = Some(message);
        incident.mtime = now;
        true
    }

    /// Start a new round with the planned jobs (not yet submitted). Stuck jobs of the
    /// previous round are carried over: they are still watched, and their nodes stay busy.
    pub fn start_round(&mut self, jobs: &[PlannedJob], now: f64) {
        let carried = self
            .round
            .jobs
            .drain(..)
            .filter(|j| j.stuck && j.is_unfinished());
        self.round = Round {
            number: self.round.number + 1,
            started_at: now,
            jobs: carried
                .chain(jobs.iter().map(TrackedJob::planned))
                .collect(),
        };
    }

    /// Jobs of earlier rounds still running past `rounds.job_timeout`.
    pub fn stuck_jobs(&self) -> impl Iterator<Item = &TrackedJob> {
        self.round
            .jobs
            .iter()
            .filter(|j| j.stuck && j.is_unfinished())
    }

    /// Apply `rounds.job_timeout` at `now`: returns the ids of queued or waiting jobs past
    /// it, to be canceled (marked so that their cancellation fails no incident), and
    /// marks running jobs past it stuck (their incidents get no further job until they
    /// end; other incidents' rounds go on).
    pub fn apply_job_timeout(
        &mut self,
        timeout: f64,
        now: f64,
    ) -> (Vec<JobId>, Vec<(JobId, Option<Uuid>)>) {
        let mut cancel = Vec::new();
        let mut stuck = Vec::new();
        for job in &mut self.round.jobs {
            let (Some(id), Some(at)) = (job.id, job.submitted_at) else {
                continue;
            };
            if now - at <= timeout {
                continue;
            }
            match job.status {
                Some(JobStatus::Queued | JobStatus::Waiting) if !job.timed_out => {
                    job.timed_out = true;
                    cancel.push(id);
                }
                Some(JobStatus::Running | JobStatus::Canceling) if !job.stuck => {
                    job.stuck = true;
                    stuck.push((id, job.incident));
                }
                _ => {}
            }
        }
        for (id, incident) in &stuck {
            if let Some(incident) = incident.and_then(|u| self.incident_mut(u)) {
                let why = format!(
                    "stuck: job {id} has been running for more than rounds.job_timeout ({timeout} s); no further job for this incident until it ends"
                );
                incident.stuck_job = Some(*id);
                incident.record(now, "stuck", BY_MAINTD, Some(why.clone()));
                incident.message = Some(why);
                incident.mtime = now;
            }
        }
        for id in &cancel {
            let incident = self
                .round
                .jobs
                .iter()
                .find(|j| j.id == Some(*id))
                .and_then(|j| j.incident);
            if let Some(incident) = incident.and_then(|u| self.incident_mut(u)) {
                incident.record(
                    now,
                    "job-timeout",
                    BY_MAINTD,
                    Some(format!("job {id} waited longer than rounds.job_timeout ({timeout} s); canceling it")),
                );
            }
        }
        (cancel, stuck)
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
        self.round.jobs.extend(jobs.iter().map(TrackedJob::planned));
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
                job.submitted_at = Some(now);
                let what = format!("job {id}: {}", job.purpose.describe());
                if let Some(incident) = incident.and_then(|u| self.incident_mut(u)) {
                    incident.jobs.push(id);
                    if incident.status == RepairStatus::Noted {
                        incident.status = RepairStatus::Pending;
                        incident.record(now, "pending", BY_MAINTD, None);
                    }
                    incident.record(now, "job-submitted", BY_MAINTD, Some(what));
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
    /// failed job failed (the failed opcode and Ganeti's error, or a node agent's message),
    /// which becomes part of the incident's.
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
        let (timed_out, live_migration) = (job.timed_out, job.live_migration);
        let Some(uuid) = incident else { return true };
        if let Some(incident) = self.incident_mut(uuid) {
            if incident.stuck_job == Some(id) {
                incident.stuck_job = None;
            }
            incident.record(
                now,
                "job-finalized",
                BY_MAINTD,
                Some(format!("job {id} {status_seen}")),
            );
        }
        if timed_out && status == Some(JobStatus::Canceled) {
            // maintd canceled it for waiting too long: plan the step again.
            let why = format!(
                "job {id} waited longer than rounds.job_timeout and was canceled; its step is planned again"
            );
            self.note(uuid, why, now);
            return true;
        }
        if status != Some(JobStatus::Success)
            && live_migration
            && self.escalate(uuid, &purpose, id, now)
        {
            return true;
        }
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

    /// With `escalate_to_failover`, a failed live migration of an `evacuate` incident's
    /// instance is retried as a failover instead of failing the incident (once per
    /// instance). Returns whether it was.
    fn escalate(&mut self, uuid: Uuid, purpose: &JobPurpose, id: JobId, now: f64) -> bool {
        if !self.policy.escalate_to_failover {
            return false;
        }
        let JobPurpose::MovePrimary { instance } = purpose else {
            return false;
        };
        let Some(incident) = self.incident_mut(uuid) else {
            return false;
        };
        if incident.action != RepairAction::Evacuate
            || !incident.status.is_open()
            || !incident.failover_instances.insert(instance.clone())
        {
            return false;
        }
        let why =
            format!("live migration of {instance} failed (job {id}); failing it over instead");
        incident.record(now, "escalated", BY_MAINTD, Some(why.clone()));
        incident.message = Some(why);
        incident.mtime = now;
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
                incident.record(now, "completed", BY_MAINTD, None);
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

    /// Every job of the current round is finalized (or refused), or stuck: a hung job
    /// does not stall the other incidents.
    pub fn round_finished(&self) -> bool {
        self.round
            .jobs
            .iter()
            .all(|j| !j.is_unfinished() || j.stuck)
            && self.repairs_awaiting_tags().is_empty()
    }
}

#[cfg(test)]
mod tests;
