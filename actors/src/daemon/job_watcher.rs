//! JobWatcher: submits a round's jobs at once and follows them until finalized, reporting
//! every status to the registry. Job ids live in the registry's persisted state, so a
//! restarted watcher (or daemon) picks them up again from there; a submission whose id was
//! never recorded is looked up in the queue by its key before anything else happens, so no
//! job is ever submitted twice.
//!
//! What recovery finds, what a submission's answer means and what a poll changes are the
//! domain's ([`maintd::daemon::watch`]); this actor holds the timers, queues submissions
//! until recovery is done, and carries the answers to the registry.

use std::{rc::Rc, time::Duration};

use actix::{prelude::*, WeakAddr, WeakRecipient};
use maintd::{
    backend::ClusterBackend,
    backoff::Backoff,
    clock::Clock,
    daemon::watch::{self, AfterFailure, JobWatch, RecoveryError},
    model::job::JobId,
};
use tracing::{error, info, warn};

use crate::daemon::messages::{
    ChildRestarted, GetRecovery, JobStatusesSeen, JobsSubmitted, Shutdown, SubmissionLost,
    SubmitJobs,
};
use crate::daemon::registry::EventRegistry;

/// The job-watcher actor.
pub struct JobWatcher {
    backend: Rc<dyn ClusterBackend>,
    /// Weak: the supervisor holds the registry's only strong address.
    registry: WeakAddr<EventRegistry>,
    restarts: Option<WeakRecipient<ChildRestarted>>,
    poll_interval: Duration,
    clock: Clock,
    /// The jobs followed, and how status queries go.
    watch: JobWatch,
    /// Recovery must finish before new submissions, so that old keys are resolved first.
    recovered: bool,
    queued: Vec<SubmitJobs>,
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
            watch: JobWatch::default(),
            recovered: false,
            queued: Vec::new(),
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
            let recovery = registry
                .send(GetRecovery)
                .await
                .map_err(|e| RecoveryError::Registry(e.to_string()))?;
            let recovered =
                watch::recover(recovery, |marker| backend.find_jobs_by_reason(marker)).await?;
            for key in recovered.lost {
                registry.do_send(SubmissionLost { key });
            }
            if !recovered.adopted.is_empty() {
                let jobs: Vec<JobId> = recovered.adopted.iter().map(|(_, id)| *id).collect();
                info!(target: "maintd::watcher", ?jobs, "adopted jobs submitted before a restart");
                let results = recovered
                    .adopted
                    .into_iter()
                    .map(|(key, id)| (key, Ok(id)))
                    .collect();
                registry.do_send(JobsSubmitted {
                    results,
                    at: clock.now(),
                });
            }
            Ok::<_, RecoveryError>(recovered.watch)
        }
        .into_actor(self)
        .map(|result, act, ctx| match result {
            Ok(ids) => {
                act.watch.watch(ids);
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
                let results = match watch::submitted(keys, result) {
                    Ok(results) => results,
                    Err(unconfirmed) => {
                        // Unknown outcome: the keys stay unconfirmed, and the restarted
                        // watcher's recovery looks them up by key.
                        match &unconfirmed {
                            watch::Unconfirmed::Miscounted { sent, answered } => {
                                error!(target: "maintd::watcher", sent, answered, "queue answered a different number of jobs")
                            }
                            watch::Unconfirmed::Interrupted(e) => {
                                warn!(target: "maintd::watcher", error = %e, "submission interrupted; will look the jobs up")
                            }
                        }
                        ctx.stop();
                        return;
                    }
                };
                act.watch.watch(results.iter().filter_map(|(_, r)| r.as_ref().ok().copied()));
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
        let ids = self.watch.to_query();
        if ids.is_empty() {
            return;
        }
        self.backend
            .job_statuses(ids.clone())
            .into_actor(self)
            .map(move |result, act, ctx| match result {
                Ok(statuses) => {
                    act.attempt = 0;
                    let (statuses, failed) = act.watch.seen(ids, statuses);
                    let at = act.clock.now();
                    // Why the failed jobs failed is asked before the statuses go on, and
                    // before the next poll: the incident's message carries it.
                    let backend = act.backend.clone();
                    let details =
                        watch::failure_details(failed, move |id| backend.job_failure(id));
                    ctx.wait(details.into_actor(act).map(move |failure_details, act, ctx| {
                        let Some(registry) = act.registry.upgrade() else {
                            return;
                        };
                        let seen = registry.send(JobStatusesSeen {
                            statuses,
                            failure_details,
                            at,
                        });
                        // The registry answers the jobs that waited past rounds.job_timeout.
                        ctx.spawn(
                            async move { seen.await.unwrap_or_default() }
                                .into_actor(act)
                                .map(|overdue, act, ctx| act.cancel(overdue, ctx)),
                        );
                    }));
                }
                Err(e) => {
                    let after = act.watch.query_failed();
                    let (AfterFailure::Retry { failures } | AfterFailure::Restart { failures }) = after;
                    warn!(target: "maintd::watcher", error = %e, failures, "could not query job statuses");
                    if let AfterFailure::Restart { .. } = after {
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
        // A fresh start: the registry's state says what to follow.
        self.watch = JobWatch::default();
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
