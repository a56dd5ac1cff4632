//! Repair requests and their executions: authenticating a signed request, the per-node
//! record of executions (idempotent per incident, run one at a time in submission
//! order), and what is persisted.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::{
    run::{RunEnd, RunOutcome},
    signed_request::{open_signed_request, SignedRequestError},
};
use crate::signing::{self, HmacKey};

/// Maximum skew of a repair request's time salt, in seconds (confd's).
pub const REPAIR_MAX_SKEW_SECS: u64 = signing::MAX_CLOCK_SKEW_SECS;

/// The message of an execution that was queued or running when the agent stopped.
pub const RESTARTED_MESSAGE: &str = "agent restarted during execution";

/// The signed payload of `POST /1/repair`. Unknown fields are ignored, so that the sender
/// may add some without breaking older agents (they are covered by the signature anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRequest {
    /// The node that is to run the command.
    pub node: String,
    /// The incident's uuid, which identifies the execution.
    pub incident: String,
    /// The repair command's name in the whitelist.
    pub command: String,
    /// The command's standard input.
    pub input: String,
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRequest {
    /// The incident.
    pub incident: Uuid,
    /// The request.
    pub request: RepairRequest,
    /// Its salt, with which the answer is signed.
    pub salt: String,
}

/// Why a repair request was refused; [`RequestError::http_status`] maps each to its code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// The agent has no key, so it cannot authenticate anyone.
    #[error("repair requests need the cluster HMAC key")]
    NoKey,
    /// The body is not a fresh message signed with the cluster key.
    #[error(transparent)]
    Signed(#[from] SignedRequestError),
    /// The signed message is not a repair request.
    #[error("the signed message is not a repair request: {0}")]
    BadRequest(String),
    /// The incident is not a uuid.
    #[error("incident {0:?} is not a uuid")]
    BadIncident(String),
    /// The request is for another node.
    #[error("the request is for node {requested:?}, this is {this:?}")]
    WrongNode {
        /// The node named in the request.
        requested: String,
        /// This node.
        this: String,
    },
}

impl RequestError {
    /// The HTTP status of the refusal: 403 for anything about authenticity, 400 for
    /// malformed requests.
    pub fn http_status(&self) -> u16 {
        match self {
            RequestError::Signed(e) => e.http_status(),
            RequestError::NoKey | RequestError::WrongNode { .. } => 403,
            RequestError::BadRequest(_) | RequestError::BadIncident(_) => 400,
        }
    }
}

/// Authenticate a `POST /1/repair` body: a signed message from a holder of the cluster
/// key, fresh (its salt is a Unix time within [`REPAIR_MAX_SKEW_SECS`] of `now_secs`),
/// for this node, about a uuid-named incident. The signature is checked before anything
/// of the content is believed.
pub fn authenticate(
    key: Option<&HmacKey>,
    body: &[u8],
    node_name: &str,
    now_secs: u64,
) -> Result<AcceptedRequest, RequestError> {
    let key = key.ok_or(RequestError::NoKey)?;
    let signed = open_signed_request(key, body, now_secs, REPAIR_MAX_SKEW_SECS)?;
    let request: RepairRequest =
        serde_json::from_str(&signed.msg).map_err(|e| RequestError::BadRequest(e.to_string()))?;
    if request.node != node_name {
        return Err(RequestError::WrongNode {
            requested: request.node,
            this: node_name.to_owned(),
        });
    }
    let incident = Uuid::parse_str(&request.incident)
        .map_err(|_| RequestError::BadIncident(request.incident.clone()))?;
    Ok(AcceptedRequest {
        incident,
        request,
        salt: signed.salt,
    })
}

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// Waiting for the executions before it.
    Queued,
    /// The command is running.
    Running,
    /// The command exited with code 0.
    Succeeded,
    /// Refused, could not start, non-zero exit, killed, timed out, or interrupted.
    Failed,
}

impl ExecutionState {
    /// Nothing more will happen to it.
    pub fn is_finished(self) -> bool {
        matches!(self, ExecutionState::Succeeded | ExecutionState::Failed)
    }
}

/// One repair command execution, as served and persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The incident it repairs (its identity).
    pub incident: Uuid,
    /// The node.
    pub node: String,
    /// The command's name.
    pub command: String,
    /// Where it stands.
    pub state: ExecutionState,
    /// The exit code, once exited.
    pub exit_code: Option<i32>,
    /// stdout then stderr, capped.
    pub output: String,
    /// Why it failed.
    pub message: Option<String>,
    /// When it was accepted (Unix seconds).
    pub submitted: f64,
    /// When the command started.
    pub started: Option<f64>,
    /// When it finished.
    pub finished: Option<f64>,
    /// The command's standard input, held until the command starts. Neither served nor
    /// persisted: an execution interrupted by a restart is never run again, so its input
    /// is not needed after one.
    #[serde(skip)]
    pub input: Option<String>,
}

