//! Round planning: which jobs to submit, all at once, in the next round.
//!
//! The planner is level-triggered: it recomputes every round from a fresh cluster snapshot
//! and the incidents, so a restart or a lost round needs no special handling. Per node only
//! the most invasive open incident is handled (older first among equals); evacuations are
//! planned first, then live repairs; no two jobs of a round touch the same node.

mod simple;

pub use simple::SimplePlanner;

use crate::model::{
    cluster::ClusterSnapshot,
    incident::{Incident, RoundPlan},
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
}

/// Decides the jobs of one round. Implementations must be deterministic.
pub trait Planner {
    /// Plan the next round.
    fn plan(&self, input: PlanInput<'_>) -> RoundPlan;
}
