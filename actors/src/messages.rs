//! Messages that cross actor boundaries. Events are past tense and fire-and-forget,
//! commands are imperative, queries start with `Get`. Times are Unix seconds from the
//! daemon's clock, carried as data so that handlers never read the clock themselves.

use std::collections::BTreeMap;

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
    /// The cluster now.
    pub cluster: ClusterSnapshot,
    /// When it was taken.
    pub at: f64,
}

/// The registry's view for planning one round.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// Every incident not yet forgotten.
    pub incidents: Vec<Incident>,
    /// Prefix for this round's submission keys.
    pub key_prefix: String,
    /// The latest `cpu-avg-load` total of each node that reported one.
    pub node_loads: BTreeMap<String, f64>,
    /// What the safety layer allows this round.
    pub gate: maintd::model::safety::SafetyGate,
}

/// Ask whether every job of the current round is finalized. Round planner → registry.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct GetRoundFinished;

/// Record a planned round before its jobs are submitted; returns the jobs to submit.
/// Round planner → registry.
#[derive(Message, Debug)]
#[rtype(result = "Vec<JobToSubmit>")]
pub struct StartRound {
    /// The plan.
    pub plan: RoundPlan,
    /// When.
    pub at: f64,
}

/// Round planner → registry: add the follow-up jobs the running round needs now (the
/// `pending` tags of submitted harep repairs).
#[derive(Message, Debug)]
#[rtype(result = "Vec<JobToSubmit>")]
pub struct ExtendRound {
    /// Reason-trail timestamp, nanoseconds.
    pub now_ns: i64,
}

/// One job ready for submission, identified by its submission key.
#[derive(Debug, Clone)]
pub struct JobToSubmit {
    /// Submission key (also in the reason trail).
    pub key: String,
    /// The opcodes.
    pub ops: Vec<Opcode>,
}

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
/// Job watcher → registry.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobStatusesSeen {
    /// Per job.
    pub statuses: Vec<(JobId, Option<JobStatus>)>,
    /// Why failed jobs failed, where the backend knows more than the status.
    pub failure_details: std::collections::BTreeMap<JobId, String>,
    /// When.
    pub at: f64,
}

/// What a (re)started job watcher must pick up. Job watcher → registry.
#[derive(Message, Debug)]
#[rtype(result = "Recovery")]
pub struct GetRecovery;

/// Jobs to keep watching and submissions to confirm.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Submitted, not finalized.
    pub unfinished: Vec<JobId>,
    /// Planned, id never recorded.
    pub unconfirmed: Vec<String>,
}

/// Cancel an incident. Web → registry.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), CancelError>")]
pub struct CancelIncident {
    /// The incident.
    pub uuid: Uuid,
    /// When.
    pub at: f64,
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

/// Stop all work; sent when mastership is lost or the process shuts down.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;
