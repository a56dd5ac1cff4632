//! Webhook notifications: every saved change of an incident's status is POSTed as JSON to
//! `notify.webhook_url`, signed with a shared secret, retried with backoff, and kept in a
//! bounded queue persisted beside the maintenance state, so that a receiver that is down
//! loses nothing (up to the bound) and holds up nothing.
//!
//! Delivery is at least once and in order: one request is in flight at a time, and an
//! event leaves the persisted queue only once the receiver answered it with a 2xx.
//!
//! | the receiver answers | maintd |
//! | --- | --- |
//! | 2xx | delivered: the event leaves the queue, the next one goes |
//! | 408, 429, 5xx, no answer (refused, reset, timeout) | retries the same event after a backoff that doubles up to `notify.retry_max` |
//! | any other status (a 4xx, a 3xx: redirects are not followed) | logs an error with the answer and drops the event: the receiver says it will never take it, and retrying it forever would hold back every later event |
//!
//! When the queue is full, the oldest waiting event is dropped (and logged), and the
//! event delivered next carries how many were dropped just before it (`dropped_before`).
//!
//! Each queue file is one *stream* (a UUID made with the file) whose events are numbered
//! 1, 2, 3, ... (`seq`): `(stream, seq)` identifies an event, so that a receiver can
//! drop the duplicates at-least-once delivery may bring, and see gaps. The queue lives on
//! the node that was master when the change happened: a new master (after a failover)
//! starts its own stream, and what the old master had not delivered waits on its disk
//! until it is master again.

use std::{collections::VecDeque, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    backoff::Backoff,
    model::{
        diagnose::RepairAction,
        incident::{MaintenanceState, RepairStatus, BY_MAINTD},
        transition::StatusChange,
    },
    signing::{hmac_sha256_hex, HmacKey},
    store::{JsonStore, StoreError},
};

/// Name of the queue file inside the state directory.
pub const QUEUE_FILE: &str = "notify-queue.json";

/// The header carrying the signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Maintd-Signature";

/// The header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Maintd-Timestamp";

/// One incident's change of status, as the receiver reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The incident.
    pub incident: Uuid,
    /// The node that reported it.
    pub node: String,
    /// What maintd does about it (`evacuate`, `live-repair`, ...).
    pub action: RepairAction,
    /// The status before; `null` for a new incident.
    pub from: Option<RepairStatus>,
    /// The status now.
    pub to: RepairStatus,
    /// Why it failed, why it waits, how it ended.
    pub message: Option<String>,
    /// Who made the change: `maintd`, the node, or the API user.
    pub by: String,
    /// When the change was saved (Unix seconds).
    pub time: f64,
}

impl Transition {
    /// `change`, as saved in `state` at `time`: who made it is the author of the
    /// incident's last history entry (maintd when it has none).
    pub fn of(change: &StatusChange, state: &MaintenanceState, time: f64) -> Transition {
        let by = state
            .incident(change.uuid)
            .and_then(|incident| incident.history.last())
            .map_or(BY_MAINTD, |entry| entry.by.as_str());
        Transition {
            incident: change.uuid,
            node: change.node.clone(),
            action: change.action,
            from: change.from,
            to: change.to,
            message: change.message.clone(),
            by: by.to_owned(),
            time,
        }
    }
}

/// A queued notification: the body of one POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The queue file's stream; with `seq`, identifies the event.
    pub stream: Uuid,
    /// Position in the stream, from 1, without gaps but for dropped events.
    pub seq: u64,
    /// The change.
    #[serde(flatten)]
    pub transition: Transition,
    /// Events dropped (queue full) just before this one.
    pub dropped_before: u64,
}

impl Event {
    /// The JSON body, as signed and sent.
    pub fn body(&self) -> Vec<u8> {
        // Plain data: serialization cannot fail; an empty body would be refused anyway.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The queue of events not yet delivered, oldest first, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyQueue {
    stream: Uuid,
    /// The `seq` of the next event pushed.
    next_seq: u64,
    /// Events dropped since the file was made.
    dropped_total: u64,
    events: VecDeque<Event>,
    /// At most this many events wait, the one in flight aside.
    #[serde(skip, default = "default_limit")]
    limit: usize,
    /// The `seq` of the event being sent: never dropped under the sender's feet.
    #[serde(skip)]
    in_flight: Option<u64>,
}

fn default_limit() -> usize {
    1
}

impl NotifyQueue {
    /// An empty queue of a new stream, holding at most `limit` (at least 1) events.
    pub fn new(limit: usize) -> NotifyQueue {
        NotifyQueue {
            stream: Uuid::new_v4(),
            next_seq: 1,
            dropped_total: 0,
            events: VecDeque::new(),
            limit: limit.max(1),
            in_flight: None,
        }
    }

