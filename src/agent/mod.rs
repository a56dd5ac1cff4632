//! The node agent (`maintd agent`): the node side of maintd on Ganeti 3.x, which has
//! neither mond's self-diagnose collector nor the repair-command opcode. It runs on every
//! node and serves, over plain HTTP (default `0.0.0.0:1817`):
//!
//! # Protocol
//!
//! - `GET /` → `[1]`; `GET /1` → `null`; `GET /1/list/collectors` →
//!   `[["diagnose","node",1]]` (name, category, kind: mond's order).
//! - `GET /1/report/node/diagnose[?salt=S]` → the latest diagnose result as a mond report
//!   object `{"name":"diagnose","version":"B","format_version":1,"timestamp":<ns when the
//!   diagnose ran>,"category":"node","kind":1,"data":<data>}`.
//!   - Without an HMAC key: that object is the body.
//!   - With a key: the body is a [`SignedMessage`](crate::signing::SignedMessage) whose
//!     `msg` is the report object, JSON-encoded, and whose `salt` is the `salt` query
//!     parameter if given (1–64 characters of `[A-Za-z0-9-]`, else 400 with a plain-text
//!     reason), otherwise the current Unix time in seconds. maintd sends a fresh random
//!     salt per poll and checks that it comes back, which defeats replays.
//!   - Before the first diagnose has finished: 503, plain text.
//! - `POST /1/repair`: the body (at most 1 MiB) is a signed message whose `salt` is the
//!   sender's Unix time in seconds and whose `msg` is the JSON object
//!   `{"node","incident","command","input"}` ([`repair::RepairRequest`]).
//!   - No HMAC key on the agent: 403 `repair requests need the cluster HMAC key`.
//!   - Bad signature: 403. Salt more than 300 s from the agent's clock: 403
//!     `stale or future request: ...`. `node` is not this node: 403. `incident` not a
//!     uuid, or not a signed repair request at all: 400. All refusals are plain text.
//!   - An execution for that incident exists: 200 with it, unchanged, and nothing runs
//!     (a resubmitted or replayed request never runs the command twice).
//!   - Otherwise a new execution is queued: 202 with it.
//!   - Answers are signed like reports, with the request's salt.
//! - `GET /1/repair/<uuid>[?salt=S]` → the execution, signed like reports; 404 plain text
//!   if unknown (400 if not a uuid).
//! - Unknown paths: 404, plain text; other methods on known paths: 405, plain text.
//!
//! An execution ([`repair::Execution`]) is
//! `{"incident","node","command","state":"queued"|"running"|"succeeded"|"failed",
//! "exit_code":<int|null>,"output":"<stdout then stderr, capped>","message":<why it
//! failed|null>,"submitted":<unix s>,"started":<unix s|null>,"finished":<unix s|null>}`.
//!
//! # Running commands
//!
//! Executions run one at a time per node, in submission order. The command must pass the
//! [`whitelist`] (checked when the execution starts; a refusal fails the execution with
//! the reason and runs nothing). It runs with no arguments, `input` on stdin, only
//! `PATH=/usr/sbin:/usr/bin:/sbin:/bin` in its environment, in a process group of its own
//! that is killed at the time limit ([`run`]). Executions are persisted after every
//! change; one found queued or running at start is failed with
//! [`repair::RESTARTED_MESSAGE`], never run again.
//!
//! The diagnose command ([`diagnose`]) runs the same way with empty stdin, at a fixed
//! interval, never twice at once; the web handler serves the latest result.

pub mod diagnose;
pub mod repair;
pub mod replica;
pub mod run;
pub mod signed_request;
pub mod whitelist;

use serde_json::{json, Value};

pub use crate::model::diagnose::report_envelope;

/// The agent's default port.
pub const DEFAULT_PORT: u16 = 1817;

/// The collector list the agent serves (name, category, kind).
pub fn collectors() -> Value {
    json!([["diagnose", "node", 1]])
}

/// Most bytes of a `POST /1/repair` body.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
