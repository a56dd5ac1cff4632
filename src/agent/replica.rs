//! The agent's copy of maintd's state: maintd on the master pushes its state, signed, to
//! the agent of every master candidate after each save, so that a maintd started on a new
//! master after `gnt-cluster master-failover` can take over the incidents, the round and
//! the brakes instead of starting empty.
//!
//! The agent keeps only the newest copy, by the serial maintd gives each save: a push
//! with a higher serial replaces the copy (written atomically, mode 0600, before it is
//! acknowledged), one with a lower or equal serial changes nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;
use tracing::warn;

use super::signed_request::{open_signed_request, SignedRequestError};
use crate::{
    signing::{self, HmacKey},
    store::{JsonStore, StoreError},
};

/// The file of the state directory holding the copy.
pub const REPLICA_FILE: &str = "maintd-state.json";

/// Permission bits of [`REPLICA_FILE`]: the state names nodes, instances and operators'
/// requests, for root's eyes only.
pub const REPLICA_FILE_MODE: u32 = 0o600;

/// Most bytes of a `PUT /1/maintd-state` body (a state with its history can take a few
/// MB).
pub const MAX_PUSH_BYTES: usize = 32 << 20;

/// Maximum skew of a push's time salt, in seconds (confd's, like repair requests).
pub const PUSH_MAX_SKEW_SECS: u64 = signing::MAX_CLOCK_SKEW_SECS;

/// The signed payload of `PUT /1/maintd-state`. Unknown fields are ignored (they are
/// covered by the signature anyway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// The serial of this save of the state; higher is newer.
    pub serial: u64,
    /// The node whose maintd sent it (the master then).
    pub master: String,
    /// maintd's state document.
    pub state: Map<String, Value>,
}

/// The copy as stored in [`REPLICA_FILE`] and served by `GET /1/maintd-state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReplica {
    /// The serial of the state.
    pub serial: u64,
    /// The node that sent it.
    pub master: String,
    /// maintd's state document.
    pub state: Map<String, Value>,
    /// When the agent received it (Unix seconds).
    pub received: f64,
}

/// The agent's answer to a push, signed with the push's salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// The serial the agent holds after the push.
    pub serial: u64,
    /// Whether this push replaced the copy.
    pub accepted: bool,
}

impl PushAck {
    /// Whether the agent holds the state of `serial` (just written, or already held).
    pub fn holds(&self, serial: u64) -> bool {
        self.serial == serial
    }
}

/// What [`ReplicaBook::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The push was newer and is now the copy.
    Accepted {
        /// Its serial.
        serial: u64,
    },
    /// The copy held is as new or newer: nothing changed.
    Kept {
        /// The serial held.
        stored: u64,
    },
}

impl Outcome {
    /// The agent's answer.
    pub fn ack(self) -> PushAck {
        match self {
            Outcome::Accepted { serial } => PushAck {
                serial,
                accepted: true,
            },
            Outcome::Kept { stored } => PushAck {
                serial: stored,
                accepted: false,
            },
        }
    }
}

/// The newest copy, in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaBook {
    latest: Option<Arc<StoredReplica>>,
}

impl ReplicaBook {
    /// A book holding `latest`.
    pub fn new(latest: Option<StoredReplica>) -> Self {
        ReplicaBook {
            latest: latest.map(Arc::new),
        }
    }

    /// The copy held.
    pub fn latest(&self) -> Option<Arc<StoredReplica>> {
        self.latest.clone()
    }

    /// The serial held, if any.
    pub fn serial(&self) -> Option<u64> {
        self.latest.as_ref().map(|r| r.serial)
    }

    /// What offering `serial` would do, without doing it: the copy it would become, or
    /// the serial held that is as new or newer.
    fn judge(
        &self,
        serial: u64,
        master: String,
        state: Map<String, Value>,
        now: f64,
    ) -> Result<StoredReplica, u64> {
        match self.serial() {
            Some(stored) if serial <= stored => Err(stored),
            _ => Ok(StoredReplica {
                serial,
                master,
                state,
                received: now,
            }),
        }
    }

    /// Keep the push if it is newer than the copy held.
    pub fn offer(
        &mut self,
        serial: u64,
        master: String,
        state: Map<String, Value>,
        now: f64,
    ) -> Outcome {
        match self.judge(serial, master, state, now) {
            Ok(replica) => {
                self.latest = Some(Arc::new(replica));
                Outcome::Accepted { serial }
            }
            Err(stored) => Outcome::Kept { stored },
        }
    }
}

/// The book and its file: a push is on disk before it is acknowledged.
#[derive(Debug)]
pub struct ReplicaStore {
    book: ReplicaBook,
    store: JsonStore,
}

