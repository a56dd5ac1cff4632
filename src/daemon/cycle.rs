//! The round cycle: one step of the round planner. Follow-up jobs of the running round
//! come first (a round is not finished while it still needs some); once the round is
//! finished, a fresh snapshot is reconciled with the incidents, the planner decides the
//! next round's jobs and the registry records them. Jobs are handed out only once the
//! save recording them is durable, so no job runs that a new master could not know of.
//!
//! The registry and the state replicator are reached through [`RoundSteps`], so the cycle
//! runs the same with actors or with a test's answers and delays.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::time::Instant;
use tracing::debug;

use crate::{
    backend::{BackendError, ClusterBackend},
    clock::Clock,
    model::{
        cluster::ClusterSnapshot,
        incident::{Incident, RoundPlan},
        opcode::Opcode,
        safety::SafetyGate,
    },
    planner::{PlanError, PlanRequest, PlannerThread},
};

/// One job ready for submission, identified by its submission key.
#[derive(Debug, Clone)]
pub struct JobToSubmit {
    /// Submission key (also in the reason trail).
    pub key: String,
    /// The opcodes.
    pub ops: Vec<Opcode>,
}

/// The registry's answer to starting or extending a round: the jobs to submit, saved in
/// the state of `serial`, which must be durable before they are submitted.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    /// The jobs (none: nothing to submit).
    pub jobs: Vec<JobToSubmit>,
    /// The serial of the save that recorded them.
    pub serial: u64,
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
    pub gate: SafetyGate,
}

/// The steps of a round that the registry and the state replicator perform.
pub trait RoundSteps {
    /// Record the follow-up jobs the running round needs now (`now_ns`: reason-trail
    /// timestamp).
    fn extend_round(&self, now_ns: i64) -> impl Future<Output = Result<Planned, CycleError>>;

    /// Whether every job of the current round is finalized.
    fn round_finished(&self) -> impl Future<Output = Result<bool, CycleError>>;

    /// Forget incidents `cluster` no longer justifies; what the planner needs.
    fn reconcile(
        &self,
        cluster: Arc<ClusterSnapshot>,
        at: f64,
    ) -> impl Future<Output = Result<PlanContext, CycleError>>;

    /// Record a planned round before its jobs are submitted.
    fn start_round(
        &self,
        plan: RoundPlan,
        at: f64,
    ) -> impl Future<Output = Result<Planned, CycleError>>;

    /// Answer once the save of `serial` is durable, or why it did not become durable in
    /// time. Without replication every save is durable at once.
    fn await_durable(&self, serial: u64) -> impl Future<Output = Result<(), String>>;

    /// The job of submission `key` will never be submitted.
    fn submission_lost(&self, key: String);
}

/// Why no round could be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CycleError {
    /// The registry did not answer (it is stopping).
    #[error("the registry did not answer: {0}")]
    Registry(String),
    /// The cluster could not be read.
    #[error("cannot take a snapshot of the cluster: {0}")]
    Snapshot(BackendError),
    /// The statuses of the jobs the planner needs could not be read.
    #[error("cannot query the statuses of the jobs the planner needs: {0}")]
    JobStatuses(BackendError),
    /// The planner did not answer.
    #[error("{0}")]
    Planner(PlanError),
}

/// Jobs to submit now.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The jobs, all to be submitted at once (none: nothing to submit).
    pub jobs: Vec<JobToSubmit>,
    /// Set when the planned jobs were dropped instead, unsubmitted.
    pub not_durable: Option<NotDurable>,
}

/// Planned jobs dropped because the save recording them did not become durable in time:
/// they are declared lost (a later round plans them again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDurable {
    /// How many.
    pub jobs: usize,
    /// Why the save is not durable.
    pub reason: String,
}

/// What one step of the cycle achieved.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The running round is not finished and needs nothing now.
    Waiting,
    /// Follow-up jobs of the running round.
    FollowUps(Batch),
    /// A new round started (possibly without jobs).
    Round(Batch),
}

