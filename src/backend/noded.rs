//! Ganeti's node daemon RPC (Ganeti's `lib/rpc/client.py`, served by
//! `lib/server/noded.py`): `POST https://<primary ip>:1811/<call>` with the JSON array of
//! arguments as body, answered `[true, payload]` or `[false, "error"]`. maintd uses it for
//! one call, `master_node_name`, by which every node names the master from its own ssconf
//! copy: the popular vote.
//!
//! TLS as Ganeti's own RPC client does it: the server must present the cluster's
//! certificate (`server.pem`, pinned; its name is not checked), and the client presents the
//! cluster's client certificate (`client.pem`, or `server.pem` on clusters from before
//! node client certificates), without which noded refuses the connection.
//!
//! awc is `!Send` and needs the actix runtime: build the client inside it.

use std::{path::Path, time::Duration};

use awc::{http::header, Client};
use futures_util::StreamExt;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::Value;
use thiserror::Error;

use super::tls::{client_config, https_client, pem_certificates, TlsError};

/// noded's default port (`ganeti-noded` in /etc/services overrides it in Ganeti).
pub const DEFAULT_PORT: u16 = 1811;

/// The cluster certificate every noded presents.
pub const SERVER_CERTIFICATE: &str = "server.pem";

/// The certificate and key the master presents to noded.
pub const CLIENT_CERTIFICATE: &str = "client.pem";

/// Largest RPC answer read; `master_node_name` answers a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the RPC client could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodedSetupError {
    /// A certificate or key file is missing, unreadable or unusable.
    #[error("noded RPC: {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn file_error(path: &Path, reason: impl Into<String>) -> NodedSetupError {
    NodedSetupError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The certificates of a PEM file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, NodedSetupError> {
    pem_certificates(path).map_err(|reason| file_error(path, reason))
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, NodedSetupError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_error(path, format!("no usable private key: {e}")))
}

/// A client for noded's RPC on every node of one cluster.
#[derive(Clone)]
pub struct NodedClient {
    client: Client,
    port: u16,
    timeout: Duration,
}

impl std::fmt::Debug for NodedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodedClient")
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NodedClient {
    /// A client with the certificates of Ganeti's data directory `data_dir`
    /// (`/var/lib/ganeti`). Must be called inside the actix runtime.
    pub fn from_data_dir(
        data_dir: &Path,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, NodedSetupError> {
        let server = data_dir.join(SERVER_CERTIFICATE);
        let client = data_dir.join(CLIENT_CERTIFICATE);
        let client = if client.exists() {
            client
        } else {
            server.clone()
        };
        Self::new(&server, &client, port, timeout)
    }

    /// A client pinning the certificate in `server_pem` and presenting the certificate and
    /// key in `client_pem`. Must be called inside the actix runtime.
    pub fn new(
        server_pem: &Path,
        client_pem: &Path,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, NodedSetupError> {
        let pinned = certificates(server_pem)?;
        let chain = certificates(client_pem)?;
        let key = private_key(client_pem)?;
        let tls = client_config(pinned, None, Some((chain, key))).map_err(|e| match e {
            TlsError::ClientKey(_) => file_error(client_pem, e.to_string()),
            _ => file_error(server_pem, e.to_string()),
        })?;
        let client = https_client(tls, timeout);
        Ok(NodedClient {
            client,
            port,
            timeout,
        })
    }

    /// The URL of `call` on the node at `address` (an IPv4 or IPv6 address, or a name).
    pub fn url(&self, address: &str, call: &str) -> String {
        if address.contains(':') {
            format!("https://[{address}]:{}/{call}", self.port)
        } else {
            format!("https://{address}:{}/{call}", self.port)
        }
    }

    /// Call `call` with `args` on the node at `address`; the payload of a successful answer.
    pub async fn call(&self, address: &str, call: &str, args: Value) -> Result<Value, String> {
        let url = self.url(address, call);
        match tokio::time::timeout(self.timeout, self.exchange(&url, &args)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("{url}: no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(&self, url: &str, args: &Value) -> Result<Value, String> {
        let mut response = self
            .client
            .post(url)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .send_body(args.to_string())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.next().await {
            let chunk = chunk.map_err(|e| format!("{url}: reading the answer: {e}"))?;
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "{url}: answer larger than {MAX_ANSWER_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("{url}: HTTP {status}: {}", text.trim()));
        }
        decode_answer(&body).map_err(|e| format!("{url}: {e}"))
    }

    /// The master named by the node at `address` (noded's `master_node_name`).
    pub async fn master_node_name(&self, address: &str) -> Result<String, String> {
        match self
            .call(address, "master_node_name", Value::Array(Vec::new()))
            .await?
        {
            Value::String(name) if !name.trim().is_empty() => Ok(name),
            other => Err(format!(
                "master_node_name answered {other} instead of a name"
            )),
        }
    }
}

/// The payload of an RPC answer `[true, payload]`; the node's message for `[false, msg]`.
pub fn decode_answer(body: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match value {
        Value::Array(mut pair) if pair.len() == 2 => {
            let payload = pair.pop().unwrap_or(Value::Null);
            match pair.pop() {
                Some(Value::Bool(true)) => Ok(payload),
                Some(Value::Bool(false)) => Err(format!(
                    "the node reports an error: {}",
                    payload.as_str().map_or(payload.to_string(), str::to_owned)
                )),
                _ => Err(format!("unexpected answer {payload}")),
            }
        }
        other => Err(format!(
            "expected [success, payload], got {}",
            excerpt(&other)
        )),
    }
}

fn excerpt(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_to_payload_or_the_nodes_error() {
        assert_eq!(
            decode_answer(br#"[true, "node1.example.com"]"#),
            Ok(Value::String("node1.example.com".into()))
        );
        let error = decode_answer(br#"[false, "ssconf not found"]"#).unwrap_err();
        assert!(error.contains("ssconf not found"), "{error}");
        for bad in [
            &b"not json"[..],
            b"{}",
            b"[true]",
            b"[1, 2]",
            b"[true, 1, 2]",
        ] {
            assert!(
                decode_answer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
