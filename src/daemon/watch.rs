//! The job watcher's decisions: what a (re)started watcher picks up, what a submission's
//! answer means, and what each status poll changes.
//!
//! Job ids live in the registry's persisted state. A submission whose id was never
//! recorded (the daemon stopped between submitting and recording) is looked up in
//! Ganeti's queue by the marker its reason trail carries before anything else happens, so
//! no job is ever submitted twice.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
};

use thiserror::Error;

use crate::{
    backend::{BackendError, Submission},
    model::{
        incident::submission_marker,
        job::{JobId, JobStatus},
        job_failure::JobFailure,
    },
};

/// What a (re)started watcher must pick up, from the registry's state.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Submitted, not finalized.
    pub unfinished: Vec<JobId>,
    /// Planned, id never recorded.
    pub unconfirmed: Vec<String>,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Submissions found in the queue: their key and job id, to record as submitted.
    pub adopted: Vec<(String, JobId)>,
    /// Submissions the queue does not know: they never reached it.
    pub lost: Vec<String>,
    /// Every job to watch: the unfinished ones and the adopted.
    pub watch: Vec<JobId>,
}

/// Why recovery stopped; nothing of it is to be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecoveryError {
    /// The registry did not answer (it is stopping).
    #[error("the registry did not answer: {0}")]
    Registry(String),
    /// The queue could not be searched for a submission.
    #[error("cannot look up submission {key} in the queue: {source}")]
    Lookup {
        /// The submission key.
        key: String,
        /// What went wrong.
        source: BackendError,
    },
}

/// Look up each unconfirmed submission of `recovery` with `find` (a reason-trail marker →
/// the ids of the jobs carrying it). All of them are looked up before anything is
/// decided, so a failed lookup leaves nothing half applied: the next attempt starts over.
pub async fn recover<F, Fut>(recovery: Recovery, find: F) -> Result<Recovered, RecoveryError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Vec<JobId>, BackendError>>,
{
    let mut adopted = Vec::new();
    let mut lost = Vec::new();
    for key in recovery.unconfirmed {
        match find(submission_marker(&key)).await {
            // Several jobs with one key cannot come from maintd, which submits each key
            // once; the first is the one it submitted.
            Ok(ids) => match ids.first() {
                Some(id) => adopted.push((key, *id)),
                None => lost.push(key),
            },
            Err(source) => return Err(RecoveryError::Lookup { key, source }),
        }
    }
    let watch = recovery
        .unfinished
        .into_iter()
        .chain(adopted.iter().map(|(_, id)| *id))
        .collect();
    Ok(Recovered {
        adopted,
        lost,
        watch,
    })
}

/// A submission whose outcome is unknown: the jobs may or may not be in the queue. Their
/// keys stay unconfirmed, for recovery to look them up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unconfirmed {
    /// The queue answered for a different number of jobs than were sent.
    #[error("the queue answered {answered} results for {sent} jobs")]
    Miscounted {
        /// Jobs sent.
        sent: usize,
        /// Results answered.
        answered: usize,
    },
    /// The submission was interrupted.
    #[error("submission interrupted: {0}")]
    Interrupted(BackendError),
}

/// What the queue's answer `result` to submitting the jobs of `keys` at once means: per
/// key, its job id or why the queue refused it; or that the outcome is unknown.
pub fn submitted(
    keys: Vec<String>,
    result: Result<Vec<Submission>, BackendError>,
) -> Result<Vec<(String, Submission)>, Unconfirmed> {
    match result {
        Ok(results) if results.len() == keys.len() => Ok(keys.into_iter().zip(results).collect()),
        Ok(results) => Err(Unconfirmed::Miscounted {
            sent: keys.len(),
            answered: results.len(),
        }),
        Err(e) if e.is_retryable() => Err(Unconfirmed::Interrupted(e)),
        // Refused as a whole: none of them is in the queue.
        Err(e) => Ok(keys.into_iter().map(|k| (k, Err(e.to_string()))).collect()),
    }
}

/// Consecutive failed status queries before the watcher restarts itself with backoff.
pub const FAILURES_BEFORE_RESTART: u32 = 3;

/// The jobs a watcher follows, and how its status queries go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobWatch {
    watching: BTreeSet<JobId>,
    failures: u32,
}

/// What to do after a failed status query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Poll again at the next interval; `failures` in a row so far.
    Retry {
        /// Failed queries in a row.
        failures: u32,
    },
    /// Too many failures in a row: restart the watcher (with backoff).
    Restart {
        /// Failed queries in a row.
        failures: u32,
    },
}

impl JobWatch {
    /// Follow `ids` too.
    pub fn watch(&mut self, ids: impl IntoIterator<Item = JobId>) {
        self.watching.extend(ids);
    }

