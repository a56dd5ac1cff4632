//! How maintd talks to a cluster: the job queue and configuration (Luxi), and each
//! node's self-diagnose report (HTTP).
//!
//! Futures are `LocalBoxFuture`: the HTTP client (awc) is `!Send`, and everything runs on
//! the actor system's single-threaded runtime anyway.

pub mod agent_repair;
pub mod http_diagnose;
pub mod luxi;
pub mod noded;
pub mod rapi;
pub mod replica;
pub mod sim;
pub mod ssconf;
pub mod tls;
pub mod vote;

use futures_util::future::LocalBoxFuture;
use thiserror::Error;

use crate::model::{
    cluster::ClusterSnapshot,
    diagnose::{Diagnose, ReportError},
    job::{JobId, JobStatus},
    job_failure::JobFailure,
    load::CpuLoad,
    opcode::Opcode,
};

/// What can go wrong talking to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackendError {
    /// Worth retrying: socket gone, timeout, daemon restarting.
    #[error("transient backend error: {0}")]
    Transient(String),
    /// The request itself was refused (bad opcode, unknown entity...).
    #[error("backend refused the request: {0}")]
    Refused(String),
    /// The answer could not be understood.
    #[error("unexpected answer from the backend: {0}")]
    Protocol(String),
}

impl BackendError {
    /// A later retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }
}

/// Outcome of submitting one job of a batch.
pub type Submission = Result<JobId, String>;

/// What became of a request to cancel a job (Ganeti's `CancelJob` answers
/// `(success, message)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was canceled before it ran; it ends `canceled` and changed nothing.
    Canceled,
    /// The job was not canceled: it runs already, has finished, or is unknown. The text is
    /// the cluster's (or the backend's) explanation.
    NotCancelable(String),
}

/// The job queue and configuration of a Ganeti cluster.
pub trait ClusterBackend {
    /// Nodes, instances, groups and tags at one instant.
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>>;

    /// Name of the current master node.
    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>>;

    /// The names of the online nodes: the nodes to poll. The default takes them from a
    /// whole [`ClusterBackend::snapshot`]; a backend that can ask for the nodes alone
    /// should, since on a large cluster the instances are most of a snapshot.
    fn online_nodes(&self) -> LocalBoxFuture<'static, Result<Vec<String>, BackendError>> {
        let snapshot = self.snapshot();
        Box::pin(async move {
            Ok(snapshot
                .await?
                .nodes
                .into_iter()
                .filter(|n| !n.offline)
                .map(|n| n.name)
                .collect())
        })
    }

    /// Submit several jobs at once (Luxi `SubmitManyJobs`); one result per job, in order.
    fn submit_jobs(
        &self,
        jobs: Vec<Vec<Opcode>>,
    ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>>;

    /// Current status of each job; `None` for a job the queue does not know.
    fn job_statuses(
        &self,
        ids: Vec<JobId>,
    ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>>;

    /// Why job `id`, last seen ended in error, failed: its first failed opcode and Ganeti's
    /// error (or a node agent's account); `None` when the backend cannot tell.
    ///
    /// The default cannot tell.
    fn job_failure(
        &self,
        _id: JobId,
    ) -> LocalBoxFuture<'static, Result<Option<JobFailure>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    /// Ids of queued or archived jobs whose reason trail contains `marker` in an entry's text;
    /// used after a restart to find submissions whose ids were not yet recorded.
    fn find_jobs_by_reason(
        &self,
        marker: String,
    ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>>;

    /// Cancel job `id` if it has not started running (Luxi `CancelJob`). A running job is
    /// never interrupted: it answers [`CancelOutcome::NotCancelable`].
    ///
    /// The default refuses, for backends that cannot cancel.
    fn cancel_job(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<CancelOutcome, BackendError>> {
        let refusal = format!("job {id}: this backend cannot cancel jobs");
        Box::pin(async move { Err(BackendError::Refused(refusal)) })
    }
}

/// The per-node self-diagnose reports.
pub trait DiagnoseSource {
    /// Fetch and parse the current report of `node`.
    fn fetch(&self, node: &str) -> LocalBoxFuture<'static, Result<Diagnose, FetchError>>;
}

/// Each node's CPU load (the monitoring daemon's `cpu-avg-load` collector).
pub trait LoadSource {
    /// Fetch and parse the current `cpu-avg-load` report of `node`.
    fn fetch_load(&self, node: &str) -> LocalBoxFuture<'static, Result<CpuLoad, FetchError>>;
}

/// Why a report could not be had.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FetchError {
    /// Connection refused, DNS failure, timeout.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// HTTP error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body was not a valid report.
    #[error(transparent)]
    Report(#[from] ReportError),
}
