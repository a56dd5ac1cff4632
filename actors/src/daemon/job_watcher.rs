//! JobWatcher: submits a round's jobs at once and follows them until finalized, reporting
//! every status to the registry. Job ids live in the registry's persisted state, so a
//! restarted watcher (or daemon) picks them up again from there; a submission whose id was
//! never recorded is looked up in the queue by its key before anything else happens, so no
//! job is ever submitted twice.

use std::{collections::BTreeSet, rc::Rc, time::Duration};

use actix::{prelude::*, WeakAddr, WeakRecipient};
use maintd::{
    backend::ClusterBackend,
    backoff::Backoff,
    clock::Clock,
    model::{
        incident::submission_marker,
        job::{JobId, JobStatus},
    },
};
use tracing::{error, info, warn};

use crate::daemon::messages::{
    ChildRestarted, GetRecovery, JobStatusesSeen, JobsSubmitted, Shutdown, SubmissionLost,
    SubmitJobs,
};
use crate::daemon::registry::EventRegistry;

/// Consecutive failed status queries before the watcher restarts itself with backoff.
const FAILURES_BEFORE_RESTART: u32 = 3;

/// The job-watcher actor.
pub struct JobWatcher {
    backend: Rc<dyn ClusterBackend>,
    /// Weak: the supervisor holds the registry's only strong address.
    registry: WeakAddr<EventRegistry>,
    restarts: Option<WeakRecipient<ChildRestarted>>,
    poll_interval: Duration,
    clock: Clock,
    watching: BTreeSet<JobId>,
    /// Recovery must finish before new submissions, so that old keys are resolved first.
    recovered: bool,
    queued: Vec<SubmitJobs>,
    failures: u32,
    attempt: u32,
}

impl JobWatcher {
    /// A watcher submitting through `backend` and reporting to `registry`.
    pub fn new(
        backend: Rc<dyn ClusterBackend>,
        registry: Addr<EventRegistry>,
        restarts: Option<WeakRecipient<ChildRestarted>>,
        poll_interval: Duration,
        clock: Clock,
    ) -> Self {
        JobWatcher {
            backend,
            registry: registry.downgrade(),
            restarts,
            poll_interval,
            clock,
            watching: BTreeSet::new(),
            recovered: false,
            queued: Vec::new(),
            failures: 0,
            attempt: 0,
        }
    }

    /// poll_interval × 2^attempt: two poll intervals after the first restart, doubling up
    /// to 64 of them and never more than 300 s.
    fn backoff(&self) -> Duration {
        Backoff::new(
            self.poll_interval,
            self.poll_interval
                .saturating_mul(64)
                .min(Duration::from_secs(300)),
        )
        .delay(self.attempt.saturating_add(1))
    }