    /// The jobs to query, in id order; none: no query needed.
    pub fn to_query(&self) -> Vec<JobId> {
        self.watching.iter().copied().collect()
    }

    /// The queue answered `statuses` for the jobs `ids` (in order; `None`: unknown to
    /// the queue). Finalized and unknown jobs are no longer followed. Returns each job
    /// with its status, for the registry, and the jobs that ended in error.
    pub fn seen(
        &mut self,
        ids: Vec<JobId>,
        statuses: Vec<Option<JobStatus>>,
    ) -> (Vec<(JobId, Option<JobStatus>)>, Vec<JobId>) {
        self.failures = 0;
        let statuses: Vec<_> = ids.into_iter().zip(statuses).collect();
        for (id, status) in &statuses {
            if status.is_none_or(|s| s.is_finalized()) {
                self.watching.remove(id);
            }
        }
        let failed = statuses
            .iter()
            .filter(|(_, status)| *status == Some(JobStatus::Error))
            .map(|(id, _)| *id)
            .collect();
        (statuses, failed)
    }

    /// A status query failed.
    pub fn query_failed(&mut self) -> AfterFailure {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= FAILURES_BEFORE_RESTART {
            AfterFailure::Restart {
                failures: self.failures,
            }
        } else {
            AfterFailure::Retry {
                failures: self.failures,
            }
        }
    }
}