/// What [`RepairBook::submit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission {
    /// A new execution was queued.
    Queued(Execution),
    /// The incident already had an execution: nothing new happens.
    Existing(Execution),
}

/// The persisted document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookDocument {
    /// Format version.
    pub version: u32,
    /// The executions, oldest first.
    pub executions: Vec<Execution>,
}

const BOOK_VERSION: u32 = 1;

/// The executions of this node, in submission order, with the FIFO queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairBook {
    executions: BTreeMap<Uuid, Execution>,
    /// Submission order, oldest first.
    order: VecDeque<Uuid>,
    keep: usize,
}

impl RepairBook {
    /// An empty book keeping at most `keep` executions (at least one).
    pub fn new(keep: usize) -> Self {
        RepairBook {
            executions: BTreeMap::new(),
            order: VecDeque::new(),
            keep: keep.max(1),
        }
    }

    /// The book from a persisted document. Executions that were queued or running when
    /// the agent stopped are failed, never run again: the command may have done part of
    /// its work, and only the cluster side can decide whether to try again. Returns the
    /// book and the incidents so failed.
    pub fn restore(document: BookDocument, keep: usize, now: f64) -> (Self, Vec<Uuid>) {
        let mut book = RepairBook::new(keep);
        let mut interrupted = Vec::new();
        for mut execution in document.executions {
            if book.executions.contains_key(&execution.incident) {
                continue;
            }
            if !execution.state.is_finished() {
                execution.state = ExecutionState::Failed;
                execution.message = Some(RESTARTED_MESSAGE.into());
                execution.finished = Some(now);
                execution.input = None;
                interrupted.push(execution.incident);
            }
            book.order.push_back(execution.incident);
            book.executions.insert(execution.incident, execution);
        }
        book.trim();
        (book, interrupted)
    }

    /// The document to persist.
    pub fn document(&self) -> BookDocument {
        BookDocument {
            version: BOOK_VERSION,
            executions: self
                .order
                .iter()
                .filter_map(|id| self.executions.get(id).cloned())
                .collect(),
        }
    }

    /// Record an accepted request, unless its incident already has an execution (then
    /// that one is returned unchanged: a resubmitted or replayed request never runs the
    /// command twice).
    pub fn submit(&mut self, accepted: &AcceptedRequest, now: f64) -> Submission {
        if let Some(existing) = self.executions.get(&accepted.incident) {
            return Submission::Existing(existing.clone());
        }
        let execution = Execution {
            incident: accepted.incident,
            node: accepted.request.node.clone(),
            command: accepted.request.command.clone(),
            state: ExecutionState::Queued,
            exit_code: None,
            output: String::new(),
            message: None,
            submitted: now,
            started: None,
            finished: None,
            input: Some(accepted.request.input.clone()),
        };
        self.order.push_back(execution.incident);
        self.executions
            .insert(execution.incident, execution.clone());
        self.trim();
        Submission::Queued(execution)
    }

    /// Undo a [`RepairBook::submit`] that could not be persisted.
    pub fn withdraw(&mut self, incident: Uuid) {
        if self
            .executions
            .get(&incident)
            .is_some_and(|e| e.state == ExecutionState::Queued)
        {
            self.executions.remove(&incident);
            self.order.retain(|id| *id != incident);
        }
    }

    /// The execution of `incident`.
    pub fn get(&self, incident: Uuid) -> Option<&Execution> {
        self.executions.get(&incident)
    }

    /// Whether a command is running.
    pub fn is_running(&self) -> bool {
        self.executions
            .values()
            .any(|e| e.state == ExecutionState::Running)
    }

    /// The oldest queued execution, if none is running (one at a time per node).
    pub fn next_to_start(&self) -> Option<&Execution> {
        if self.is_running() {
            return None;
        }
        self.order
            .iter()
            .filter_map(|id| self.executions.get(id))
            .find(|e| e.state == ExecutionState::Queued)
    }

    /// Mark `incident` running; returns its command and input.
    pub fn start(&mut self, incident: Uuid, now: f64) -> Option<(String, String)> {
        let execution = self.executions.get_mut(&incident)?;
        if execution.state != ExecutionState::Queued {
            return None;
        }
        execution.state = ExecutionState::Running;
        execution.started = Some(now);
        Some((
            execution.command.clone(),
            execution.input.take().unwrap_or_default(),
        ))
    }