/// One step of the round cycle; see the module doc. The plan is made on `planner`'s
/// thread: this future only awaits it.
pub async fn step<S: RoundSteps>(
    steps: &S,
    backend: &dyn ClusterBackend,
    planner: &PlannerThread,
    clock: Clock,
) -> Result<Progress, CycleError> {
    let follow_ups = steps.extend_round(clock.now_ns()).await?;
    if !follow_ups.jobs.is_empty() {
        return Ok(Progress::FollowUps(durable(steps, follow_ups).await));
    }
    if !steps.round_finished().await? {
        return Ok(Progress::Waiting);
    }
    let started = Instant::now();
    let cluster = Arc::new(backend.snapshot().await.map_err(CycleError::Snapshot)?);
    let snapshot_seconds = started.elapsed().as_secs_f64();
    let context = steps.reconcile(cluster.clone(), clock.now()).await?;
    let wanted = planner.jobs_to_query(&cluster);
    let job_statuses: BTreeMap<_, _> = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        let statuses = backend
            .job_statuses(wanted.clone())
            .await
            .map_err(CycleError::JobStatuses)?;
        // A job the queue does not know is left out: the planner reads it as unknown.
        wanted
            .into_iter()
            .zip(statuses)
            .filter_map(|(id, status)| Some((id, status?)))
            .collect()
    };
    debug!(target: "maintd::planner", incidents = context.incidents.len(), key_prefix = %context.key_prefix, snapshot_seconds, seconds = started.elapsed().as_secs_f64(), "planning a round");
    let plan = planner
        .plan(PlanRequest {
            cluster,
            incidents: context.incidents,
            key_prefix: context.key_prefix,
            now_ns: clock.now_ns(),
            job_statuses,
            node_loads: context.node_loads,
            gate: context.gate,
        })
        .await
        .map_err(CycleError::Planner)?;
    debug!(target: "maintd::planner", jobs = plan.jobs.len(), "round planned");
    let planned = steps.start_round(plan, clock.now()).await?;
    Ok(Progress::Round(durable(steps, planned).await))
}

