//! In-process adapters over a shared [`SimCluster`](crate::sim::SimCluster): the job
//! queue and configuration ([`SimBackend`]) and the per-node diagnose reports
//! ([`SimDiagnose`]), both reading the time from a [`Clock`].
//!
//! They answer synchronously; the futures are ready at once.

use futures_util::future::{ready, FutureExt, LocalBoxFuture};
use serde_json::{json, Value};

use super::{
    BackendError, CancelOutcome, ClusterBackend, DiagnoseSource, FetchError, LoadSource, Submission,
};
use crate::clock::Clock;
use crate::model::cluster::ClusterSnapshot;
use crate::model::diagnose::{parse_report, Diagnose, DEFAULT_MAX_REPORT_BYTES};
use crate::model::job::{JobId, JobStatus};
use crate::model::job_failure::JobFailure;
use crate::model::load::{parse_cpu_load, CpuLoad};
use crate::model::opcode::Opcode;
use crate::sim::{lock_sim, MonitoringReply, SharedSim, SimError};

/// [`ClusterBackend`] over the simulator.
#[derive(Debug, Clone)]
pub struct SimBackend {
    sim: SharedSim,
    clock: Clock,
}

impl SimBackend {
    /// Adapter over `sim`, taking `now` from `clock`.
    pub fn new(sim: SharedSim, clock: Clock) -> Self {
        SimBackend { sim, clock }
    }
}