    /// This queue (as loaded) under `limit`: if the file holds more events, the oldest
    /// are dropped now. Returns how many.
    pub fn set_limit(&mut self, limit: usize) -> u64 {
        self.limit = limit.max(1);
        self.trim()
    }

    /// Queue `transition`; returns how many older events were dropped to make room.
    pub fn push(&mut self, transition: Transition) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push_back(Event {
            stream: self.stream,
            seq,
            transition,
            dropped_before: 0,
        });
        self.trim()
    }

    /// Drop the oldest events beyond the limit, except the one in flight; the event after
    /// each gap counts what went before it (its own count included).
    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        loop {
            let sending_first = self.in_flight.is_some()
                && self.in_flight == self.events.front().map(|event| event.seq);
            let skip = usize::from(sending_first);
            if self.events.len() <= self.limit + skip {
                return dropped;
            }
            let Some(gone) = self.events.remove(skip) else {
                return dropped;
            };
            dropped += 1;
            self.dropped_total += 1;
            if let Some(next) = self.events.get_mut(skip) {
                next.dropped_before += 1 + gone.dropped_before;
            }
        }
    }

    /// The oldest event, now in flight; `None` if there is none.
    pub fn begin(&mut self) -> Option<&Event> {
        let event = self.events.front()?;
        self.in_flight = Some(event.seq);
        Some(event)
    }

    /// The event `seq` was delivered (or refused for good): it leaves the queue.
    /// Returns whether it was still queued.
    pub fn settle(&mut self, seq: u64) -> bool {
        self.in_flight = None;
        match self.events.front() {
            Some(event) if event.seq == seq => {
                self.events.pop_front();
                true
            }
            _ => false,
        }
    }

    /// The event in flight was not delivered: it stays first, and may be dropped again
    /// while it waits for its retry.
    pub fn release(&mut self) {
        self.in_flight = None;
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// No event waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events dropped since the queue file was made.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// The stream of this queue.
    pub fn stream(&self) -> Uuid {
        self.stream
    }
}

/// The queue in `store` under `limit`; a new, empty one when there is no file. A file
/// that is not a valid queue is moved aside (as `<file>.corrupt-<suffix>`) rather than
/// stop the daemon: the second value says what happened, for the log.
pub fn load_queue(store: &JsonStore, limit: usize, suffix: &str) -> (NotifyQueue, Option<String>) {
    match store.load::<NotifyQueue>() {
        Ok(Some(mut queue)) => {
            let dropped = queue.set_limit(limit);
            let note = (dropped > 0).then(|| {
                format!("{dropped} queued notifications dropped: more than notify.queue_limit")
            });
            (queue, note)
        }
        Ok(None) => (NotifyQueue::new(limit), None),
        Err(e @ StoreError::Corrupt { .. }) => {
            let moved = match store.archive(&format!("corrupt-{suffix}")) {
                Ok(Some(path)) => format!("moved to {}", path.display()),
                Ok(None) => "gone".into(),
                Err(why) => format!("could not be moved aside: {why}"),
            };
            let note = format!(
                "the notification queue is not valid ({e}); {moved}; starting a new stream"
            );
            (NotifyQueue::new(limit), Some(note))
        }
        Err(e) => (
            NotifyQueue::new(limit),
            Some(format!(
                "the notification queue cannot be read ({e}); starting a new stream"
            )),
        ),
    }
}

/// The webhook's shared secret from `path`: the file's content without its trailing line
/// break, so that `echo secret > file` and `openssl -hmac "$(cat file)"` agree.
pub fn load_secret(path: &Path) -> Result<HmacKey, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut end = text.len();
    while end > 0 && matches!(text[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    HmacKey::from_bytes(&text[..end]).map_err(|_| format!("{} is empty", path.display()))
}

/// The signature header's value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"`. The timestamp is signed
/// too, so that a receiver that refuses old timestamps cannot be fed a replay.
pub fn signature(secret: &HmacKey, timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    format!(
        "sha256={}",
        hmac_sha256_hex(secret, &[timestamp.as_bytes(), b".", body])
    )
}

/// The answer to one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this status (and this text, shortened).
    Status(u16, String),
    /// No answer: connection refused or reset, timeout, TLS failure.
    Unreachable(String),
}

