//! Messages that cross actor boundaries. Events are past tense and fire-and-forget,
//! commands are imperative, queries start with `Get`. Times are Unix seconds from the
//! daemon's clock, carried as data so that handlers never read the clock themselves.

use actix::prelude::*;
use maintd::{
    backend::{FetchError, Submission},
    model::{
        cluster::ClusterSnapshot,
        diagnose::Diagnose,
        incident::{CancelError, Incident, RoundPlan},
        job::{JobId, JobStatus},
        load::CpuLoad,
        opcode::Opcode,
    },
};
use serde::Serialize;
use uuid::Uuid;

pub use maintd::daemon::{
    cycle::{JobToSubmit, PlanContext, Planned},
    watch::Recovery,
};

/// A poller fetched (or failed to fetch) a node's diagnose report. Poller → registry.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct NodeObserved {
    /// The node.
    pub node: String,
    /// The report, or why there is none.
    pub report: Result<Diagnose, FetchError>,
    /// When.
    pub at: f64,
}

/// A poller fetched (or failed to fetch) a node's `cpu-avg-load` report. Poller → registry.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct NodeLoadSeen {
    /// The node.
    pub node: String,
    /// The load, or why there is none.
    pub load: Result<CpuLoad, FetchError>,
}

/// A supervised child restarted after a failure. Child → supervisor.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub struct ChildRestarted {
    /// Which child (`poller:<node>` or `job-watcher`).
    pub child: String,
    /// Consecutive failures so far.
    pub attempt: u32,
    /// Wait before the child works again.
    pub backoff: std::time::Duration,
}

/// Forget incidents the cluster no longer justifies and return what the planner needs.
/// Round planner → registry, at the start of each round.
#[derive(Message, Debug)]
#[rtype(result = "PlanContext")]
pub struct Reconcile {
    /// The cluster now (shared with the plan made from it).
    pub cluster: std::sync::Arc<ClusterSnapshot>,
    /// When it was taken.
    pub at: f64,
}

/// Ask whether every job of the current round is finalized. Round planner → registry.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct GetRoundFinished;

/// Record a planned round before its jobs are submitted; returns the jobs to submit.
/// Round planner → registry.
#[derive(Message, Debug)]
#[rtype(result = "Planned")]
pub struct StartRound {
    /// The plan.
    pub plan: RoundPlan,
    /// When.
    pub at: f64,
}

/// Round planner → registry: add the follow-up jobs the running round needs now (the
/// `pending` tags of submitted harep repairs).
#[derive(Message, Debug)]
#[rtype(result = "Planned")]
pub struct ExtendRound {
    /// Reason-trail timestamp, nanoseconds.
    pub now_ns: i64,
}

/// The state of `serial` is saved. Registry → state replicator.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StateSaved {
    /// Its serial.
    pub serial: u64,
    /// The state document.
    pub state: std::sync::Arc<serde_json::Value>,
}

/// Answer once the save of `serial` is on a majority of the master candidates, or with
/// why not once `replication.wait` has passed. Round planner → state replicator.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), String>")]
pub struct AwaitDurable {
    /// The serial.
    pub serial: u64,
}

/// Replication changed (a push answered, the majority lost or back). State replicator →
/// registry, which shows it on `/1/safety` and holds new rounds while the majority is
/// lost.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ReplicationChanged(pub maintd::model::replication::ReplicationView);

/// Submit these jobs at once. Round planner → job watcher.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SubmitJobs {
    /// The round's jobs.
    pub jobs: Vec<JobToSubmit>,
}

/// Jobs were submitted (or refused). Job watcher → registry.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobsSubmitted {
    /// Per submission key, the job id or why the queue refused it.
    pub results: Vec<(String, Submission)>,
    /// When.
    pub at: f64,
}

/// A planned job never reached the queue (found after a restart). Job watcher → registry.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SubmissionLost {
    /// Its submission key.
    pub key: String,
}

/// Job statuses as last queried; `None` means the queue does not know the job.
/// Job watcher → registry; answers the jobs to cancel (waiting past `rounds.job_timeout`).
#[derive(Message, Debug)]
#[rtype(result = "Vec<JobId>")]
pub struct JobStatusesSeen {
    /// Per job.
    pub statuses: Vec<(JobId, Option<JobStatus>)>,
    /// Why failed jobs failed, in one line each (the failed opcode, what it acted on and
    /// Ganeti's error, or a node agent's account), for those the backend could tell.
    pub failure_details: std::collections::BTreeMap<JobId, String>,
    /// When.
    pub at: f64,
}

/// What a (re)started job watcher must pick up. Job watcher → registry.
#[derive(Message, Debug)]
#[rtype(result = "Recovery")]
pub struct GetRecovery;

/// Why a cancel was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefused {
    /// The incident cannot be canceled.
    #[error(transparent)]
    Refused(#[from] CancelError),
    /// The cancel was not saved, or not yet replicated.
    #[error(transparent)]
    NotDurable(#[from] NotDurable),
}

/// Why an operator's request (cancel, pause, resume) is not acknowledged: it is
/// acknowledged only once durable, so a new master knows of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDurable {
    /// The change could not be saved, so it was not made.
    #[error("state could not be saved: {0}")]
    NotSaved(String),
    /// The change is saved on this node but did not reach a majority of the master
    /// candidates in time: it holds here, and reaches them once they answer.
    #[error("saved on this node, not yet on a majority of the master candidates ({0}); it holds here and reaches them once they answer")]
    NotReplicated(String),
}

/// Cancel an incident. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), CancelRefused>")]
pub struct CancelIncident {
    /// The incident.
    pub uuid: Uuid,
    /// Who asked (the API client).
    pub by: String,
    /// When.
    pub at: f64,
}

