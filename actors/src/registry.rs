//! EventRegistry: owns the maintenance state (incidents, the current round), applies every
//! change through the domain's state machine and persists it before answering.

use std::collections::BTreeMap;

use actix::prelude::*;
use maintd::{
    model::incident::{MaintenanceState, Observed},
    planner::pending_tag_jobs,
    store::JsonStore,
};
use tracing::{error, info, warn};

use crate::messages::{
    CancelIncident, ExtendRound, GetRecovery, GetRoundFinished, GetStatus, JobStatusesSeen,
    JobToSubmit, JobsSubmitted, NodeLoadSeen, NodeObserved, NodePollView, PlanContext, Reconcile,
    Recovery, Shutdown, StartRound, StatusView, SubmissionLost,
};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// The event-registry actor.
pub struct EventRegistry {
    state: MaintenanceState,
    store: JsonStore,
    polls: BTreeMap<String, NodePollView>,
    /// Latest CPU load per node; transient, refreshed by the pollers.
    loads: BTreeMap<String, f64>,
}

impl EventRegistry {
    /// A registry over `state`, persisting to `store`.
    pub fn new(state: MaintenanceState, store: JsonStore) -> Self {
        EventRegistry {
            state,
            store,
            polls: BTreeMap::new(),
            loads: BTreeMap::new(),
        }
    }

    /// Persist after a change. A failed save is logged and retried with the next change;
    /// the in-memory state stays authoritative meanwhile.
    fn persist(&self) {
        if let Err(e) = self.store.save(&self.state) {
            error!(target: "maintd::registry", error = %e, "could not persist the maintenance state");
        }
    }
}

impl Actor for EventRegistry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        info!(target: "maintd::registry", incidents = self.state.incidents.len(), round = self.state.round.number, "event registry started");
    }
}

impl Handler<NodeObserved> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: NodeObserved, _: &mut Context<Self>) {
        let poll = self
            .polls
            .entry(msg.node.clone())
            .or_insert_with(|| NodePollView {
                node: msg.node.clone(),
                ..Default::default()
            });
        match msg.report {
            Ok(diagnose) => {
                poll.last_status = Some(diagnose.action.to_string());
                poll.last_report_at = Some(msg.at);
                poll.consecutive_failures = 0;
                let before = self.state.incidents.len();
                let observed = self.state.observe(&msg.node, &diagnose, msg.at);
                if let Observed::NewIncident(uuid) = observed {
                    info!(target: "maintd::registry", node = %msg.node, %uuid, action = %diagnose.action, report = %diagnose.original, "new incident");
                }
                if observed != Observed::Nothing || self.state.incidents.len() != before {
                    self.persist();
                }
            }
            Err(e) => {
                // Its load figure, if any, is no longer current.
                self.loads.remove(&msg.node);
                poll.consecutive_failures += 1;
                poll.total_failures += 1;
                poll.last_error = Some(e.to_string());
                warn!(target: "maintd::registry", node = %msg.node, error = %e, failures = poll.consecutive_failures, "no valid diagnose report");
            }
        }
    }
}

impl Handler<NodeLoadSeen> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: NodeLoadSeen, _: &mut Context<Self>) {
        match msg.load {
            Ok(load) => {
                self.loads.insert(msg.node, load.cpu_total);
            }
            Err(e) => {
                // A stale figure would mislead balancing: forget it.
                self.loads.remove(&msg.node);
                if let Some(poll) = self.polls.get_mut(&msg.node) {
                    poll.load_failures += 1;
                }
                warn!(target: "maintd::registry", node = %msg.node, error = %e, "no valid cpu-avg-load report");
            }
        }
    }
}

impl Handler<Reconcile> for EventRegistry {
    type Result = MessageResult<Reconcile>;

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) -> Self::Result {
        let forgotten = self.state.reconcile(&msg.cluster);
        for uuid in &forgotten {
            info!(target: "maintd::registry", %uuid, "incident forgotten");
        }
        self.polls
            .retain(|node, _| msg.cluster.node(node).is_some());
        self.loads
            .retain(|node, _| msg.cluster.node(node).is_some());
        if !forgotten.is_empty() {
            self.persist();
        }
        MessageResult(PlanContext {
            incidents: self.state.incidents.clone(),
            key_prefix: format!("{}-r{}", self.state.state_id, self.state.round.number + 1),
            node_loads: self.loads.clone(),
            gate: maintd::model::safety::SafetyGate::open(),
        })
    }
}

impl Handler<GetRoundFinished> for EventRegistry {
    type Result = bool;

    fn handle(&mut self, _: GetRoundFinished, _: &mut Context<Self>) -> bool {
        self.state.round_finished()
    }
}

