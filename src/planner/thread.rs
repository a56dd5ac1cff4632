//! The planner on a thread of its own. At 1,000 nodes a plan with balancing takes long
//! enough to stall everything that shares the daemon's actor thread (the HTTP API, the
//! pollers, the signal handler), so the round hands the planner an owned
//! [`PlanRequest`] and awaits its answer instead.
//!
//! The thread is never joined: maintd stops at once on SIGTERM, even mid-plan, and the
//! process takes the thread with it. A plan nobody awaits any more is abandoned: not
//! started if it is still queued, its answer dropped otherwise.
//!
//! The thread runs at a lower priority ([`NICENESS`] more than the daemon's), as do the
//! threads a balancing step starts from it: on a busy machine the API, the pollers and
//! the job watcher come first, and a plan only takes the cores left over.
//!
//! The answer is awaited through a blocking task of the runtime. Besides keeping the
//! actor thread free, that stops tokio's paused clock (virtual time, in tests) from
//! jumping ahead while the plan is computed, so a round's timing does not depend on how
//! fast the machine plans.

use std::{
    any::Any,
    collections::BTreeMap,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex, PoisonError,
    },
};

use thiserror::Error;

use super::{PlanInput, Planner};
use crate::model::{
    cluster::ClusterSnapshot,
    incident::{Incident, RoundPlan},
    job::{JobId, JobStatus},
    safety::SafetyGate,
};

/// Everything a plan is made from, owned, so that it can cross to the planner thread.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The cluster now (shared with the registry, which reconciled it).
    pub cluster: Arc<ClusterSnapshot>,
    /// Every incident not yet forgotten.
    pub incidents: Vec<Incident>,
    /// Prefix for submission keys, unique per state and round.
    pub key_prefix: String,
    /// Reason-trail timestamp, nanoseconds.
    pub now_ns: i64,
    /// Status of the jobs [`Planner::jobs_to_query`] asked for.
    pub job_statuses: BTreeMap<JobId, JobStatus>,
    /// The latest `cpu-avg-load` total of each node that reported one.
    pub node_loads: BTreeMap<String, f64>,
    /// What the safety layer allows.
    pub gate: SafetyGate,
}

impl PlanRequest {
    /// The planner's view of the request.
    pub fn input(&self) -> PlanInput<'_> {
        PlanInput {
            cluster: &self.cluster,
            incidents: &self.incidents,
            key_prefix: &self.key_prefix,
            now_ns: self.now_ns,
            job_statuses: &self.job_statuses,
            node_loads: &self.node_loads,
            gate: &self.gate,
        }
    }
}

/// Why a plan did not come back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The thread could not be started (the system is out of threads or memory).
    #[error("cannot start the planner thread: {0}")]
    NoThread(String),
    /// The planner panicked; the thread goes on with the next request.
    #[error("the planner failed: {0}")]
    Panicked(String),
    /// The runtime stopped awaiting the answer (maintd is stopping).
    #[error("planning abandoned: maintd is stopping")]
    Abandoned,
}

/// What the planner thread answers.
enum Answer {
    Planned(RoundPlan),
    Panicked(String),
    /// Sent by the awaiting side when it goes away, to release its waiting task.
    Abandoned,
}

/// One request on its way to the planner thread.
struct Job {
    request: PlanRequest,
    answer: mpsc::Sender<Answer>,
    abandoned: Arc<AtomicBool>,
}

/// A planner running on a thread of its own, started at the first plan (and again
/// should it ever be gone). Clones share the thread; requests are planned one at a time,
/// in order.
#[derive(Clone)]
pub struct PlannerThread {
    planner: Arc<dyn Planner>,
    jobs: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl std::fmt::Debug for PlannerThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannerThread").finish_non_exhaustive()
    }
}

/// Name of the thread (in `top -H`, `ps -L`).
pub const THREAD_NAME: &str = "maintd-planner";

/// How much nicer than the rest of maintd the planner thread runs.
pub const NICENESS: i32 = 10;

impl PlannerThread {
    /// `planner`, to be run on its own thread.
    pub fn new(planner: Arc<dyn Planner>) -> Self {
        PlannerThread {
            planner,
            jobs: Arc::new(Mutex::new(None)),
        }
    }

    /// The jobs whose status the next plan needs (cheap: asked on the caller's thread).
    pub fn jobs_to_query(&self, cluster: &ClusterSnapshot) -> Vec<JobId> {
        self.planner.jobs_to_query(cluster)
    }

    /// Plan `request` on the planner thread. Dropping the future abandons the plan.
    pub async fn plan(&self, request: PlanRequest) -> Result<RoundPlan, PlanError> {
        let (answer, answers) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        self.send(Job {
            request,
            answer: answer.clone(),
            abandoned: abandoned.clone(),
        })?;
        let _abandon = AbandonOnDrop { answer, abandoned };
        let waited = tokio::task::spawn_blocking(move || answers.recv()).await;
        match waited {
            Ok(Ok(Answer::Planned(plan))) => Ok(plan),
            Ok(Ok(Answer::Panicked(why))) => Err(PlanError::Panicked(why)),
            _ => Err(PlanError::Abandoned),
        }
    }

    /// Queue `job`, starting the thread if there is none.
    fn send(&self, job: Job) -> Result<(), PlanError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match jobs.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                // The thread is gone (it cannot be, short of a bug): start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (sender, receiver) = mpsc::channel();
        let planner = self.planner.clone();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || serve(&*planner, &receiver))
            .map_err(|e| PlanError::NoThread(e.to_string()))?;
        // The thread holds the receiver until every sender is gone: this cannot fail.
        let _ = sender.send(job);
        *jobs = Some(sender);
        Ok(())
    }
}

/// Releases the task awaiting the answer, and tells the thread not to start the plan,
/// when the awaiting future is dropped. After an answer it does nothing.
struct AbandonOnDrop {
    answer: mpsc::Sender<Answer>,
    abandoned: Arc<AtomicBool>,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        let _ = self.answer.send(Answer::Abandoned);
    }
}

/// The planner thread: plans each request in turn until every sender is gone.
fn serve(planner: &dyn Planner, jobs: &mpsc::Receiver<Job>) {
    lower_priority();
    for job in jobs {
        if job.abandoned.load(Ordering::Relaxed) {
            continue;
        }
        let answer = match catch_unwind(AssertUnwindSafe(|| planner.plan(job.request.input()))) {
            Ok(plan) => Answer::Planned(plan),
            Err(panic) => Answer::Panicked(panic_message(panic.as_ref())),
        };
        let _ = job.answer.send(answer);
    }
}

/// Make the calling thread (and the threads it starts later) [`NICENESS`] nicer. On
/// Linux the nice value is the thread's own. Failing costs only the priority.
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    if let Ok(nice) = getpriority_process(None) {
        let _ = setpriority_process(None, (nice + NICENESS).min(19));
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests;
