//! `maintd status` and `maintd cancel`: small clients of the HTTP API.

use serde_json::Value;

use crate::cli::ClientArgs;

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
    /// maintd answered with an error.
    #[error("maintd answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// maintd's message.
        message: String,
    },
}

async fn request(method: awc::http::Method, url: String) -> Result<Value, ClientError> {
    let client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .finish();
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    let mut response = client
        .request(method, &url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
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

/// Render `/1/status` as a table.
pub fn format_status(incidents: &Value) -> String {
    let Some(list) = incidents.as_array() else {
        return incidents.to_string();
    };
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let mut out = format!(
        "{:<36}  {:<16}  {:<17}  {:<9}  {}\n",
        "UUID", "NODE", "ACTION", "STATUS", "JOBS"
    );
    for i in list {
        let text = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
        let jobs: Vec<String> = i
            .get("jobs")
            .and_then(Value::as_array)
            .map(|j| j.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<17}  {:<9}  {}\n",
            text("uuid"),
            text("node"),
            text("action"),
            text("repair-status"),
            jobs.join(",")
        ));
        if let Some(message) = i.get("message").and_then(Value::as_str) {
            out.push_str(&format!("    {message}\n"));
        }
    }
    out
}

/// `maintd status`.
pub async fn status(args: &ClientArgs) -> Result<String, ClientError> {
    let value = request(
        awc::http::Method::GET,
        format!("{}/1/status", args.url.trim_end_matches('/')),
    )
    .await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        format_status(&value)
    })
}

/// `maintd cancel <uuid>`.
pub async fn cancel(args: &ClientArgs, uuid: &str) -> Result<String, ClientError> {
    let url = format!(
        "{}/1/incidents/{uuid}/cancel",
        args.url.trim_end_matches('/')
    );
    let value = request(awc::http::Method::POST, url).await?;
    Ok(if args.json {
        format!("{value:#}\n")
    } else {
        format!("incident {uuid} canceled\n")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn status_table_lists_incidents_and_messages() {
        let text = format_status(
            &json!([{"uuid": "u1", "node": "node3", "action": "evacuate", "repair-status": "pending", "jobs": [4, 5], "message": "waiting"}]),
        );
        assert!(
            text.contains("node3")
                && text.contains("pending")
                && text.contains("4,5")
                && text.contains("waiting")
        );
        assert_eq!(format_status(&json!([])), "no incidents\n");
    }
}
