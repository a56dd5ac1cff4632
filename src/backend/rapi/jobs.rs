//! maintd jobs as chains of RAPI jobs (RAPI takes one opcode per job): submitting a chain,
//! each job `depends` on its predecessor succeeding; the status of a chain's last job;
//! finding chains again by their submission key; canceling a chain.

use awc::http::Method;
use futures_util::{stream, StreamExt};
use serde_json::Value;

use super::{
    error::excerpt,
    opcodes::{job_requests, OpRequest},
    reason::{chain_position, is_marked_chain_end, reason_text, reason_texts},
    snapshot::list,
    RapiClient, RapiError,
};
use crate::{
    backend::{BackendError, CancelOutcome, Submission},
    model::{
        job::{JobId, JobStatus},
        job_failure::JobFailure,
        opcode::Opcode,
    },
};

/// Job status requests in flight at once (one request per job).
const STATUS_REQUESTS_IN_FLIGHT: usize = 4;

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

/// How submitting one job's chain ended, short of success.
enum ChainFailure {
    /// RAPI refused a request: nothing of the job runs (earlier jobs were canceled).
    Refused(String),
    /// The outcome is unknown (connection lost, server error, garbled answer).
    Unknown(BackendError),
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

pub(super) async fn submit_jobs(
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

pub(super) async fn job_statuses(
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

pub(super) async fn find_jobs_by_reason(
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

/// The jobs of the chain ending with `last`, first to last, each as `/2/jobs/<id>` answers
/// it (`null`: unknown to the cluster).
async fn chain_jobs(client: &RapiClient, last: JobId) -> Result<Vec<(JobId, Value)>, BackendError> {
    let mut chain: Vec<(JobId, Value)> = Vec::new();
    let mut next = Some(last);
    while let Some(id) = next.take() {
        let path = format!("/2/jobs/{id}");
        let job = match client.get(&path).await {
            Ok(job) => job,
            Err(e) if e.status() == Some(404) => Value::Null,
            Err(e) => return Err(e.into()),
        };
        next = chain_predecessor(&job)
            .filter(|previous| chain.len() + 1 < MAX_CHAIN_JOBS && previous < &id);
        chain.push((id, job));
    }
    chain.reverse();
    Ok(chain)
}

/// The jobs of the chain ending with `last`, first to last, each with its status (`None`:
/// unknown to the cluster).
async fn chain_of(
    client: &RapiClient,
    last: JobId,
) -> Result<Vec<(JobId, Option<JobStatus>)>, BackendError> {
    chain_jobs(client, last)
        .await?
        .into_iter()
        .map(|(id, job)| {
            let status = match &job {
                Value::Null => None,
                job => decode_status(job, &format!("/2/jobs/{id}"))?,
            };
            Ok((id, status))
        })
        .collect()
}

/// Why a `/2/jobs/<id>` answer's job failed: its first failed opcode and Ganeti's error.
pub(super) fn decode_failure(job: &Value) -> Option<JobFailure> {
    JobFailure::from_job_fields(job.get("ops")?, job.get("opstatus")?, job.get("opresult")?)
}

/// Why the maintd job whose chain ends with `last` failed: the first failed job of the chain
/// (the later ones fail only because they depend on it).
pub(super) async fn chain_failure(
    client: &RapiClient,
    last: JobId,
) -> Result<Option<JobFailure>, BackendError> {
    Ok(chain_jobs(client, last)
        .await?
        .iter()
        .find_map(|(_, job)| decode_failure(job)))
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
pub(super) async fn cancel_chain(
    client: &RapiClient,
    last: JobId,
) -> Result<CancelOutcome, BackendError> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample_body(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ganeti-3.0")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let sample: Value = serde_json::from_str(&text).unwrap();
        sample["response"]["body"].clone()
    }

    #[test]
    fn decodes_why_a_real_job_failed() {
        let failure = decode_failure(&sample_body("rapi-57-node1-drain-master-final.json"))
            .expect("the job failed");
        assert_eq!(failure.opcode.as_deref(), Some("OP_NODE_SET_PARAMS"));
        assert_eq!(failure.target.as_deref(), Some("node1.ganeti.test"));
        assert_eq!(
            failure.error,
            "OpPrereqError: The master role can be changed only via master-failover (wrong_input)"
        );
        // A job that succeeded has no failure.
        assert_eq!(
            decode_failure(&sample_body("rapi-60-node2-del-tag-final.json")),
            None
        );
    }

    #[test]
    fn a_chain_job_failed_for_its_predecessor_names_the_dependency() {
        // What Ganeti records in a job whose `depends` job ended in error.
        let job = json!({
            "id": 31, "status": "error",
            "ops": [{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "inst3",
                     "depends": [[30, ["success"]]]}],
            "opstatus": ["error"],
            "opresult": [["OpExecError", [
                "Dependency job 30 finished with status 'error', not one of 'success' as required"
            ]]],
        });
        assert_eq!(
            decode_failure(&job).map(|f| f.summary()).as_deref(),
            Some(
                "OP_INSTANCE_MIGRATE inst3: OpExecError: Dependency job 30 finished with \
                 status 'error', not one of 'success' as required"
            )
        );
    }

    #[test]
    fn unknown_or_garbled_jobs_have_no_failure() {
        for job in [
            json!(null),
            json!({"id": 5, "status": null, "ops": null, "opstatus": null, "opresult": null}),
            json!({"status": "error"}),
            json!({"ops": [], "opstatus": ["error"]}),
            json!([1, 2, 3]),
        ] {
            assert_eq!(decode_failure(&job), None, "{job}");
        }
        // Still a failure when only the opcode is garbled.
        let job = json!({"ops": "?", "opstatus": ["error"], "opresult": [["OpExecError", ["x"]]]});
        assert_eq!(
            decode_failure(&job).map(|f| f.summary()).as_deref(),
            Some("OpExecError: x")
        );
    }
}
