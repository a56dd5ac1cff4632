//! The self-diagnose report of a node, as served by the monitoring daemon
//! (`/1/report/node/diagnose`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::signing::{self, HmacKey, SignedMessage};

/// What a node asks for, ordered from least to most invasive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RepairAction {
    /// Nothing to do.
    #[serde(rename = "Ok")]
    Ok,
    /// Run a repair command while instances keep running.
    #[serde(rename = "live-repair")]
    LiveRepair,
    /// Drain the node and live-migrate its instances away.
    #[serde(rename = "evacuate")]
    Evacuate,
    /// Drain the node and fail its instances over (no live migration).
    #[serde(rename = "evacuate-failover")]
    EvacuateFailover,
}

impl RepairAction {
    /// The diagnose protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairAction::Ok => "Ok",
            RepairAction::LiveRepair => "live-repair",
            RepairAction::Evacuate => "evacuate",
            RepairAction::EvacuateFailover => "evacuate-failover",
        }
    }

    /// Parse the protocol's spelling (case matters: `Ok`, not `ok`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Ok" => Some(RepairAction::Ok),
            "live-repair" => Some(RepairAction::LiveRepair),
            "evacuate" => Some(RepairAction::Evacuate),
            "evacuate-failover" => Some(RepairAction::EvacuateFailover),
            _ => None,
        }
    }

    /// The action empties the node.
    pub fn is_evacuation(self) -> bool {
        matches!(
            self,
            RepairAction::Evacuate | RepairAction::EvacuateFailover
        )
    }
}

impl fmt::Display for RepairAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, valid diagnose object.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnose {
    /// The requested action.
    pub action: RepairAction,
    /// The repair command for `live-repair`, if any (empty means none).
    pub command: Option<String>,
    /// The very object the collector reported; it identifies the incident.
    pub original: Value,
}

/// Why a report was rejected. None of these ever becomes an incident.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    /// The body exceeds the configured limit.
    #[error("report is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Bytes received (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("report is not JSON: {0}")]
    NotJson(String),
    /// The JSON does not have the monitoring daemon's report shape.
    #[error("report has the wrong envelope: {0}")]
    BadEnvelope(String),
    /// The diagnose object lacks `status` or has an unknown one.
    #[error("diagnose object is invalid: {0}")]
    BadDiagnose(String),
    /// A key is configured and the report is not signed, is signed wrongly, answers
    /// another request, or is too old.
    #[error("report refused: {0}")]
    Signature(String),
}

/// Default limit on a report's size: a diagnose object is small.
pub const DEFAULT_MAX_REPORT_BYTES: usize = 64 * 1024;

/// Parse a monitoring-daemon report (`{"name": "diagnose", ..., "data": {...}}`).
pub fn parse_report(body: &[u8], max_bytes: usize) -> Result<Diagnose, ReportError> {
    parse_diagnose(report_data(body, max_bytes, "diagnose")?)
}

