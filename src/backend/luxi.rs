//! Luxi: the local job/query protocol of `ganeti-luxid` (see Ganeti's `lib/luxi.py` and
//! `src/Ganeti/Luxi.hs`).
//!
//! Wire format: a stream Unix socket carrying JSON messages, each terminated by one 0x03
//! byte. A request is `{"method", "args", "version"}`, a response `{"success", "result"}`.
//! A failed request comes back in one of two shapes: a plain string (luxid could not parse
//! the request) or an encoded Ganeti exception `[name, args]` (the handler failed).
//!
//! [`LuxiClient`] speaks the protocol; [`LuxiBackend`] builds the [`ClusterBackend`] calls
//! on top of it.

use std::{cell::RefCell, collections::BTreeSet, path::PathBuf, rc::Rc, time::Duration};

use futures_util::future::{FutureExt, LocalBoxFuture};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::{net::UnixStream, time::timeout};

use super::{BackendError, CancelOutcome, ClusterBackend, Submission};
use crate::model::{
    cluster::{ClusterSnapshot, DiskTemplate, Group, Instance, Node},
    job::{JobId, JobStatus},
    job_failure::{describe_args, one_line, JobFailure},
    opcode::Opcode,
};
use crate::protocol::luxi::{write_message, FrameError, MessageReader};

/// The socket luxid serves queries and job submissions on.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/ganeti/socket/ganeti-query";

/// The `version` the client announces (Ganeti 3.0); luxid ignores it.
pub const LUXI_VERSION: u64 = 3_000_000;

/// Default limit on one response. A `QueryJobs` over the whole queue with opcodes can be
/// several megabytes on a busy cluster, so this is generous.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Node fields fetched for a snapshot, in the order `decode_node` reads them.
pub const NODE_FIELDS: [&str; 15] = [
    "name",
    "uuid",
    "group.uuid",
    "mtotal",
    "mfree",
    "dtotal",
    "dfree",
    "ctotal",
    "offline",
    "drained",
    "vm_capable",
    "tags",
    "mnode",
    "cnos",
    "ndp/spindle_count",
];

/// Instance fields fetched for a snapshot, in the order `decode_instance` reads them.
pub const INSTANCE_FIELDS: [&str; 12] = [
    "name",
    "uuid",
    "pnode",
    "snodes",
    "disk_template",
    "be/maxmem",
    "disk_usage",
    "be/vcpus",
    "status",
    "tags",
    "be/auto_balance",
    "be/spindle_use",
];

/// Group fields fetched for a snapshot, in the order `decode_group` reads them.
pub const GROUP_FIELDS: [&str; 5] = ["name", "uuid", "alloc_policy", "tags", "ipolicy"];

/// Everything that can go wrong in one Luxi call.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LuxiError {
    /// The socket could not be connected (luxid not running, not the master, no access).
    #[error("cannot connect to the Luxi socket {path}: {reason}")]
    Connect {
        /// Socket path.
        path: String,
        /// The operating system's explanation.
        reason: String,
    },
    /// Connecting or waiting for the answer took too long.
    #[error("Luxi {phase} timed out after {after:?}")]
    Timeout {
        /// `connect` or `request`.
        phase: &'static str,
        /// The limit that was hit.
        after: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("Luxi socket I/O failed: {0}")]
    Io(String),
    /// luxid closed the connection before the answer was complete.
    #[error("luxid closed the connection after {received} bytes of the answer")]
    ConnectionClosed {
        /// Bytes of the answer received before the close.
        received: usize,
    },
    /// The answer exceeds the configured limit (the connection is dropped).
    #[error("Luxi answer exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The answer is not a Luxi response, or its `result` has an unexpected shape.
    #[error("malformed Luxi answer: {0}")]
    Malformed(String),
    /// luxid could not parse the request (unknown method, bad arguments, bad opcode).
    #[error("luxid rejected the request: {0}")]
    RequestRejected(String),
    /// The request handler raised a Ganeti exception.
    #[error("luxid raised {name}: {message}")]
    Exception {
        /// Exception name, e.g. `OpPrereqError`, `JobLost`, `GenericError`.
        name: String,
        /// Human-readable text assembled from the arguments.
        message: String,
        /// The exception's raw arguments.
        args: Value,
    },
}

impl LuxiError {
    /// The Ganeti exception name, when the handler raised one.
    pub fn exception_name(&self) -> Option<&str> {
        match self {
            LuxiError::Exception { name, .. } => Some(name),
            _ => None,
        }
    }

    /// A later retry of the same call may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            LuxiError::Connect { .. }
            | LuxiError::Timeout { .. }
            | LuxiError::Io(_)
            | LuxiError::ConnectionClosed { .. } => true,
            // luxid answers this while it has no configuration yet (startup, master
            // failover in progress).
            LuxiError::Exception { name, .. } => name == "ConfigurationError",
            LuxiError::ResponseTooLarge { .. }
            | LuxiError::Malformed(_)
            | LuxiError::RequestRejected(_) => false,
        }
    }

    /// Decode an encoded Ganeti exception `[name, args]`.
    fn from_encoded_exception(name: &str, args: Value) -> Self {
        // OpPrereqError carries [text, error_code]: "text (error_code)".
        let message = describe_args(name, &args);
        LuxiError::Exception {
            name: name.to_owned(),
            message,
            args,
        }
    }
}