impl ReplicaStore {
    /// The copy in [`REPLICA_FILE`] of `dir` (created if missing). A file that does not
    /// hold a copy is logged and moved aside as `maintd-state.json.corrupt-<unix time>`;
    /// the agent then holds nothing and takes the next push. Other file system trouble is
    /// an error.
    pub fn open(dir: &std::path::Path, now: f64) -> Result<Self, StoreError> {
        let store = JsonStore::open(dir, REPLICA_FILE)?.with_mode(REPLICA_FILE_MODE);
        let latest = match store.load::<StoredReplica>() {
            Ok(latest) => latest,
            Err(error @ StoreError::Corrupt { .. }) => {
                let aside = store.archive(&format!("corrupt-{}", now.max(0.0) as u64))?;
                warn!(target: "maintd::agent", %error, aside = ?aside, "the copy of maintd's state is unreadable; moved aside, holding none until the next push");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(ReplicaStore {
            book: ReplicaBook::new(latest),
            store,
        })
    }

    /// The copy held.
    pub fn latest(&self) -> Option<Arc<StoredReplica>> {
        self.book.latest()
    }

    /// Keep the push if it is newer than the copy held, writing it first: if it cannot be
    /// written, nothing changes and the error is returned (the push is not acknowledged).
    pub fn offer(
        &mut self,
        serial: u64,
        master: String,
        state: Map<String, Value>,
        now: f64,
    ) -> Result<Outcome, StoreError> {
        match self.book.judge(serial, master, state, now) {
            Ok(replica) => {
                self.store.save(&replica)?;
                self.book.latest = Some(Arc::new(replica));
                Ok(Outcome::Accepted { serial })
            }
            Err(stored) => Ok(Outcome::Kept { stored }),
        }
    }

    /// Where the copy lives.
    pub fn path(&self) -> &std::path::Path {
        self.store.path()
    }
}

/// A push that passed every check, with the salt to sign the answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedPush {
    /// The push.
    pub push: Push,
    /// Its salt.
    pub salt: String,
}

/// Why a push was refused; [`PushError::http_status`] maps each to its code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PushError {
    /// The agent has no key, so it cannot authenticate anyone.
    #[error("maintd state pushes need the cluster HMAC key")]
    NoKey,
    /// The body is not a fresh message signed with the cluster key.
    #[error(transparent)]
    Signed(#[from] SignedRequestError),
    /// The signed message is not a push of maintd's state.
    #[error("the signed message is not a maintd state push: {0}")]
    BadPush(String),
}

impl PushError {
    /// 403 for anything about authenticity, 400 for malformed pushes.
    pub fn http_status(&self) -> u16 {
        match self {
            PushError::Signed(e) => e.http_status(),
            PushError::NoKey => 403,
            PushError::BadPush(_) => 400,
        }
    }
}

/// Authenticate a `PUT /1/maintd-state` body: a signed message from a holder of the
/// cluster key, fresh (its salt a Unix time within [`PUSH_MAX_SKEW_SECS`] of
/// `now_secs`), whose message is a [`Push`] with an object as state and a master named.
/// The signature is checked before anything of the content is believed.
pub fn authenticate_push(
    key: Option<&HmacKey>,
    body: &[u8],
    now_secs: u64,
) -> Result<AcceptedPush, PushError> {
    let key = key.ok_or(PushError::NoKey)?;
    let signed = open_signed_request(key, body, now_secs, PUSH_MAX_SKEW_SECS)?;
    let push: Push =
        serde_json::from_str(&signed.msg).map_err(|e| PushError::BadPush(e.to_string()))?;
    if push.master.is_empty() {
        return Err(PushError::BadPush("no master named".into()));
    }
    Ok(AcceptedPush {
        push,
        salt: signed.salt,
    })
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use serde_json::json;

    use super::*;

    fn state(n: u64) -> Map<String, Value> {
        match json!({"incidents": [{"id": n}], "round": null}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef01234567\n";

    fn key() -> HmacKey {
        HmacKey::from_bytes(KEY.to_vec()).unwrap()
    }

    #[test]
    fn only_newer_serials_replace_the_copy() {
        let mut book = ReplicaBook::default();
        assert_eq!(book.latest(), None);
        assert_eq!(
            book.offer(5, "node1".into(), state(5), 10.0),
            Outcome::Accepted { serial: 5 }
        );
        // Older: refused, the copy unchanged.
        assert_eq!(
            book.offer(4, "node2".into(), state(4), 11.0),
            Outcome::Kept { stored: 5 }
        );
        // Equal: idempotent, the first copy kept (with its time).
        assert_eq!(
            book.offer(5, "node1".into(), state(5), 12.0),
            Outcome::Kept { stored: 5 }
        );
        let latest = book.latest().unwrap();
        assert_eq!((latest.serial, latest.received), (5, 10.0));
        assert_eq!(latest.master, "node1");
        assert_eq!(
            book.offer(6, "node2".into(), state(6), 13.0),
            Outcome::Accepted { serial: 6 }
        );
        assert_eq!(book.latest().unwrap().state, state(6));
        assert_eq!(
            Outcome::Kept { stored: 6 }.ack(),
            PushAck {
                serial: 6,
                accepted: false
            }
        );
        assert!(Outcome::Kept { stored: 6 }.ack().holds(6));
        assert!(!Outcome::Kept { stored: 7 }.ack().holds(6));
    }

    #[test]
    fn the_copy_is_written_0600_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReplicaStore::open(dir.path(), 1.0).unwrap();
        assert_eq!(store.latest(), None);
        assert_eq!(
            store.offer(3, "node1".into(), state(3), 2.0).unwrap(),
            Outcome::Accepted { serial: 3 }
        );
        let path = dir.path().join(REPLICA_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let on_disk: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            on_disk,
            json!({"serial": 3, "master": "node1", "state": state(3), "received": 2.0})
        );
        assert_eq!(
            store.offer(2, "node2".into(), state(2), 3.0).unwrap(),
            Outcome::Kept { stored: 3 }
        );
        let again = ReplicaStore::open(dir.path(), 4.0).unwrap();
        assert_eq!(again.latest(), store.latest());
        // Nothing else was left in the directory.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReplicaStore::open(dir.path(), 1.0).unwrap();
        store.offer(1, "node1".into(), state(1), 2.0).unwrap();
        store
            .store
            .save_fault_switch()
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(store.offer(2, "node1".into(), state(2), 3.0).is_err());
        assert_eq!(store.latest().unwrap().serial, 1);
    }

    #[test]
    fn a_corrupt_copy_is_moved_aside_and_the_next_push_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPLICA_FILE);
        fs::write(&path, b"{\"serial\": 7, torn").unwrap();
        let mut store = ReplicaStore::open(dir.path(), 1234.0).unwrap();
        assert_eq!(store.latest(), None);
        let aside = dir.path().join(format!("{REPLICA_FILE}.corrupt-1234"));
        assert_eq!(fs::read(&aside).unwrap(), b"{\"serial\": 7, torn");
        assert!(!path.exists());
        assert_eq!(
            store.offer(1, "node1".into(), state(1), 1235.0).unwrap(),
            Outcome::Accepted { serial: 1 }
        );
        // A document of the wrong shape (a state that is not an object) is corrupt too.
        fs::write(
            &path,
            r#"{"serial":1,"master":"n","state":[1],"received":1.0}"#,
        )
        .unwrap();
        assert_eq!(
            ReplicaStore::open(dir.path(), 1300.0).unwrap().latest(),
            None
        );
        assert!(dir
            .path()
            .join(format!("{REPLICA_FILE}.corrupt-1300"))
            .exists());
    }