impl ClusterBackend for SimBackend {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
        let snapshot = lock_sim(&self.sim).snapshot(self.clock.now());
        ready(Ok(snapshot)).boxed_local()
    }

    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
        let master = lock_sim(&self.sim).master(self.clock.now());
        ready(Ok(master)).boxed_local()
    }

    fn submit_jobs(
        &self,
        jobs: Vec<Vec<Opcode>>,
    ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>> {
        let now = self.clock.now();
        let mut sim = lock_sim(&self.sim);
        // Like luxid, a drained queue refuses the whole batch.
        if sim.drain_flag() {
            return ready(Err(BackendError::Refused(
                SimError::QueueDrained.to_string(),
            )))
            .boxed_local();
        }
        let results = jobs
            .into_iter()
            .map(|ops| sim.submit_job(ops, now).map_err(|e| e.to_string()))
            .collect();
        ready(Ok(results)).boxed_local()
    }

    fn job_statuses(
        &self,
        ids: Vec<JobId>,
    ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>> {
        let now = self.clock.now();
        let mut sim = lock_sim(&self.sim);
        let statuses = ids.into_iter().map(|id| sim.job_status(id, now)).collect();
        ready(Ok(statuses)).boxed_local()
    }

    fn find_jobs_by_reason(
        &self,
        marker: String,
    ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>> {
        let ids = lock_sim(&self.sim).find_jobs_by_reason(&marker, self.clock.now());
        ready(Ok(ids)).boxed_local()
    }

    fn job_failure(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<Option<JobFailure>, BackendError>> {
        let now = self.clock.now();
        let mut sim = lock_sim(&self.sim);
        // Read like Ganeti's `ops`, `opstatus` and `opresult` fields, which the simulator
        // fills in Ganeti's shapes.
        let failure = sim.job(id, now).and_then(|job| {
            let ops: Vec<Value> = job.ops.iter().map(|op| op.input.clone()).collect();
            let opstatus: Vec<&str> = job.ops.iter().map(|op| op.status.as_str()).collect();
            let opresult: Vec<Value> = job.ops.iter().map(|op| op.result.clone()).collect();
            JobFailure::from_job_fields(&json!(ops), &json!(opstatus), &json!(opresult))
        });
        ready(Ok(failure)).boxed_local()
    }

    fn cancel_job(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<CancelOutcome, BackendError>> {
        let (canceled, message) = lock_sim(&self.sim).cancel_job(id, self.clock.now());
        let outcome = if canceled {
            CancelOutcome::Canceled
        } else {
            CancelOutcome::NotCancelable(message)
        };
        ready(Ok(outcome)).boxed_local()
    }
}

/// [`DiagnoseSource`] over the simulator, honouring each node's monitoring behaviour.
#[derive(Debug, Clone)]
pub struct SimDiagnose {
    sim: SharedSim,
    clock: Clock,
}

impl SimDiagnose {
    /// Adapter over `sim`, taking `now` from `clock`.
    pub fn new(sim: SharedSim, clock: Clock) -> Self {
        SimDiagnose { sim, clock }
    }

    fn fetch_now(&self, node: &str) -> Result<Diagnose, FetchError> {
        let reply = lock_sim(&self.sim).monitoring_reply(node, self.clock.now());
        match reply {
            // An unknown node behaves like a host name that does not resolve.
            None => Err(FetchError::Unreachable(format!("no such node {node}"))),
            Some(MonitoringReply::Unreachable) => Err(FetchError::Unreachable(format!(
                "{node}: connection refused (simulated)"
            ))),
            Some(MonitoringReply::Status(code)) => Err(FetchError::Status(code)),
            // Go through the same parser as real HTTP bodies, so size and shape checks apply.
            Some(MonitoringReply::Raw(body)) => {
                Ok(parse_report(body.as_bytes(), DEFAULT_MAX_REPORT_BYTES)?)
            }
            Some(MonitoringReply::Report(report)) => {
                let body = serde_json::to_vec(&report).unwrap_or_default();
                Ok(parse_report(&body, DEFAULT_MAX_REPORT_BYTES)?)
            }
        }
    }
}

impl LoadSource for SimDiagnose {
    fn fetch_load(&self, node: &str) -> LocalBoxFuture<'static, Result<CpuLoad, FetchError>> {
        let report = lock_sim(&self.sim).cpu_load_report(node, self.clock.now());
        let result = match report {
            None => Err(FetchError::Unreachable(format!(
                "{node}: no cpu-avg-load report (simulated)"
            ))),
            Some(report) => {
                let body = serde_json::to_vec(&report).unwrap_or_default();
                parse_cpu_load(&body, DEFAULT_MAX_REPORT_BYTES).map_err(FetchError::from)
            }
        };
        ready(result).boxed_local()
    }
}

impl DiagnoseSource for SimDiagnose {
    fn fetch(&self, node: &str) -> LocalBoxFuture<'static, Result<Diagnose, FetchError>> {
        ready(self.fetch_now(node)).boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::model::diagnose::{RepairAction, ReportError};
    use crate::model::opcode::OpBody;
    use crate::sim::{MonitoringBehaviour, SimCluster, SimSpec};

    fn shared(job_seconds: f64) -> (SharedSim, Clock) {
        let spec = SimSpec {
            nodes: 3,
            instances: 6,
            seed: 4,
            job_seconds,
            ..SimSpec::default()
        };
        let sim = Arc::new(Mutex::new(SimCluster::generate(&spec, 500.0)));
        (sim, Clock::starting_at(500.0))
    }

    #[actix_rt::test]
    async fn backend_submits_and_tracks_jobs() {
        let (sim, clock) = shared(0.0);
        let backend = SimBackend::new(sim.clone(), clock);
        assert_eq!(backend.master_node().await, Ok("node1".to_owned()));
        let ops = vec![OpBody::drain_node("node2").with_reason("incident-42".into(), 1)];
        let submitted = backend
            .submit_jobs(vec![ops, vec![]])
            .await
            .expect("accepted");
        assert_eq!(submitted[0], Ok(JobId(1)));
        assert!(submitted[1].is_err());
        let statuses = backend.job_statuses(vec![JobId(1), JobId(9)]).await;
        assert_eq!(statuses, Ok(vec![Some(JobStatus::Success), None]));
        let snapshot = backend.snapshot().await.expect("snapshot");
        assert!(snapshot.node("node2").expect("exists").drained);
        let found = backend.find_jobs_by_reason("incident-42".into()).await;
        assert_eq!(found, Ok(vec![JobId(1)]));
        lock_sim(&sim).set_drain_flag(true);
        assert!(matches!(
            backend.submit_jobs(vec![]).await,
            Err(BackendError::Refused(_))
        ));
    }

    #[actix_rt::test]
    async fn backend_tells_why_a_job_failed() {
        let (sim, clock) = shared(0.0);
        let backend = SimBackend::new(sim.clone(), clock);
        lock_sim(&sim).inject_fault("OP_NODE_SET_PARAMS", 1);
        let drain = |node: &str| vec![OpBody::drain_node(node).with_reason("r".into(), 1)];
        let submitted = backend
            .submit_jobs(vec![drain("node2"), drain("node9"), drain("node3")])
            .await
            .expect("accepted");
        let ids: Vec<JobId> = submitted.into_iter().map(|s| s.expect("queued")).collect();
        assert_eq!(
            backend.job_statuses(ids.clone()).await,
            Ok(vec![
                Some(JobStatus::Error),
                Some(JobStatus::Error),
                Some(JobStatus::Success)
            ])
        );
        let summary = |failure: Result<Option<JobFailure>, BackendError>| {
            failure.expect("answered").map(|f| f.summary())
        };
        assert_eq!(
            summary(backend.job_failure(ids[0]).await).as_deref(),
            Some(
                "OP_NODE_SET_PARAMS node2: OpExecError: \
                 Injected fault: OP_NODE_SET_PARAMS failed (simulated)"
            )
        );
        assert_eq!(
            summary(backend.job_failure(ids[1]).await).as_deref(),
            Some(
                "OP_NODE_SET_PARAMS node9: OpPrereqError: Node 'node9' not known (unknown_entity)"
            )
        );
        assert_eq!(summary(backend.job_failure(ids[2]).await), None);
        assert_eq!(summary(backend.job_failure(JobId(99)).await), None);
    }

    #[tokio::test(start_paused = true)]
    async fn backend_cancels_waiting_jobs_only() {
        let (sim, clock) = shared(10.0);
        let backend = SimBackend::new(sim.clone(), clock);
        lock_sim(&sim).inject_hang("OP_NODE_SET_PARAMS", 1);
        let drain = |node: &str| vec![OpBody::drain_node(node).with_reason("r".into(), 1)];
        let submitted = backend
            .submit_jobs(vec![drain("node2"), drain("node2")])
            .await
            .expect("accepted");
        let (hung, waiting) = match submitted.as_slice() {
            [Ok(hung), Ok(waiting)] => (*hung, *waiting),
            other => panic!("{other:?}"),
        };
        // An hour later, far past the jobs' ten seconds, the hung job still runs.
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(
            backend.job_statuses(vec![hung, waiting]).await,
            Ok(vec![Some(JobStatus::Running), Some(JobStatus::Waiting)])
        );
        assert_eq!(
            backend.cancel_job(hung).await,
            Ok(CancelOutcome::NotCancelable(
                "Job no longer waiting, can't cancel (informed it anyway)".into()
            ))
        );
        assert_eq!(
            backend.cancel_job(waiting).await,
            Ok(CancelOutcome::Canceled)
        );
        assert_eq!(
            backend.cancel_job(waiting).await,
            Ok(CancelOutcome::NotCancelable(format!(
                "Job {waiting} not found in queue"
            )))
        );
        assert_eq!(
            backend.job_statuses(vec![waiting]).await,
            Ok(vec![Some(JobStatus::Canceled)])
        );
    }

    #[actix_rt::test]
    async fn diagnose_follows_monitoring_behaviour() {
        let (sim, clock) = shared(1.0);
        let source = SimDiagnose::new(sim.clone(), clock);
        let healthy = source.fetch("node1").await.expect("report");
        assert_eq!(healthy.action, RepairAction::Ok);

        lock_sim(&sim)
            .set_diagnose("node1", json!({"status": "evacuate", "details": 1}), 500.0)
            .expect("node1 exists");
        let broken = source.fetch("node1").await.expect("report");
        assert_eq!(broken.action, RepairAction::Evacuate);
        assert_eq!(broken.original, json!({"status": "evacuate", "details": 1}));

        lock_sim(&sim)
            .set_diagnose("node1", json!({"status": "nope"}), 500.0)
            .expect("node1 exists");
        assert!(matches!(
            source.fetch("node1").await,
            Err(FetchError::Report(ReportError::BadDiagnose(_)))
        ));

        let behaviours = [
            (MonitoringBehaviour::Unreachable, "unreachable"),
            (MonitoringBehaviour::Garbage("<html>".into()), "garbage"),
            (MonitoringBehaviour::Status(500), "status"),
        ];
        for (behaviour, label) in behaviours {
            lock_sim(&sim)
                .set_monitoring("node2", behaviour, 500.0)
                .expect("node2 exists");
            let result = source.fetch("node2").await;
            match label {
                "unreachable" => assert!(matches!(result, Err(FetchError::Unreachable(_)))),
                "garbage" => assert!(matches!(
                    result,
                    Err(FetchError::Report(ReportError::NotJson(_)))
                )),
                _ => assert_eq!(result, Err(FetchError::Status(500))),
            }
        }
        assert!(matches!(
            source.fetch("node9").await,
            Err(FetchError::Unreachable(_))
        ));
    }
}