    /// Fail `incident` (queued or running) without an exit code, e.g. when the
    /// whitelist refuses its command or it cannot be started.
    pub fn fail(&mut self, incident: Uuid, message: String, now: f64) {
        if let Some(execution) = self.executions.get_mut(&incident) {
            if execution.state.is_finished() {
                return;
            }
            execution.state = ExecutionState::Failed;
            execution.message = Some(message);
            execution.finished = Some(now);
            execution.input = None;
        }
        self.trim();
    }

    /// Record how the command of `incident` ended.
    pub fn finish(
        &mut self,
        incident: Uuid,
        outcome: &RunOutcome,
        timeout_secs: f64,
        max_output: usize,
        now: f64,
    ) {
        if let Some(execution) = self.executions.get_mut(&incident) {
            if execution.state != ExecutionState::Running {
                return;
            }
            execution.exit_code = outcome.exit_code();
            execution.output = combined_output(outcome, max_output);
            execution.finished = Some(now);
            let (state, message) = match outcome.end {
                RunEnd::Exited(0) => (ExecutionState::Succeeded, None),
                RunEnd::Exited(code) => (
                    ExecutionState::Failed,
                    Some(format!("command exited with code {code}")),
                ),
                RunEnd::Signalled(signal) => (
                    ExecutionState::Failed,
                    Some(format!("command killed by signal {signal}")),
                ),
                RunEnd::TimedOut => (
                    ExecutionState::Failed,
                    Some(format!(
                        "command timed out after {timeout_secs} s and was killed"
                    )),
                ),
            };
            execution.state = state;
            execution.message = message;
        }
        self.trim();
    }

    /// Forget the oldest finished executions beyond `keep`. Unfinished ones are never
    /// forgotten. (A forgotten incident could be run again by a new request for it, but
    /// only by a fresh signed one: replays are stale after five minutes.)
    fn trim(&mut self) {
        while self.executions.len() > self.keep {
            let Some(oldest) = self.order.iter().position(|id| {
                self.executions
                    .get(id)
                    .is_some_and(|e| e.state.is_finished())
            }) else {
                return;
            };
            if let Some(id) = self.order.remove(oldest) {
                self.executions.remove(&id);
            }
        }
    }

    /// How many executions are kept.
    pub fn len(&self) -> usize {
        self.executions.len()
    }

    /// No executions at all.
    pub fn is_empty(&self) -> bool {
        self.executions.is_empty()
    }
}

