//! Self-diagnose reports over HTTP, from the monitoring daemon (`/1/report/node/diagnose`,
//! port 1815, plain HTTP without authentication; see `design-repaird` and
//! `design-monitoring-agent`) or from the simulator.
//!
//! awc needs the actix runtime (`actix_rt`); call [`HttpDiagnose::fetch`] from inside it.
//!
//! One [`HttpDiagnose`] (and the [`HttpLoad`] made from it with [`HttpLoad::sharing`])
//! holds one client and one connection pool for all nodes; clones share them. Its
//! connector opens at most [`HttpDiagnose::with_connection_limit`] connections at once.
//! Connections are kept for reuse only when every node's URL has the same host and port
//! (a proxy, the simulator): with one host per node (`http://{node}:1815/...`) each
//! connection would be reused only by the next poll of the same node, so a large cluster
//! would hold one idle socket per node; there each request closes its connection.
//! The client is built without TLS support, so an `https` template is accepted but its
//! requests fail as [`FetchError::Unreachable`] until awc's TLS features are enabled.

use std::{sync::Arc, time::Duration};

use awc::{error::SendRequestError, http::Uri, Client};
use futures_util::{
    future::{FutureExt, LocalBoxFuture},
    StreamExt,
};
use thiserror::Error;

use super::{DiagnoseSource, FetchError, LoadSource};
use crate::clock::Clock;
use crate::model::diagnose::{
    open_signed_report, parse_report, Diagnose, ReportError, DEFAULT_MAX_REPORT_BYTES,
};
use crate::model::load::{parse_cpu_load, CpuLoad};
use crate::signing::HmacKey;

/// The placeholder replaced by the node name in a URL template.
pub const NODE_PLACEHOLDER: &str = "{node}";

/// The monitoring daemon's diagnose report on its default port.
pub const MOND_URL_TEMPLATE: &str = "http://{node}:1815/1/report/node/diagnose";

/// Default limit on one fetch, from connecting to the end of the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default limit on the connections open at once (awc's own default).
pub const DEFAULT_CONNECTION_LIMIT: usize = 100;

/// Why a URL template was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// The template lacks the `{node}` placeholder.
    #[error("URL template {0:?} does not contain {{node}}")]
    NoPlaceholder(String),
    /// The template does not give a valid URL once a node name is filled in.
    #[error("URL template {template:?} does not give a valid URL: {reason}")]
    InvalidUrl {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL's scheme is not `http` or `https`.
    #[error("URL template {0:?} must start with http:// or https://")]
    UnsupportedScheme(String),
}

/// Fetches diagnose reports with awc from a URL built per node.
#[derive(Clone)]
pub struct HttpDiagnose {
    template: String,
    timeout: Duration,
    max_body_bytes: usize,
    client: Client,
    /// Connections are kept for reuse: every node's URL has the same host and port.
    reuse_connections: bool,
    verification: Option<Arc<Verification>>,
}

/// How signed reports (from maintd agents) are checked.
#[derive(Debug)]
struct Verification {
    key: HmacKey,
    max_age: Duration,
    /// What "now" is when a report's timestamp is judged.
    clock: Clock,
}

impl std::fmt::Debug for HttpDiagnose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDiagnose")
            .field("template", &self.template)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("reuse_connections", &self.reuse_connections)
            .finish_non_exhaustive()
    }
}

