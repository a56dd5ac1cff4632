//! Round planning: which jobs to submit, all at once, in the next round.
//!
//! The planner is level-triggered: it recomputes every round from a fresh cluster snapshot
//! and the incidents, so a restart or a lost round needs no special handling. Per node only
//! the most invasive open incident is handled (older first among equals); evacuations are
//! planned first, then live repairs; no two jobs of a round touch the same node.

mod htools;
mod round;
mod simple;
mod thread;

pub use htools::{pending_tag_jobs, HtoolsPlanner, HtoolsSettings};
pub use simple::SimplePlanner;
pub use thread::{PlanError, PlanRequest, PlannerThread, NICENESS, THREAD_NAME};

pub use crate::model::safety::EXCLUDE_TAG;

use std::collections::BTreeMap;

use crate::model::{
    cluster::ClusterSnapshot,
    incident::{Incident, RoundPlan},
    job::{JobId, JobStatus},
    safety::SafetyGate,
};

/// What a planner sees.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The cluster now.
    pub cluster: &'a ClusterSnapshot,
    /// Every incident not yet forgotten.
    pub incidents: &'a [Incident],
    /// Prefix for submission keys, unique per state and round.
    pub key_prefix: &'a str,
    /// Reason-trail timestamp, nanoseconds.
    pub now_ns: i64,
    /// Status of the jobs [`Planner::jobs_to_query`] asked for (absent: unknown to the
    /// queue).
    pub job_statuses: &'a BTreeMap<JobId, JobStatus>,
    /// The latest `cpu-avg-load` total of each node that reported one.
    pub node_loads: &'a BTreeMap<String, f64>,
    /// What the safety layer allows: incidents held back, repair slots, busy nodes.
    pub gate: &'a SafetyGate,
}

/// Decides the jobs of one round. Implementations must be deterministic, and shareable
/// across threads: the daemon plans on a thread of its own ([`PlannerThread`]).
pub trait Planner: Send + Sync {
    /// Plan the next round.
    fn plan(&self, input: PlanInput<'_>) -> RoundPlan;

    /// Jobs whose status the next [`Planner::plan`] needs (e.g. repairs named in tags).
    fn jobs_to_query(&self, _cluster: &ClusterSnapshot) -> Vec<JobId> {
        Vec::new()
    }
}