/// Pause maintd: no new action until resumed. Acknowledged once durable. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Result<SafetyView, NotDurable>")]
pub struct Pause {
    /// Why, as the operator said.
    pub reason: Option<String>,
    /// Who asked (the API client).
    pub by: String,
    /// When.
    pub at: f64,
}

/// Resume: lift a pause, reset a tripped breaker, release flapping incidents. Persisted
/// before it is acknowledged. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Result<SafetyView, NotDurable>")]
pub struct Resume {
    /// Who asked (the API client).
    pub by: String,
    /// When.
    pub at: f64,
}

/// The brakes' state, for `/1/safety`. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "SafetyView")]
pub struct GetSafety;

/// The brakes as `/1/safety` shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SafetyView {
    /// No new action: paused through the API or by the cluster tag.
    pub paused: bool,
    /// The operator's reason, if paused through the API.
    pub pause_reason: Option<String>,
    /// Who paused, if paused through the API.
    pub paused_by: Option<String>,
    /// Since when (Unix seconds), if paused through the API.
    pub paused_since: Option<f64>,
    /// The cluster carries the `maintd:paused` tag (as of the last round).
    pub paused_by_tag: bool,
    /// The circuit breaker.
    pub breaker: BreakerView,
    /// Nodes in repair now.
    pub in_repair: Vec<String>,
    /// The copies of the state on the master candidates; `None`: replication is off.
    pub replication: Option<maintd::model::replication::ReplicationView>,
    /// Nodes in repair at once, cluster-wide (`safety.max_nodes_in_repair`).
    pub limit: usize,
    /// Per node group, percent of its nodes (`safety.max_percent_in_repair`).
    pub limit_percent: f64,
    /// Nothing is submitted (`--dry-run`).
    pub dry_run: bool,
    /// Why no new action starts now, if none does.
    pub halted: Option<String>,
    /// Why the state could not be saved, while it cannot: nothing is submitted and
    /// operator requests answer 503 until a save succeeds.
    pub state_error: Option<String>,
}

/// The circuit breaker as `/1/safety` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BreakerView {
    /// Tripped and latched until an operator resumes.
    pub tripped: bool,
    /// Why it tripped.
    pub reason: Option<String>,
    /// When (Unix seconds).
    pub since: Option<f64>,
}

/// The last round's plan, for `/1/plan`. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Option<PlanView>")]
pub struct GetPlan;

/// A round's plan as `/1/plan` shows it: what was submitted or, when held back (dry-run,
/// paused, breaker), what would have been.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanView {
    /// When it was planned (Unix seconds).
    pub planned_at: f64,
    /// The round it started, if it was submitted.
    pub round: Option<u64>,
    /// `submitted`, or `held` with `held_by` saying why.
    pub mode: &'static str,
    /// Why nothing was submitted.
    pub held_by: Option<String>,
    /// The jobs, in submission order.
    pub jobs: Vec<PlannedJobView>,
    /// Why incidents wait.
    pub notes: Vec<IncidentNote>,
    /// Incidents the plan fails without a job.
    pub failures: Vec<IncidentNote>,
    /// Problems of the round not tied to an incident.
    pub warnings: Vec<String>,
    /// Incidents dropped because their node no longer reports them.
    pub dropped: Vec<Uuid>,
}

/// One job of a plan.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedJobView {
    /// Submission key (in the reason trail).
    pub key: String,
    /// The incident it serves.
    pub incident: Option<Uuid>,
    /// What it does.
    pub purpose: maintd::model::incident::JobPurpose,
    /// Nodes it touches.
    pub nodes: Vec<String>,
    /// Its opcodes, reason trails included, as submitted.
    pub opcodes: Vec<Opcode>,
}

/// An incident and a message about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentNote {
    /// The incident.
    pub incident: Uuid,
    /// The message.
    pub message: String,
}

/// One incident, open or forgotten (`true`). Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Option<(Incident, bool)>")]
pub struct GetIncident {
    /// The incident.
    pub uuid: Uuid,
}

/// Forgotten incidents, latest first. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Incident>")]
pub struct GetHistory {
    /// At most this many.
    pub limit: usize,
}

/// Everything the HTTP API shows. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "StatusView")]
pub struct GetStatus;

/// A consistent copy of the registry's state for the HTTP API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusView {
    /// Incidents, oldest first.
    pub incidents: Vec<Incident>,
    /// Jobs the next round waits for.
    pub jobs: Vec<JobId>,
    /// Instances recently moved off nodes under repair.
    pub evacuated: Vec<String>,
    /// Per-node polling health.
    pub nodes: Vec<NodePollView>,
    /// Current round number.
    pub round: u64,
}

/// Polling health of one node.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodePollView {
    /// Node name.
    pub node: String,
    /// Last valid report's action, if any.
    pub last_status: Option<String>,
    /// When the last valid report came (Unix seconds).
    pub last_report_at: Option<f64>,
    /// Failed polls in a row.
    pub consecutive_failures: u32,
    /// Failed polls in all.
    pub total_failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Failed `cpu-avg-load` polls in all.
    pub load_failures: u64,
}

/// The set of nodes changed; poll exactly these. Supervisor-internal, from its refresh.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct NodesListed {
    /// Current node names (offline nodes excluded).
    pub nodes: Vec<String>,
}

/// The state gauges of a `/metrics` scrape. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "maintd::metrics::StateSample")]
pub struct GetMetricsState;

/// Incident statuses changed, and the change is saved. Registry → notifier.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TransitionsSaved(pub Vec<maintd::notify::Transition>);

/// Stop all work; sent when mastership is lost or the process shuts down.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;