fn check_size(body: &[u8], max_bytes: usize) -> Result<(), ReportError> {
    if body.len() > max_bytes {
        return Err(ReportError::TooLarge {
            size: body.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

/// The report inside a signed answer of a maintd agent (`{"msg", "salt", "hmac"}`, `msg`
/// the report's JSON text), checked: signed with `key`, salted with `expected_salt` (the
/// fresh salt of this request, so a recorded answer cannot be played back), and its
/// `timestamp` (ns) within `max_age_ns` of `now_ns`, so a stuck agent's old report is
/// not taken for news. Returns the report's bytes, for [`parse_report`].
pub fn open_signed_report(
    body: &[u8],
    max_bytes: usize,
    key: &HmacKey,
    expected_salt: &str,
    now_ns: i64,
    max_age_ns: i64,
) -> Result<Vec<u8>, ReportError> {
    let refuse = |why: String| ReportError::Signature(why);
    check_size(body, max_bytes)?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ReportError::NotJson(e.to_string()))?;
    if value.get("name").is_some() && value.get("hmac").is_none() {
        return Err(refuse(
            "unsigned report, but a key is configured (is the node's agent running without the cluster's hmac.key?)".into(),
        ));
    }
    let signed: SignedMessage =
        serde_json::from_value(value).map_err(|e| refuse(format!("not a signed report: {e}")))?;
    signing::verify(key, &signed).map_err(|e| refuse(e.to_string()))?;
    if signed.salt != expected_salt {
        return Err(refuse(format!(
            "signed for another request (salt {:?}, sent {expected_salt:?}): a replayed report",
            signed.salt
        )));
    }
    let report: Value = serde_json::from_str(&signed.msg)
        .map_err(|e| ReportError::NotJson(format!("signed payload: {e}")))?;
    let Some(timestamp) = report.get("timestamp").and_then(Value::as_i64) else {
        return Err(ReportError::BadEnvelope("no integer timestamp".into()));
    };
    let age = now_ns.saturating_sub(timestamp);
    if age > max_age_ns {
        return Err(refuse(format!(
            "stale report: made {} s ago, more than {} s",
            age / 1_000_000_000,
            max_age_ns / 1_000_000_000
        )));
    }
    let ahead = timestamp.saturating_sub(now_ns);
    if ahead > max_age_ns {
        return Err(refuse(format!(
            "report from the future: timestamp {} s ahead of this clock",
            ahead / 1_000_000_000
        )));
    }
    Ok(signed.msg.into_bytes())
}

/// The `data` of a monitoring-daemon report of the collector called `name`, checking the
/// size limit, the JSON and the envelope.
pub fn report_data(body: &[u8], max_bytes: usize, name: &str) -> Result<Value, ReportError> {
    check_size(body, max_bytes)?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ReportError::NotJson(e.to_string()))?;
    let Value::Object(mut envelope) = value else {
        return Err(ReportError::BadEnvelope("not a JSON object".into()));
    };
    match envelope.get("name") {
        Some(Value::String(found)) if found == name => {}
        Some(other) => {
            return Err(ReportError::BadEnvelope(format!(
                "collector name is {other}, expected {name:?}"
            )))
        }
        None => return Err(ReportError::BadEnvelope("no collector name".into())),
    }
    envelope
        .remove("data")
        .ok_or_else(|| ReportError::BadEnvelope("no data".into()))
}

/// Validate a diagnose object (the `data` of the report).
pub fn parse_diagnose(original: Value) -> Result<Diagnose, ReportError> {
    let Value::Object(fields) = &original else {
        return Err(ReportError::BadDiagnose("not a JSON object".into()));
    };
    let status = match fields.get("status") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(ReportError::BadDiagnose(format!("status is {other}"))),
        None => return Err(ReportError::BadDiagnose("no status".into())),
    };
    let action = RepairAction::parse(status)
        .ok_or_else(|| ReportError::BadDiagnose(format!("unknown status {status:?}")))?;
    let command = match fields.get("command") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(ReportError::BadDiagnose(format!("command is {other}"))),
    };
    Ok(Diagnose {
        action,
        command,
        original,
    })
}