impl From<LuxiError> for BackendError {
    fn from(error: LuxiError) -> Self {
        let text = error.to_string();
        match error {
            e if e.is_transient() => BackendError::Transient(text),
            LuxiError::RequestRejected(_) | LuxiError::Exception { .. } => {
                BackendError::Refused(text)
            }
            _ => BackendError::Protocol(text),
        }
    }
}

/// A JSON value as text, without quotes around strings.
fn value_as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where and how to reach luxid.
#[derive(Debug, Clone)]
pub struct LuxiConfig {
    /// Path of luxid's socket.
    pub socket_path: PathBuf,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Limit on one request: sending it and receiving the whole answer.
    pub request_timeout: Duration,
    /// Answers larger than this are refused and the connection dropped.
    pub max_response_bytes: usize,
}

impl LuxiConfig {
    /// The Python client's defaults (connect 30 s, read/write 180 s) for `socket_path`.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        LuxiConfig {
            socket_path: socket_path.into(),
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(180),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl Default for LuxiConfig {
    fn default() -> Self {
        LuxiConfig::new(DEFAULT_SOCKET_PATH)
    }
}

/// One open connection with the bytes read past the last answer.
struct Connection {
    stream: UnixStream,
    reader: MessageReader,
}

impl Connection {
    /// The peer has closed (or reset) a connection that sat idle in the pool. Luxi is strict
    /// request/response, so an idle connection with readable data means EOF or garbage.
    fn looks_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Ok(_) | Err(_) => true,
        }
    }

    /// Send one framed request and read one framed answer.
    async fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, LuxiError> {
        write_message(&mut self.stream, request)
            .await
            .map_err(|e| LuxiError::Io(format!("sending the request: {e}")))?;
        self.reader
            .read_message(&mut self.stream)
            .await
            .map_err(|e| match e {
                FrameError::Closed { received } => LuxiError::ConnectionClosed { received },
                FrameError::TooLarge { limit } => LuxiError::ResponseTooLarge { limit },
                FrameError::Io(e) => LuxiError::Io(format!("reading the answer: {e}")),
            })
    }
}

/// A Luxi client: one request at a time per connection, connections reused.
///
/// Cloning is cheap and shares the idle connection.
///
/// Connection handling: a single idle connection is kept in an `Rc<RefCell<Option<..>>>`.
/// A call *takes* it out of the cell for the duration of the exchange (no `RefCell` borrow
/// is held across an await) and puts it back only after a complete, well-framed answer.
/// A concurrent call simply finds the cell empty and opens its own connection, so requests
/// never interleave on one socket; a connection that failed in any way is dropped, since
/// a late answer would desynchronise the next request. This saves a connect per call during
/// the frequent job polling without needing a lock.
#[derive(Clone)]
pub struct LuxiClient {
    config: Rc<LuxiConfig>,
    idle: Rc<RefCell<Option<Connection>>>,
}

impl std::fmt::Debug for LuxiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuxiClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Methods that change nothing, so resending them after a lost connection is harmless.
fn is_read_only(method: &str) -> bool {
    method.starts_with("Query") || method == "WaitForJobChange"
}

impl LuxiClient {
    /// A client for the socket and limits in `config`; connects lazily.
    pub fn new(config: LuxiConfig) -> Self {
        LuxiClient {
            config: Rc::new(config),
            idle: Rc::new(RefCell::new(None)),
        }
    }

    /// The client's settings.
    pub fn config(&self) -> &LuxiConfig {
        &self.config
    }

    /// Call `method` with the positional `args` (a JSON array) and return the `result`.
    pub async fn call(&self, method: &str, args: Value) -> Result<Value, LuxiError> {
        let request = serde_json::to_vec(&json!({
            "method": method,
            "args": args,
            "version": LUXI_VERSION,
        }))
        // Serializing a `Value` cannot fail; keep the error path anyway.
        .map_err(|e| LuxiError::Malformed(format!("cannot encode the request: {e}")))?;

        let pooled = self.idle.borrow_mut().take();
        let pooled = pooled.filter(|c| !c.looks_closed());
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut outcome = self
            .exchange_within_deadline(&mut connection, &request)
            .await;
        // A reused connection may have been closed by a restarting luxid between the
        // staleness probe and our write. Resend only when nothing came back and the method
        // changes nothing: a submission might have been received and must not be doubled.
        if reused
            && is_read_only(method)
            && matches!(
                outcome,
                Err(LuxiError::ConnectionClosed { received: 0 }) | Err(LuxiError::Io(_))
            )
        {
            tracing::debug!(method, "Luxi connection went stale, reconnecting");
            connection = self.connect().await?;
            outcome = self
                .exchange_within_deadline(&mut connection, &request)
                .await;
        }
        let answer = outcome?;
        let result = decode_response(&answer);
        if !connection.reader.has_pending() {
            *self.idle.borrow_mut() = Some(connection);
        }
        result
    }

