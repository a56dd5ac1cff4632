//! RoundPlanner: starts a round when the previous round's jobs are all finalized and the
//! round delay has passed. Level-triggered: each round takes a fresh snapshot, lets the
//! registry reconcile it, asks the domain planner for the jobs and hands them to the watcher.
//!
//! The sequence and the timing are the domain's ([`maintd::daemon::cycle`]); this actor
//! holds the timer, keeps one step at a time, carries the steps to the registry and the
//! state replicator, and submits what a step hands out.

use std::{rc::Rc, sync::Arc};

use actix::{prelude::*, WeakAddr};
use maintd::{
    backend::ClusterBackend,
    clock::Clock,
    daemon::cycle::{self, Batch, CycleError, PlanContext, Progress, RoundSteps},
    model::{cluster::ClusterSnapshot, incident::RoundPlan},
    planner::PlannerThread,
};
use tokio::time::Instant;
use tracing::{info, warn};

pub use maintd::daemon::cycle::RoundTiming;

use crate::{
    daemon::job_watcher::JobWatcher,
    daemon::messages::{
        AwaitDurable, ExtendRound, GetRoundFinished, JobToSubmit, Planned, Reconcile, Shutdown,
        StartRound, SubmissionLost, SubmitJobs,
    },
    daemon::registry::EventRegistry,
    daemon::state_replicator::StateReplicator,
};

/// The round-planner actor.
pub struct RoundPlanner {
    backend: Rc<dyn ClusterBackend>,
    /// The plans are made on its thread; this actor only awaits them.
    planner: PlannerThread,
    // Weak: the supervisor holds the only strong addresses of its children, so that
    // dropping them stops the children instead of a sibling keeping them (or, for the
    // supervised watcher, restarting them).
    registry: WeakAddr<EventRegistry>,
    watcher: WeakAddr<JobWatcher>,
    /// When replication is on: jobs are submitted only once the save recording them is
    /// on a majority of the master candidates.
    replicator: Option<WeakAddr<StateReplicator>>,
    timing: RoundTiming,
    clock: Clock,
    next_due: Instant,
    busy: bool,
}

impl RoundPlanner {
    /// A planner; the first round may start at once.
    pub fn new(
        backend: Rc<dyn ClusterBackend>,
        planner: PlannerThread,
        registry: Addr<EventRegistry>,
        watcher: Addr<JobWatcher>,
        timing: RoundTiming,
        clock: Clock,
    ) -> Self {
        RoundPlanner {
            backend,
            planner,
            registry: registry.downgrade(),
            watcher: watcher.downgrade(),
            replicator: None,
            timing,
            clock,
            next_due: Instant::now(),
            busy: false,
        }
    }

    fn submit(&self, jobs: Vec<JobToSubmit>) {
        match self.watcher.upgrade() {
            Some(watcher) => watcher.do_send(SubmitJobs { jobs }),
            // Only while the supervisor stops everything: the jobs stay recorded
            // unsubmitted, and the next start finds them missing from the queue.
            None => {
                warn!(target: "maintd::planner", jobs = jobs.len(), "job watcher gone; jobs not submitted")
            }
        }
    }

    /// Submit jobs only once their save is durable with `replicator`.
    pub fn replicated_by(mut self, replicator: Addr<StateReplicator>) -> Self {
        self.replicator = Some(replicator.downgrade());
        self
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || Instant::now() < self.next_due {
            return;
        }
        self.busy = true;
        let Some(registry) = self.registry.upgrade() else {
            // The supervisor dropped the registry: work is over.
            ctx.stop();
            return;
        };
        let steps = Steps {
            registry,
            replicator: self.replicator.as_ref().and_then(WeakAddr::upgrade),
        };
        let backend = self.backend.clone();
        let planner = self.planner.clone();
        let clock = self.clock;
        let started = Instant::now();
        async move { cycle::step(&steps, &*backend, &planner, clock).await }
            .into_actor(self)
            .map(move |result, act, _| {
                act.busy = false;
                act.next_due = act.timing.next_due(&result, Instant::now(), act.next_due);
                match result {
                    // Previous round still running: check again next tick.
                    Ok(Progress::Waiting) => {}
                    Ok(Progress::FollowUps(batch)) => {
                        let jobs = act.jobs_of(batch);
                        if !jobs.is_empty() {
                            info!(target: "maintd::planner", jobs = jobs.len(), "submitting follow-up jobs");
                            act.submit(jobs);
                        }
                    }
                    Ok(Progress::Round(batch)) => {
                        let jobs = act.jobs_of(batch);
                        if !jobs.is_empty() {
                            // How long since the round started: its snapshot, plan and save.
                            let seconds = started.elapsed().as_secs_f64();
                            info!(target: "maintd::planner", jobs = jobs.len(), seconds, "submitting round");
                            act.submit(jobs);
                        }
                    }
                    Err(e) => {
                        warn!(target: "maintd::planner", error = %e, "could not plan a round")
                    }
                }
            })
            .spawn(ctx);
    }

    /// The jobs of `batch`, after logging why its jobs were dropped, if they were.
    fn jobs_of(&self, batch: Batch) -> Vec<JobToSubmit> {
        if let Some(dropped) = batch.not_durable {
            warn!(target: "maintd::planner", jobs = dropped.jobs, reason = %dropped.reason, "jobs not submitted: their state is not on a majority of the master candidates");
        }
        batch.jobs
    }
}

/// The registry and the state replicator, as a step of the round cycle reaches them.
struct Steps {
    registry: Addr<EventRegistry>,
    /// `None`: replication off (or the replicator stopping with everything else): every
    /// save counts as durable.
    replicator: Option<Addr<StateReplicator>>,
}

fn unanswered(e: MailboxError) -> CycleError {
    CycleError::Registry(e.to_string())
}

impl RoundSteps for Steps {
    async fn extend_round(&self, now_ns: i64) -> Result<Planned, CycleError> {
        self.registry
            .send(ExtendRound { now_ns })
            .await
            .map_err(unanswered)
    }

    async fn round_finished(&self) -> Result<bool, CycleError> {
        self.registry
            .send(GetRoundFinished)
            .await
            .map_err(unanswered)
    }

    async fn reconcile(
        &self,
        cluster: Arc<ClusterSnapshot>,
        at: f64,
    ) -> Result<PlanContext, CycleError> {
        self.registry
            .send(Reconcile { cluster, at })
            .await
            .map_err(unanswered)
    }

    async fn start_round(&self, plan: RoundPlan, at: f64) -> Result<Planned, CycleError> {
        self.registry
            .send(StartRound { plan, at })
            .await
            .map_err(unanswered)
    }

    async fn await_durable(&self, serial: u64) -> Result<(), String> {
        let Some(replicator) = &self.replicator else {
            return Ok(());
        };
        replicator
            .send(AwaitDurable { serial })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }

    fn submission_lost(&self, key: String) {
        self.registry.do_send(SubmissionLost { key });
    }
}

impl Actor for RoundPlanner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.timing.tick(), Self::tick);
    }
}

impl Handler<Shutdown> for RoundPlanner {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
