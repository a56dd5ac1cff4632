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

use std::{
    fmt,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use awc::{
    error::{ConnectError, SendRequestError},
    http::{header, Method, StatusCode, Uri},
    Client,
};
use futures_util::{
    future::{FutureExt, LocalBoxFuture},
    stream, StreamExt,
};
use rustls::{client::WebPkiServerVerifier, pki_types::CertificateDer, RootCertStore};
use serde_json::{json, Map, Value};
use thiserror::Error;

use super::{
    tls::{https_client, pem_certificates, Pin, PinnedVerifier},
    BackendError, CancelOutcome, ClusterBackend, Submission,
};
use crate::model::{
    cluster::{ClusterSnapshot, DiskTemplate, Group, Instance, Node},
    job::{JobId, JobStatus},
    opcode::{OpBody, Opcode, TagKind, REASON_SOURCE},
};

/// RAPI's default port.
pub const DEFAULT_PORT: u16 = 5080;

/// Default limit on one request: connecting, sending, and reading the whole answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default limit on one answer. `/2/jobs?bulk=1` lists every job with its opcodes and can be
/// several megabytes on a busy cluster, so this is generous.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Job status requests in flight at once (one request per job).
const STATUS_REQUESTS_IN_FLIGHT: usize = 4;

/// Longest excerpt of an unexpected answer quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// Why the backend could not be set up (a configuration problem, reported at startup).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RapiSetupError {
    /// The base URL is not an `https://host[:port]` URL.
    #[error("RAPI URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials file is missing, unreadable or malformed.
    #[error("RAPI credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate file is missing, unreadable or holds no certificate.
    #[error("RAPI certificate file {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither a pinned certificate nor a CA was given.
    #[error(
        "RAPI needs a pinned certificate (the cluster's rapi.pem) or a CA file to check the server"
    )]
    NoTrust,
}

/// The user and password for HTTP Basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// RAPI user name (a line of the cluster's `rapi/users` file with the `write` option).
    pub user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Parse a credentials file: `user password` on one line. Blank lines and lines
    /// starting with `#` are skipped; exactly one other line, with exactly two fields,
    /// must be there.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err("empty; expected one line \"user password\"".into());
        };
        if lines.next().is_some() {
            return Err("more than one line; expected one line \"user password\"".into());
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [user, password] => Ok(Credentials::new(*user, *password)),
            [_] => Err("no password; expected one line \"user password\"".into()),
            _ => Err(format!(
                "{} fields; expected one line \"user password\"",
                fields.len()
            )),
        }
    }

    /// Read and parse a credentials file.
    pub fn load(path: &Path) -> Result<Self, RapiSetupError> {
        let error = |reason: String| RapiSetupError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Credentials::parse(&text).map_err(error)
    }
}

/// Certificates from a PEM file (other sections, such as a private key, are ignored).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RapiSetupError> {
    pem_certificates(path).map_err(|reason| RapiSetupError::Certificate {
        path: path.display().to_string(),
        reason,
    })
}

/// Where the RAPI is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RapiConfig {
    /// Base URL, `https://host[:port]` (e.g. `https://cluster.example.com:5080`).
    pub url: String,
    /// File holding `user password` on one line.
    pub credentials: PathBuf,
    /// PEM file with the certificate to pin (the cluster's `rapi.pem`; a key in it is ignored).
    pub pinned_certificate: Option<PathBuf>,
    /// PEM file with the CA certificates that may sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// Limit on one request, from connecting to the end of the answer.
    pub timeout: Duration,
    /// Answers larger than this are refused.
    pub max_response_bytes: usize,
}

impl RapiConfig {
    /// The settings of `[cluster]` (meaningful with `backend = "rapi"`).
    pub fn from_settings(cluster: &crate::config::ClusterSettings) -> Self {
        let file = |path: &str| (!path.is_empty()).then(|| PathBuf::from(path));
        RapiConfig {
            pinned_certificate: file(&cluster.rapi_certificate),
            ca: file(&cluster.rapi_ca),
            timeout: cluster.rapi_timeout,
            ..RapiConfig::new(&cluster.rapi_url, &cluster.rapi_credentials)
        }
    }