/// What to do with the event that got an [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered: settle it, send the next.
    Delivered,
    /// Refused for good: log why, settle it, send the next.
    Refused(String),
    /// Send it again after the delay.
    Retry {
        /// How long to wait.
        after: Duration,
        /// Why, for the log.
        why: String,
    },
}

/// The verdict on `answer`, the `attempt`-th (from 1) consecutive attempt at an event.
pub fn judge(answer: &Answer, attempt: u32, backoff: &Backoff) -> Verdict {
    let retry = |why: String| Verdict::Retry {
        after: backoff.delay(attempt),
        why,
    };
    match answer {
        Answer::Status(status, _) if (200..300).contains(status) => Verdict::Delivered,
        Answer::Status(status @ (408 | 429 | 500..=599), text) => {
            retry(format!("the receiver answered {status}: {text}"))
        }
        Answer::Status(status, text) => {
            Verdict::Refused(format!("the receiver answered {status}: {text}"))
        }
        Answer::Unreachable(why) => retry(why.clone()),
    }
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    fn transition(n: u32) -> Transition {
        Transition {
            incident: Uuid::from_u128(u128::from(n)),
            node: format!("node{n}"),
            action: RepairAction::Evacuate,
            from: Some(RepairStatus::Noted),
            to: RepairStatus::Pending,
            message: None,
            by: "maintd".into(),
            time: 1_700_000_000.0 + f64::from(n),
        }
    }

    fn seqs(queue: &NotifyQueue) -> Vec<(u64, u64)> {
        queue
            .events
            .iter()
            .map(|e| (e.seq, e.dropped_before))
            .collect()
    }

    #[test]
    fn events_are_numbered_and_settled_in_order() {
        let mut queue = NotifyQueue::new(10);
        for n in 1..=3 {
            assert_eq!(queue.push(transition(n)), 0);
        }
        let first = queue.begin().unwrap().clone();
        assert_eq!((first.seq, first.transition.node.as_str()), (1, "node1"));
        assert_eq!(first.stream, queue.stream());
        // Not delivered: the same event comes again.
        queue.release();
        assert_eq!(queue.begin().unwrap().seq, 1);
        assert!(queue.settle(1));
        assert!(!queue.settle(1), "already gone");
        assert_eq!(queue.begin().unwrap().seq, 2);
        assert!(queue.settle(2));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.begin().unwrap().seq, 3);
        assert!(queue.settle(3));
        assert!(queue.is_empty() && queue.begin().is_none());
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_the_next_event_says_so() {
        let mut queue = NotifyQueue::new(3);
        for n in 1..=3 {
            queue.push(transition(n));
        }
        assert_eq!(queue.push(transition(4)), 1);
        assert_eq!(queue.push(transition(5)), 1);
        // 1 and 2 dropped: 3 is next and carries both.
        assert_eq!(seqs(&queue), [(3, 2), (4, 0), (5, 0)]);
        assert_eq!(queue.dropped_total(), 2);
        // Dropping the event that carried a count passes its count on.
        queue.push(transition(6));
        assert_eq!(seqs(&queue), [(4, 3), (5, 0), (6, 0)]);
        assert_eq!(queue.dropped_total(), 3);
    }

    #[test]
    fn the_event_in_flight_is_never_dropped() {
        let mut queue = NotifyQueue::new(2);
        queue.push(transition(1));
        queue.push(transition(2));
        assert_eq!(queue.begin().unwrap().seq, 1);
        assert_eq!(
            queue.push(transition(3)),
            0,
            "room beside the one in flight"
        );
        assert_eq!(queue.push(transition(4)), 1);
        assert_eq!(seqs(&queue), [(1, 0), (3, 1), (4, 0)]);
        // Delivered after all: it settles, and the count stays with the event after the gap.
        assert!(queue.settle(1));
        assert_eq!(seqs(&queue), [(3, 1), (4, 0)]);

        // A limit of one still delivers in order.
        let mut single = NotifyQueue::new(0);
        single.push(transition(1));
        single.begin();
        single.push(transition(2));
        single.push(transition(3));
        assert_eq!(seqs(&single), [(1, 0), (3, 1)]);
        // Released (a retry is due), the first is no longer protected; every count is
        // passed on to the event after the gap.
        single.release();
        single.push(transition(4));
        assert_eq!(seqs(&single), [(4, 3)]);
        assert_eq!(single.dropped_total(), 3);
    }

    #[test]
    fn the_queue_survives_a_restart_and_keeps_its_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path(), QUEUE_FILE).unwrap();
        let (mut queue, note) = load_queue(&store, 5, "1");
        assert_eq!(note, None);
        for n in 1..=4 {
            queue.push(transition(n));
        }
        queue.begin();
        queue.settle(1);
        store.save(&queue).unwrap();

        let (mut loaded, note) = load_queue(&store, 5, "1");
        assert_eq!(note, None);
        assert_eq!(loaded.stream(), queue.stream());
        assert_eq!(seqs(&loaded), [(2, 0), (3, 0), (4, 0)]);
        loaded.push(transition(5));
        assert_eq!(seqs(&loaded).last(), Some(&(5, 0)), "numbering goes on");

        // A lower limit drops the oldest at load.
        let (lower, note) = load_queue(&store, 2, "1");
        assert_eq!(seqs(&lower), [(3, 1), (4, 0)]);
        assert!(note.unwrap().contains("notify.queue_limit"));
    }

    #[test]
    fn a_corrupt_queue_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path(), QUEUE_FILE).unwrap();
        std::fs::write(store.path(), b"{torn").unwrap();
        let (queue, note) = load_queue(&store, 5, "20261207T000000");
        assert!(queue.is_empty());
        assert!(note.unwrap().contains("not valid"));
        let aside = dir.path().join("notify-queue.json.corrupt-20261207T000000");
        assert_eq!(std::fs::read(aside).unwrap(), b"{torn");
        assert!(!store.path().exists());
    }

    #[test]
    fn the_payload_is_flat_json() {
        let mut queue = NotifyQueue::new(5);
        queue.push(transition(7));
        let event = queue.begin().unwrap().clone();
        let body: serde_json::Value = serde_json::from_slice(&event.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "stream": queue.stream(),
                "seq": 1,
                "incident": "00000000-0000-0000-0000-000000000007",
                "node": "node7",
                "action": "evacuate",
                "from": "noted",
                "to": "pending",
                "message": null,
                "by": "maintd",
                "time": 1_700_000_007.0,
                "dropped_before": 0,
            })
        );
    }

    #[test]
    fn signatures_match_an_independent_hmac_and_openssl() {
        let secret = HmacKey::from_bytes(b"s3cret".to_vec()).unwrap();
        let body = br#"{"a":1}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature(&secret, 1_700_000_000, body), expected);
        // printf '%s.%s' 1700000000 '{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            expected,
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        // The timestamp is part of what is signed.
        assert_ne!(signature(&secret, 1_700_000_001, body), expected);
    }

    #[test]
    fn the_secret_file_loses_its_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"s3cret\r\n").unwrap();
        let secret = load_secret(&path).unwrap();
        assert_eq!(
            signature(&secret, 1_700_000_000, br#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        std::fs::write(&path, b"\n").unwrap();
        assert!(load_secret(&path).unwrap_err().contains("is empty"));
        let missing = dir.path().join("missing");
        assert!(load_secret(&missing).unwrap_err().contains("missing"));
    }

    #[test]
    fn verdicts() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let status = |code| Answer::Status(code, "text".into());
        for code in [200, 201, 204, 299] {
            assert_eq!(judge(&status(code), 1, &backoff), Verdict::Delivered);
        }
        for (code, attempt, after) in [(500, 1, 1), (503, 2, 2), (408, 3, 4), (429, 9, 8)] {
            match judge(&status(code), attempt, &backoff) {
                Verdict::Retry { after: got, why } => {
                    assert_eq!(got, Duration::from_secs(after), "{code}");
                    assert!(why.contains(&code.to_string()), "{why}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in [400, 401, 404, 410, 301, 100] {
            assert!(
                matches!(judge(&status(code), 1, &backoff), Verdict::Refused(why) if why.contains("text")),
                "{code}"
            );
        }
        assert!(matches!(
            judge(&Answer::Unreachable("connection refused".into()), 4, &backoff),
            Verdict::Retry { after, .. } if after == Duration::from_secs(8)
        ));
    }
}