/// The jobs of `planned` once the save recording them is durable; none if it does not
/// become durable in time: they are declared lost unsubmitted, so no job runs that a new
/// master could not know of.
async fn durable<S: RoundSteps>(steps: &S, planned: Planned) -> Batch {
    if planned.jobs.is_empty() {
        return Batch::default();
    }
    match steps.await_durable(planned.serial).await {
        Ok(()) => Batch {
            jobs: planned.jobs,
            not_durable: None,
        },
        Err(reason) => {
            let jobs = planned.jobs.len();
            for job in planned.jobs {
                steps.submission_lost(job.key);
            }
            Batch {
                jobs: Vec::new(),
                not_durable: Some(NotDurable { jobs, reason }),
            }
        }
    }
}

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

    /// When the next round may start, after a step that ended at `now` with `outcome`,
    /// the next round having been due at `due` before it. Only a new round or a failure
    /// moves it: a running round is checked again at the next tick.
    pub fn next_due(
        &self,
        outcome: &Result<Progress, CycleError>,
        now: Instant,
        due: Instant,
    ) -> Instant {
        match outcome {
            Ok(Progress::Waiting | Progress::FollowUps(_)) => due,
            Ok(Progress::Round(_)) => now + self.round_delay,
            Err(_) => now + self.round_delay + self.error_backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::{Cell, RefCell},
        sync::Mutex,
    };

    use futures_util::future::LocalBoxFuture;

    use super::*;
    use crate::{
        backend::Submission,
        model::job::{JobId, JobStatus},
        planner::{PlanInput, Planner},
    };

    fn job(key: &str) -> JobToSubmit {
        JobToSubmit {
            key: key.into(),
            ops: Vec::new(),
        }
    }

    fn planned(keys: &[&str], serial: u64) -> Planned {
        Planned {
            jobs: keys.iter().map(|k| job(k)).collect(),
            serial,
        }
    }

    fn keys(jobs: &[JobToSubmit]) -> Vec<&str> {
        jobs.iter().map(|j| j.key.as_str()).collect()
    }

    /// The registry and replicator: canned answers, a log of the calls, and how long a
    /// save takes to become durable.
    #[derive(Default)]
    struct Steps {
        follow_ups: Planned,
        running: bool,
        round: Planned,
        durable: Option<Result<(), String>>,
        durable_after: Duration,
        registry_gone: bool,
        calls: RefCell<Vec<String>>,
    }

    impl Steps {
        fn call(&self, what: String) -> Result<(), CycleError> {
            self.calls.borrow_mut().push(what);
            if self.registry_gone {
                return Err(CycleError::Registry("mailbox closed".into()));
            }
            Ok(())
        }

        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl RoundSteps for Steps {
        async fn extend_round(&self, now_ns: i64) -> Result<Planned, CycleError> {
            self.call(format!("extend at {now_ns}"))?;
            Ok(self.follow_ups.clone())
        }

        async fn round_finished(&self) -> Result<bool, CycleError> {
            self.call("finished?".into())?;
            Ok(!self.running)
        }

        async fn reconcile(
            &self,
            cluster: Arc<ClusterSnapshot>,
            at: f64,
        ) -> Result<PlanContext, CycleError> {
            self.call(format!("reconcile {} at {at}", cluster.master))?;
            Ok(PlanContext {
                incidents: Vec::new(),
                key_prefix: "r7-".into(),
                node_loads: BTreeMap::new(),
                gate: SafetyGate::open(),
            })
        }

        async fn start_round(&self, plan: RoundPlan, at: f64) -> Result<Planned, CycleError> {
            self.call(format!(
                "start with {} warnings at {at}",
                plan.warnings.len()
            ))?;
            Ok(self.round.clone())
        }

        async fn await_durable(&self, serial: u64) -> Result<(), String> {
            self.calls.borrow_mut().push(format!("durable {serial}?"));
            tokio::time::sleep(self.durable_after).await;
            self.durable.clone().unwrap_or(Ok(()))
        }

        fn submission_lost(&self, key: String) {
            self.calls.borrow_mut().push(format!("lost {key}"));
        }
    }

    /// A cluster whose snapshot and job statuses take `delay` and may fail.
    #[derive(Default)]
    struct Cluster {
        delay: Duration,
        snapshot_fails: bool,
        statuses: Option<Vec<Option<JobStatus>>>,
        snapshots: Cell<usize>,
        queried: RefCell<Vec<Vec<JobId>>>,
    }

    impl ClusterBackend for Cluster {
        fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
            self.snapshots.set(self.snapshots.get() + 1);
            let (delay, fails) = (self.delay, self.snapshot_fails);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fails {
                    return Err(BackendError::Transient("luxid restarting".into()));
                }
                Ok(ClusterSnapshot {
                    master: "node1".into(),
                    ..ClusterSnapshot::default()
                })
            })
        }

        fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
            Box::pin(async { Ok("node1".into()) })
        }

        fn submit_jobs(
            &self,
            _: Vec<Vec<Opcode>>,
        ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>> {
            Box::pin(async { Err(BackendError::Refused("a round step submits nothing".into())) })
        }

        fn job_statuses(
            &self,
            ids: Vec<JobId>,
        ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>> {
            self.queried.borrow_mut().push(ids);
            let (delay, statuses) = (self.delay, self.statuses.clone());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                statuses.ok_or_else(|| BackendError::Transient("luxid restarting".into()))
            })
        }

        fn find_jobs_by_reason(
            &self,
            _: String,
        ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    /// What a planner was given: key prefix, reason-trail time, job statuses.
    type Seen = (String, i64, BTreeMap<JobId, JobStatus>);

    /// A planner asking for the statuses of `query` and remembering what it was given.
    #[derive(Default)]
    struct Recorder {
        query: Vec<JobId>,
        seen: Mutex<Option<Seen>>,
    }

    impl Recorder {
        /// What it was given, if it planned.
        fn seen(&self) -> Option<Seen> {
            self.seen.lock().expect("not poisoned").clone()
        }

        /// It, on a planner thread.
        fn thread(self) -> PlannerThread {
            PlannerThread::new(Arc::new(self))
        }
    }

    impl Planner for Recorder {
        fn plan(&self, input: PlanInput<'_>) -> RoundPlan {
            *self.seen.lock().expect("not poisoned") = Some((
                input.key_prefix.to_owned(),
                input.now_ns,
                input.job_statuses.clone(),
            ));
            RoundPlan {
                warnings: vec!["planned".into()],
                ..RoundPlan::default()
            }
        }

        fn jobs_to_query(&self, _: &ClusterSnapshot) -> Vec<JobId> {
            self.query.clone()
        }
    }

    fn clock() -> Clock {
        Clock::starting_at(1000.0)
    }

    #[tokio::test(start_paused = true)]
    async fn follow_ups_come_first_and_the_round_is_not_checked() {
        let steps = Steps {
            follow_ups: planned(&["r3-f1", "r3-f2"], 41),
            ..Steps::default()
        };
        let cluster = Cluster::default();
        let progress = step(&steps, &cluster, &Recorder::default().thread(), clock()).await;
        let Ok(Progress::FollowUps(batch)) = progress else {
            panic!("expected follow-ups, got {progress:?}");
        };
        assert_eq!(keys(&batch.jobs), ["r3-f1", "r3-f2"]);
        assert_eq!(batch.not_durable, None);
        assert_eq!(steps.calls(), ["extend at 1000000000000", "durable 41?"]);
        assert_eq!(cluster.snapshots.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_round_waits_without_a_snapshot() {
        let steps = Steps {
            running: true,
            ..Steps::default()
        };
        let cluster = Cluster::default();
        let progress = step(&steps, &cluster, &Recorder::default().thread(), clock()).await;
        assert!(matches!(progress, Ok(Progress::Waiting)), "{progress:?}");
        assert_eq!(steps.calls(), ["extend at 1000000000000", "finished?"]);
        assert_eq!(cluster.snapshots.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_round_plans_the_next_with_a_fresh_snapshot_in_order() {
        let steps = Steps {
            round: planned(&["r7-1"], 42),
            ..Steps::default()
        };
        let cluster = Cluster {
            delay: Duration::from_secs(2),
            statuses: Some(vec![Some(JobStatus::Running), None]),
            ..Cluster::default()
        };
        let planner = Arc::new(Recorder {
            query: vec![JobId(5), JobId(6)],
            ..Recorder::default()
        });
        let started = Instant::now();
        let progress = step(
            &steps,
            &cluster,
            &PlannerThread::new(planner.clone()),
            clock(),
        )
        .await;
        let Ok(Progress::Round(batch)) = progress else {
            panic!("expected a round, got {progress:?}");
        };
        assert_eq!(keys(&batch.jobs), ["r7-1"]);
        // The snapshot and the status query took 2 s each; the clock moves with them.
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert_eq!(
            steps.calls(),
            [
                "extend at 1000000000000",
                "finished?",
                "reconcile node1 at 1002",
                "start with 1 warnings at 1004",
                "durable 42?",
            ]
        );
        assert_eq!(*cluster.queried.borrow(), [vec![JobId(5), JobId(6)]]);
        // The job the queue does not know is absent from the planner's statuses.
        let seen = planner.seen();
        assert_eq!(
            seen,
            Some((
                "r7-".to_owned(),
                1_004_000_000_000,
                BTreeMap::from([(JobId(5), JobStatus::Running)])
            ))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_status_query_when_the_planner_needs_none() {
        let steps = Steps::default();
        let cluster = Cluster::default();
        let planner = Arc::new(Recorder::default());
        let progress = step(
            &steps,
            &cluster,
            &PlannerThread::new(planner.clone()),
            clock(),
        )
        .await;
        let Ok(Progress::Round(batch)) = progress else {
            panic!("expected a round, got {progress:?}");
        };
        // A round without jobs waits for no save.
        assert!(batch.jobs.is_empty());
        assert_eq!(batch.not_durable, None);
        assert!(!steps.calls().iter().any(|c| c.starts_with("durable")));
        assert!(cluster.queried.borrow().is_empty());
        assert!(planner.seen().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_are_handed_out_only_once_their_save_is_durable() {
        let steps = Steps {
            round: planned(&["r7-1", "r7-2"], 42),
            durable_after: Duration::from_secs(3),
            ..Steps::default()
        };
        let started = Instant::now();
        let progress = step(
            &steps,
            &Cluster::default(),
            &Recorder::default().thread(),
            clock(),
        )
        .await;
        let Ok(Progress::Round(batch)) = progress else {
            panic!("expected a round, got {progress:?}");
        };
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(keys(&batch.jobs), ["r7-1", "r7-2"]);
        assert!(!steps.calls().iter().any(|c| c.starts_with("lost")));
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_whose_save_is_not_durable_are_declared_lost_unsubmitted() {
        let reason = "1 of 3 hold serial 42 (2 needed)".to_owned();
        for (follow_up, steps) in [
            (
                false,
                Steps {
                    round: planned(&["r7-1", "r7-2"], 42),
                    durable: Some(Err(reason.clone())),
                    durable_after: Duration::from_secs(10),
                    ..Steps::default()
                },
            ),
            (
                true,
                Steps {
                    follow_ups: planned(&["r7-1", "r7-2"], 42),
                    durable: Some(Err(reason.clone())),
                    durable_after: Duration::from_secs(10),
                    ..Steps::default()
                },
            ),
        ] {
            let progress = step(
                &steps,
                &Cluster::default(),
                &Recorder::default().thread(),
                clock(),
            )
            .await;
            let batch = match progress {
                Ok(Progress::Round(batch)) if !follow_up => batch,
                Ok(Progress::FollowUps(batch)) if follow_up => batch,
                other => panic!("unexpected {other:?}"),
            };
            assert!(batch.jobs.is_empty());
            assert_eq!(
                batch.not_durable,
                Some(NotDurable {
                    jobs: 2,
                    reason: reason.clone()
                })
            );
            let calls = steps.calls();
            assert_eq!(
                calls[calls.len() - 3..],
                ["durable 42?", "lost r7-1", "lost r7-2"]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_snapshot_or_status_query_plans_nothing() {
        let steps = Steps {
            round: planned(&["r7-1"], 42),
            ..Steps::default()
        };
        let broken = Cluster {
            snapshot_fails: true,
            ..Cluster::default()
        };
        let progress = step(&steps, &broken, &Recorder::default().thread(), clock()).await;
        assert!(
            matches!(
                progress,
                Err(CycleError::Snapshot(BackendError::Transient(_)))
            ),
            "{progress:?}"
        );
        assert_eq!(steps.calls(), ["extend at 1000000000000", "finished?"]);

        let steps = Steps {
            round: planned(&["r7-1"], 42),
            ..Steps::default()
        };
        let planner = Arc::new(Recorder {
            query: vec![JobId(5)],
            ..Recorder::default()
        });
        let thread = PlannerThread::new(planner.clone());
        let progress = step(&steps, &Cluster::default(), &thread, clock()).await;
        let Err(e) = progress else {
            panic!("expected an error, got {progress:?}");
        };
        assert!(matches!(e, CycleError::JobStatuses(_)));
        assert!(e.to_string().contains("luxid restarting"), "{e}");
        assert!(planner.seen().is_none());
        assert!(!steps.calls().iter().any(|c| c.starts_with("start")));
    }

    /// A planner that fails.
    struct Broken;

    impl Planner for Broken {
        fn plan(&self, _: PlanInput<'_>) -> RoundPlan {
            panic!("hail crashed");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_plan_starts_no_round() {
        let steps = Steps {
            round: planned(&["r7-1"], 42),
            ..Steps::default()
        };
        let thread = PlannerThread::new(Arc::new(Broken));
        let progress = step(&steps, &Cluster::default(), &thread, clock()).await;
        let Err(e) = progress else {
            panic!("expected an error, got {progress:?}");
        };
        assert_eq!(
            e,
            CycleError::Planner(PlanError::Panicked("hail crashed".into()))
        );
        assert_eq!(e.to_string(), "the planner failed: hail crashed");
        assert!(!steps.calls().iter().any(|c| c.starts_with("start")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_does_not_answer_ends_the_step() {
        let steps = Steps {
            registry_gone: true,
            ..Steps::default()
        };
        let cluster = Cluster::default();
        let progress = step(&steps, &cluster, &Recorder::default().thread(), clock()).await;
        assert_eq!(
            progress.map(|_| ()),
            Err(CycleError::Registry("mailbox closed".into()))
        );
        assert_eq!(steps.calls(), ["extend at 1000000000000"]);
        assert_eq!(cluster.snapshots.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_round_is_due_a_delay_after_a_round_and_later_after_an_error() {
        let timing = RoundTiming {
            round_delay: Duration::from_secs(30),
            error_backoff: Duration::from_secs(60),
        };
        let now = Instant::now();
        let due = now - Duration::from_secs(1);
        let batch = Batch {
            jobs: vec![job("r1-1")],
            not_durable: None,
        };
        assert_eq!(timing.next_due(&Ok(Progress::Waiting), now, due), due);
        assert_eq!(
            timing.next_due(&Ok(Progress::FollowUps(batch.clone())), now, due),
            due
        );
        assert_eq!(
            timing.next_due(&Ok(Progress::Round(batch)), now, due),
            now + Duration::from_secs(30)
        );
        // A round without jobs counts as a round.
        assert_eq!(
            timing.next_due(&Ok(Progress::Round(Batch::default())), now, due),
            now + Duration::from_secs(30)
        );
        assert_eq!(
            timing.next_due(&Err(CycleError::Registry("gone".into())), now, due),
            now + Duration::from_secs(90)
        );
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_delay_within_bounds() {
        let timing = |secs: f64| RoundTiming {
            round_delay: Duration::from_secs_f64(secs),
            error_backoff: Duration::ZERO,
        };
        assert_eq!(timing(8.0).tick(), Duration::from_secs(2));
        assert_eq!(timing(0.0).tick(), Duration::from_millis(50));
        assert_eq!(timing(600.0).tick(), Duration::from_secs(5));
    }
}
