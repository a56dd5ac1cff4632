//! RAPI: Ganeti's remote API over HTTPS (see Ganeti's `doc/rapi.rst` and
//! `lib/rapi/rlib2.py`), a [`ClusterBackend`] that works from any host that reaches the
//! cluster's RAPI port, not only on the master.
//!
//! Transport: HTTPS with rustls and HTTP Basic authentication. The server's certificate is
//! either *pinned* (the cluster's self-signed `rapi.pem`: exactly that certificate is
//! accepted, whatever name it carries) or verified against a CA file with the usual name
//! check; with both, a certificate passing either check is accepted (handy while rotating).
//!
//! What RAPI cannot do that Luxi can, and how this backend deals with it:
//! * **One job per request.** A maintd job of several opcodes becomes a chain of RAPI jobs,
//!   each later one `depends` on its predecessor succeeding (`[[id, ["success"]]]`). The id
//!   recorded for the maintd job is the last of the chain: a failed predecessor fails it,
//!   a canceled one cancels it, so the chain's outcome is the last job's outcome.
//! * **No reason source.** RAPI takes only `?reason=TEXT`, recorded under `gnt:user`. The
//!   text sent is `gnt:daemon:maintd <the opcode's reason text>` (which holds the incident
//!   uuid and the submission key), with ` [RAPI job i of n]` appended inside a chain.
//! * **No endpoint** for `OP_INSTANCE_MOVE`, `OP_TEST_DELAY`, `OP_REPAIR_COMMAND`; and
//!   `OP_INSTANCE_REINSTALL`'s endpoint adds a shutdown and a startup and accepts neither
//!   `depends` nor a reason. A job containing one of them is refused, with the reason, as a
//!   per-job submission error; nothing of that job is submitted.
//!
//! awc is `!Send` and needs the actix runtime: build the backend inside it.
//!
//! The pieces: `setup` (settings, credentials, certificate trust), `transport` (the HTTPS
//! client), `error` (request errors and what they mean for maintd), `snapshot` (decoding
//! the bulk lists), `opcodes` (opcodes as requests), `reason` (the reason text and chain
//! markers), `jobs` (job chains: submit, status, find, cancel).

use std::time::Duration;

use futures_util::future::{FutureExt, LocalBoxFuture};

use super::{BackendError, CancelOutcome, ClusterBackend, Submission};
use crate::model::{
    cluster::ClusterSnapshot,
    job::{JobId, JobStatus},
    job_failure::JobFailure,
    opcode::Opcode,
};

mod error;
mod jobs;
mod opcodes;
mod reason;
mod setup;
mod snapshot;
mod transport;

pub use error::RapiError;
pub use opcodes::{job_requests, op_request, percent_encode, OpRequest};
pub use reason::reason_text;
pub use setup::{
    load_certificates, tls_config, validate_url, Credentials, RapiConfig, RapiSetupError,
};
pub use snapshot::{decode_group, decode_instance, decode_node};
pub use transport::RapiClient;

/// RAPI's default port.
pub const DEFAULT_PORT: u16 = 5080;

/// Default limit on one request: connecting, sending, and reading the whole answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default limit on one answer. `/2/jobs?bulk=1` lists every job with its opcodes and can be
/// several megabytes on a busy cluster, so this is generous.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// [`ClusterBackend`] over RAPI.
#[derive(Debug, Clone)]
pub struct RapiBackend {
    client: RapiClient,
}

impl RapiBackend {
    /// A backend as configured (reads the credentials and certificate files). Must be
    /// called inside the actix runtime.
    pub fn new(config: &RapiConfig) -> Result<Self, RapiSetupError> {
        Ok(RapiBackend {
            client: RapiClient::new(config)?,
        })
    }

    /// A backend over an existing client.
    pub fn with_client(client: RapiClient) -> Self {
        RapiBackend { client }
    }

    /// The underlying client, for calls the trait does not cover.
    pub fn client(&self) -> &RapiClient {
        &self.client
    }
}

impl ClusterBackend for RapiBackend {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
        let client = self.client.clone();
        async move { snapshot::snapshot(&client).await }.boxed_local()
    }

    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
        let client = self.client.clone();
        async move { snapshot::master_node(&client).await }.boxed_local()
    }

    fn submit_jobs(
        &self,
        jobs: Vec<Vec<Opcode>>,
    ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>> {
        let client = self.client.clone();
        async move { jobs::submit_jobs(&client, jobs).await }.boxed_local()
    }

    fn job_statuses(
        &self,
        ids: Vec<JobId>,
    ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>> {
        let client = self.client.clone();
        async move { jobs::job_statuses(&client, ids).await }.boxed_local()
    }

    fn find_jobs_by_reason(
        &self,
        marker: String,
    ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>> {
        let client = self.client.clone();
        async move { jobs::find_jobs_by_reason(&client, marker).await }.boxed_local()
    }

    fn cancel_job(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<CancelOutcome, BackendError>> {
        let client = self.client.clone();
        async move { jobs::cancel_chain(&client, id).await }.boxed_local()
    }

    fn job_failure(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<Option<JobFailure>, BackendError>> {
        let client = self.client.clone();
        async move { jobs::chain_failure(&client, id).await }.boxed_local()
    }
}