/// stdout then stderr, at most `max_output` bytes (bytes that are not UTF-8, or a
/// character cut by the limit, show as U+FFFD), with a note when anything was left out,
/// and then the run's own note, if any (never cut by the limit).
pub fn combined_output(outcome: &RunOutcome, max_output: usize) -> String {
    let mut bytes = outcome.stdout.clone();
    bytes.extend_from_slice(&outcome.stderr);
    let mut dropped = outcome.stdout_dropped + outcome.stderr_dropped;
    if bytes.len() > max_output {
        dropped += (bytes.len() - max_output) as u64;
        bytes.truncate(max_output);
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if dropped > 0 {
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("[output truncated: {dropped} bytes left out]\n"));
    }
    if let Some(note) = &outcome.note {
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(note);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{sign, SignatureError};

    const NOW: u64 = 1_700_000_000;
    const INCIDENT: &str = "0b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";

    fn key() -> HmacKey {
        HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef01234567\n".to_vec()).unwrap()
    }

    fn body(salt: &str, msg: &str) -> Vec<u8> {
        serde_json::to_vec(&sign(&key(), salt, msg)).unwrap()
    }

    fn request(node: &str, incident: &str) -> String {
        serde_json::json!({"node": node, "incident": incident, "command": "fix", "input": "{}"})
            .to_string()
    }

    #[test]
    fn a_signed_fresh_request_for_this_node_is_accepted() {
        let accepted = authenticate(
            Some(&key()),
            &body("1700000010", &request("node1", INCIDENT)),
            "node1",
            NOW,
        )
        .unwrap();
        assert_eq!(accepted.incident.to_string(), INCIDENT);
        assert_eq!(accepted.request.command, "fix");
        assert_eq!(accepted.salt, "1700000010");
    }

    #[test]
    fn refusals() {
        let good = request("node1", INCIDENT);
        let refuse =
            |key: Option<&HmacKey>, body: &[u8]| authenticate(key, body, "node1", NOW).unwrap_err();
        let err = refuse(None, &body("1700000000", &good));
        assert_eq!(
            (err.http_status(), err.to_string().as_str()),
            (403, "repair requests need the cluster HMAC key")
        );
        let mut forged = sign(&key(), "1700000000", &good);
        forged.msg = forged.msg.replace("fix", "rm-rf");
        let err = refuse(Some(&key()), &serde_json::to_vec(&forged).unwrap());
        assert!(matches!(
            err,
            RequestError::Signed(SignedRequestError::Signature(SignatureError::Mismatch))
        ));
        assert_eq!(err.http_status(), 403);
        let other_key = HmacKey::from_bytes(b"other\n".to_vec()).unwrap();
        let err =
            authenticate(Some(&other_key), &body("1700000000", &good), "node1", NOW).unwrap_err();
        assert_eq!(err.http_status(), 403);
        for salt in ["1699999000", "1700001000", "abc"] {
            let err = refuse(Some(&key()), &body(salt, &good));
            assert!(
                matches!(err, RequestError::Signed(SignedRequestError::Time(_))),
                "{salt}: {err}"
            );
            assert!(err.to_string().starts_with("stale or future request"));
            assert_eq!(err.http_status(), 403);
        }
        let err = refuse(
            Some(&key()),
            &body("1700000000", &request("node2", INCIDENT)),
        );
        assert!(matches!(err, RequestError::WrongNode { .. }));
        assert_eq!(err.http_status(), 403);
        let err = refuse(
            Some(&key()),
            &body("1700000000", &request("node1", "not-a-uuid")),
        );
        assert_eq!(err, RequestError::BadIncident("not-a-uuid".into()));
        assert_eq!(err.http_status(), 400);
        let err = refuse(Some(&key()), &body("1700000000", r#"{"node":"node1"}"#));
        assert!(matches!(err, RequestError::BadRequest(_)));
        assert_eq!(err.http_status(), 400);
        let err = refuse(Some(&key()), b"{\"msg\":1}");
        assert!(matches!(
            err,
            RequestError::Signed(SignedRequestError::NotSigned(_))
        ));
        assert_eq!(err.http_status(), 400);
    }

    fn accepted(incident: &str) -> AcceptedRequest {
        authenticate(
            Some(&key()),
            &body("1700000000", &request("node1", incident)),
            "node1",
            NOW,
        )
        .unwrap()
    }

    fn outcome(end: RunEnd, stdout: &str, stderr: &str) -> RunOutcome {
        RunOutcome {
            end,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            stdout_dropped: 0,
            stderr_dropped: 0,
            note: None,
        }
    }

    #[test]
    fn executions_are_idempotent_per_incident_and_run_in_order() {
        let mut book = RepairBook::new(10);
        let first = accepted(INCIDENT);
        let second = accepted("1b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10");
        let Submission::Queued(queued) = book.submit(&first, 1.0) else {
            panic!("not queued")
        };
        assert_eq!(queued.state, ExecutionState::Queued);
        assert!(!serde_json::to_string(&queued).unwrap().contains("input"));
        assert!(matches!(book.submit(&second, 2.0), Submission::Queued(_)));
        assert_eq!(book.next_to_start().unwrap().incident, first.incident);
        assert_eq!(
            book.start(first.incident, 3.0),
            Some(("fix".into(), "{}".into()))
        );
        // One at a time.
        assert_eq!(book.next_to_start(), None);
        // Resubmitting returns the execution as it is.
        let Submission::Existing(existing) = book.submit(&first, 4.0) else {
            panic!("resubmission queued again")
        };
        assert_eq!(existing.state, ExecutionState::Running);
        assert_eq!(existing.submitted, 1.0);
        book.finish(
            first.incident,
            &outcome(RunEnd::Exited(0), "fixed\n", "warn\n"),
            300.0,
            100,
            5.0,
        );
        let done = book.get(first.incident).unwrap();
        assert_eq!(done.state, ExecutionState::Succeeded);
        assert_eq!(
            (done.exit_code, done.output.as_str()),
            (Some(0), "fixed\nwarn\n")
        );
        assert_eq!((done.started, done.finished), (Some(3.0), Some(5.0)));
        // A finished incident stays finished when resubmitted.
        assert!(
            matches!(book.submit(&first, 6.0), Submission::Existing(e) if e.state == ExecutionState::Succeeded)
        );
        assert_eq!(book.next_to_start().unwrap().incident, second.incident);
    }

    #[test]
    fn failures_carry_a_message() {
        let mut book = RepairBook::new(10);
        let cases = [
            (
                RunEnd::Exited(3),
                ExecutionState::Failed,
                Some(3),
                "exited with code 3",
            ),
            (
                RunEnd::Signalled(9),
                ExecutionState::Failed,
                None,
                "signal 9",
            ),
            (
                RunEnd::TimedOut,
                ExecutionState::Failed,
                None,
                "timed out after 300 s",
            ),
        ];
        for (i, (end, state, code, message)) in cases.into_iter().enumerate() {
            let request = accepted(&format!("0b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a1{i}"));
            book.submit(&request, 1.0);
            book.start(request.incident, 2.0).unwrap();
            book.finish(request.incident, &outcome(end, "", ""), 300.0, 100, 3.0);
            let e = book.get(request.incident).unwrap();
            assert_eq!((e.state, e.exit_code), (state, code));
            assert!(e.message.as_deref().unwrap().contains(message), "{e:?}");
        }
        let refused = accepted("2b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10");
        book.submit(&refused, 1.0);
        book.fail(refused.incident, "command refused".into(), 2.0);
        let e = book.get(refused.incident).unwrap();
        assert_eq!(e.state, ExecutionState::Failed);
        assert_eq!(e.started, None);
        assert_eq!(e.message.as_deref(), Some("command refused"));
    }

    #[test]
    fn restore_fails_interrupted_executions_and_round_trips() {
        let mut book = RepairBook::new(10);
        let done = accepted(INCIDENT);
        let running = accepted("1b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10");
        let queued = accepted("2b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10");
        for r in [&done, &running, &queued] {
            book.submit(r, 1.0);
        }
        book.start(done.incident, 2.0);
        book.finish(
            done.incident,
            &outcome(RunEnd::Exited(0), "ok", ""),
            300.0,
            100,
            3.0,
        );
        book.start(running.incident, 4.0);
        let text = serde_json::to_string(&book.document()).unwrap();
        let document: BookDocument = serde_json::from_str(&text).unwrap();
        let (restored, interrupted) = RepairBook::restore(document, 10, 9.0);
        assert_eq!(interrupted, vec![running.incident, queued.incident]);
        assert_eq!(restored.get(done.incident), book.get(done.incident));
        for id in [running.incident, queued.incident] {
            let e = restored.get(id).unwrap();
            assert_eq!(e.state, ExecutionState::Failed);
            assert_eq!(e.message.as_deref(), Some(RESTARTED_MESSAGE));
            assert_eq!(e.finished, Some(9.0));
        }
        assert_eq!(restored.next_to_start(), None);
    }

    #[test]
    fn only_the_latest_finished_executions_are_kept() {
        let mut book = RepairBook::new(2);
        let ids: Vec<AcceptedRequest> = (0..4)
            .map(|i| accepted(&format!("0b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a1{i}")))
            .collect();
        for r in &ids {
            book.submit(r, 1.0);
        }
        // Queued executions are never forgotten.
        assert_eq!(book.len(), 4);
        for r in &ids[..3] {
            book.start(r.incident, 2.0);
            book.finish(
                r.incident,
                &outcome(RunEnd::Exited(0), "", ""),
                1.0,
                10,
                3.0,
            );
        }
        assert_eq!(book.len(), 2);
        assert!(book.get(ids[0].incident).is_none());
        assert!(book.get(ids[1].incident).is_none());
        assert!(book.get(ids[2].incident).is_some());
        assert!(book.get(ids[3].incident).is_some());
    }

    #[test]
    fn output_is_combined_and_capped() {
        let o = outcome(RunEnd::Exited(0), "abcdef", "ghij");
        assert_eq!(combined_output(&o, 100), "abcdefghij");
        assert_eq!(
            combined_output(&o, 4),
            "abcd\n[output truncated: 6 bytes left out]\n"
        );
        let mut capped = outcome(RunEnd::Exited(0), "ab", "");
        capped.stdout_dropped = 10;
        assert!(combined_output(&capped, 100).ends_with("[output truncated: 10 bytes left out]\n"));
        // The run's own note comes last, on a line of its own, past the limit.
        let mut noted = outcome(RunEnd::Exited(0), "abcdef", "");
        noted.note = Some("maintd agent: a note".into());
        assert_eq!(
            combined_output(&noted, 4),
            "abcd\n[output truncated: 2 bytes left out]\nmaintd agent: a note\n"
        );
        assert_eq!(
            combined_output(&noted, 100),
            "abcdef\nmaintd agent: a note\n"
        );
    }
}