/// Wrap a diagnose object in the monitoring daemon's report envelope.
pub fn report_envelope(data: &Value, timestamp_ns: i64) -> Value {
    serde_json::json!({
        "name": "diagnose",
        "version": "B",
        "format_version": 1,
        "timestamp": timestamp_ns,
        "category": "node",
        "kind": 1,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(data: Value) -> Vec<u8> {
        serde_json::to_vec(&report_envelope(&data, 1)).unwrap()
    }

    #[test]
    fn parses_each_status() {
        for (s, a) in [
            ("Ok", RepairAction::Ok),
            ("live-repair", RepairAction::LiveRepair),
            ("evacuate", RepairAction::Evacuate),
            ("evacuate-failover", RepairAction::EvacuateFailover),
        ] {
            let d = parse_report(&report(json!({"status": s})), 1024).unwrap();
            assert_eq!(d.action, a);
        }
    }

    #[test]
    fn invasiveness_order() {
        assert!(RepairAction::EvacuateFailover > RepairAction::Evacuate);
        assert!(RepairAction::Evacuate > RepairAction::LiveRepair);
        assert!(RepairAction::LiveRepair > RepairAction::Ok);
    }

    #[test]
    fn rejects_bad_reports() {
        assert!(matches!(
            parse_report(b"not json", 1024),
            Err(ReportError::NotJson(_))
        ));
        assert!(matches!(
            parse_report(b"[1]", 1024),
            Err(ReportError::BadEnvelope(_))
        ));
        assert!(matches!(
            parse_report(br#"{"name":"lv","data":{}}"#, 1024),
            Err(ReportError::BadEnvelope(_))
        ));
        assert!(matches!(
            parse_report(&report(json!({"details": 1})), 1024),
            Err(ReportError::BadDiagnose(_))
        ));
        assert!(matches!(
            parse_report(&report(json!({"status": "ok"})), 1024),
            Err(ReportError::BadDiagnose(_))
        ));
        assert!(matches!(
            parse_report(&report(json!({"status": "evacuate"})), 10),
            Err(ReportError::TooLarge { .. })
        ));
    }

    #[test]
    fn keeps_original_and_command() {
        let data = json!({"status": "live-repair", "command": "fix", "details": {"x": [1, 2]}});
        let d = parse_report(&report(data.clone()), 1024).unwrap();
        assert_eq!(d.command.as_deref(), Some("fix"));
        assert_eq!(d.original, data);
        let empty = parse_diagnose(json!({"status": "live-repair", "command": ""})).unwrap();
        assert_eq!(empty.command, None);
    }

    #[test]
    fn signed_reports_open_only_with_key_salt_and_fresh_timestamp() {
        let key =
            HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef01234567\n".to_vec()).unwrap();
        let now = 1_700_000_000_000_000_000_i64;
        let report = String::from_utf8(report_at(json!({"status": "evacuate"}), now - 10)).unwrap();
        let body = |key: &HmacKey, salt: &str, msg: &str| {
            serde_json::to_vec(&signing::sign(key, salt, msg)).unwrap()
        };
        let minute = 60_000_000_000;
        let open = |body: &[u8]| open_signed_report(body, 65536, &key, "s1", now, 5 * minute);
        let opened = open(&body(&key, "s1", &report)).unwrap();
        assert_eq!(
            parse_report(&opened, 65536).unwrap().action,
            RepairAction::Evacuate
        );
        let refused = |body: &[u8], what: &str| {
            let error = open(body).unwrap_err().to_string();
            assert!(error.contains(what), "{what}: {error}");
        };
        refused(report.as_bytes(), "unsigned report");
        let other = HmacKey::from_bytes(b"another key\n".to_vec()).unwrap();
        refused(&body(&other, "s1", &report), "does not match");
        let mut forged: Value = serde_json::from_slice(&body(&key, "s1", &report)).unwrap();
        forged["msg"] = Value::String(report.replace("evacuate", "Ok"));
        refused(&serde_json::to_vec(&forged).unwrap(), "does not match");
        // A genuine answer to an earlier request, played back.
        refused(&body(&key, "s0", &report), "replayed");
        let old = String::from_utf8(report_at(json!({"status": "Ok"}), now - 6 * minute)).unwrap();
        refused(&body(&key, "s1", &old), "stale report");
        let ahead =
            String::from_utf8(report_at(json!({"status": "Ok"}), now + 6 * minute)).unwrap();
        refused(&body(&key, "s1", &ahead), "from the future");
        // Extreme timestamps are refused, not overflowed.
        let ancient = String::from_utf8(report_at(json!({"status": "Ok"}), i64::MIN)).unwrap();
        refused(&body(&key, "s1", &ancient), "stale report");
        let last = String::from_utf8(report_at(json!({"status": "Ok"}), i64::MAX)).unwrap();
        refused(&body(&key, "s1", &last), "from the future");
        refused(br#"{"msg": 1}"#, "not a signed report");
        assert!(matches!(open(b"{"), Err(ReportError::NotJson(_))));
    }

    fn report_at(data: Value, timestamp_ns: i64) -> Vec<u8> {
        serde_json::to_vec(&report_envelope(&data, timestamp_ns)).unwrap()
    }
}
