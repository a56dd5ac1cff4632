//! maintd's side of the state copies kept by the node agents of the master candidates
//! (see [`crate::agent::replica`]): pushing the state after a save, fetching the copies,
//! choosing the newest, and counting acknowledgements.
//!
//! Every request is signed with the cluster key: a push with the current Unix time as
//! salt (the agent refuses it beyond 300 s of skew), a fetch with a fresh random salt
//! that the agent's signed answer must carry back, which defeats replays of old copies.

use std::time::Duration;

use awc::{http::StatusCode, Client};
use futures_util::{future::LocalBoxFuture, FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;
use uuid::Uuid;

pub use crate::agent::replica::PushAck;
pub use crate::model::replication::majority;
use crate::{
    agent::replica::MAX_PUSH_BYTES,
    clock::Clock,
    signing::{self, HmacKey, SignedMessage},
};

/// Largest agent answer read: a copy is at most what a push may carry, plus its
/// envelope.
const MAX_ANSWER_BYTES: usize = MAX_PUSH_BYTES + (1 << 20);

/// A copy of maintd's state as held by a node's agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Replica {
    /// The serial of the state.
    pub serial: u64,
    /// The node whose maintd pushed it.
    pub master: String,
    /// The state document (an object).
    pub state: Value,
    /// When the agent received it (Unix seconds, the agent's clock).
    pub received: f64,
}

/// Why a push or a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplicaError {
    /// The state to push is not a JSON object, or too big for the agent.
    #[error("cannot push this state: {0}")]
    Invalid(String),
    /// No answer: connection refused, DNS failure, timeout, answer too big.
    #[error("node agent unreachable: {0}")]
    Unreachable(String),
    /// The agent answered with an error status (e.g. 403: it has no key, or another).
    #[error("the node agent refused ({status}): {text}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The agent's reason.
        text: String,
    },
    /// The answer is not signed with the cluster key for this request, or not a copy.
    #[error("bad answer from the node agent: {0}")]
    BadAnswer(String),
}

/// Pushes to and fetches from the agents.
#[derive(Clone)]
pub struct ReplicaClient {
    url_template: String,
    key: HmacKey,
    timeout: Duration,
    clock: Clock,
    client: Client,
}

impl ReplicaClient {
    /// A client for agents at `url_template` (`{node}` replaced by the node's name, e.g.
    /// `http://{node}:1817`, like `repair.agent_url`), signing with `key`, each request
    /// limited to `timeout`. Must be called inside the actix runtime.
    pub fn new(
        url_template: impl Into<String>,
        key: HmacKey,
        timeout: Duration,
        clock: Clock,
    ) -> Self {
        ReplicaClient {
            url_template: url_template.into(),
            key,
            timeout,
            clock,
            client: Client::builder().timeout(timeout).finish(),
        }
    }

    fn url(&self, node: &str, path: &str) -> String {
        format!(
            "{}{path}",
            self.url_template
                .replace("{node}", node)
                .trim_end_matches('/')
        )
    }

