//! The self-diagnose collector: run the whitelisted diagnose command and turn what it
//! prints into the report's `data`, as Ganeti 2.17's `diagnose` collector does.
//!
//! Every failure (no command configured, refused by the whitelist, cannot start, non-zero
//! exit, timeout, output not a valid diagnose object) yields
//! `{"status": "Ok", "details": "<why>"}`, the shape Ganeti's collector gives: a broken
//! diagnose must never look like a broken node, or it would drain the cluster.

use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;

use super::{
    run::{run, RunEnd, RunSpec, SpawnError},
    whitelist::{Whitelist, WhitelistError},
};
use crate::model::diagnose::{parse_diagnose, RepairAction};

/// The details Ganeti's collector reports when no diagnose command is configured (the
/// built-in diagnose, which always finds the node healthy).
pub const BUILTIN_DETAILS: &str = "No file specified for diagnose data collector";

/// Most bytes of the diagnose command's stdout that are read.
pub const MAX_DIAGNOSE_OUTPUT: usize = 64 * 1024;

/// `{"status": "Ok", "details": why}`.
pub fn ok_with_details(why: &str) -> Value {
    json!({"status": "Ok", "details": why})
}

/// Why a diagnose run gave no usable result.
#[derive(Debug, Error)]
pub enum DiagnoseError {
    /// The whitelist refused the command.
    #[error("diagnose command refused: {0}")]
    Refused(#[from] WhitelistError),
    /// The command could not be started.
    #[error("diagnose command failed to start: {0}")]
    Spawn(#[from] SpawnError),
    /// The command exited with a non-zero code.
    #[error("diagnose command exited with code {code}{stderr}")]
    Exit {
        /// Its exit code.
        code: i32,
        /// `: <start of stderr>` or nothing.
        stderr: String,
    },
    /// A signal killed the command.
    #[error("diagnose command killed by signal {0}")]
    Signal(i32),
    /// The command ran past its time limit.
    #[error("diagnose command timed out after {0} s")]
    TimedOut(f64),
    /// The command printed more than [`MAX_DIAGNOSE_OUTPUT`] bytes.
    #[error("diagnose output is larger than {MAX_DIAGNOSE_OUTPUT} bytes")]
    TooLarge,
    /// The output is not one JSON value.
    #[error("could not parse diagnose output as JSON: {0}")]
    NotJson(String),
    /// The output is JSON but not a valid diagnose object.
    #[error("diagnose output is not a valid diagnose object: {0}")]
    Invalid(String),
}

/// A valid diagnose object and, if something in it deserves an operator's attention, a
/// warning for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// The object as printed (parsed and re-serialized).
    pub data: Value,
    /// Something odd but not invalid.
    pub warning: Option<String>,
}

/// Check what the diagnose command printed: one JSON object with a valid `status`
/// (`Ok`, `live-repair`, `evacuate`, `evacuate-failover`; case matters) and, if present,
/// a string `command`.
pub fn evaluate_output(stdout: &[u8]) -> Result<Evaluated, DiagnoseError> {
    let data: Value =
        serde_json::from_slice(stdout).map_err(|e| DiagnoseError::NotJson(e.to_string()))?;
    if !data.is_object() {
        return Err(DiagnoseError::Invalid(format!(
            "a JSON object is needed, not {}",
            kind(&data)
        )));
    }
    if let Some(command) = data.get("command") {
        if !command.is_string() {
            return Err(DiagnoseError::Invalid(format!(
                "command must be a string, not {command}"
            )));
        }
    }
    let diagnose = parse_diagnose(data).map_err(|e| DiagnoseError::Invalid(e.to_string()))?;
    let warning = (diagnose.action == RepairAction::LiveRepair && diagnose.command.is_none())
        .then(|| "live-repair without a command: maintd will fail the incident".to_owned());
    Ok(Evaluated {
        data: diagnose.original,
        warning,
    })
}

/// What one diagnose run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnoseResult {
    /// The report's `data`.
    pub data: Value,
    /// Why `data` is a substitute `Ok`, or a warning about a valid result; for the log.
    pub problem: Option<String>,
}

/// Run the diagnose `command` from `whitelist` (empty: the built-in diagnose) within
/// `timeout`.
pub async fn diagnose(whitelist: &Whitelist, command: &str, timeout: Duration) -> DiagnoseResult {
    if command.is_empty() {
        return DiagnoseResult {
            data: ok_with_details(BUILTIN_DETAILS),
            problem: None,
        };
    }
    match run_command(whitelist, command, timeout).await {
        Ok(evaluated) => DiagnoseResult {
            data: evaluated.data,
            problem: evaluated.warning,
        },
        Err(e) => {
            let why = e.to_string();
            DiagnoseResult {
                data: ok_with_details(&why),
                problem: Some(why),
            }
        }
    }
}