/// Why each of the `failed` jobs failed, in one line each (see [`JobFailure::summary`]),
/// asking `ask` job by job. A job whose failure cannot be learnt (the backend cannot tell, or
/// asking failed, which is logged) has no entry: its incident says only that it ended in
/// error, and is failed all the same.
pub async fn failure_details<F, Fut>(failed: Vec<JobId>, ask: F) -> BTreeMap<JobId, String>
where
    F: Fn(JobId) -> Fut,
    Fut: Future<Output = Result<Option<JobFailure>, BackendError>>,
{
    let mut details = BTreeMap::new();
    for id in failed {
        match ask(id).await {
            Ok(Some(failure)) => {
                details.insert(id, failure.summary());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "maintd::watcher", job = %id, error = %e, "could not learn why the job failed")
            }
        }
    }
    details
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, time::Duration};

    use futures_util::future::LocalBoxFuture;
    use tokio::time::Instant;

    use super::*;

    /// A queue holding job 7 for key `r1-1` and job 9 for `r1-3`, answering each lookup
    /// after 1 s, failing for `broken`.
    fn queue<'a>(
        asked: &'a RefCell<Vec<String>>,
        broken: &'a str,
    ) -> impl Fn(String) -> LocalBoxFuture<'a, Result<Vec<JobId>, BackendError>> {
        move |marker: String| {
            asked.borrow_mut().push(marker.clone());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if marker == submission_marker(broken) {
                    return Err(BackendError::Transient("luxid restarting".into()));
                }
                Ok(match marker.as_str() {
                    "submission r1-1)" => vec![JobId(7)],
                    "submission r1-3)" => vec![JobId(9), JobId(10)],
                    _ => Vec::new(),
                })
            })
        }
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| (*k).to_owned()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn found_submissions_are_adopted_and_missing_ones_declared_lost() {
        let asked = RefCell::new(Vec::new());
        let recovery = Recovery {
            unfinished: vec![JobId(3)],
            unconfirmed: keys(&["r1-1", "r1-2", "r1-3"]),
        };
        let started = Instant::now();
        let recovered = recover(recovery, queue(&asked, "none")).await;
        assert_eq!(
            recovered,
            Ok(Recovered {
                adopted: vec![("r1-1".into(), JobId(7)), ("r1-3".into(), JobId(9))],
                lost: keys(&["r1-2"]),
                watch: vec![JobId(3), JobId(7), JobId(9)],
            })
        );
        // One lookup per key, by its reason-trail marker, one after the other.
        assert_eq!(
            *asked.borrow(),
            ["submission r1-1)", "submission r1-2)", "submission r1-3)"]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_to_look_up_watches_the_unfinished_jobs() {
        let asked = RefCell::new(Vec::new());
        let recovery = Recovery {
            unfinished: vec![JobId(3), JobId(4)],
            unconfirmed: Vec::new(),
        };
        let recovered = recover(recovery, queue(&asked, "none")).await;
        assert_eq!(
            recovered,
            Ok(Recovered {
                watch: vec![JobId(3), JobId(4)],
                ..Recovered::default()
            })
        );
        assert!(asked.borrow().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_stops_recovery_with_nothing_applied() {
        let asked = RefCell::new(Vec::new());
        let recovery = Recovery {
            unfinished: vec![JobId(3)],
            unconfirmed: keys(&["r1-1", "r1-2", "r1-3", "r1-4"]),
        };
        let recovered = recover(recovery, queue(&asked, "r1-3")).await;
        let Err(e) = recovered else {
            panic!("expected an error, got {recovered:?}");
        };
        // Neither the adopted r1-1 nor the lost r1-2 comes back: no half-applied result.
        assert_eq!(
            e,
            RecoveryError::Lookup {
                key: "r1-3".into(),
                source: BackendError::Transient("luxid restarting".into())
            }
        );
        assert!(e.to_string().contains("r1-3"), "{e}");
        // The lookups stop at the failure.
        assert_eq!(asked.borrow().len(), 3);
    }

    #[test]
    fn a_submission_answer_is_recorded_per_key_or_left_for_recovery() {
        let sent = || keys(&["r2-1", "r2-2"]);
        assert_eq!(
            submitted(sent(), Ok(vec![Ok(JobId(11)), Err("bad opcode".into())])),
            Ok(vec![
                ("r2-1".into(), Ok(JobId(11))),
                ("r2-2".into(), Err("bad opcode".into()))
            ])
        );
        assert_eq!(
            submitted(sent(), Ok(vec![Ok(JobId(11))])),
            Err(Unconfirmed::Miscounted {
                sent: 2,
                answered: 1
            })
        );
        let gone = BackendError::Transient("socket closed".into());
        assert_eq!(
            submitted(sent(), Err(gone.clone())),
            Err(Unconfirmed::Interrupted(gone))
        );
        let refused = BackendError::Refused("queue drained".into());
        assert_eq!(
            submitted(sent(), Err(refused.clone())),
            Ok(vec![
                ("r2-1".into(), Err(refused.to_string())),
                ("r2-2".into(), Err(refused.to_string()))
            ])
        );
    }

    #[test]
    fn finalized_and_unknown_jobs_are_no_longer_watched() {
        let mut watch = JobWatch::default();
        assert!(watch.to_query().is_empty());
        watch.watch([JobId(4), JobId(1), JobId(2), JobId(3)]);
        let ids = watch.to_query();
        assert_eq!(ids, [JobId(1), JobId(2), JobId(3), JobId(4)]);
        let (statuses, failed) = watch.seen(
            ids,
            vec![
                Some(JobStatus::Running),
                Some(JobStatus::Success),
                Some(JobStatus::Error),
                None,
            ],
        );
        assert_eq!(
            statuses,
            [
                (JobId(1), Some(JobStatus::Running)),
                (JobId(2), Some(JobStatus::Success)),
                (JobId(3), Some(JobStatus::Error)),
                (JobId(4), None),
            ]
        );
        assert_eq!(failed, [JobId(3)]);
        assert_eq!(watch.to_query(), [JobId(1)]);
        // A short answer leaves the jobs without a status watched.
        watch.watch([JobId(5)]);
        let (statuses, _) = watch.seen(watch.to_query(), vec![Some(JobStatus::Canceled)]);
        assert_eq!(statuses, [(JobId(1), Some(JobStatus::Canceled))]);
        assert_eq!(watch.to_query(), [JobId(5)]);
    }

    #[test]
    fn three_failed_queries_in_a_row_restart_the_watcher() {
        let mut watch = JobWatch::default();
        watch.watch([JobId(1)]);
        assert_eq!(watch.query_failed(), AfterFailure::Retry { failures: 1 });
        assert_eq!(watch.query_failed(), AfterFailure::Retry { failures: 2 });
        // An answer in between starts the count again.
        watch.seen(vec![JobId(1)], vec![Some(JobStatus::Running)]);
        assert_eq!(watch.query_failed(), AfterFailure::Retry { failures: 1 });
        assert_eq!(watch.query_failed(), AfterFailure::Retry { failures: 2 });
        assert_eq!(watch.query_failed(), AfterFailure::Restart { failures: 3 });
    }

    #[tokio::test]
    async fn failure_details_keep_what_could_be_learnt() {
        let asked = RefCell::new(Vec::new());
        let details = failure_details(vec![JobId(3), JobId(4), JobId(5)], |id| {
            asked.borrow_mut().push(id);
            async move {
                match id.0 {
                    3 => Ok(Some(JobFailure {
                        opcode: Some("OP_INSTANCE_MIGRATE".into()),
                        target: Some("inst3".into()),
                        error: "OpPrereqError: Can't use drained node node6\n(wrong_state)".into(),
                    })),
                    4 => Err(BackendError::Transient("luxid restarting".into())),
                    _ => Ok(None),
                }
            }
        })
        .await;
        assert_eq!(*asked.borrow(), [JobId(3), JobId(4), JobId(5)]);
        assert_eq!(
            details,
            BTreeMap::from([(
                JobId(3),
                "OP_INSTANCE_MIGRATE inst3: OpPrereqError: Can't use drained node node6 (wrong_state)"
                    .to_owned()
            )])
        );
    }
}