    async fn connect(&self) -> Result<Connection, LuxiError> {
        let path = &self.config.socket_path;
        let stream = timeout(self.config.connect_timeout, UnixStream::connect(path))
            .await
            .map_err(|_| LuxiError::Timeout {
                phase: "connect",
                after: self.config.connect_timeout,
            })?
            .map_err(|e| LuxiError::Connect {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Connection {
            stream,
            reader: MessageReader::new(self.config.max_response_bytes),
        })
    }

    async fn exchange_within_deadline(
        &self,
        connection: &mut Connection,
        request: &[u8],
    ) -> Result<Vec<u8>, LuxiError> {
        timeout(self.config.request_timeout, connection.exchange(request))
            .await
            .map_err(|_| LuxiError::Timeout {
                phase: "request",
                after: self.config.request_timeout,
            })?
    }
}

/// Decode one framed answer (without its terminator) into the `result` or an error.
pub fn decode_response(answer: &[u8]) -> Result<Value, LuxiError> {
    let value: Value = serde_json::from_slice(answer)
        .map_err(|e| LuxiError::Malformed(format!("not JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(LuxiError::Malformed("answer is not a JSON object".into()));
    };
    let success = match fields.get("success") {
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(LuxiError::Malformed(format!("success is {other}"))),
        None => return Err(LuxiError::Malformed("no success key".into())),
    };
    let result = fields
        .remove("result")
        .ok_or_else(|| LuxiError::Malformed("no result key".into()))?;
    if success {
        return Ok(result);
    }
    match result {
        Value::String(text) => Err(LuxiError::RequestRejected(text)),
        Value::Array(mut parts) if parts.len() == 2 && parts[0].is_string() => {
            let args = parts.pop().unwrap_or(Value::Null);
            let name = value_as_text(&parts[0]);
            Err(LuxiError::from_encoded_exception(&name, args))
        }
        other => Err(LuxiError::Malformed(format!("unrecognised error {other}"))),
    }
}

// ---------------------------------------------------------------------------------------
// Query result decoding

/// One row of a `Query` answer: `[status, value]` cells; status 0 means the value is there.
struct QueryRow<'a> {
    cells: &'a [Value],
}

impl<'a> QueryRow<'a> {
    /// The value of cell `index` when its status is 0 (normal), else `None`.
    fn value(&self, index: usize) -> Option<&'a Value> {
        match self.cells.get(index)? {
            Value::Array(cell) if cell.len() == 2 && cell[0].as_u64() == Some(0) => Some(&cell[1]),
            _ => None,
        }
    }

    fn text(&self, index: usize) -> Option<String> {
        self.value(index)?.as_str().map(str::to_owned)
    }

    /// A non-negative number (Ganeti sometimes sends floats for sizes), rounded down.
    fn count(&self, index: usize) -> Option<u64> {
        let value = self.value(index)?;
        value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        })
    }

    fn flag(&self, index: usize) -> Option<bool> {
        self.value(index)?.as_bool()
    }

    fn texts(&self, index: usize) -> Vec<String> {
        match self.value(index) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The rows of a `Query` answer `{"fields": [...], "data": [[cell, ...], ...]}`.
fn query_rows(result: &Value, expected_fields: usize) -> Result<Vec<QueryRow<'_>>, BackendError> {
    let data = result
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| BackendError::Protocol("Query answer without a data list".into()))?;
    data.iter()
        .map(|row| match row.as_array() {
            Some(cells) if cells.len() == expected_fields => Ok(QueryRow { cells }),
            _ => Err(BackendError::Protocol(format!(
                "Query row does not have {expected_fields} cells: {row}"
            ))),
        })
        .collect()
}

/// A node from a row of [`NODE_FIELDS`]. Live fields (memory, disk, CPUs) are unavailable
/// for offline or unreachable nodes and default to 0, i.e. no capacity.
fn decode_node(row: &QueryRow<'_>) -> Result<Node, BackendError> {
    let name = row
        .text(0)
        .ok_or_else(|| BackendError::Protocol("node row without a name".into()))?;
    let cpus = row.count(7).unwrap_or(0);
    Ok(Node {
        uuid: row.text(1).unwrap_or_default(),
        group: row.text(2).unwrap_or_default(),
        memory_total: row.count(3).unwrap_or(0),
        memory_free: row.count(4).unwrap_or(0),
        disk_total: row.count(5).unwrap_or(0),
        disk_free: row.count(6).unwrap_or(0),
        cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
        offline: row.flag(8).unwrap_or(false),
        drained: row.flag(9).unwrap_or(false),
        // Ganeti's default for the flag.
        vm_capable: row.flag(10).unwrap_or(true),
        tags: row.texts(11).into_iter().collect(),
        memory_node: row.count(12).unwrap_or(0),
        cpus_node: row
            .count(13)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        spindles: row
            .count(14)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        name,
    })
}

