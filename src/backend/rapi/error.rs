//! What goes wrong in one RAPI request ([`RapiError`]), how each kind counts for maintd
//! (worth a retry, refused for good, or not understood: [`BackendError`]), and the
//! one-line messages made of Ganeti's error bodies.

use std::time::Duration;

use awc::http::StatusCode;
use serde_json::Value;
use thiserror::Error;

use crate::backend::BackendError;

/// Longest excerpt of an unexpected answer quoted in an error message.
const EXCERPT_CHARS: usize = 200;

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

/// An excerpt of a body for an error message: at most [`EXCERPT_CHARS`] characters,
/// control characters replaced.
pub(super) fn excerpt(body: &[u8]) -> String {
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
pub(super) fn error_message(status: StatusCode, body: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