    /// Push the state of `serial` (a JSON object), saved by maintd on `master`, to
    /// `node`'s agent. The ack tells the serial the agent holds afterwards: this one
    /// (written now, or already held) or a newer one.
    pub fn push(
        &self,
        node: &str,
        serial: u64,
        master: &str,
        state: &Value,
    ) -> LocalBoxFuture<'static, Result<PushAck, ReplicaError>> {
        let prepared = self.sign_push(serial, master, state);
        let url = self.url(node, "/1/maintd-state");
        let this = self.clone();
        async move {
            let (salt, body) = prepared?;
            let request = this
                .client
                .put(&url)
                .insert_header(("Content-Type", "application/json"));
            let (status, answer) = this.exchange(request, Some(body)).await?;
            if !status.is_success() {
                return Err(refused(status, &answer));
            }
            let msg = open_answer(&this.key, &answer, &salt)?;
            serde_json::from_str(&msg)
                .map_err(|e| ReplicaError::BadAnswer(format!("not an acknowledgement: {e}")))
        }
        .boxed_local()
    }

    /// The body of a push, and its salt.
    fn sign_push(
        &self,
        serial: u64,
        master: &str,
        state: &Value,
    ) -> Result<(String, Vec<u8>), ReplicaError> {
        if !state.is_object() {
            return Err(ReplicaError::Invalid(
                "the state is not a JSON object".into(),
            ));
        }
        let msg = json!({"serial": serial, "master": master, "state": state}).to_string();
        let salt = signing::unix_salt(self.clock.now().max(0.0) as u64);
        let body = serde_json::to_vec(&signing::sign(&self.key, &salt, &msg))
            .map_err(|e| ReplicaError::Invalid(e.to_string()))?;
        if body.len() > MAX_PUSH_BYTES {
            return Err(ReplicaError::Invalid(format!(
                "{} bytes signed, the agents take at most {MAX_PUSH_BYTES}",
                body.len()
            )));
        }
        Ok((salt, body))
    }

    /// The copy `node`'s agent holds; `None` if it holds none.
    pub fn fetch(
        &self,
        node: &str,
    ) -> LocalBoxFuture<'static, Result<Option<Replica>, ReplicaError>> {
        let salt = Uuid::new_v4().simple().to_string();
        let url = self.url(node, &format!("/1/maintd-state?salt={salt}"));
        let this = self.clone();
        async move {
            let (status, answer) = this.exchange(this.client.get(&url), None).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(refused(status, &answer));
            }
            let msg = open_answer(&this.key, &answer, &salt)?;
            let replica: Replica = serde_json::from_str(&msg)
                .map_err(|e| ReplicaError::BadAnswer(format!("not a copy of the state: {e}")))?;
            if !replica.state.is_object() {
                return Err(ReplicaError::BadAnswer("the state is not an object".into()));
            }
            Ok(Some(replica))
        }
        .boxed_local()
    }

    async fn exchange(
        &self,
        request: awc::ClientRequest,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), ReplicaError> {
        let url = request.get_uri().to_string();
        let send = async {
            let mut response = match body {
                Some(body) => request.send_body(body).await,
                None => request.send().await,
            }
            .map_err(|e| ReplicaError::Unreachable(format!("{url}: {e}")))?;
            let mut bytes = Vec::new();
            while let Some(chunk) = response.next().await {
                let chunk = chunk.map_err(|e| {
                    ReplicaError::Unreachable(format!("{url}: reading the answer: {e}"))
                })?;
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(ReplicaError::Unreachable(format!(
                        "{url}: answer over {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((response.status(), bytes))
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .unwrap_or_else(|_| {
                Err(ReplicaError::Unreachable(format!(
                    "{url}: no answer within {:?}",
                    self.timeout
                )))
            })
    }
}

fn refused(status: StatusCode, body: &[u8]) -> ReplicaError {
    ReplicaError::Refused {
        status: status.as_u16(),
        text: String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// The message of a signed agent answer: signed with `key` and salted with `salt`.
pub fn open_answer(key: &HmacKey, body: &[u8], salt: &str) -> Result<String, ReplicaError> {
    let signed: SignedMessage = serde_json::from_slice(body)
        .map_err(|e| ReplicaError::BadAnswer(format!("not a signed answer: {e}")))?;
    signing::verify(key, &signed).map_err(|e| ReplicaError::BadAnswer(e.to_string()))?;
    if signed.salt != salt {
        return Err(ReplicaError::BadAnswer(format!(
            "answer signed for another request (salt {:?})",
            signed.salt
        )));
    }
    Ok(signed.msg)
}

/// Where the newest state is.
#[derive(Debug, Clone, PartialEq)]
pub enum Newest {
    /// maintd's own state file.
    Local {
        /// Its serial.
        serial: u64,
        /// The state.
        state: Value,
    },
    /// The copy on a node's agent.
    Replica {
        /// The node.
        node: String,
        /// The copy.
        replica: Replica,
    },
}

impl Newest {
    /// The serial of the chosen state.
    pub fn serial(&self) -> u64 {
        match self {
            Newest::Local { serial, .. } => *serial,
            Newest::Replica { replica, .. } => replica.serial,
        }
    }

    /// The chosen state.
    pub fn state(&self) -> &Value {
        match self {
            Newest::Local { state, .. } => state,
            Newest::Replica { replica, .. } => &replica.state,
        }
    }
}

/// The newest of maintd's own state (`local`: its serial and document, if it has one) and
/// the copies fetched from the agents (by node; failed fetches and agents holding none
/// are passed over). The highest serial wins; on a tie the local state wins, then the
/// first node in `replicas`.
pub fn newest(
    local: Option<(u64, Value)>,
    replicas: &[(String, Result<Option<Replica>, ReplicaError>)],
) -> Option<Newest> {
    let best_replica = replicas
        .iter()
        .filter_map(|(node, fetched)| match fetched {
            Ok(Some(replica)) => Some((node, replica)),
            _ => None,
        })
        // `max_by_key` keeps the last of equals: reverse so that the first node wins.
        .rev()
        .max_by_key(|(_, replica)| replica.serial);
    match (local, best_replica) {
        (Some((serial, state)), Some((_, replica))) if serial >= replica.serial => {
            Some(Newest::Local { serial, state })
        }
        (_, Some((node, replica))) => Some(Newest::Replica {
            node: node.clone(),
            replica: replica.clone(),
        }),
        (Some((serial, state)), None) => Some(Newest::Local { serial, state }),
        (None, None) => None,
    }
}

/// Where the list of master candidates comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateSource {
    /// A fixed list (`replication.candidates`).
    Listed(Vec<String>),
    /// Ganeti's `ssconf_master_candidates` in this directory, read anew each time (the
    /// master updates it when candidates are added or demoted); no such file: none.
    Ssconf(std::path::PathBuf),
}

impl CandidateSource {
    /// The master candidates now (this node may be among them).
    pub fn read(&self) -> Result<Vec<String>, String> {
        match self {
            CandidateSource::Listed(nodes) => Ok(nodes.clone()),
            CandidateSource::Ssconf(dir) => {
                Ok(crate::backend::ssconf::master_candidates(dir)?.unwrap_or_default())
            }
        }
    }
}

/// Fetch the copy of every node in `nodes` at once.
pub async fn fetch_all(
    client: &ReplicaClient,
    nodes: &[String],
) -> Vec<(String, Result<Option<Replica>, ReplicaError>)> {
    let fetches = nodes.iter().map(|node| client.fetch(node));
    let answers = futures_util::future::join_all(fetches).await;
    nodes.iter().cloned().zip(answers).collect()
}

/// The state a maintd that just became master must start from: the newest of its own
/// (`local`) and the copies `fetched` from the agents of the `candidates` master
/// candidates (this node's among them). Refused unless the agents of a majority
/// answered: only then is every durable save among them, since a save is durable once
/// the agents of a majority hold it. `None`: no state anywhere, start empty.
pub fn take_over(
    local: Option<(u64, Value)>,
    fetched: &[(String, Result<Option<Replica>, ReplicaError>)],
    candidates: usize,
) -> Result<Option<Newest>, String> {
    let answered = fetched.iter().filter(|(_, f)| f.is_ok()).count();
    if !majority(answered, candidates) {
        let failures: Vec<String> = fetched
            .iter()
            .filter_map(|(node, f)| f.as_ref().err().map(|e| format!("{node}: {e}")))
            .collect();
        return Err(format!(
            "the agents of {answered} of {candidates} master candidates answered; {} needed to be sure of the newest state ({})",
            candidates / 2 + 1,
            failures.join("; ")
        ));
    }
    Ok(newest(local, fetched))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn replica(serial: u64, master: &str) -> Replica {
        Replica {
            serial,
            master: master.into(),
            state: json!({"serial": serial, "from": master}),
            received: 1.0,
        }
    }

    #[test]
    fn the_highest_serial_wins_and_local_wins_ties() {
        assert_eq!(newest(None, &[]), None);
        let fetched = vec![
            ("node1".to_owned(), Ok(Some(replica(4, "a")))),
            (
                "node2".to_owned(),
                Err(ReplicaError::Unreachable("x".into())),
            ),
            ("node3".to_owned(), Ok(None)),
            ("node4".to_owned(), Ok(Some(replica(6, "b")))),
            ("node5".to_owned(), Ok(Some(replica(6, "c")))),
        ];
        // The highest copy; among equals the first node.
        let chosen = newest(Some((5, json!({"local": 5}))), &fetched).unwrap();
        assert_eq!(
            chosen,
            Newest::Replica {
                node: "node4".into(),
                replica: replica(6, "b")
            }
        );
        assert_eq!(chosen.serial(), 6);
        // A tie with the local state: the local one.
        let chosen = newest(Some((6, json!({"local": 6}))), &fetched).unwrap();
        assert_eq!(
            chosen,
            Newest::Local {
                serial: 6,
                state: json!({"local": 6})
            }
        );
        assert_eq!(chosen.state(), &json!({"local": 6}));
        assert_eq!(newest(Some((7, json!({}))), &fetched).unwrap().serial(), 7);
        // No local state: the best copy; nothing usable anywhere: none.
        assert_eq!(newest(None, &fetched).unwrap().serial(), 6);
        assert_eq!(newest(None, &fetched[1..3]), None);
        assert_eq!(
            newest(Some((0, json!({}))), &fetched[1..3]),
            Some(Newest::Local {
                serial: 0,
                state: json!({})
            })
        );
    }

    #[test]
    fn taking_over_needs_answers_from_a_majority() {
        let down = || Err(ReplicaError::Unreachable("down".into()));
        let fetched = vec![
            ("node1".to_owned(), Ok(None)),
            ("node2".to_owned(), Ok(Some(replica(8, "node1")))),
            ("node3".to_owned(), down()),
            ("node4".to_owned(), down()),
        ];
        // 2 of 4 agents answered: not enough.
        let why = take_over(Some((3, json!({}))), &fetched, 4).unwrap_err();
        assert!(why.contains("2 of 4") && why.contains("3 needed"), "{why}");
        assert!(why.contains("node3: node agent unreachable: down"), "{why}");
        // One more answer (holding nothing): the copy of node2 is newer than ours.
        let mut fetched = fetched;
        fetched[2].1 = Ok(None);
        let chosen = take_over(Some((3, json!({}))), &fetched, 4)
            .unwrap()
            .unwrap();
        assert_eq!(chosen.serial(), 8);
        // Ours is newer: ours.
        let chosen = take_over(Some((9, json!({}))), &fetched, 4)
            .unwrap()
            .unwrap();
        assert_eq!(
            chosen,
            Newest::Local {
                serial: 9,
                state: json!({})
            }
        );
        // Nothing anywhere: start empty.
        assert_eq!(take_over(None, &fetched[..1], 1).unwrap(), None);
    }

    #[test]
    fn majorities_are_strict() {
        assert!(!majority(0, 0));
        assert!(majority(1, 1));
        assert!(!majority(1, 2));
        assert!(majority(2, 2));
        assert!(!majority(1, 3));
        assert!(majority(2, 3));
        assert!(!majority(2, 4));
        assert!(majority(3, 4));
        assert!(majority(6, 10));
        assert!(!majority(5, 10));
        // More acks than candidates (a stale candidate list) are capped.
        assert!(!majority(0, 3));
        assert!(majority(9, 3));
    }

    #[test]
    fn answers_must_be_signed_for_this_request() {
        let key = HmacKey::from_bytes(b"k\n".to_vec()).unwrap();
        let body = serde_json::to_vec(&signing::sign(&key, "s1", "{}")).unwrap();
        assert_eq!(open_answer(&key, &body, "s1").unwrap(), "{}");
        assert!(matches!(
            open_answer(&key, &body, "s2"),
            Err(ReplicaError::BadAnswer(why)) if why.contains("another request")
        ));
        let other = HmacKey::from_bytes(b"other\n".to_vec()).unwrap();
        assert!(open_answer(&other, &body, "s1").is_err());
        assert!(open_answer(&key, b"{}", "s1").is_err());
    }

    #[actix_rt::test]
    async fn only_objects_are_pushed() {
        let key = HmacKey::from_bytes(b"k\n".to_vec()).unwrap();
        let client =
            ReplicaClient::new("http://{node}:1", key, Duration::from_secs(1), Clock::new());
        assert!(matches!(
            client.push("node1", 1, "node0", &json!([1])).await,
            Err(ReplicaError::Invalid(_))
        ));
        let big = json!({"history": "x".repeat(MAX_PUSH_BYTES)});
        assert!(matches!(
            client.push("node1", 1, "node0", &big).await,
            Err(ReplicaError::Invalid(why)) if why.contains("at most")
        ));
    }
}