    fn body(key: &HmacKey, salt: &str, msg: &Value) -> Vec<u8> {
        serde_json::to_vec(&signing::sign(key, salt, &msg.to_string())).unwrap()
    }

    #[test]
    fn pushes_are_authenticated_before_they_are_read() {
        let now = 1_700_000_000;
        let msg = json!({"serial": 9, "master": "node1", "state": state(9)});
        let accepted =
            authenticate_push(Some(&key()), &body(&key(), "1700000000", &msg), now).unwrap();
        assert_eq!(accepted.salt, "1700000000");
        assert_eq!(accepted.push.serial, 9);
        assert_eq!(accepted.push.state, state(9));

        let refusal = |key_used: Option<&HmacKey>, body: &[u8]| {
            let e = authenticate_push(key_used, body, now).unwrap_err();
            (e.http_status(), e)
        };
        assert_eq!(
            refusal(None, &body(&key(), "1700000000", &msg)),
            (403, PushError::NoKey)
        );
        let other = HmacKey::from_bytes(b"other\n".to_vec()).unwrap();
        assert!(matches!(
            refusal(Some(&key()), &body(&other, "1700000000", &msg)),
            (403, PushError::Signed(SignedRequestError::Signature(_)))
        ));
        for stale in ["1699999000", "1700001000", "yesterday"] {
            assert!(matches!(
                refusal(Some(&key()), &body(&key(), stale, &msg)),
                (403, PushError::Signed(SignedRequestError::Time(_)))
            ));
        }
        assert!(matches!(
            refusal(Some(&key()), msg.to_string().as_bytes()),
            (400, PushError::Signed(SignedRequestError::NotSigned(_)))
        ));
        for bad in [
            json!({"serial": 9, "master": "node1", "state": [1]}),
            json!({"serial": 9, "master": "node1", "state": "x"}),
            json!({"serial": -1, "master": "node1", "state": {}}),
            json!({"serial": 9, "state": {}}),
            json!({"serial": 9, "master": "", "state": {}}),
            json!([9]),
        ] {
            assert!(
                matches!(
                    refusal(Some(&key()), &body(&key(), "1700000000", &bad)),
                    (400, PushError::BadPush(_))
                ),
                "{bad}"
            );
        }
    }
}