impl Handler<StartRound> for EventRegistry {
    type Result = MessageResult<StartRound>;

    fn handle(&mut self, msg: StartRound, _: &mut Context<Self>) -> Self::Result {
        let plan = msg.plan;
        for (uuid, why) in &plan.failures {
            warn!(target: "maintd::registry", %uuid, reason = %why, "incident failed");
            self.state.fail_incident(*uuid, why.clone(), msg.at);
        }
        for (uuid, why) in &plan.notes {
            info!(target: "maintd::registry", %uuid, reason = %why, "incident waits");
            self.state.note(*uuid, why.clone(), msg.at);
        }
        for warning in &plan.warnings {
            warn!(target: "maintd::registry", %warning, "round planning");
        }
        if !plan.jobs.is_empty() {
            self.state.start_round(&plan.jobs, msg.at);
            info!(target: "maintd::registry", round = self.state.round.number, jobs = plan.jobs.len(), "round planned");
        }
        // Persisted before submission: a restart then finds the keys and never submits twice.
        self.persist();
        MessageResult(
            plan.jobs
                .into_iter()
                .map(|j| JobToSubmit {
                    key: j.key,
                    ops: j.ops,
                })
                .collect(),
        )
    }
}

impl Handler<ExtendRound> for EventRegistry {
    type Result = MessageResult<ExtendRound>;

    fn handle(&mut self, msg: ExtendRound, _: &mut Context<Self>) -> Self::Result {
        let repairs = self.state.repairs_awaiting_tags();
        if repairs.is_empty() {
            return MessageResult(Vec::new());
        }
        let (origins, jobs) = pending_tag_jobs(&repairs, msg.now_ns);
        self.state.extend_round(&origins, &jobs);
        info!(target: "maintd::registry", jobs = jobs.len(), "round extended by harep pending tags");
        // Persisted before submission, as for a new round.
        self.persist();
        MessageResult(
            jobs.into_iter()
                .map(|j| JobToSubmit {
                    key: j.key,
                    ops: j.ops,
                })
                .collect(),
        )
    }
}

impl Handler<JobsSubmitted> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: JobsSubmitted, _: &mut Context<Self>) {
        for (key, result) in msg.results {
            match &result {
                Ok(id) => info!(target: "maintd::registry", %key, job = %id, "job submitted"),
                Err(why) => warn!(target: "maintd::registry", %key, reason = %why, "job refused"),
            }
            self.state.record_submission(&key, result, msg.at);
        }
        self.persist();
    }
}

impl Handler<SubmissionLost> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: SubmissionLost, _: &mut Context<Self>) {
        info!(target: "maintd::registry", key = %msg.key, "planned job never reached the queue; dropped");
        self.state.drop_unsubmitted(&msg.key);
        self.persist();
    }
}

impl Handler<JobStatusesSeen> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: JobStatusesSeen, _: &mut Context<Self>) {
        let mut changed = false;
        for (id, status) in msg.statuses {
            match status {
                None => {
                    warn!(target: "maintd::registry", job = %id, "job unknown to the queue; counted as failed")
                }
                Some(s) if s.is_finalized() => {
                    info!(target: "maintd::registry", job = %id, status = %s, "job finalized")
                }
                Some(_) => {}
            }
            let detail = msg.failure_details.get(&id).map(String::as_str);
            changed |= self.state.record_job_outcome(id, status, detail, msg.at);
        }
        if changed {
            self.persist();
        }
    }
}

impl Handler<GetRecovery> for EventRegistry {
    type Result = MessageResult<GetRecovery>;

    fn handle(&mut self, _: GetRecovery, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Recovery {
            unfinished: self.state.unfinished_jobs(),
            unconfirmed: self.state.unconfirmed_submissions(),
        })
    }
}

impl Handler<CancelIncident> for EventRegistry {
    type Result = Result<(), maintd::model::incident::CancelError>;

    fn handle(&mut self, msg: CancelIncident, _: &mut Context<Self>) -> Self::Result {
        self.state.cancel(msg.uuid, msg.at)?;
        info!(target: "maintd::registry", uuid = %msg.uuid, "incident canceled");
        self.persist();
        Ok(())
    }
}

impl Handler<GetStatus> for EventRegistry {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StatusView {
            incidents: self.state.incidents.clone(),
            jobs: self.state.unfinished_jobs(),
            evacuated: self.state.evacuated.keys().cloned().collect(),
            nodes: self.polls.values().cloned().collect(),
            round: self.state.round.number,
        })
    }
}

impl Handler<Shutdown> for EventRegistry {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