    /// Re-read unfinished jobs from the registry and resolve unconfirmed submissions.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let Some(registry) = self.registry.upgrade() else {
            // The supervisor dropped the registry: work is over.
            ctx.stop();
            return;
        };
        let backend = self.backend.clone();
        let clock = self.clock;
        async move {
            let recovery = registry.send(GetRecovery).await.map_err(|e| e.to_string())?;
            let mut found = Vec::new();
            for key in recovery.unconfirmed {
                let ids = backend
                    .find_jobs_by_reason(submission_marker(&key))
                    .await
                    .map_err(|e| e.to_string())?;
                match ids.first() {
                    Some(id) => found.push((key, Ok(*id))),
                    None => registry.do_send(SubmissionLost { key }),
                }
            }
            let adopted: Vec<JobId> = found.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
            if !found.is_empty() {
                info!(target: "maintd::watcher", jobs = ?adopted, "adopted jobs submitted before a restart");
                registry.do_send(JobsSubmitted { results: found, at: clock.now() });
            }
            Ok::<_, String>(recovery.unfinished.into_iter().chain(adopted).collect::<Vec<_>>())
        }
        .into_actor(self)
        .map(|result, act, ctx| match result {
            Ok(ids) => {
                act.watching.extend(ids);
                act.recovered = true;
                for batch in std::mem::take(&mut act.queued) {
                    act.submit(batch, ctx);
                }
                ctx.run_interval(act.poll_interval, Self::poll_statuses);
            }
            Err(e) => {
                error!(target: "maintd::watcher", error = %e, "could not recover jobs; restarting");
                ctx.stop();
            }
        })
        .wait(ctx);
    }

    fn submit(&mut self, batch: SubmitJobs, ctx: &mut Context<Self>) {
        let (keys, ops): (Vec<String>, Vec<_>) =
            batch.jobs.into_iter().map(|j| (j.key, j.ops)).unzip();
        if keys.is_empty() {
            return;
        }
        let submission = self.backend.submit_jobs(ops);
        submission
            .into_actor(self)
            .map(move |result, act, ctx| {
                let results: Vec<_> = match result {
                    Ok(results) if results.len() == keys.len() => keys.into_iter().zip(results).collect(),
                    Ok(results) => {
                        error!(target: "maintd::watcher", sent = keys.len(), answered = results.len(), "queue answered a different number of jobs");
                        // Unknown outcome: leave the keys unconfirmed and let recovery look them up.
                        ctx.stop();
                        return;
                    }
                    Err(e) if e.is_retryable() => {
                        // The jobs may or may not be in the queue: recovery finds out by key.
                        warn!(target: "maintd::watcher", error = %e, "submission interrupted; will look the jobs up");
                        ctx.stop();
                        return;
                    }
                    Err(e) => keys.into_iter().map(|k| (k, Err(e.to_string()))).collect(),
                };
                act.watching.extend(results.iter().filter_map(|(_, r)| r.as_ref().ok().copied()));
                if let Some(registry) = act.registry.upgrade() {
                    registry.do_send(JobsSubmitted { results, at: act.clock.now() });
                }
            })
            .wait(ctx);
    }

    /// Cancel jobs that waited too long; the next status poll sees the outcome.
    fn cancel(&mut self, ids: Vec<JobId>, ctx: &mut Context<Self>) {
        for id in ids {
            let backend = self.backend.clone();
            ctx.spawn(
                async move { (id, backend.cancel_job(id).await) }
                    .into_actor(self)
                    .map(|(id, outcome), _, _| match outcome {
                        Ok(outcome) => {
                            info!(target: "maintd::watcher", job = %id, ?outcome, "cancel requested")
                        }
                        Err(e) => {
                            warn!(target: "maintd::watcher", job = %id, error = %e, "could not cancel the job")
                        }
                    }),
            );
        }
    }

    fn poll_statuses(&mut self, ctx: &mut Context<Self>) {
        if self.watching.is_empty() {
            return;
        }
        let ids: Vec<JobId> = self.watching.iter().copied().collect();
        self.backend
            .job_statuses(ids.clone())
            .into_actor(self)
            .map(move |result, act, ctx| match result {
                Ok(statuses) => {
                    act.failures = 0;
                    act.attempt = 0;
                    let statuses: Vec<_> = ids.into_iter().zip(statuses).collect();
                    for (id, status) in &statuses {
                        if status.is_none_or(|s| s.is_finalized()) {
                            act.watching.remove(id);
                        }
                    }
                    let failure_details = statuses
                        .iter()
                        .filter(|(_, status)| *status == Some(JobStatus::Error))
                        .filter_map(|(id, _)| act.backend.failure_detail(*id).map(|d| (*id, d)))
                        .collect();
                    let Some(registry) = act.registry.upgrade() else {
                        return;
                    };
                    let seen = registry.send(JobStatusesSeen {
                        statuses,
                        failure_details,
                        at: act.clock.now(),
                    });
                    // The registry answers the jobs that waited past rounds.job_timeout.
                    ctx.spawn(
                        async move { seen.await.unwrap_or_default() }
                            .into_actor(act)
                            .map(|overdue, act, ctx| act.cancel(overdue, ctx)),
                    );
                }
                Err(e) => {
                    act.failures += 1;
                    warn!(target: "maintd::watcher", error = %e, failures = act.failures, "could not query job statuses");
                    if act.failures >= FAILURES_BEFORE_RESTART {
                        ctx.stop();
                    }
                }
            })
            .wait(ctx);
    }
}

impl Actor for JobWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.recovered = false;
        self.watching.clear();
        let delay = if self.attempt == 0 {
            Duration::ZERO
        } else {
            self.backoff()
        };
        ctx.run_later(delay, Self::recover);
    }
}

impl Supervised for JobWatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.attempt = self.attempt.saturating_add(1);
        self.failures = 0;
        if let Some(restarts) = self.restarts.as_ref().and_then(WeakRecipient::upgrade) {
            restarts.do_send(ChildRestarted {
                child: "job-watcher".into(),
                attempt: self.attempt,
                backoff: self.backoff(),
            });
        }
    }
}

impl Handler<SubmitJobs> for JobWatcher {
    type Result = ();

    fn handle(&mut self, msg: SubmitJobs, ctx: &mut Context<Self>) {
        if self.recovered {
            self.submit(msg, ctx);
        } else {
            self.queued.push(msg);
        }
    }
}

impl Handler<Shutdown> for JobWatcher {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