async fn run_command(
    whitelist: &Whitelist,
    command: &str,
    timeout: Duration,
) -> Result<Evaluated, DiagnoseError> {
    let program = whitelist.check(command)?;
    let outcome = run(&RunSpec {
        program,
        stdin: Vec::new(),
        timeout,
        max_output: MAX_DIAGNOSE_OUTPUT,
    })
    .await?;
    match outcome.end {
        RunEnd::Exited(0) => {}
        RunEnd::Exited(code) => {
            let excerpt = String::from_utf8_lossy(&outcome.stderr);
            let excerpt: String = excerpt.trim().chars().take(200).collect();
            return Err(DiagnoseError::Exit {
                code,
                stderr: if excerpt.is_empty() {
                    String::new()
                } else {
                    format!(": {excerpt}")
                },
            });
        }
        RunEnd::Signalled(signal) => return Err(DiagnoseError::Signal(signal)),
        RunEnd::TimedOut => return Err(DiagnoseError::TimedOut(timeout.as_secs_f64())),
    }
    if outcome.stdout_dropped > 0 {
        return Err(DiagnoseError::TooLarge);
    }
    evaluate_output(&outcome.stdout)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{chown, PermissionsExt},
        path::Path,
    };

    use super::*;

    #[test]
    fn valid_objects_pass_unchanged() {
        for text in [
            r#"{"status":"Ok"}"#,
            r#"{"status":"evacuate","command":"","details":{"component":"dimm","slot":"B2"}}"#,
            r#"{"status":"evacuate-failover","details":[1,2]}"#,
            r#"{"status":"live-repair","command":"fix-raid","details":"md0"}"#,
        ] {
            let evaluated = evaluate_output(text.as_bytes()).unwrap();
            assert_eq!(evaluated.data, serde_json::from_str::<Value>(text).unwrap());
            assert_eq!(evaluated.warning, None, "{text}");
        }
        // Surrounding whitespace (a trailing newline) is fine.
        evaluate_output(b"  {\"status\":\"Ok\"}\n").unwrap();
    }

    #[test]
    fn live_repair_without_command_is_kept_with_a_warning() {
        for text in [
            r#"{"status":"live-repair"}"#,
            r#"{"status":"live-repair","command":""}"#,
        ] {
            let evaluated = evaluate_output(text.as_bytes()).unwrap();
            assert_eq!(evaluated.data["status"], "live-repair");
            assert!(evaluated.warning.unwrap().contains("without a command"));
        }
    }

    #[test]
    fn invalid_outputs_are_refused() {
        let cases: [(&str, &str); 10] = [
            ("", "parse"),
            ("not json", "parse"),
            (r#"{"status":"Ok"} {"status":"Ok"}"#, "parse"),
            (r#"[{"status":"Ok"}]"#, "an array"),
            (r#""Ok""#, "a string"),
            (r#"{"details":"x"}"#, "no status"),
            (r#"{"status":"ok"}"#, "unknown status"),
            (r#"{"status":"reboot"}"#, "unknown status"),
            (
                r#"{"status":"live-repair","command":5}"#,
                "command must be a string",
            ),
            (
                r#"{"status":"Ok","command":null}"#,
                "command must be a string",
            ),
        ];
        for (text, why) in cases {
            let err = evaluate_output(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let err = evaluate_output(br#"{"status":1}"#).unwrap_err();
        assert!(matches!(err, DiagnoseError::Invalid(_)), "{err}");
    }

    fn whitelist_with(dir: &Path, name: &str, body: &str, mode: u32) -> Whitelist {
        let list = dir.join("diagnose");
        fs::create_dir_all(&list).unwrap();
        chown(&list, Some(0), Some(0)).unwrap();
        fs::set_permissions(&list, fs::Permissions::from_mode(0o755)).unwrap();
        let path = list.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        chown(&path, Some(0), Some(0)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        Whitelist::new(list)
    }

    const LIMIT: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn builtin_and_script_results() {
        let dir = tempfile::tempdir().unwrap();
        let list = whitelist_with(
            dir.path(),
            "diag",
            r#"echo '{"status":"evacuate","details":{"disk":"sda"}}'"#,
            0o755,
        );
        let builtin = diagnose(&list, "", LIMIT).await;
        assert_eq!(
            builtin.data,
            json!({"status": "Ok", "details": BUILTIN_DETAILS})
        );
        assert_eq!(builtin.problem, None);
        let result = diagnose(&list, "diag", LIMIT).await;
        assert_eq!(
            result.data,
            json!({"status": "evacuate", "details": {"disk": "sda"}})
        );
        assert_eq!(result.problem, None);
    }

    #[tokio::test]
    async fn failures_report_ok_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let check = |result: DiagnoseResult, why: &str| {
            assert_eq!(result.data["status"], "Ok");
            let details = result.data["details"].as_str().unwrap().to_owned();
            assert!(details.contains(why), "{details:?} lacks {why:?}");
            assert_eq!(result.problem.as_deref(), Some(details.as_str()));
            assert_eq!(result.data.as_object().unwrap().len(), 2);
        };
        let loose = whitelist_with(dir.path(), "loose", "echo '{}'", 0o777);
        check(diagnose(&loose, "loose", LIMIT).await, "0777");
        check(diagnose(&loose, "absent", LIMIT).await, "does not exist");
        check(diagnose(&loose, "../x", LIMIT).await, "slash");
        let failing = whitelist_with(dir.path(), "fail", "echo broken >&2; exit 2", 0o755);
        check(diagnose(&failing, "fail", LIMIT).await, "code 2: broken");
        let garbage = whitelist_with(dir.path(), "garbage", "echo hello", 0o755);
        check(diagnose(&garbage, "garbage", LIMIT).await, "parse");
        let lower = whitelist_with(dir.path(), "lower", r#"echo '{"status":"ok"}'"#, 0o755);
        check(diagnose(&lower, "lower", LIMIT).await, "unknown status");
        let slow = whitelist_with(dir.path(), "slow", "sleep 30", 0o755);
        check(
            diagnose(&slow, "slow", Duration::from_secs(1)).await,
            "timed out after 1 s",
        );
        let big = whitelist_with(
            dir.path(),
            "big",
            "head -c 70000 /dev/zero | tr '\\0' ' '; echo '{\"status\":\"Ok\"}'",
            0o755,
        );
        check(diagnose(&big, "big", LIMIT).await, "larger than");
    }
}
