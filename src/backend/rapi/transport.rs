//! The RAPI client: one JSON request over HTTPS with HTTP Basic authentication, within
//! the time and size limits, answering the decoded JSON or a classified [`RapiError`].

use std::{fmt, rc::Rc, time::Duration};

use awc::{
    error::{ConnectError, SendRequestError},
    http::{header, Method},
    Client,
};
use futures_util::StreamExt;
use serde_json::Value;

use super::{
    error::{error_message, excerpt},
    setup::{validate_url, Credentials, RapiConfig},
    RapiError, RapiSetupError,
};
use crate::backend::tls::https_client;

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

impl RapiClient {
    /// A client as configured: reads the credentials and certificate files. Must be called
    /// inside the actix runtime.
    pub fn new(config: &RapiConfig) -> Result<Self, RapiSetupError> {
        let base = validate_url(&config.url)?;
        let credentials = Credentials::load(&config.credentials)?;
        let tls = config.tls()?;
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
