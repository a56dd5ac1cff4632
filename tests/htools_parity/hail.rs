//! Running `hail -t FILE REQUEST.json` on a node-evacuate request and reading its answer
//! `{"success": true, "info": "...", "result": [moved, failed, jobs]}` into the same
//! shape as `maintd plan --evacuate ... --json` (`{"moved", "failed", "jobs"}`).

use std::path::Path;

use serde_json::Value;

use super::tools;

/// The decisions of one node evacuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evacuation {
    /// (instance, group of its new primary, new node list `[pri, sec?]`), in processing order.
    pub moved: Vec<(String, String, Vec<String>)>,
    /// (instance, reason), in processing order.
    pub failed: Vec<(String, String)>,
    /// One opcode list per moved instance.
    pub jobs: Vec<Vec<Value>>,
}

fn string(value: &Value, what: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: expected a string, got {value}"))
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{what}: expected an array, got {value}"))
}

impl Evacuation {
    /// Reads the `[moved, failed, jobs]` triple from its three JSON values.
    pub fn from_parts(moved: &Value, failed: &Value, jobs: &Value) -> Result<Evacuation, String> {
        let moved = array(moved, "moved")?
            .iter()
            .map(|entry| match array(entry, "moved entry")?.as_slice() {
                [name, group, nodes] => Ok((
                    string(name, "moved instance")?,
                    string(group, "moved group")?,
                    array(nodes, "moved nodes")?
                        .iter()
                        .map(|n| string(n, "moved node"))
                        .collect::<Result<_, _>>()?,
                )),
                other => Err(format!("moved entry: expected 3 items, got {other:?}")),
            })
            .collect::<Result<_, String>>()?;
        let failed = array(failed, "failed")?
            .iter()
            .map(|entry| match array(entry, "failed entry")?.as_slice() {
                [name, reason] => Ok((
                    string(name, "failed instance")?,
                    string(reason, "failure reason")?,
                )),
                other => Err(format!("failed entry: expected 2 items, got {other:?}")),
            })
            .collect::<Result<_, String>>()?;
        let jobs = array(jobs, "jobs")?
            .iter()
            .map(|job| array(job, "job").cloned())
            .collect::<Result<_, String>>()?;
        Ok(Evacuation {
            moved,
            failed,
            jobs,
        })
    }

    /// Parses hail's answer; an unsuccessful answer is an error carrying hail's `info`.
    pub fn from_hail(answer: &str) -> Result<Evacuation, String> {
        let value: Value =
            serde_json::from_str(answer).map_err(|e| format!("hail answer is not JSON: {e}"))?;
        if value["success"] != Value::Bool(true) {
            return Err(format!("hail refused the request: {}", value["info"]));
        }
        match value["result"].as_array().map(Vec::as_slice) {
            Some([moved, failed, jobs]) => Evacuation::from_parts(moved, failed, jobs),
            _ => Err(format!("hail result is not [moved, failed, jobs]: {value}")),
        }
    }

    /// Parses `maintd plan --evacuate ... --json`.
    pub fn from_maintd(answer: &str) -> Result<Evacuation, String> {
        let value: Value = serde_json::from_str(answer)
            .map_err(|e| format!("maintd plan --json output is not JSON: {e}"))?;
        Evacuation::from_parts(&value["moved"], &value["failed"], &value["jobs"])
    }

    /// hail's `info` text for this result.
    pub fn info(&self) -> String {
        format!(
            "Request successful: {} instances failed to move and {} were moved successfully",
            self.failed.len(),
            self.moved.len()
        )
    }
}

/// The instances a generated request asks to evacuate, in request order.
pub fn requested_instances(request: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(request)
        .map_err(|e| format!("reading {}: {e}", request.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}", request.display()))?;
    array(&value["request"]["instances"], "request instances")?
        .iter()
        .map(|v| string(v, "request instance"))
        .collect()
}

/// Runs hail on a request consistent with `file` and parses the answer.
pub fn run(file: &Path, request: &Path) -> Result<(Evacuation, String), String> {
    let output = tools::run(
        &tools::hail()?,
        [
            "-t".to_string(),
            file.display().to_string(),
            request.display().to_string(),
        ],
    )?;
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    let evacuation = Evacuation::from_hail(&answer)
        .map_err(|e| format!("hail on {}: {e}", request.display()))?;
    let info = serde_json::from_str::<Value>(&answer)
        .ok()
        .and_then(|v| v["info"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((evacuation, info))
}
