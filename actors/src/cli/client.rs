//! `maintd status` and `maintd cancel`: small clients of the HTTP API.

use serde_json::Value;

use maintd::{auth::Credentials, backend::tls, clock::Clock};

use crate::cli::{
    incident_list::{render_incident, render_incidents, IncidentField, ListStyle},
    ClientArgs, StatusArgs,
};

/// What went wrong talking to maintd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection or no answer.
    #[error("cannot reach maintd at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The client's own settings are unusable (certificate, password file).
    #[error("{0}")]
    Setup(String),
    /// maintd answered with an error.
    #[error("maintd answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// maintd's message.
        message: String,
    },
}

async fn request(
    args: &ClientArgs,
    method: awc::http::Method,
    path: &str,
) -> Result<Value, ClientError> {
    request_with(args, method, path, None).await
}

/// How long a request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The HTTP client `args` ask for: over HTTPS, maintd's certificate must be the pinned
/// one (Ganeti's `rapi.pem` by default, the certificate maintd serves with).
fn client(args: &ClientArgs) -> Result<awc::Client, ClientError> {
    let unusable = |reason: String| ClientError::Setup(reason);
    if !args.url.starts_with("https://") {
        return Ok(awc::Client::builder().timeout(TIMEOUT).finish());
    }
    let pinned = tls::pem_certificates(&args.certificate)
        .map_err(|e| unusable(format!("--certificate {}: {e}", args.certificate.display())))?;
    let config = tls::client_config(pinned, None, None).map_err(|e| unusable(e.to_string()))?;
    Ok(tls::https_client(config, TIMEOUT))
}

/// The credentials of `--user` and `--password-file`, if a user is named.
fn credentials(args: &ClientArgs) -> Result<Option<Credentials>, ClientError> {
    let Some(user) = &args.user else {
        return Ok(None);
    };
    let Some(file) = &args.password_file else {
        return Err(ClientError::Setup(
            "--user needs --password-file (a file holding the password)".into(),
        ));
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| ClientError::Setup(format!("--password-file {}: {e}", file.display())))?;
    let password = text.lines().next().unwrap_or("").to_owned();
    Ok(Some(Credentials {
        user: user.clone(),
        password,
    }))
}

async fn request_with(
    args: &ClientArgs,
    method: awc::http::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let url = format!("{}{path}", base(args));
    let client = client(args)?;
    let credentials = credentials(args)?;
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    let mut request = client.request(method, &url);
    if let Some(credentials) = credentials {
        request =
            request.insert_header((awc::http::header::AUTHORIZATION, credentials.basic_header()));
    }
    let sent = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    };
    let mut response = sent.map_err(|e| unreachable(e.to_string()))?;
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| unreachable(format!("not JSON: {e}")))?;
    if !response.status().is_success() {
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        return Err(ClientError::Api {
            status: response.status().as_u16(),
            message,
        });
    }
    Ok(value)
}

/// `maintd status`.
pub async fn status(args: &StatusArgs) -> Result<String, ClientError> {
    let value = request(&args.client, awc::http::Method::GET, "/1/status").await?;
    if args.client.json {
        return Ok(format!("{value:#}\n"));
    }
    let incidents = value.as_array().ok_or_else(|| ClientError::Unreachable {
        url: format!("{}/1/status", base(&args.client)),
        reason: "not a list of incidents".into(),
    })?;
    let fields = args
        .fields
        .as_ref()
        .map_or(IncidentField::DEFAULT.to_vec(), |list| list.0.clone());
    let style = ListStyle {
        headers: !args.no_headers,
        separator: args.separator.clone(),
    };
    Ok(render_incidents(
        incidents,
        &fields,
        &style,
        Clock::new().now(),
    ))
}

/// `maintd info <uuid>`.
pub async fn info(args: &ClientArgs, uuid: &str) -> Result<String, ClientError> {
    let value = request(
        args,
        awc::http::Method::GET,
        &format!("/1/incidents/{uuid}"),
    )
    .await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        render_incident(&value, Clock::new().now())
    })
}