/// An instance from a row of [`INSTANCE_FIELDS`]. Name, primary node and disk template
/// have no sensible default (guessing them would mislead the planner), so their absence
/// fails the snapshot.
fn decode_instance(row: &QueryRow<'_>) -> Result<Instance, BackendError> {
    let name = row
        .text(0)
        .ok_or_else(|| BackendError::Protocol("instance row without a name".into()))?;
    let primary = row
        .text(2)
        .ok_or_else(|| BackendError::Protocol(format!("instance {name} has no primary node")))?;
    let disk_template = row
        .value(4)
        .and_then(|v| serde_json::from_value::<DiskTemplate>(v.clone()).ok())
        .ok_or_else(|| {
            BackendError::Protocol(format!(
                "instance {name} has an unknown disk template {:?}",
                row.value(4)
            ))
        })?;
    let vcpus = row.count(7).unwrap_or(0);
    Ok(Instance {
        uuid: row.text(1).unwrap_or_default(),
        primary,
        secondaries: row.texts(3),
        disk_template,
        memory: row.count(5).unwrap_or(0),
        disk: row.count(6).unwrap_or(0),
        vcpus: u32::try_from(vcpus).unwrap_or(u32::MAX),
        status: row.text(8).unwrap_or_else(|| "unknown".to_owned()),
        tags: row.texts(9).into_iter().collect(),
        auto_balance: row.flag(10).unwrap_or(true),
        spindle_use: row
            .count(11)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        name,
    })
}

/// A group from a row of [`GROUP_FIELDS`].
fn decode_group(row: &QueryRow<'_>) -> Result<Group, BackendError> {
    let name = row
        .text(0)
        .ok_or_else(|| BackendError::Protocol("group row without a name".into()))?;
    Ok(Group {
        uuid: row.text(1).unwrap_or_default(),
        alloc_policy: row.text(2).unwrap_or_else(|| "preferred".to_owned()),
        tags: row.texts(3).into_iter().collect(),
        // The filled policy (the group's own values over the cluster's).
        vcpu_ratio: row
            .value(4)
            .and_then(|p| p.get("vcpu-ratio"))
            .and_then(Value::as_f64),
        spindle_ratio: row
            .value(4)
            .and_then(|p| p.get("spindle-ratio"))
            .and_then(Value::as_f64),
        name,
    })
}

/// `true` when any opcode of a job's `ops` has a reason-trail entry whose text contains
/// `marker`.
fn ops_mention(ops: &Value, marker: &str) -> bool {
    let Some(ops) = ops.as_array() else {
        return false;
    };
    ops.iter()
        .filter_map(|op| op.get("reason")?.as_array())
        .flatten()
        .filter_map(|entry| entry.get(1)?.as_str())
        .any(|text| text.contains(marker))
}

/// Decode one `SubmitManyJobs` entry `[true, id] | [false, message]`.
fn decode_submission(entry: &Value) -> Result<Submission, BackendError> {
    match entry.as_array().map(Vec::as_slice) {
        Some([Value::Bool(true), id]) => serde_json::from_value::<JobId>(id.clone())
            .map(Ok)
            .map_err(|e| BackendError::Protocol(format!("bad job id {id}: {e}"))),
        Some([Value::Bool(false), message]) => Ok(Err(value_as_text(message))),
        _ => Err(BackendError::Protocol(format!(
            "unexpected SubmitManyJobs entry {entry}"
        ))),
    }
}