/// Node names are DNS names; anything else could redirect the request elsewhere
/// (`evil.example/x?`, `user@host`) once pasted into the URL.
fn is_plain_host_name(node: &str) -> bool {
    !node.is_empty()
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl HttpDiagnose {
    /// A source for `template` (containing `{node}`) with the given per-fetch timeout and
    /// body limit. Must be called inside the actix runtime (awc's client is built here).
    pub fn new(
        template: &str,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Self, TemplateError> {
        validate_template(template)?;
        Ok(HttpDiagnose {
            template: template.to_owned(),
            timeout,
            max_body_bytes,
            client: new_client(timeout, DEFAULT_CONNECTION_LIMIT),
            reuse_connections: shares_one_host(template),
            verification: None,
        })
    }

    /// Open at most `limit` connections at once (at least 1); a request beyond waits for
    /// one to close or come back to the pool, within its timeout. Replaces the client:
    /// call before cloning.
    pub fn with_connection_limit(mut self, limit: usize) -> Self {
        self.client = new_client(self.timeout, limit.max(1));
        self
    }

    /// Accept only reports signed with `key`, answering this very request (each fetch
    /// sends a fresh `salt`) and made at most `max_age` before (or after) `clock`'s now.
    pub fn verified_with(mut self, key: HmacKey, max_age: Duration, clock: Clock) -> Self {
        self.verification = Some(Arc::new(Verification {
            key,
            max_age,
            clock,
        }));
        self
    }

    /// The monitoring daemon on every node's port 1815, with default limits.
    pub fn mond() -> Self {
        HttpDiagnose {
            template: MOND_URL_TEMPLATE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_REPORT_BYTES,
            client: new_client(DEFAULT_TIMEOUT, DEFAULT_CONNECTION_LIMIT),
            reuse_connections: shares_one_host(MOND_URL_TEMPLATE),
            verification: None,
        }
    }

    /// The client for one request.
    fn request(&self) -> Request {
        Request {
            client: self.client.clone(),
            reuse_connection: self.reuse_connections,
        }
    }

    /// The URL of `node`'s report.
    pub fn url_for(&self, node: &str) -> Result<String, FetchError> {
        if !is_plain_host_name(node) {
            return Err(FetchError::Unreachable(format!(
                "{node:?} is not a valid node name"
            )));
        }
        Ok(self.template.replace(NODE_PLACEHOLDER, node))
    }
}

/// A client with its own connector (and so its own pool) of at most `limit` connections.
fn new_client(timeout: Duration, limit: usize) -> Client {
    Client::builder()
        .connector(awc::Connector::new().limit(limit))
        .timeout(timeout)
        .finish()
}

/// Whether every node's URL from `template` has the same host and port, so that one
/// kept connection serves the next poll of any node.
fn shares_one_host(template: &str) -> bool {
    let authority = |node: &str| {
        template
            .replace(NODE_PLACEHOLDER, node)
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.authority().map(|a| a.as_str().to_owned()))
    };
    let first = authority("node-a");
    first.is_some() && first == authority("node-b")
}

/// Check that `template` has the placeholder and gives an http(s) URL with a host.
pub fn validate_template(template: &str) -> Result<(), TemplateError> {
    if !template.contains(NODE_PLACEHOLDER) {
        return Err(TemplateError::NoPlaceholder(template.to_owned()));
    }
    let example = template.replace(NODE_PLACEHOLDER, "node1.example.com");
    let uri: Uri = example.parse().map_err(|e| TemplateError::InvalidUrl {
        template: template.to_owned(),
        reason: format!("{e}"),
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(TemplateError::UnsupportedScheme(template.to_owned())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(TemplateError::InvalidUrl {
            template: template.to_owned(),
            reason: "no host".into(),
        });
    }
    Ok(())
}

/// One fetch: send, check the status, read at most `max_body_bytes + 1` bytes, check the
/// signature if required, parse.
async fn fetch_report(
    client: Request,
    url: String,
    max_body_bytes: usize,
    verification: Option<Arc<Verification>>,
) -> Result<Diagnose, FetchError> {
    let Some(verification) = verification else {
        let body = fetch_body(client, url, max_body_bytes).await?;
        return Ok(parse_report(&body, max_body_bytes)?);
    };
    let salt = uuid::Uuid::new_v4().simple().to_string();
    let separator = if url.contains('?') { '&' } else { '?' };
    let body = fetch_body(
        client,
        format!("{url}{separator}salt={salt}"),
        max_body_bytes,
    )
    .await?;
    let now_ns = verification.clock.now_ns();
    let max_age_ns = i64::try_from(verification.max_age.as_nanos()).unwrap_or(i64::MAX);
    let report = open_signed_report(
        &body,
        max_body_bytes,
        &verification.key,
        &salt,
        now_ns,
        max_age_ns,
    )?;
    Ok(parse_report(&report, max_body_bytes)?)
}

/// The shared client, and whether the connection goes back to its pool after a request.
#[derive(Clone)]
struct Request {
    client: Client,
    reuse_connection: bool,
}

/// One fetch: send, check the status, read at most `max_body_bytes + 1` bytes.
async fn fetch_body(
    request: Request,
    url: String,
    max_body_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let mut get = request.client.get(url.as_str());
    if !request.reuse_connection {
        get = get.force_close();
    }
    let mut response = get.send().await.map_err(|e| {
        let reason = match e {
            SendRequestError::Timeout => "timed out".to_owned(),
            other => other.to_string(),
        };
        FetchError::Unreachable(format!("{url}: {reason}"))
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    // Refuse early when the server announces a body over the limit.
    let announced = response
        .headers()
        .get(awc::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = announced.filter(|&size| size > max_body_bytes) {
        return Err(ReportError::TooLarge {
            size,
            limit: max_body_bytes,
        }
        .into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.next().await {
        let chunk =
            chunk.map_err(|e| FetchError::Unreachable(format!("{url}: reading the body: {e}")))?;
        let room = max_body_bytes + 1 - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() > max_body_bytes {
            // Stop reading: the rest of the body is never buffered.
            break;
        }
    }
    Ok(body)
}

impl DiagnoseSource for HttpDiagnose {
    fn fetch(&self, node: &str) -> LocalBoxFuture<'static, Result<Diagnose, FetchError>> {
        let url = self.url_for(node);
        let client = self.request();
        let (timeout, max_body_bytes) = (self.timeout, self.max_body_bytes);
        let verification = self.verification.clone();
        async move {
            let url = url?;
            // awc's own timeout covers only the response head; this one covers the body too.
            let fetch = fetch_report(client, url.clone(), max_body_bytes, verification);
            tokio::time::timeout(timeout, fetch)
                .await
                .unwrap_or_else(|_| {
                    Err(FetchError::Unreachable(format!(
                        "{url}: timed out after {timeout:?}"
                    )))
                })
        }
        .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_validated() {
        assert!(validate_template(MOND_URL_TEMPLATE).is_ok());
        assert!(
            validate_template("http://127.0.0.1:8080/mond/{node}/1/report/node/diagnose").is_ok()
        );
        assert!(validate_template("https://{node}/diag").is_ok());
        assert_eq!(
            validate_template("http://node1:1815/"),
            Err(TemplateError::NoPlaceholder("http://node1:1815/".into()))
        );
        assert!(matches!(
            validate_template("ftp://{node}/x"),
            Err(TemplateError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            validate_template("{node}/1/report"),
            Err(TemplateError::UnsupportedScheme(_) | TemplateError::InvalidUrl { .. })
        ));
        assert!(matches!(
            validate_template("http://{node} x/"),
            Err(TemplateError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn connections_are_kept_only_when_all_nodes_share_a_host() {
        assert!(!shares_one_host(MOND_URL_TEMPLATE));
        assert!(!shares_one_host("http://{node}.example.com/diag"));
        assert!(shares_one_host(
            "http://127.0.0.1:8080/mond/{node}/1/report/node/diagnose"
        ));
        // A different port per node would be a different host too.
        assert!(!shares_one_host("http://127.0.0.1:{node}/diag"));
    }

    #[actix_rt::test]
    async fn node_names_cannot_redirect_the_request() {
        let source = HttpDiagnose::mond();
        assert_eq!(
            source.url_for("node3.example.com").as_deref(),
            Ok("http://node3.example.com:1815/1/report/node/diagnose")
        );
        for bad in ["", "evil.example/x?", "user@host", "a b"] {
            assert!(matches!(
                source.url_for(bad),
                Err(FetchError::Unreachable(_))
            ));
            assert!(matches!(
                source.fetch(bad).await,
                Err(FetchError::Unreachable(_))
            ));
        }
    }
}

/// Fetches `cpu-avg-load` reports with awc from a URL built per node (mond's
/// `/1/report/default/cpu-avg-load`), with the same limits as [`HttpDiagnose`].
#[derive(Debug, Clone)]
pub struct HttpLoad {
    reports: HttpDiagnose,
}

/// The monitoring daemon's `cpu-avg-load` report on its default port.
pub const MOND_LOAD_URL_TEMPLATE: &str = "http://{node}:1815/1/report/default/cpu-avg-load";

impl HttpLoad {
    /// A source for `template` (containing `{node}`); see [`HttpDiagnose::new`].
    pub fn new(
        template: &str,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Self, TemplateError> {
        Ok(HttpLoad {
            reports: HttpDiagnose::new(template, timeout, max_body_bytes)?,
        })
    }

    /// A source for `template` with the limits, the client and the connection pool of
    /// `diagnose`: one pool for all of a node's reports.
    pub fn sharing(diagnose: &HttpDiagnose, template: &str) -> Result<Self, TemplateError> {
        validate_template(template)?;
        Ok(HttpLoad {
            reports: HttpDiagnose {
                template: template.to_owned(),
                timeout: diagnose.timeout,
                max_body_bytes: diagnose.max_body_bytes,
                client: diagnose.client.clone(),
                reuse_connections: shares_one_host(template),
                verification: None,
            },
        })
    }
}

impl LoadSource for HttpLoad {
    fn fetch_load(&self, node: &str) -> LocalBoxFuture<'static, Result<CpuLoad, FetchError>> {
        let url = self.reports.url_for(node);
        let client = self.reports.request();
        let (timeout, max_body_bytes) = (self.reports.timeout, self.reports.max_body_bytes);
        async move {
            let url = url?;
            let fetch = async {
                let body = fetch_body(client, url.clone(), max_body_bytes).await?;
                Ok(parse_cpu_load(&body, max_body_bytes)?)
            };
            tokio::time::timeout(timeout, fetch)
                .await
                .unwrap_or_else(|_| {
                    Err(FetchError::Unreachable(format!(
                        "{url}: timed out after {timeout:?}"
                    )))
                })
        }
        .boxed_local()
    }
}