/// `maintd cancel <uuid>`.
pub async fn cancel(args: &ClientArgs, uuid: &str) -> Result<String, ClientError> {
    let value = request(
        args,
        awc::http::Method::POST,
        &format!("/1/incidents/{uuid}/cancel"),
    )
    .await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        format!("incident {uuid} canceled\n")
    })
}

/// Render `/1/safety` as a few lines.
pub fn format_safety(view: &Value) -> String {
    let mut out = String::new();
    let flag = |k: &str| view.get(k).and_then(Value::as_bool).unwrap_or(false);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    if flag("paused") {
        let mut line = "paused".to_owned();
        if let Some(by) = text(view.get("paused_by")) {
            line.push_str(&format!(" by {by}"));
        }
        if flag("paused_by_tag") {
            line.push_str(" (cluster tag maintd:paused)");
        }
        if let Some(reason) = text(view.get("pause_reason")) {
            line.push_str(&format!(": {reason}"));
        }
        out.push_str(&line);
        out.push('\n');
    } else {
        out.push_str("not paused\n");
    }
    let breaker = view.get("breaker");
    if breaker
        .and_then(|b| b.get("tripped"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        let reason = text(breaker.and_then(|b| b.get("reason"))).unwrap_or_default();
        out.push_str(&format!("circuit breaker TRIPPED: {reason}\n"));
    } else {
        out.push_str("circuit breaker closed\n");
    }
    let in_repair: Vec<String> = view
        .get("in_repair")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let limit = view.get("limit").and_then(Value::as_u64).unwrap_or(0);
    out.push_str(&format!(
        "in repair: {} of {limit} ({})\n",
        in_repair.len(),
        if in_repair.is_empty() {
            "none".to_owned()
        } else {
            in_repair.join(", ")
        }
    ));
    if flag("dry_run") {
        out.push_str("dry-run: nothing is submitted\n");
    }
    out
}

fn base(args: &ClientArgs) -> &str {
    args.url.trim_end_matches('/')
}

/// `maintd pause [--reason TEXT]`.
pub async fn pause(args: &ClientArgs, reason: Option<String>) -> Result<String, ClientError> {
    let body = serde_json::json!({ "reason": reason });
    let value = request_with(args, awc::http::Method::POST, "/1/pause", Some(body)).await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        format_safety(&value)
    })
}

/// `maintd resume`.
pub async fn resume(args: &ClientArgs) -> Result<String, ClientError> {
    let value = request(args, awc::http::Method::POST, "/1/resume").await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        format_safety(&value)
    })
}

/// `maintd safety`.
pub async fn safety(args: &ClientArgs) -> Result<String, ClientError> {
    let value = request(args, awc::http::Method::GET, "/1/safety").await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        format_safety(&value)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn safety_lines_name_the_pause_the_breaker_and_the_nodes_in_repair() {
        let text = format_safety(&json!({
            "paused": true, "paused_by": "api client 127.0.0.1", "pause_reason": "rack A4",
            "paused_by_tag": false,
            "breaker": {"tripped": true, "reason": "6 nodes have open incidents"},
            "in_repair": ["node3", "node5"], "limit": 2, "dry_run": false
        }));
        assert!(
            text.contains("paused by api client 127.0.0.1: rack A4"),
            "{text}"
        );
        assert!(text.contains("TRIPPED: 6 nodes"), "{text}");
        assert!(text.contains("in repair: 2 of 2 (node3, node5)"), "{text}");
        let text = format_safety(
            &json!({"paused": false, "breaker": {"tripped": false}, "in_repair": [], "limit": 1}),
        );
        assert!(
            text.contains("not paused")
                && text.contains("closed")
                && text.contains("0 of 1 (none)"),
            "{text}"
        );
    }
}