/// Decode one `QueryJobs` row for the field list `["status"]`. An unknown job comes back as
/// a `null` row (Python masterd) or as a row of `null` values (luxid: the fields are
/// unavailable).
fn decode_status_row(row: &Value) -> Result<Option<JobStatus>, BackendError> {
    match row {
        Value::Null => Ok(None),
        Value::Array(cells) => match cells.first() {
            Some(Value::Null) => Ok(None),
            Some(status) => serde_json::from_value::<JobStatus>(status.clone())
                .map(Some)
                .map_err(|_| BackendError::Protocol(format!("unknown job status {status}"))),
            None => Err(BackendError::Protocol("empty QueryJobs row".into())),
        },
        other => Err(BackendError::Protocol(format!(
            "unexpected QueryJobs row {other}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// The backend

/// [`ClusterBackend`] over Luxi.
#[derive(Debug, Clone)]
pub struct LuxiBackend {
    client: LuxiClient,
}

impl LuxiBackend {
    /// A backend talking to luxid as configured.
    pub fn new(config: LuxiConfig) -> Self {
        LuxiBackend {
            client: LuxiClient::new(config),
        }
    }

    /// A backend sharing an existing client (and its connection).
    pub fn with_client(client: LuxiClient) -> Self {
        LuxiBackend { client }
    }

    /// The underlying client, for calls the trait does not cover.
    pub fn client(&self) -> &LuxiClient {
        &self.client
    }
}

async fn query(client: &LuxiClient, what: &str, fields: &[&str]) -> Result<Value, BackendError> {
    Ok(client
        .call("Query", json!([what, fields, Value::Null]))
        .await?)
}

async fn master_node(client: &LuxiClient) -> Result<String, BackendError> {
    let result = client
        .call("QueryConfigValues", json!([["master_node"]]))
        .await?;
    result
        .get(0)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Protocol(format!("no master node in {result}")))
}

/// The fields of [`online_nodes`]' node query.
const ONLINE_NODE_FIELDS: [&str; 2] = ["name", "offline"];

/// The names of the online nodes, from a query of the nodes alone.
async fn online_nodes(client: &LuxiClient) -> Result<Vec<String>, BackendError> {
    let nodes = query(client, "node", &ONLINE_NODE_FIELDS).await?;
    let mut online = Vec::new();
    for row in query_rows(&nodes, ONLINE_NODE_FIELDS.len())? {
        let name = row
            .text(0)
            .ok_or_else(|| BackendError::Protocol("node row without a name".into()))?;
        if !row.flag(1).unwrap_or(false) {
            online.push(name);
        }
    }
    Ok(online)
}

async fn snapshot(client: &LuxiClient) -> Result<ClusterSnapshot, BackendError> {
    let nodes = query(client, "node", &NODE_FIELDS).await?;
    let instances = query(client, "instance", &INSTANCE_FIELDS).await?;
    let groups = query(client, "group", &GROUP_FIELDS).await?;
    let cluster_tags = client.call("QueryTags", json!(["cluster", ""])).await?;
    let cluster_tags: BTreeSet<String> = match cluster_tags {
        Value::Array(tags) => tags
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        other => {
            return Err(BackendError::Protocol(format!(
                "QueryTags answered {other}"
            )))
        }
    };
    Ok(ClusterSnapshot {
        master: master_node(client).await?,
        cluster_tags,
        nodes: query_rows(&nodes, NODE_FIELDS.len())?
            .iter()
            .map(decode_node)
            .collect::<Result<_, _>>()?,
        instances: query_rows(&instances, INSTANCE_FIELDS.len())?
            .iter()
            .map(decode_instance)
            .collect::<Result<_, _>>()?,
        groups: query_rows(&groups, GROUP_FIELDS.len())?
            .iter()
            .map(decode_group)
            .collect::<Result<_, _>>()?,
    })
}

async fn submit_jobs(
    client: &LuxiClient,
    jobs: Vec<Vec<Opcode>>,
) -> Result<Vec<Submission>, BackendError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let count = jobs.len();
    let args = serde_json::to_value([jobs])
        .map_err(|e| BackendError::Protocol(format!("cannot encode the jobs: {e}")))?;
    let result = client.call("SubmitManyJobs", args).await?;
    let entries = result
        .as_array()
        .ok_or_else(|| BackendError::Protocol(format!("SubmitManyJobs answered {result}")))?;
    if entries.len() != count {
        return Err(BackendError::Protocol(format!(
            "SubmitManyJobs answered {} entries for {count} jobs",
            entries.len()
        )));
    }
    entries.iter().map(decode_submission).collect()
}

async fn query_statuses(
    client: &LuxiClient,
    ids: &[JobId],
) -> Result<Vec<Option<JobStatus>>, LuxiError> {
    let result = client.call("QueryJobs", json!([ids, ["status"]])).await?;
    let rows = result
        .as_array()
        .filter(|rows| rows.len() == ids.len())
        .ok_or_else(|| LuxiError::Malformed(format!("QueryJobs answered {result}")))?;
    rows.iter()
        .map(|row| decode_status_row(row).map_err(|e| LuxiError::Malformed(e.to_string())))
        .collect()
}

async fn job_statuses(
    client: &LuxiClient,
    ids: Vec<JobId>,
) -> Result<Vec<Option<JobStatus>>, BackendError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    match query_statuses(client, &ids).await {
        Err(e) if e.exception_name() == Some("JobLost") => {}
        other => return Ok(other?),
    }
    // One lost job fails the whole batch; ask job by job to find out which.
    let mut statuses = Vec::with_capacity(ids.len());
    for id in ids {
        match query_statuses(client, &[id]).await {
            Ok(mut one) => statuses.push(one.pop().flatten()),
            Err(e) if e.exception_name() == Some("JobLost") => statuses.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(statuses)
}

/// The `QueryJobs` fields [`decode_failure_row`] reads.
const FAILURE_FIELDS: [&str; 3] = ["ops", "opstatus", "opresult"];

/// Decode one `QueryJobs` row of the fields `ops`, `opstatus` and `opresult`: the job's
/// first failed opcode and its error. An unknown job (a `null` row or a row of `null`s)
/// has none.
pub fn decode_failure_row(row: &Value) -> Result<Option<JobFailure>, BackendError> {
    match row {
        Value::Null => Ok(None),
        Value::Array(cells) if cells.len() == FAILURE_FIELDS.len() => {
            Ok(JobFailure::from_job_fields(&cells[0], &cells[1], &cells[2]))
        }
        other => Err(BackendError::Protocol(format!(
            "unexpected QueryJobs row {}",
            excerpt(other)
        ))),
    }
}

/// The start of a JSON value, for error messages about answers that may be large.
fn excerpt(value: &Value) -> String {
    one_line(&value.to_string(), 200)
}

async fn job_failure(client: &LuxiClient, id: JobId) -> Result<Option<JobFailure>, BackendError> {
    let result = match client
        .call("QueryJobs", json!([[id], FAILURE_FIELDS]))
        .await
    {
        Err(e) if e.exception_name() == Some("JobLost") => return Ok(None),
        other => other?,
    };
    match result.as_array().map(Vec::as_slice) {
        Some([row]) => decode_failure_row(row),
        _ => Err(BackendError::Protocol(format!(
            "QueryJobs answered {}",
            excerpt(&result)
        ))),
    }
}

async fn find_jobs_by_reason(
    client: &LuxiClient,
    marker: String,
) -> Result<Vec<JobId>, BackendError> {
    let result = client
        .call("QueryJobs", json!([Value::Null, ["id", "ops"]]))
        .await?;
    let rows = result
        .as_array()
        .ok_or_else(|| BackendError::Protocol(format!("QueryJobs answered {result}")))?;
    let mut found = Vec::new();
    for row in rows {
        // A job archived between listing and reading comes back as null.
        let Some([id, ops]) = row.as_array().map(Vec::as_slice) else {
            continue;
        };
        if ops_mention(ops, &marker) {
            let id = serde_json::from_value::<JobId>(id.clone())
                .map_err(|e| BackendError::Protocol(format!("bad job id {id}: {e}")))?;
            found.push(id);
        }
    }
    found.sort();
    Ok(found)
}

/// Decode luxid's `CancelJob` answer `[success, message]`.
pub fn decode_cancel(result: &Value) -> Result<CancelOutcome, BackendError> {
    match result.as_array().map(Vec::as_slice) {
        Some([Value::Bool(true), _]) => Ok(CancelOutcome::Canceled),
        Some([Value::Bool(false), message]) => {
            Ok(CancelOutcome::NotCancelable(value_as_text(message)))
        }
        _ => Err(BackendError::Protocol(format!(
            "CancelJob answered {result}"
        ))),
    }
}

async fn cancel_job(client: &LuxiClient, id: JobId) -> Result<CancelOutcome, BackendError> {
    // `kill = false`: a job that already runs is only told, never killed midway.
    let result = client.call("CancelJob", json!([id, false])).await?;
    decode_cancel(&result)
}

impl ClusterBackend for LuxiBackend {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
        let client = self.client.clone();
        async move { snapshot(&client).await }.boxed_local()
    }

    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
        let client = self.client.clone();
        async move { master_node(&client).await }.boxed_local()
    }

    fn online_nodes(&self) -> LocalBoxFuture<'static, Result<Vec<String>, BackendError>> {
        let client = self.client.clone();
        async move { online_nodes(&client).await }.boxed_local()
    }

    fn submit_jobs(
        &self,
        jobs: Vec<Vec<Opcode>>,
    ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>> {
        let client = self.client.clone();
        async move { submit_jobs(&client, jobs).await }.boxed_local()
    }

    fn job_statuses(
        &self,
        ids: Vec<JobId>,
    ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>> {
        let client = self.client.clone();
        async move { job_statuses(&client, ids).await }.boxed_local()
    }

    fn find_jobs_by_reason(
        &self,
        marker: String,
    ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>> {
        let client = self.client.clone();
        async move { find_jobs_by_reason(&client, marker).await }.boxed_local()
    }

    fn job_failure(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<Option<JobFailure>, BackendError>> {
        let client = self.client.clone();
        async move { job_failure(&client, id).await }.boxed_local()
    }

    fn cancel_job(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<CancelOutcome, BackendError>> {
        let client = self.client.clone();
        async move { cancel_job(&client, id).await }.boxed_local()
    }
}

/// A backend for the default socket path.
impl Default for LuxiBackend {
    fn default() -> Self {
        LuxiBackend::new(LuxiConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_response(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ganeti-3.0")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let sample: Value = serde_json::from_str(&text).unwrap();
        sample["response"].clone()
    }

    #[test]
    fn decodes_success_and_both_error_shapes() {
        assert_eq!(
            decode_response(br#"{"success":true,"result":[[true,4711]]}"#),
            Ok(json!([[true, 4711]]))
        );
        let rejected = decode_response(br#"{"success":false,"result":"Failed to parse"}"#);
        assert_eq!(
            rejected,
            Err(LuxiError::RequestRejected("Failed to parse".into()))
        );
        let raised = decode_response(
            br#"{"success":false,"result":["OpPrereqError",["Sync queries are not allowed","wrong_input"]]}"#,
        )
        .unwrap_err();
        assert_eq!(raised.exception_name(), Some("OpPrereqError"));
        assert_eq!(
            raised.to_string(),
            "luxid raised OpPrereqError: Sync queries are not allowed (wrong_input)"
        );
        assert!(matches!(
            BackendError::from(raised),
            BackendError::Refused(_)
        ));
    }

    #[test]
    fn malformed_answers_are_protocol_errors() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"result":1}"#,
            br#"{"success":"yes","result":1}"#,
            br#"{"success":true}"#,
            br#"{"success":false,"result":42}"#,
        ] {
            let error = decode_response(bad).unwrap_err();
            assert!(
                matches!(BackendError::from(error.clone()), BackendError::Protocol(_)),
                "{error}"
            );
        }
    }

    #[test]
    fn error_classes_map_to_backend_errors() {
        let transient = [
            LuxiError::Io("x".into()),
            LuxiError::ConnectionClosed { received: 0 },
            LuxiError::Timeout {
                phase: "request",
                after: Duration::from_secs(1),
            },
            LuxiError::from_encoded_exception("ConfigurationError", json!(["no config"])),
        ];
        for e in transient {
            assert!(BackendError::from(e).is_retryable());
        }
        let drained = LuxiError::from_encoded_exception("GenericError", json!(["Queue drained"]));
        assert_eq!(
            BackendError::from(drained),
            BackendError::Refused("luxid raised GenericError: Queue drained".into())
        );
    }

    #[test]
    fn real_error_samples_decode() {
        for name in ["luxi-error-bad-method.json", "luxi-error-bad-opcode.json"] {
            let bytes = serde_json::to_vec(&sample_response(name)).unwrap();
            assert!(matches!(
                decode_response(&bytes),
                Err(LuxiError::RequestRejected(_))
            ));
        }
    }

    #[test]
    fn decodes_nodes_with_unavailable_live_fields() {
        let result = json!({"fields": [], "data": [
            [[0,"node1"],[0,"u1"],[0,"g1"],[0,4096],[0,1024.7],[0,100000],[0,5000],[0,8],
             [0,false],[0,true],[0,true],[0,["a","b"]],[0,512],[0,2],[0,4]],
            [[0,"node2"],[0,"u2"],[0,"g1"],[4,null],[4,null],[4,null],[4,null],[4,null],
             [0,true],[0,false],[1,null],[0,[]],[4,null],[4,null],[0,1]]
        ]});
        let rows = query_rows(&result, NODE_FIELDS.len()).unwrap();
        let nodes: Vec<Node> = rows.iter().map(|r| decode_node(r).unwrap()).collect();
        assert_eq!(nodes[0].memory_free, 1024);
        assert!(nodes[0].drained);
        assert_eq!(nodes[0].tags.len(), 2);
        assert_eq!(
            (nodes[0].memory_node, nodes[0].cpus_node, nodes[0].spindles),
            (512, 2, 4)
        );
        assert_eq!(nodes[1].memory_total, 0);
        assert_eq!((nodes[1].memory_node, nodes[1].cpus_node), (0, 1));
        assert_eq!(nodes[1].cpus, 0);
        assert!(nodes[1].offline);
        assert!(nodes[1].vm_capable);
    }

    #[test]
    fn rejects_rows_of_the_wrong_width_and_nameless_rows() {
        let short = json!({"data": [[[0, "node1"]]]});
        assert!(query_rows(&short, NODE_FIELDS.len()).is_err());
        let cells = vec![json!([2, null]); GROUP_FIELDS.len()];
        assert!(decode_group(&QueryRow { cells: &cells }).is_err());
        assert!(query_rows(&json!({"fields": []}), 3).is_err());
    }

    #[test]
    fn decodes_instances_and_refuses_to_guess_templates() {
        let mut cells = vec![
            json!([0, "inst1"]),
            json!([0, "uuid"]),
            json!([0, "node1"]),
            json!([0, ["node2"]]),
            json!([0, "drbd"]),
            json!([0, 2048]),
            json!([0, 10240]),
            json!([0, 2]),
            json!([0, "running"]),
            json!([0, []]),
        ];
        let instance = decode_instance(&QueryRow { cells: &cells }).unwrap();
        assert_eq!(instance.secondaries, vec!["node2".to_owned()]);
        assert_eq!(instance.disk_template, DiskTemplate::Drbd);
        assert!(instance.is_running());
        cells[4] = json!([0, "floppy"]);
        assert!(decode_instance(&QueryRow { cells: &cells }).is_err());
        cells[4] = json!([0, "plain"]);
        cells[8] = json!([3, null]);
        assert_eq!(
            decode_instance(&QueryRow { cells: &cells }).unwrap().status,
            "unknown"
        );
    }

    #[test]
    fn finds_markers_in_reason_texts_of_real_jobs() {
        let response = sample_response("luxi-queryjobs-final.json");
        let ops = &response["result"][0][2];
        assert!(ops_mention(ops, "incident X"));
        assert!(ops_mention(ops, "job=29"));
        assert!(!ops_mention(ops, "gnt:daemon:maintd"));
        assert!(!ops_mention(&json!(null), "x"));
    }

    #[test]
    fn decodes_cancel_answers() {
        assert_eq!(
            decode_cancel(&json!([true, "Job successfully cancelled"])),
            Ok(CancelOutcome::Canceled)
        );
        assert_eq!(
            decode_cancel(&json!([false, "Job 7 not found in queue"])),
            Ok(CancelOutcome::NotCancelable(
                "Job 7 not found in queue".into()
            ))
        );
        for garbled in [json!(true), json!([true]), json!(["yes", "x"]), json!(null)] {
            assert!(
                matches!(decode_cancel(&garbled), Err(BackendError::Protocol(_))),
                "{garbled}"
            );
        }
    }

    #[test]
    fn decodes_submissions_and_statuses() {
        assert_eq!(decode_submission(&json!([true, 31])), Ok(Ok(JobId(31))));
        assert_eq!(decode_submission(&json!([true, "32"])), Ok(Ok(JobId(32))));
        assert_eq!(
            decode_submission(&json!([false, "Queue drained"])),
            Ok(Err("Queue drained".into()))
        );
        assert!(decode_submission(&json!([true])).is_err());
        assert_eq!(decode_status_row(&json!(null)), Ok(None));
        assert_eq!(decode_status_row(&json!([null])), Ok(None));
        assert_eq!(
            decode_status_row(&json!(["running"])),
            Ok(Some(JobStatus::Running))
        );
        assert!(decode_status_row(&json!(["exploded"])).is_err());
    }

    #[test]
    fn decodes_failure_rows() {
        let row = json!([
            [{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "inst3"}],
            ["error"],
            [["OpPrereqError", ["Can't use drained node node6", "wrong_state"]]]
        ]);
        assert_eq!(
            decode_failure_row(&row).map(|f| f.map(|f| f.summary())),
            Ok(Some(
                "OP_INSTANCE_MIGRATE inst3: OpPrereqError: Can't use drained node node6 (wrong_state)"
                    .into()
            ))
        );
        // A job that succeeded, as a Ganeti 3.0 luxid answered it.
        let sample = sample_response("luxi-queryjobs-final.json");
        let real = &sample["result"][0];
        let row = json!([real[2], real[4], real[3]]);
        assert_eq!(decode_failure_row(&row), Ok(None));
        // An unknown job: a null row (masterd) or a row of nulls (luxid).
        assert_eq!(decode_failure_row(&json!(null)), Ok(None));
        assert_eq!(decode_failure_row(&json!([null, null, null])), Ok(None));
        for garbled in [json!([null]), json!("error"), json!({"ops": []})] {
            assert!(
                matches!(decode_failure_row(&garbled), Err(BackendError::Protocol(_))),
                "{garbled}"
            );
        }
    }

    #[actix_rt::test]
    async fn tells_why_a_job_failed_over_the_socket() {
        use crate::{
            clock::Clock,
            model::opcode::OpBody,
            sim::{lock_sim, luxi_server::serve, SimHandle, SimSpec},
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ganeti-query");
        let spec = SimSpec {
            nodes: 3,
            instances: 2,
            seed: 5,
            job_seconds: 0.0,
            ..SimSpec::default()
        };
        let sim = SimHandle::generate(&spec, Clock::starting_at(100.0));
        lock_sim(&sim.sim).inject_fault("OP_NODE_SET_PARAMS", 1);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        actix_rt::spawn(serve(listener, sim, async {
            let _ = stopped.await;
        }));
        let backend = LuxiBackend::new(LuxiConfig::new(&path));
        let drain = |node: &str| vec![OpBody::drain_node(node).with_reason("r".into(), 1)];
        let submitted = backend
            .submit_jobs(vec![drain("node2"), drain("node3")])
            .await
            .expect("accepted");
        let [Ok(failed), Ok(succeeded)] = submitted[..] else {
            panic!("{submitted:?}")
        };
        let failure = backend.job_failure(failed).await.expect("answered");
        assert_eq!(
            failure.map(|f| f.summary()).as_deref(),
            Some(
                "OP_NODE_SET_PARAMS node2: OpExecError: \
                 Injected fault: OP_NODE_SET_PARAMS failed (simulated)"
            )
        );
        assert_eq!(backend.job_failure(succeeded).await, Ok(None));
        assert_eq!(backend.job_failure(JobId(4242)).await, Ok(None));
        let _ = stop.send(());
    }
}
