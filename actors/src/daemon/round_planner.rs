//! RoundPlanner: starts a round when the previous round's jobs are all finalized and the
//! round delay has passed. Level-triggered: each round takes a fresh snapshot, lets the
//! registry reconcile it, asks the domain planner for the jobs and hands them to the watcher.

use std::{collections::BTreeMap, rc::Rc, time::Duration};

use actix::{prelude::*, WeakAddr};
use maintd::{
    backend::ClusterBackend,
    clock::Clock,
    planner::{PlanInput, Planner},
};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{
    daemon::job_watcher::JobWatcher,
    daemon::messages::{
        AwaitDurable, ExtendRound, GetRoundFinished, JobToSubmit, Planned, Reconcile, Shutdown,
        StartRound, SubmissionLost, SubmitJobs,
    },
    daemon::registry::EventRegistry,
    daemon::state_replicator::StateReplicator,
};

/// Round timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTiming {
    /// Minimum time between round starts.
    pub round_delay: Duration,
    /// Extra wait after a round that could not be planned.
    pub error_backoff: Duration,
}

impl RoundTiming {
    /// How often the planner checks whether a round is due: a quarter of the delay,
    /// between 50 ms and 5 s.
    pub fn tick(&self) -> Duration {
        (self.round_delay / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }
}

/// What a tick achieved.
enum Progress {
    /// Follow-up jobs of the running round.
    FollowUps(Vec<JobToSubmit>),
    /// A new round (possibly without jobs).
    Round(Vec<JobToSubmit>),
}

/// The round-planner actor.
pub struct RoundPlanner {
    backend: Rc<dyn ClusterBackend>,
    planner: Rc<dyn Planner>,
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
        planner: Rc<dyn Planner>,
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
        let backend = self.backend.clone();
        let planner = self.planner.clone();
        let clock = self.clock;
        let replicator = self.replicator.as_ref().and_then(WeakAddr::upgrade);
        async move {
            // Follow-ups first: a round is not finished while it still needs some.
            let follow_ups = registry
                .send(ExtendRound {
                    now_ns: clock.now_ns(),
                })
                .await
                .map_err(|e| e.to_string())?;
            if !follow_ups.jobs.is_empty() {
                let jobs = durable_jobs(follow_ups, replicator.as_ref(), &registry).await;
                return Ok(Some(Progress::FollowUps(jobs)));
            }
            if !registry
                .send(GetRoundFinished)
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(None);
            }
            let cluster = backend.snapshot().await.map_err(|e| e.to_string())?;
            let context = registry
                .send(Reconcile {
                    cluster: cluster.clone(),
                    at: clock.now(),
                })
                .await
                .map_err(|e| e.to_string())?;
            let wanted = planner.jobs_to_query(&cluster);
            let job_statuses: BTreeMap<_, _> = if wanted.is_empty() {
                BTreeMap::new()
            } else {
                let statuses = backend
                    .job_statuses(wanted.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                wanted
                    .into_iter()
                    .zip(statuses)
                    .filter_map(|(id, status)| Some((id, status?)))
                    .collect()
            };
            let plan = planner.plan(PlanInput {
                cluster: &cluster,
                incidents: &context.incidents,
                key_prefix: &context.key_prefix,
                now_ns: clock.now_ns(),
                job_statuses: &job_statuses,
                node_loads: &context.node_loads,
                gate: &context.gate,
            });
            let planned = registry
                .send(StartRound {
                    plan,
                    at: clock.now(),
                })
                .await
                .map_err(|e| e.to_string())?;
            let jobs = durable_jobs(planned, replicator.as_ref(), &registry).await;
            Ok::<_, String>(Some(Progress::Round(jobs)))
        }
        .into_actor(self)
        .map(|result, act, _| {
            act.busy = false;
            match result {
                // Previous round still running: check again next tick.
                Ok(None) => {}
                Ok(Some(Progress::FollowUps(jobs))) if jobs.is_empty() => {}
                Ok(Some(Progress::FollowUps(jobs))) => {
                    info!(target: "maintd::planner", jobs = jobs.len(), "submitting follow-up jobs");
                    act.submit(jobs);
                }
                Ok(Some(Progress::Round(jobs))) => {
                    act.next_due = Instant::now() + act.timing.round_delay;
                    if !jobs.is_empty() {
                        info!(target: "maintd::planner", jobs = jobs.len(), "submitting round");
                        act.submit(jobs);
                    }
                }
                Err(e) => {
                    warn!(target: "maintd::planner", error = %e, "could not plan a round");
                    act.next_due =
                        Instant::now() + act.timing.round_delay + act.timing.error_backoff;
                }
            }
        })
        .spawn(ctx);
    }
}

/// The jobs of `planned` once the save recording them is durable; none if it does not
/// become durable in time: they are dropped from the state unsubmitted (a later round
/// plans them again), so no job runs that a new master could not know of.
async fn durable_jobs(
    planned: Planned,
    replicator: Option<&Addr<StateReplicator>>,
    registry: &Addr<EventRegistry>,
) -> Vec<JobToSubmit> {
    let Some(replicator) = replicator.filter(|_| !planned.jobs.is_empty()) else {
        return planned.jobs;
    };
    let durable = replicator
        .send(AwaitDurable {
            serial: planned.serial,
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match durable {
        Ok(()) => planned.jobs,
        Err(why) => {
            warn!(target: "maintd::planner", jobs = planned.jobs.len(), reason = %why, "jobs not submitted: their state is not on a majority of the master candidates");
            for job in planned.jobs {
                registry.do_send(SubmissionLost { key: job.key });
            }
            Vec::new()
        }
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