    /// Settings for `url` with the credentials in `credentials`, default limits and no
    /// certificate check yet (set `pinned_certificate` and/or `ca`).
    pub fn new(url: impl Into<String>, credentials: impl Into<PathBuf>) -> Self {
        RapiConfig {
            url: url.into(),
            credentials: credentials.into(),
            pinned_certificate: None,
            ca: None,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Check that `url` is `https://host[:port]` (an optional path prefix is kept) and return
/// it without a trailing slash.
pub fn validate_url(url: &str) -> Result<String, RapiSetupError> {
    let error = |reason: &str| RapiSetupError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|e| error(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            return Err(error(
                "plain http would send the password in clear; use https",
            ))
        }
        _ => return Err(error("must start with https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(error("no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(error("must not have a query or fragment"));
    }
    if url.contains('@') {
        return Err(error(
            "must not carry credentials; use the credentials file",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The rustls client configuration checking the server as `pinned` and `ca` say.
pub fn tls_config(
    pinned: Vec<CertificateDer<'static>>,
    ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<rustls::ClientConfig, RapiSetupError> {
    if pinned.is_empty() && ca.is_none() {
        return Err(RapiSetupError::NoTrust);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = match ca {
        Some(certificates) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| RapiSetupError::Certificate {
                        path: "(CA)".into(),
                        reason: format!("unusable CA certificate: {e}"),
                    })?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| RapiSetupError::Certificate {
                        path: "(CA)".into(),
                        reason: e.to_string(),
                    })?;
            Some(verifier)
        }
        None => None,
    };
    let pins = pinned
        .into_iter()
        .map(|certificate| {
            Pin::new(certificate).ok_or_else(|| RapiSetupError::Certificate {
                path: "(pinned)".into(),
                reason: "not an X.509 certificate with a public key".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = PinnedVerifier::new(pins, ca, provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RapiSetupError::Certificate {
            path: "(TLS)".into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

// ---------------------------------------------------------------------------------------
// The client

/// Everything that can go wrong in one RAPI request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RapiError {
    /// No connection (refused, unreachable, name not resolved, TLS handshake failed).
    #[error("cannot reach the RAPI at {url}: {reason}")]
    Connect {
        /// The request URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The request took longer than the limit.
    #[error("RAPI request {url} timed out after {after:?}")]
    Timeout {
        /// The request URL.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// The connection broke while the answer was read.
    #[error("RAPI request {url}: reading the answer failed: {reason}")]
    Io {
        /// The request URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error status; `message` is Ganeti's explanation.
    #[error("RAPI answered {status} to {method} {path}: {message}")]
    Status {
        /// The HTTP method.
        method: String,
        /// Path and query of the request.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// Ganeti's `message` and `explain`, or an excerpt of the body.
        message: String,
    },
    /// The answer exceeds the configured limit.
    #[error("RAPI answer to {path} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Path and query of the request.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The answer is not JSON, or not of the expected shape.
    #[error("malformed RAPI answer to {path}: {reason}")]
    Malformed {
        /// Path and query of the request.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl RapiError {
    /// The HTTP status, when the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            RapiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server refused the request for good: a 4xx status, or 501 (the method is not
    /// implemented for the resource). Nothing was done, and a retry cannot help.
    pub fn is_refusal(&self) -> bool {
        self.status()
            .is_some_and(|s| (400..500).contains(&s) || s == 501)
    }
}

impl From<RapiError> for BackendError {
    fn from(error: RapiError) -> Self {
        let text = error.to_string();
        match error {
            RapiError::Connect { .. } | RapiError::Timeout { .. } | RapiError::Io { .. } => {
                BackendError::Transient(text)
            }
            ref e if e.is_refusal() => BackendError::Refused(text),
            RapiError::Status { status, .. } if status >= 500 => BackendError::Transient(text),
            RapiError::Status { .. } | RapiError::TooLarge { .. } | RapiError::Malformed { .. } => {
                BackendError::Protocol(text)
            }
        }
    }
}

struct ClientInner {
    base: String,
    client: Client,
    credentials: Credentials,
    timeout: Duration,
    max_response_bytes: usize,
}

/// A RAPI client: JSON requests with Basic authentication, each within the time and size
/// limits. Cloning is cheap (awc's connection pool is shared).
#[derive(Clone)]
pub struct RapiClient {
    inner: Rc<ClientInner>,
}

impl fmt::Debug for RapiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RapiClient")
            .field("base", &self.inner.base)
            .field("user", &self.inner.credentials.user)
            .field("timeout", &self.inner.timeout)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// An excerpt of a body for an error message: at most [`EXCERPT_CHARS`] characters,
/// control characters replaced.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Ganeti's error body `{"code", "message", "explain"}` as one line, else an excerpt.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => {
            let message = fields.get("message").and_then(Value::as_str).unwrap_or("");
            let explain = fields.get("explain").and_then(Value::as_str).unwrap_or("");
            let message = if message.is_empty() { reason } else { message };
            if explain.is_empty() || explain == message {
                excerpt(message.as_bytes())
            } else {
                excerpt(format!("{message} ({explain})").as_bytes())
            }
        }
        _ if body.is_empty() => reason.to_owned(),
        _ => format!("{reason}: {}", excerpt(body)),
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

impl RapiClient {
    /// A client as configured: reads the credentials and certificate files. Must be called
    /// inside the actix runtime.
    pub fn new(config: &RapiConfig) -> Result<Self, RapiSetupError> {
        let base = validate_url(&config.url)?;
        let credentials = Credentials::load(&config.credentials)?;
        let pinned = match &config.pinned_certificate {
            Some(path) => load_certificates(path)?,
            None => Vec::new(),
        };
        let ca = config.ca.as_deref().map(load_certificates).transpose()?;
        let tls = tls_config(pinned, ca).map_err(|e| match (e, &config.ca) {
            (RapiSetupError::Certificate { path, reason }, Some(ca)) if path == "(CA)" => {
                RapiSetupError::Certificate {
                    path: ca.display().to_string(),
                    reason,
                }
            }
            (RapiSetupError::Certificate { path, reason }, _) if path == "(pinned)" => {
                RapiSetupError::Certificate {
                    path: config
                        .pinned_certificate
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or(path),
                    reason,
                }
            }
            (other, _) => other,
        })?;
        Ok(Self::with_tls(
            base,
            credentials,
            tls,
            config.timeout,
            config.max_response_bytes,
        ))
    }

    /// A client from parts already loaded (`base` must have passed [`validate_url`]).
    pub fn with_tls(
        base: String,
        credentials: Credentials,
        tls: rustls::ClientConfig,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Self {
        let client = https_client(tls, timeout);
        RapiClient {
            inner: Rc::new(ClientInner {
                base,
                client,
                credentials,
                timeout,
                max_response_bytes,
            }),
        }
    }

    /// `GET path` (path and query, starting with `/`).
    pub async fn get(&self, path: &str) -> Result<Value, RapiError> {
        self.call(Method::GET, path, None).await
    }

    /// One request: `method path` with an optional JSON body; the decoded JSON answer of a
    /// 2xx status, else an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RapiError> {
        let url = format!("{}{path}", self.inner.base);
        let limit = self.inner.timeout;
        match tokio::time::timeout(limit, self.exchange(&method, &url, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(RapiError::Timeout { url, after: limit }),
        }
    }

    async fn exchange(
        &self,
        method: &Method,
        url: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RapiError> {
        let inner = &self.inner;
        let request = inner
            .client
            .request(method.clone(), url)
            .basic_auth(&inner.credentials.user, &inner.credentials.password)
            .insert_header((header::ACCEPT, "application/json"));
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| match e {
            SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                RapiError::Timeout {
                    url: url.to_owned(),
                    after: inner.timeout,
                }
            }
            SendRequestError::Url(e) => RapiError::Connect {
                url: url.to_owned(),
                reason: format!("invalid URL: {e}"),
            },
            other => RapiError::Connect {
                url: url.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let status = response.status();
        let limit = inner.max_response_bytes;
        let announced = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|size| size > limit as u64) {
            return Err(RapiError::TooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.next().await {
            let chunk = chunk.map_err(|e| RapiError::Io {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(RapiError::TooLarge {
                    path: path.to_owned(),
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(RapiError::Status {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                message: error_message(status, &bytes),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| RapiError::Malformed {
            path: path.to_owned(),
            reason: format!("not JSON ({e}): {}", excerpt(&bytes)),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot decoding (the bulk lists of /2/nodes, /2/instances, /2/groups)

fn object<'a>(entry: &'a Value, what: &str) -> Result<&'a Map<String, Value>, BackendError> {
    entry
        .as_object()
        .ok_or_else(|| BackendError::Protocol(format!("{what} entry is not an object: {entry}")))
}

fn list<'a>(answer: &'a Value, what: &str) -> Result<&'a Vec<Value>, BackendError> {
    answer
        .as_array()
        .ok_or_else(|| BackendError::Protocol(format!("{what} is not a list: {answer}")))
}

fn text(fields: &Map<String, Value>, key: &str) -> Option<String> {
    fields.get(key)?.as_str().map(str::to_owned)
}

fn flag(fields: &Map<String, Value>, key: &str) -> Option<bool> {
    fields.get(key)?.as_bool()
}

/// A non-negative number (Ganeti sometimes sends floats for sizes), rounded down.
fn count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn small_count(value: Option<&Value>) -> Option<u32> {
    count(value).map(|c| u32::try_from(c).unwrap_or(u32::MAX))
}

fn texts(fields: &Map<String, Value>, key: &str) -> Vec<String> {
    match fields.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// A node from an entry of `/2/nodes?bulk=1`. Live fields (memory, disk, CPUs) are `null`
/// for offline or unreachable nodes and count as 0; an offline node has no resources at
/// all, as with Luxi.
pub fn decode_node(entry: &Value) -> Result<Node, BackendError> {
    let fields = object(entry, "node")?;
    let name = text(fields, "name")
        .ok_or_else(|| BackendError::Protocol(format!("node entry without a name: {entry}")))?;
    let offline = flag(fields, "offline").unwrap_or(false);
    let live = |key: &str| {
        if offline {
            None
        } else {
            fields.get(key)
        }
    };
    Ok(Node {
        uuid: text(fields, "uuid").unwrap_or_default(),
        group: text(fields, "group.uuid").unwrap_or_default(),
        memory_total: count(live("mtotal")).unwrap_or(0),
        memory_free: count(live("mfree")).unwrap_or(0),
        disk_total: count(live("dtotal")).unwrap_or(0),
        disk_free: count(live("dfree")).unwrap_or(0),
        cpus: small_count(live("ctotal")).unwrap_or(0),
        memory_node: count(live("mnode")).unwrap_or(0),
        cpus_node: count(live("cnos"))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        spindles: count(fields.get("ndparams").and_then(|p| p.get("spindle_count")))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        offline,
        drained: flag(fields, "drained").unwrap_or(false),
        // Ganeti's default for the flag.
        vm_capable: flag(fields, "vm_capable").unwrap_or(true),
        tags: texts(fields, "tags").into_iter().collect(),
        name,
    })
}

/// An instance from an entry of `/2/instances?bulk=1`. Name, primary node and disk
/// template have no sensible default, so their absence fails the snapshot.
pub fn decode_instance(entry: &Value) -> Result<Instance, BackendError> {
    let fields = object(entry, "instance")?;
    let name = text(fields, "name")
        .ok_or_else(|| BackendError::Protocol(format!("instance entry without a name: {entry}")))?;
    let primary = text(fields, "pnode")
        .ok_or_else(|| BackendError::Protocol(format!("instance {name} has no primary node")))?;
    let disk_template = fields
        .get("disk_template")
        .and_then(|v| serde_json::from_value::<DiskTemplate>(v.clone()).ok())
        .ok_or_else(|| {
            BackendError::Protocol(format!(
                "instance {name} has an unknown disk template {:?}",
                fields.get("disk_template")
            ))
        })?;
    let be = |key: &str| fields.get("beparams").and_then(|p| p.get(key));
    Ok(Instance {
        uuid: text(fields, "uuid").unwrap_or_default(),
        primary,
        secondaries: texts(fields, "snodes"),
        disk_template,
        memory: count(be("maxmem")).unwrap_or(0),
        disk: count(fields.get("disk_usage")).unwrap_or(0),
        vcpus: small_count(be("vcpus")).unwrap_or(0),
        status: text(fields, "status").unwrap_or_else(|| "unknown".to_owned()),
        tags: texts(fields, "tags").into_iter().collect(),
        auto_balance: be("auto_balance").and_then(Value::as_bool).unwrap_or(true),
        spindle_use: count(be("spindle_use"))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        name,
    })
}

/// A group from an entry of `/2/groups?bulk=1`; `ipolicy` there is the filled policy (the
/// group's own values over the cluster's), as with Luxi.
pub fn decode_group(entry: &Value) -> Result<Group, BackendError> {
    let fields = object(entry, "group")?;
    let name = text(fields, "name")
        .ok_or_else(|| BackendError::Protocol(format!("group entry without a name: {entry}")))?;
    let ratio = |key: &str| {
        fields
            .get("ipolicy")
            .and_then(|p| p.get(key))
            .and_then(Value::as_f64)
    };
    Ok(Group {
        uuid: text(fields, "uuid").unwrap_or_default(),
        alloc_policy: text(fields, "alloc_policy").unwrap_or_else(|| "preferred".to_owned()),
        tags: texts(fields, "tags").into_iter().collect(),
        vcpu_ratio: ratio("vcpu-ratio"),
        spindle_ratio: ratio("spindle-ratio"),
        name,
    })
}

/// The master's name from `/2/info`.
fn decode_master(info: &Value) -> Result<String, BackendError> {
    info.get("master")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Protocol("no master in the RAPI /2/info answer".into()))
}

// ---------------------------------------------------------------------------------------
// Opcodes to requests

/// One opcode as a RAPI request (before the reason and `depends` are added).
#[derive(Debug, Clone, PartialEq)]
pub struct OpRequest {
    /// HTTP method.
    pub method: Method,
    /// Path, percent-encoded.
    pub path: String,
    /// Query arguments other than `reason` (the tags of a tag request), not yet encoded.
    pub query: Vec<(String, String)>,
    /// Body parameters (`None`: the endpoint takes its parameters from the URL; a body is
    /// then sent only to carry `depends`).
    pub body: Option<Map<String, Value>>,
}

impl OpRequest {
    /// Path and query with `reason` appended.
    pub fn path_and_query(&self, reason: &str) -> String {
        let mut out = self.path.clone();
        let arguments = self
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(std::iter::once(("reason", reason)));
        for (i, (key, value)) in arguments.enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(key));
            out.push('=');
            out.push_str(&percent_encode(value));
        }
        out
    }

    /// The JSON body, with `depends` on `previous` succeeding if given.
    pub fn body_with_depends(&self, previous: Option<JobId>) -> Option<Value> {
        let depends = previous.map(|id| json!([[id, ["success"]]]));
        match (&self.body, depends) {
            (Some(body), depends) => {
                let mut body = body.clone();
                if let Some(depends) = depends {
                    body.insert("depends".into(), depends);
                }
                Some(Value::Object(body))
            }
            (None, Some(depends)) => Some(json!({ "depends": depends })),
            (None, None) => None,
        }
    }
}

/// The opcode's parameters without `OP_ID` and the name that goes into the URL.
fn body_params(body: &OpBody, name_key: &str) -> Result<Map<String, Value>, String> {
    match serde_json::to_value(body) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("OP_ID");
            fields.remove(name_key);
            Ok(fields)
        }
        Ok(other) => Err(format!("{} encodes as {other}", body.op_id())),
        Err(e) => Err(format!("cannot encode {}: {e}", body.op_id())),
    }
}

fn tags_request(
    method: Method,
    kind: TagKind,
    name: Option<&str>,
    tags: &[String],
) -> Result<OpRequest, String> {
    let named = |collection: &str| match name {
        Some(name) if !name.is_empty() => {
            Ok(format!("/2/{collection}/{}/tags", percent_encode(name)))
        }
        _ => Err(format!("tags of a {kind:?} need the object's name").to_lowercase()),
    };
    let path = match kind {
        TagKind::Cluster => "/2/tags".to_owned(),
        TagKind::Node => named("nodes")?,
        TagKind::Instance => named("instances")?,
        TagKind::Nodegroup => named("groups")?,
        TagKind::Network => named("networks")?,
    };
    Ok(OpRequest {
        method,
        path,
        // RAPI reads the tags from `tag=` arguments only; a body is ignored.
        query: tags.iter().map(|t| ("tag".to_owned(), t.clone())).collect(),
        body: None,
    })
}

/// The RAPI request for one opcode, or why RAPI cannot express it.
pub fn op_request(body: &OpBody) -> Result<OpRequest, String> {
    let instance = |method: Method, action: &str, name: &str| -> Result<OpRequest, String> {
        Ok(OpRequest {
            method,
            path: format!("/2/instances/{}/{action}", percent_encode(name)),
            query: Vec::new(),
            body: Some(body_params(body, "instance_name")?),
        })
    };
    match body {
        OpBody::NodeSetParams { node_name, .. } => Ok(OpRequest {
            method: Method::POST,
            path: format!("/2/nodes/{}/modify", percent_encode(node_name)),
            query: Vec::new(),
            body: Some(body_params(body, "node_name")?),
        }),
        OpBody::InstanceMigrate { instance_name, .. } => {
            instance(Method::PUT, "migrate", instance_name)
        }
        OpBody::InstanceFailover { instance_name, .. } => {
            instance(Method::PUT, "failover", instance_name)
        }
        OpBody::InstanceReplaceDisks { instance_name, .. } => {
            instance(Method::POST, "replace-disks", instance_name)
        }
        OpBody::InstanceRecreateDisks { instance_name, .. } => {
            instance(Method::POST, "recreate-disks", instance_name)
        }
        OpBody::TagsSet { kind, name, tags } => {
            tags_request(Method::PUT, *kind, name.as_deref(), tags)
        }
        OpBody::TagsDel { kind, name, tags } => {
            tags_request(Method::DELETE, *kind, name.as_deref(), tags)
        }
        OpBody::InstanceMove { .. } => Err(
            "OP_INSTANCE_MOVE has no RAPI endpoint; moving a non-mirrored instance needs the \
             Luxi backend"
                .into(),
        ),
        OpBody::TestDelay { .. } => Err(
            "OP_TEST_DELAY has no RAPI endpoint; with the RAPI backend set \
             planner.harep_job_delay = 0"
                .into(),
        ),
        OpBody::RepairCommand { .. } => {
            Err("OP_REPAIR_COMMAND exists only in Ganeti 2.17 and has no RAPI endpoint".into())
        }
        OpBody::InstanceReinstall { .. } => Err(
            "OP_INSTANCE_REINSTALL cannot be sent through RAPI as maintd means it: the \
             reinstall endpoint adds a shutdown and a startup and accepts neither depends \
             nor a reason"
                .into(),
        ),
    }
}

/// The requests of one maintd job, or why the job cannot go through RAPI.
pub fn job_requests(ops: &[Opcode]) -> Result<Vec<OpRequest>, String> {
    if ops.is_empty() {
        return Err("a job needs at least one opcode".into());
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            op_request(&op.body).map_err(|e| {
                if ops.len() == 1 {
                    e
                } else {
                    format!("opcode {} of {}: {e}", i + 1, ops.len())
                }
            })
        })
        .collect()
}

/// Suffix marking position `index` (0-based) in a chain of `len` RAPI jobs.
fn chain_suffix(index: usize, len: usize) -> String {
    format!(" [RAPI job {} of {len}]", index + 1)
}

/// The `?reason=` text of `op`: maintd's reason source, then the texts of its trail, then
/// its place in the chain if the job has several opcodes.
pub fn reason_text(op: &Opcode, index: usize, len: usize) -> String {
    let mut text = REASON_SOURCE.to_owned();
    for entry in op.reason.iter().filter(|e| !e.1.is_empty()) {
        text.push(' ');
        text.push_str(&entry.1);
    }
    if len > 1 {
        text.push_str(&chain_suffix(index, len));
    }
    text
}

/// Where a reason text puts its job in a chain: `(position, length)`, 1-based.
fn chain_position(text: &str) -> Option<(usize, usize)> {
    let start = text.rfind(" [RAPI job ")? + " [RAPI job ".len();
    let rest = text[start..].strip_suffix(']')?;
    let (position, len) = rest.split_once(" of ")?;
    Some((position.parse().ok()?, len.parse().ok()?))
}

/// The reason texts of a job's opcodes (from a `/2/jobs` entry).
fn reason_texts(job: &Value) -> impl Iterator<Item = &str> {
    job.get("ops")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|op| op.get("reason")?.as_array())
        .flatten()
        .filter_map(|entry| entry.get(1)?.as_str())
}

/// Whether a job (a `/2/jobs?bulk=1` entry) mentions `marker` in a reason text and is the
/// last job of its chain. An earlier job of a chain is left out: the last one stands for
/// the maintd job. A chain whose last job never reached the queue is left out altogether
/// (the maintd job was not submitted as a whole).
fn is_marked_chain_end(job: &Value, marker: &str) -> bool {
    let mut marked = reason_texts(job)
        .filter(|text| text.contains(marker))
        .peekable();
    if marked.peek().is_none() {
        return false;
    }
    marked.all(|text| chain_position(text).is_none_or(|(position, len)| position >= len))
}

fn decode_job_id(answer: &Value, path: &str) -> Result<JobId, RapiError> {
    serde_json::from_value::<JobId>(answer.clone()).map_err(|_| RapiError::Malformed {
        path: path.to_owned(),
        reason: format!(
            "expected a job id, got {}",
            excerpt(answer.to_string().as_bytes())
        ),
    })
}

/// The status of a `/2/jobs/<id>` answer. luxid knows no such job: every field is `null`
/// (RAPI answers 404 only when the whole row is missing).
fn decode_status(job: &Value, path: &str) -> Result<Option<JobStatus>, RapiError> {
    match job.get("status") {
        Some(Value::Null) => Ok(None),
        Some(status) => serde_json::from_value::<JobStatus>(status.clone())
            .map(Some)
            .map_err(|_| RapiError::Malformed {
                path: path.to_owned(),
                reason: format!(
                    "unknown job status {}",
                    excerpt(status.to_string().as_bytes())
                ),
            }),
        None => Err(RapiError::Malformed {
            path: path.to_owned(),
            reason: format!("no job status in {}", excerpt(job.to_string().as_bytes())),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// The backend

/// [`ClusterBackend`] over RAPI.
#[derive(Debug, Clone)]
pub struct RapiBackend {
    client: RapiClient,
}

/// How submitting one job's chain ended, short of success.
enum ChainFailure {
    /// RAPI refused a request: nothing of the job runs (earlier jobs were canceled).
    Refused(String),
    /// The outcome is unknown (connection lost, server error, garbled answer).
    Unknown(BackendError),
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

async fn master_node(client: &RapiClient) -> Result<String, BackendError> {
    decode_master(&client.get("/2/info").await?)
}

async fn snapshot(client: &RapiClient) -> Result<ClusterSnapshot, BackendError> {
    let (nodes, instances, groups, tags, info) = futures_util::future::try_join5(
        client.get("/2/nodes?bulk=1"),
        client.get("/2/instances?bulk=1"),
        client.get("/2/groups?bulk=1"),
        client.get("/2/tags"),
        client.get("/2/info"),
    )
    .await?;
    Ok(ClusterSnapshot {
        master: decode_master(&info)?,
        cluster_tags: list(&tags, "the cluster tags")?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        nodes: list(&nodes, "the node list")?
            .iter()
            .map(decode_node)
            .collect::<Result<_, _>>()?,
        instances: list(&instances, "the instance list")?
            .iter()
            .map(decode_instance)
            .collect::<Result<_, _>>()?,
        groups: list(&groups, "the group list")?
            .iter()
            .map(decode_group)
            .collect::<Result<_, _>>()?,
    })
}

/// Best effort: cancel jobs of a chain that cannot be completed, last first.
async fn cancel_jobs(client: &RapiClient, ids: &[JobId]) -> String {
    let mut notes = Vec::new();
    for id in ids.iter().rev() {
        match client
            .call(Method::DELETE, &format!("/2/jobs/{id}"), None)
            .await
        {
            Ok(answer) if answer.get(0).and_then(Value::as_bool) == Some(true) => {
                notes.push(format!("canceled job {id}"))
            }
            Ok(answer) => notes.push(format!("job {id} not canceled: {answer}")),
            Err(e) => notes.push(format!("job {id} not canceled: {e}")),
        }
    }
    notes.join("; ")
}

/// Submit one maintd job as a chain of RAPI jobs; the id of the last one.
async fn submit_chain(
    client: &RapiClient,
    ops: &[Opcode],
    requests: &[OpRequest],
) -> Result<JobId, ChainFailure> {
    let len = requests.len();
    let mut submitted: Vec<JobId> = Vec::with_capacity(len);
    for (index, (op, request)) in ops.iter().zip(requests).enumerate() {
        let path = request.path_and_query(&reason_text(op, index, len));
        let body = request.body_with_depends(submitted.last().copied());
        let answer = client
            .call(request.method.clone(), &path, body.as_ref())
            .await
            .and_then(|answer| decode_job_id(&answer, &path));
        match answer {
            Ok(id) => submitted.push(id),
            Err(e) if e.is_refusal() => {
                let mut message = if len == 1 {
                    e.to_string()
                } else {
                    format!("opcode {} of {len}: {e}", index + 1)
                };
                if !submitted.is_empty() {
                    message.push_str(&format!(
                        " (earlier jobs of the chain: {})",
                        cancel_jobs(client, &submitted).await
                    ));
                }
                return Err(ChainFailure::Refused(message));
            }
            // A lost answer to a submission: the job may be queued. Only a lookup by the
            // submission key can tell, so the error counts as transient.
            Err(e) => {
                let error = match BackendError::from(e) {
                    BackendError::Protocol(text) => BackendError::Transient(format!(
                        "{text} (the submission's outcome is unknown)"
                    )),
                    other => other,
                };
                return Err(ChainFailure::Unknown(error));
            }
        }
    }
    submitted
        .last()
        .copied()
        .ok_or_else(|| ChainFailure::Refused("a job needs at least one opcode".into()))
}

async fn submit_jobs(
    client: &RapiClient,
    jobs: Vec<Vec<Opcode>>,
) -> Result<Vec<Submission>, BackendError> {
    let mut results = Vec::with_capacity(jobs.len());
    for ops in jobs {
        let requests = match job_requests(&ops) {
            Ok(requests) => requests,
            Err(why) => {
                results.push(Err(why));
                continue;
            }
        };
        match submit_chain(client, &ops, &requests).await {
            Ok(id) => results.push(Ok(id)),
            Err(ChainFailure::Refused(why)) => results.push(Err(why)),
            // Jobs submitted so far are found again by their submission keys.
            Err(ChainFailure::Unknown(error)) => return Err(error),
        }
    }
    Ok(results)
}

async fn job_status(client: &RapiClient, id: JobId) -> Result<Option<JobStatus>, BackendError> {
    let path = format!("/2/jobs/{id}");
    match client.get(&path).await {
        Ok(job) => Ok(decode_status(&job, &path)?),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn job_statuses(
    client: &RapiClient,
    ids: Vec<JobId>,
) -> Result<Vec<Option<JobStatus>>, BackendError> {
    stream::iter(ids)
        .map(|id| job_status(client, id))
        .buffered(STATUS_REQUESTS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn find_jobs_by_reason(
    client: &RapiClient,
    marker: String,
) -> Result<Vec<JobId>, BackendError> {
    let path = "/2/jobs?bulk=1";
    let answer = client.get(path).await?;
    let mut found = Vec::new();
    for job in list(&answer, "the job list")? {
        if !is_marked_chain_end(job, &marker) {
            continue;
        }
        let id = job.get("id").cloned().unwrap_or(Value::Null);
        found.push(decode_job_id(&id, path)?);
    }
    found.sort();
    Ok(found)
}

/// Longest chain walked back from its last job; maintd's jobs have a handful of opcodes,
/// so this only guards against a garbled or looping `depends`.
const MAX_CHAIN_JOBS: usize = 64;

/// The job a chain job depends on: only for a job maintd made as link 2 or later of a
/// chain (its reason text says so), the job its `depends` names.
fn chain_predecessor(job: &Value) -> Option<JobId> {
    let (position, _) = reason_texts(job).find_map(chain_position)?;
    if position < 2 {
        return None;
    }
    let depends = job.get("ops")?.get(0)?.get("depends")?.get(0)?.get(0)?;
    serde_json::from_value::<JobId>(depends.clone()).ok()
}

/// The jobs of the chain ending with `last`, first to last, each with its status (`None`:
/// unknown to the cluster).
async fn chain_of(
    client: &RapiClient,
    last: JobId,
) -> Result<Vec<(JobId, Option<JobStatus>)>, BackendError> {
    let mut chain: Vec<(JobId, Option<JobStatus>)> = Vec::new();
    let mut next = Some(last);
    while let Some(id) = next.take() {
        let path = format!("/2/jobs/{id}");
        let job = match client.get(&path).await {
            Ok(job) => job,
            Err(e) if e.status() == Some(404) => Value::Null,
            Err(e) => return Err(e.into()),
        };
        let status = match &job {
            Value::Null => None,
            job => decode_status(job, &path)?,
        };
        chain.push((id, status));
        next = chain_predecessor(&job)
            .filter(|previous| chain.len() < MAX_CHAIN_JOBS && previous < &id);
    }
    chain.reverse();
    Ok(chain)
}

/// RAPI's answer to `DELETE /2/jobs/<id>`: luxid's `CancelJob` result `[success, message]`.
async fn cancel_one(client: &RapiClient, id: JobId) -> Result<CancelOutcome, BackendError> {
    let path = format!("/2/jobs/{id}");
    let answer = client.call(Method::DELETE, &path, None).await?;
    match answer.as_array().map(Vec::as_slice) {
        Some([Value::Bool(true), _]) => Ok(CancelOutcome::Canceled),
        Some([Value::Bool(false), Value::String(message)]) => {
            Ok(CancelOutcome::NotCancelable(message.clone()))
        }
        Some([Value::Bool(false), message]) => {
            Ok(CancelOutcome::NotCancelable(message.to_string()))
        }
        _ => Err(RapiError::Malformed {
            path,
            reason: format!(
                "expected [success, message], got {}",
                excerpt(answer.to_string().as_bytes())
            ),
        }
        .into()),
    }
}

/// Cancel the maintd job whose chain ends with `last`. Like a Luxi job waiting for the locks
/// of a later opcode, a chain is cancelable while its first unfinished job has not started:
/// that job is canceled first, so nothing after it can run any more (Ganeti cancels the jobs
/// depending on a canceled one); the later jobs are then canceled too, so they end at once.
/// A chain whose first unfinished job runs, has failed or is unknown is left alone.
async fn cancel_chain(client: &RapiClient, last: JobId) -> Result<CancelOutcome, BackendError> {
    let chain = chain_of(client, last).await?;
    let Some(open) = chain
        .iter()
        .position(|(_, status)| *status != Some(JobStatus::Success))
    else {
        return Ok(CancelOutcome::NotCancelable(format!(
            "job {last} has already succeeded"
        )));
    };
    let (first, status) = chain[open];
    match status {
        Some(JobStatus::Queued | JobStatus::Waiting) => {}
        Some(other) => {
            return Ok(CancelOutcome::NotCancelable(format!(
                "job {first} is {}",
                other.as_str()
            )))
        }
        None => {
            return Ok(CancelOutcome::NotCancelable(format!(
                "job {first} is not known to the cluster"
            )))
        }
    }
    // It may have started since it was looked at: then Ganeti refuses, and the chain goes on.
    let outcome = cancel_one(client, first).await?;
    if outcome == CancelOutcome::Canceled {
        for (later, _) in &chain[open + 1..] {
            // They cannot run any more whatever the answer (see above).
            if let Err(e) = cancel_one(client, *later).await {
                tracing::debug!(target: "maintd::rapi", job = %later, error = %e, "cancel of a later chain job failed");
            }
        }
    }
    Ok(outcome)
}

impl ClusterBackend for RapiBackend {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
        let client = self.client.clone();
        async move { snapshot(&client).await }.boxed_local()
    }

    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
        let client = self.client.clone();
        async move { master_node(&client).await }.boxed_local()
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

    fn cancel_job(
        &self,
        id: JobId,
    ) -> LocalBoxFuture<'static, Result<CancelOutcome, BackendError>> {
        let client = self.client.clone();
        async move { cancel_chain(&client, id).await }.boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::opcode::ReasonEntry;

    #[test]
    fn credentials_files_are_parsed_strictly() {
        let ok = Credentials::parse("# maintd\n\nmaintd  maintd-secret\n").unwrap();
        assert_eq!(
            (ok.user.as_str(), ok.password.as_str()),
            ("maintd", "maintd-secret")
        );
        assert!(!format!("{ok:?}").contains("secret"));
        for bad in [
            "",
            "# only a comment\n",
            "maintd\n",
            "a b c\n",
            "a b\nc d\n",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?}");
        }
        let missing = Credentials::load(Path::new("/nonexistent/maintd-rapi")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/maintd-rapi"));
    }

    #[test]
    fn urls_must_be_https_without_extras() {
        assert_eq!(
            validate_url("https://cluster.example.com:5080/").unwrap(),
            "https://cluster.example.com:5080"
        );
        assert!(validate_url("https://127.0.0.1:15080").is_ok());
        for bad in [
            "http://cluster:5080",
            "cluster:5080",
            "https://",
            "https://c:5080/?x=1",
            "https://u:p@c:5080",
            "",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode("ganeti:watcher:autorepair:pending:migrate:u:1:4+5 x/é"),
            "ganeti%3Awatcher%3Aautorepair%3Apending%3Amigrate%3Au%3A1%3A4%2B5%20x%2F%C3%A9"
        );
        assert_eq!(
            percent_encode("node1.ganeti-test_x~"),
            "node1.ganeti-test_x~"
        );
    }

    #[test]
    fn reason_texts_carry_the_source_and_the_chain_position() {
        let op = OpBody::drain_node("n1").with_reason("Draining n1 (submission k)".into(), 1);
        assert_eq!(
            reason_text(&op, 0, 1),
            "gnt:daemon:maintd Draining n1 (submission k)"
        );
        let chained = reason_text(&op, 1, 3);
        assert_eq!(
            chained,
            "gnt:daemon:maintd Draining n1 (submission k) [RAPI job 2 of 3]"
        );
        assert_eq!(chain_position(&chained), Some((2, 3)));
        assert_eq!(chain_position("gnt:daemon:maintd x"), None);
        let bare = Opcode {
            body: OpBody::drain_node("n1"),
            reason: vec![ReasonEntry("x".into(), String::new(), 0)],
        };
        assert_eq!(reason_text(&bare, 0, 1), "gnt:daemon:maintd");
    }

    #[test]
    fn chain_ends_stand_for_their_jobs() {
        let job = |text: &str| json!({"id": 1, "ops": [{"reason": [["gnt:user", text, 1]]}]});
        let marker = "submission k)";
        assert!(is_marked_chain_end(&job("m (submission k)"), marker));
        assert!(is_marked_chain_end(
            &job("m (submission k) [RAPI job 2 of 2]"),
            marker
        ));
        assert!(!is_marked_chain_end(
            &job("m (submission k) [RAPI job 1 of 2]"),
            marker
        ));
        assert!(!is_marked_chain_end(&job("m (submission k2)"), marker));
        assert!(!is_marked_chain_end(&json!({"id": 1}), marker));
        assert!(!is_marked_chain_end(&json!("garbage"), marker));
    }

    #[test]
    fn inexpressible_opcodes_are_refused_with_a_reason() {
        for body in [
            OpBody::instance_move("i1", "n2"),
            OpBody::TestDelay {
                duration: 1.0,
                on_master: true,
            },
            OpBody::repair_command("n1", "c", "{}".into()),
            OpBody::InstanceReinstall {
                instance_name: "i1".into(),
                os_type: None,
                force_variant: false,
            },
        ] {
            let why = op_request(&body).unwrap_err();
            assert!(why.contains(body.op_id()), "{why}");
        }
        let ops = vec![
            OpBody::drain_node("n1").with_reason("x".into(), 1),
            OpBody::instance_move("i1", "n2").with_reason("x".into(), 1),
        ];
        assert!(job_requests(&ops)
            .unwrap_err()
            .starts_with("opcode 2 of 2: OP_INSTANCE_MOVE"));
        assert!(job_requests(&[]).is_err());
        let nameless = OpBody::TagsSet {
            kind: TagKind::Node,
            name: None,
            tags: vec!["t".into()],
        };
        assert!(op_request(&nameless).is_err());
    }

    #[test]
    fn error_bodies_become_one_line() {
        let body = br#"{"code": 400, "message": "Invalid body parameters: x", "explain": ""}"#;
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, body),
            "Invalid body parameters: x"
        );
        let body = br#"{"code": 401, "message": "Unauthorized", "explain": "No permission"}"#;
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, body),
            "Unauthorized (No permission)"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"<html>\n</html>"),
            "Bad Gateway: <html> </html>"
        );
        assert_eq!(error_message(StatusCode::NOT_FOUND, b""), "Not Found");
        let long = vec![b'x'; 1000];
        assert!(
            error_message(StatusCode::BAD_GATEWAY, &long)
                .chars()
                .count()
                < 250
        );
    }

    #[test]
    fn error_classes_map_to_backend_errors() {
        let status = |status| RapiError::Status {
            method: "GET".into(),
            path: "/".into(),
            status,
            message: "m".into(),
        };
        assert!(matches!(
            BackendError::from(status(503)),
            BackendError::Transient(_)
        ));
        assert!(matches!(
            BackendError::from(status(403)),
            BackendError::Refused(_)
        ));
        assert!(matches!(
            BackendError::from(status(302)),
            BackendError::Protocol(_)
        ));
        assert!(BackendError::from(RapiError::Timeout {
            url: "u".into(),
            after: Duration::from_secs(1)
        })
        .is_retryable());
        assert!(matches!(
            BackendError::from(RapiError::TooLarge {
                path: "/".into(),
                limit: 1
            }),
            BackendError::Protocol(_)
        ));
    }

    #[test]
    fn decoding_never_panics_on_odd_entries() {
        for entry in [
            json!(null),
            json!(1),
            json!("x"),
            json!([]),
            json!({}),
            json!({"name": 5}),
            json!({"name": "x", "pnode": null}),
            json!({"name": "x", "pnode": "n", "disk_template": "floppy"}),
        ] {
            let _ = decode_node(&entry);
            let _ = decode_instance(&entry);
            let _ = decode_group(&entry);
            assert!(decode_instance(&entry).is_err());
        }
        let node = decode_node(&json!({
            "name": "n", "mtotal": -5, "mfree": 1e300, "ctotal": 1e12, "cnos": "x",
            "ndparams": {"spindle_count": 7.9}, "tags": ["a", 3, null]
        }))
        .unwrap();
        assert_eq!(node.memory_total, 0);
        assert_eq!(node.cpus, u32::MAX);
        assert_eq!(node.cpus_node, 1);
        assert_eq!(node.spindles, 7);
        assert_eq!(node.tags.len(), 1);
    }
}
