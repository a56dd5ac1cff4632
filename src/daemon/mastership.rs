//! Whether this node is the master, and what the master election does about it. maintd
//! works only on the master node: not master at start is exit code 11, like Ganeti's
//! master-only daemons; losing the role later stops all work.
//!
//! On a Ganeti node, this node's ssconf copy is read first: it names the new master as
//! soon as the role moves, without asking the old master's daemons. When it names this
//! node and the popular vote is configured, work starts only after the vote is won
//! ([`crate::backend::vote`]); the cluster is then not asked again, since right after a
//! failover the new master's luxid may still answer from an old configuration. Otherwise
//! the cluster is asked who the master is.
//!
//! With replication on, a node that becomes master first takes over the newest state of
//! the master candidates ([`take_over_state`]); work starts only once that succeeded.
//!
//! [`Mastership`] holds the decisions; the election actor reads ssconf, asks the cluster,
//! holds the vote, takes over the state and starts or stops work as it is told.

use std::{fmt, future::Future, path::Path, path::PathBuf, time::Duration};

use serde_json::Value;
use thiserror::Error;

use crate::{
    backend::{
        replica::{take_over, CandidateSource, Newest, Replica, ReplicaError},
        BackendError,
    },
    model::incident::MaintenanceState,
    store::{JsonStore, StoreError},
};

/// Ganeti's exit code for "not master" (`exitNotmaster`).
pub const EXIT_NOT_MASTER: i32 = 11;

/// Ganeti's exit code for a vote that was lost or could not be completed (`exitFailure`).
pub const EXIT_VOTE_FAILED: i32 = 1;

/// Where and how to hold the popular vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteSettings {
    /// Ganeti's data directory: `config.data` (the voters), `server.pem`, `client.pem`.
    pub data_dir: PathBuf,
    /// noded's port.
    pub port: u16,
    /// Time limit of one node's answer.
    pub timeout: Duration,
}

/// How mastership is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterCheck {
    /// Ask the cluster who the master is and compare with this node's name; first look at
    /// this node's ssconf copy, which names the new master as soon as the role moves.
    AskCluster {
        /// This node's name.
        node_name: String,
        /// Ganeti's ssconf directory on this node, if it is a Ganeti node.
        ssconf_dir: Option<PathBuf>,
        /// Hold the popular vote before working, when ssconf names this node master.
        vote: Option<VoteSettings>,
    },
    /// `--no-voting --yes-do-it`: assume mastership.
    Assume,
}

impl MasterCheck {
    /// The ssconf directory to read at each check, if any.
    pub fn ssconf_dir(&self) -> Option<&Path> {
        match self {
            MasterCheck::AskCluster { ssconf_dir, .. } => ssconf_dir.as_deref(),
            MasterCheck::Assume => None,
        }
    }
}

/// Progress of the popular vote, held once per process like Ganeti's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VoteState {
    NotHeld,
    Voting,
    Won,
}

/// Why the process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// At the first check, another node is master.
    NotMaster {
        /// This node.
        node: String,
        /// The master.
        master: String,
    },
    /// The popular vote was lost or could not be completed.
    VoteFailed(String),
}

impl Exit {
    /// The process's exit code, Ganeti's for the case.
    pub fn code(&self) -> i32 {
        match self {
            Exit::NotMaster { .. } => EXIT_NOT_MASTER,
            Exit::VoteFailed(_) => EXIT_VOTE_FAILED,
        }
    }
}

/// What the election does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: the role is unchanged, or a vote or take-over is under way.
    Nothing,
    /// Hold the popular vote as `node` (ssconf names it master); report the outcome with
    /// [`Mastership::vote_done`].
    HoldVote {
        /// This node.
        node: String,
        /// Where and how.
        settings: VoteSettings,
    },
    /// Check again now: the vote is won.
    CheckAgain,
    /// Ask the cluster who the master is; report the answer with
    /// [`Mastership::cluster_answered`].
    AskCluster {
        /// Why ssconf could not tell, if it could not be read.
        ssconf_error: Option<String>,
    },
    /// The cluster did not answer: without an answer nothing can be decided, so the
    /// current role is kept.
    KeepRole {
        /// Why there is no answer.
        error: String,
    },
    /// Take over the newest state before working ([`take_over_state`]); report the
    /// outcome with [`Mastership::taken_over`].
    TakeOver,
    /// This node is master: start work.
    StartWork,
    /// This node is no longer master: stop all work.
    StopWork,
    /// End the process.
    Exit(Exit),
}

/// The master election's state and decisions; see the module doc.
#[derive(Debug, Clone)]
pub struct Mastership {
    check: MasterCheck,
    /// Exit the process when the first check says "not master".
    exit_if_not_master: bool,
    /// Replication is on: take over the newest state before working.
    takes_over: bool,
    first_check_done: bool,
    vote: VoteState,
    /// The last check found this node master.
    master: bool,
    /// Work is started.
    working: bool,
    /// A take-over is under way.
    taking_over: bool,
}

impl Mastership {
    /// An election deciding by `check`; `takes_over`: replication is on.
    pub fn new(check: MasterCheck, exit_if_not_master: bool, takes_over: bool) -> Self {
        Mastership {
            check,
            exit_if_not_master,
            takes_over,
            first_check_done: false,
            vote: VoteState::NotHeld,
            master: false,
            working: false,
            taking_over: false,
        }
    }

    /// How mastership is established.
    pub fn master_check(&self) -> &MasterCheck {
        &self.check
    }

    /// A periodic check. `ssconf`: what this node's ssconf copy names as master, read
    /// from [`MasterCheck::ssconf_dir`] (`None`: no such directory; `Ok(None)`: no master
    /// file there).
    pub fn check(&mut self, ssconf: Option<Result<Option<String>, String>>) -> Action {
        let (node_name, vote) = match &self.check {
            MasterCheck::Assume => return self.set_master(true),
            MasterCheck::AskCluster {
                node_name, vote, ..
            } => (node_name.clone(), vote.clone()),
        };
        match ssconf {
            // This node's configuration copy already names another master: no need (and
            // maybe no way) to ask the old master's daemons.
            Some(Ok(Some(master))) if master != node_name => self.concluded(master),
            Some(Ok(Some(_))) => match (vote, self.vote) {
                // ssconf names this node and a majority of the nodes agreed: that is
                // Ganeti's own test of mastership.
                (Some(_), VoteState::Won) => self.concluded(node_name),
                (Some(_), VoteState::Voting) => Action::Nothing,
                (Some(settings), VoteState::NotHeld) => {
                    self.vote = VoteState::Voting;
                    Action::HoldVote {
                        node: node_name,
                        settings,
                    }
                }
                (None, _) => Action::AskCluster { ssconf_error: None },
            },
            Some(Err(e)) => Action::AskCluster {
                ssconf_error: Some(e),
            },
            Some(Ok(None)) | None => Action::AskCluster { ssconf_error: None },
        }
    }

    /// The popular vote ended: won, or lost (why).
    pub fn vote_done(&mut self, outcome: Result<(), String>) -> Action {
        match outcome {
            Ok(()) => {
                self.vote = VoteState::Won;
                Action::CheckAgain
            }
            Err(why) => Action::Exit(Exit::VoteFailed(why)),
        }
    }

    /// The cluster answered who the master is, or failed to.
    pub fn cluster_answered(&mut self, answer: Result<String, BackendError>) -> Action {
        match answer {
            Ok(master) => self.concluded(master),
            Err(e) => Action::KeepRole {
                error: e.to_string(),
            },
        }
    }

    /// The take-over asked for by [`Action::TakeOver`] ended, successfully or not. Work
    /// starts only if this node is still master: the role may have moved meanwhile.
    pub fn taken_over(&mut self, succeeded: bool) -> Action {
        self.taking_over = false;
        if succeeded && self.master && !self.working {
            self.working = true;
            Action::StartWork
        } else {
            // A failed take-over is retried at the next check.
            Action::Nothing
        }
    }

    /// `master` is the master: work if it is this node, else stop (or exit at startup).
    fn concluded(&mut self, master: String) -> Action {
        let node = match &self.check {
            MasterCheck::AskCluster { node_name, .. } => node_name.clone(),
            MasterCheck::Assume => return self.set_master(true),
        };
        let is_master = master == node;
        if !is_master && !self.first_check_done && self.exit_if_not_master {
            return Action::Exit(Exit::NotMaster { node, master });
        }
        self.first_check_done = true;
        self.set_master(is_master)
    }

    fn set_master(&mut self, is_master: bool) -> Action {
        self.master = is_master;
        match (is_master, self.working) {
            (true, false) if !self.takes_over => {
                self.working = true;
                Action::StartWork
            }
            (true, false) if self.taking_over => Action::Nothing,
            (true, false) => {
                self.taking_over = true;
                Action::TakeOver
            }
            (false, true) => {
                self.working = false;
                Action::StopWork
            }
            _ => Action::Nothing,
        }
    }
}

/// The copies of the master candidates' agents: per node, its copy (`None`: it holds
/// none) or why it did not answer.
pub type Copies = Vec<(String, Result<Option<Replica>, ReplicaError>)>;

/// Where the state a new master starts from came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenOver {
    /// No other master candidate: the state is this node's own.
    Alone,
    /// No state on any master candidate: start empty.
    Empty,
    /// This node's own state is the newest of the candidates'.
    Own {
        /// Its serial.
        serial: u64,
    },
    /// A candidate's copy is the newest; it is now saved on this node.
    Copy {
        /// The candidate.
        node: String,
        /// The copy's serial.
        serial: u64,
        /// The node whose maintd saved it.
        saved_by: String,
    },
}

impl fmt::Display for TakenOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakenOver::Alone => {
                write!(f, "no other master candidate: the state is this node's own")
            }
            TakenOver::Empty => write!(f, "no state on any master candidate: starting empty"),
            TakenOver::Own { serial } => write!(
                f,
                "this node's own state (serial {serial}) is the newest of the master candidates'"
            ),
            TakenOver::Copy {
                node,
                serial,
                saved_by,
            } => write!(
                f,
                "took over the state of serial {serial} from {node}'s copy (saved by maintd on {saved_by})"
            ),
        }
    }
}

/// Why the state cannot be taken over yet; no work until it can.
#[derive(Debug, Error)]
pub enum TakeOverError {
    /// The master candidates are not known.
    #[error("{0}")]
    Candidates(String),
    /// This node's state could not be read, or the copy taken over not saved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// There are other candidates, but nothing to read their copies with.
    #[error("no HMAC key (cluster.hmac_key) to read the copies of {} with; set replication.enabled = false to run without copies", .candidates.join(", "))]
    NoKey {
        /// The master candidates.
        candidates: Vec<String>,
    },
    /// Too few candidates answered to be sure of the newest state.
    #[error("{0}")]
    NoMajority(String),
    /// The newest copy is not a maintenance state.
    #[error("the copy of {node} (serial {serial}) is not a valid state: {error}")]
    InvalidCopy {
        /// The candidate.
        node: String,
        /// The copy's serial.
        serial: u64,
        /// Why it is not valid.
        error: String,
    },
}

/// Make the newest state the one in `store` (this node's disk) before work starts: its
/// own, or the newest copy of the other master candidates (validated, then saved).
/// `me` is this node; `fetch` reads the copies of the given candidates' agents (this
/// node's too: it may hold a newer copy than this node's disk, if this node was master,
/// lost the role and got it back); `None`: there is no key to read them with.
pub async fn take_over_state<F, Fut>(
    me: &str,
    candidates: &CandidateSource,
    store: &JsonStore,
    fetch: Option<F>,
) -> Result<TakenOver, TakeOverError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Copies>,
{
    let candidates = candidates.read().map_err(TakeOverError::Candidates)?;
    let local = store
        .load::<Value>()?
        .map(|state| (state["serial"].as_u64().unwrap_or(0), state));
    if candidates.iter().all(|node| node == me) {
        return Ok(TakenOver::Alone);
    }
    let Some(fetch) = fetch else {
        return Err(TakeOverError::NoKey { candidates });
    };
    let count = candidates.len();
    let fetched = fetch(candidates).await;
    match take_over(local, &fetched, count).map_err(TakeOverError::NoMajority)? {
        None => Ok(TakenOver::Empty),
        Some(Newest::Local { serial, .. }) => Ok(TakenOver::Own { serial }),
        Some(Newest::Replica { node, replica }) => {
            serde_json::from_value::<MaintenanceState>(replica.state.clone()).map_err(|e| {
                TakeOverError::InvalidCopy {
                    node: node.clone(),
                    serial: replica.serial,
                    error: e.to_string(),
                }
            })?;
            store.save(&replica.state)?;
            Ok(TakenOver::Copy {
                node,
                serial: replica.serial,
                saved_by: replica.master,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, future::Ready};

    use serde_json::json;

    use super::*;

    fn ask(vote: bool) -> MasterCheck {
        MasterCheck::AskCluster {
            node_name: "node1".into(),
            ssconf_dir: Some(PathBuf::from("ssconf")),
            vote: vote.then(settings),
        }
    }

    fn settings() -> VoteSettings {
        VoteSettings {
            data_dir: PathBuf::from("data"),
            port: 1811,
            timeout: Duration::from_secs(5),
        }
    }

    fn names(node: &str) -> Option<Result<Option<String>, String>> {
        Some(Ok(Some(node.into())))
    }

    fn luxi_down() -> BackendError {
        BackendError::Transient("luxid not answering".into())
    }

    #[test]
    fn assume_is_master_at_every_check() {
        let mut election = Mastership::new(MasterCheck::Assume, true, false);
        assert_eq!(election.master_check().ssconf_dir(), None);
        assert_eq!(election.check(None), Action::StartWork);
        // ssconf is not read for Assume; whatever it says changes nothing.
        assert_eq!(election.check(names("node2")), Action::Nothing);
    }

    #[test]
    fn ssconf_naming_another_node_is_not_master_without_asking_the_cluster() {
        // At the first check, with exit_if_not_master: exit 11.
        let mut election = Mastership::new(ask(true), true, false);
        let exit = Exit::NotMaster {
            node: "node1".into(),
            master: "node2".into(),
        };
        assert_eq!(exit.code(), EXIT_NOT_MASTER);
        assert_eq!(election.check(names("node2")), Action::Exit(exit));

        // Without it: not master, nothing to stop.
        let mut election = Mastership::new(ask(true), false, false);
        assert_eq!(election.check(names("node2")), Action::Nothing);
    }

    #[test]
    fn ssconf_naming_this_node_and_the_vote_won_is_master_without_asking_the_cluster() {
        let mut election = Mastership::new(ask(true), true, false);
        assert_eq!(
            election.check(names("node1")),
            Action::HoldVote {
                node: "node1".into(),
                settings: settings()
            }
        );
        // A check while the vote is under way waits for it.
        assert_eq!(election.check(names("node1")), Action::Nothing);
        assert_eq!(election.vote_done(Ok(())), Action::CheckAgain);
        assert_eq!(election.check(names("node1")), Action::StartWork);
        assert_eq!(election.check(names("node1")), Action::Nothing);
        // The vote is held once per process: ssconf moving the role away and back does
        // not hold it again.
        assert_eq!(election.check(names("node2")), Action::StopWork);
        assert_eq!(election.check(names("node1")), Action::StartWork);
    }

    #[test]
    fn a_lost_vote_exits_with_code_1() {
        let mut election = Mastership::new(ask(true), true, false);
        assert!(matches!(
            election.check(names("node1")),
            Action::HoldVote { .. }
        ));
        let action = election.vote_done(Err("cannot be won by node1".into()));
        assert_eq!(
            action,
            Action::Exit(Exit::VoteFailed("cannot be won by node1".into()))
        );
        let Action::Exit(exit) = action else {
            unreachable!()
        };
        assert_eq!(exit.code(), EXIT_VOTE_FAILED);
    }

    #[test]
    fn without_the_vote_ssconf_naming_this_node_asks_the_cluster() {
        let mut election = Mastership::new(ask(false), true, false);
        assert_eq!(
            election.check(names("node1")),
            Action::AskCluster { ssconf_error: None }
        );
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::StartWork
        );
    }

    #[test]
    fn no_ssconf_or_a_broken_one_asks_the_cluster() {
        let mut election = Mastership::new(ask(true), true, false);
        assert_eq!(
            election.check(None),
            Action::AskCluster { ssconf_error: None }
        );
        assert_eq!(
            election.check(Some(Ok(None))),
            Action::AskCluster { ssconf_error: None }
        );
        assert_eq!(
            election.check(Some(Err("holds no node name".into()))),
            Action::AskCluster {
                ssconf_error: Some("holds no node name".into())
            }
        );
    }

    #[test]
    fn the_clusters_answer_decides_and_exits_only_at_the_first_check() {
        let mut election = Mastership::new(ask(false), true, false);
        assert_eq!(
            election.cluster_answered(Ok("node2".into())),
            Action::Exit(Exit::NotMaster {
                node: "node1".into(),
                master: "node2".into()
            })
        );
        let mut election = Mastership::new(ask(false), true, false);
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::StartWork
        );
        // Later, losing the role stops work instead of exiting.
        assert_eq!(
            election.cluster_answered(Ok("node2".into())),
            Action::StopWork
        );
        assert_eq!(
            election.cluster_answered(Ok("node2".into())),
            Action::Nothing
        );
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::StartWork
        );
    }

    #[test]
    fn no_answer_from_the_cluster_keeps_the_role() {
        let mut election = Mastership::new(ask(false), true, false);
        // Not even the first check exits without an answer.
        assert_eq!(
            election.cluster_answered(Err(luxi_down())),
            Action::KeepRole {
                error: luxi_down().to_string()
            }
        );
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::StartWork
        );
        assert!(matches!(
            election.cluster_answered(Err(luxi_down())),
            Action::KeepRole { .. }
        ));
        // Still working: the next answer naming this node changes nothing.
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::Nothing
        );
    }

    #[test]
    fn with_replication_work_starts_after_the_take_over() {
        let mut election = Mastership::new(ask(false), true, true);
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::TakeOver
        );
        // One take-over at a time.
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::Nothing
        );
        assert_eq!(election.taken_over(true), Action::StartWork);
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::Nothing
        );
    }

    #[test]
    fn a_failed_take_over_is_retried_at_the_next_check() {
        let mut election = Mastership::new(MasterCheck::Assume, true, true);
        assert_eq!(election.check(None), Action::TakeOver);
        assert_eq!(election.taken_over(false), Action::Nothing);
        assert_eq!(election.check(None), Action::TakeOver);
        assert_eq!(election.taken_over(true), Action::StartWork);
    }

    #[test]
    fn a_take_over_ending_after_the_role_moved_starts_no_work() {
        let mut election = Mastership::new(ask(false), true, true);
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::TakeOver
        );
        assert_eq!(
            election.cluster_answered(Ok("node2".into())),
            Action::Nothing
        );
        assert_eq!(election.taken_over(true), Action::Nothing);
        // Back to this node: a new take-over, since the state may have changed.
        assert_eq!(
            election.cluster_answered(Ok("node1".into())),
            Action::TakeOver
        );
    }

    fn copy(serial: u64, state: Value) -> Result<Option<Replica>, ReplicaError> {
        Ok(Some(Replica {
            serial,
            master: "node2".into(),
            state,
            received: 0.0,
        }))
    }

    fn unreachable_agent() -> Result<Option<Replica>, ReplicaError> {
        Err(ReplicaError::Unreachable("connection refused".into()))
    }

    fn listed(nodes: &[&str]) -> CandidateSource {
        CandidateSource::Listed(nodes.iter().map(|n| (*n).to_owned()).collect())
    }

    /// The candidates' agents answering `copies`; records who was asked.
    fn agents<'a>(
        asked: &'a RefCell<Vec<String>>,
        copies: Copies,
    ) -> Option<impl FnOnce(Vec<String>) -> Ready<Copies> + 'a> {
        Some(move |nodes: Vec<String>| {
            asked.borrow_mut().extend(nodes);
            std::future::ready(copies)
        })
    }

    fn no_key() -> Option<fn(Vec<String>) -> Ready<Copies>> {
        None
    }

    fn store() -> (tempfile::TempDir, JsonStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path(), "state.json").unwrap();
        (dir, store)
    }

    fn state(serial: u64) -> Value {
        let mut state = serde_json::to_value(MaintenanceState::default()).unwrap();
        state["serial"] = json!(serial);
        state
    }

    #[tokio::test]
    async fn a_lone_candidate_keeps_its_own_state_without_asking_anyone() {
        let (_dir, store) = store();
        let asked = RefCell::new(Vec::new());
        let alone =
            take_over_state("node1", &listed(&["node1"]), &store, agents(&asked, vec![])).await;
        assert_eq!(alone.unwrap(), TakenOver::Alone);
        let none = take_over_state("node1", &listed(&[]), &store, no_key()).await;
        assert_eq!(none.unwrap(), TakenOver::Alone);
        assert!(asked.borrow().is_empty());
    }

    #[tokio::test]
    async fn other_candidates_without_a_key_are_an_error() {
        let (_dir, store) = store();
        let error = take_over_state("node1", &listed(&["node1", "node2"]), &store, no_key())
            .await
            .unwrap_err();
        assert!(matches!(error, TakeOverError::NoKey { .. }));
        assert!(
            error.to_string().contains("copies of node1, node2 with"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_newest_state_of_a_majority_is_taken_over() {
        let (_dir, store) = store();
        let candidates = listed(&["node1", "node2", "node3"]);
        let asked = RefCell::new(Vec::new());

        // No state anywhere.
        let copies = vec![("node1".into(), Ok(None)), ("node2".into(), Ok(None))];
        let empty = take_over_state("node1", &candidates, &store, agents(&asked, copies));
        assert_eq!(empty.await.unwrap(), TakenOver::Empty);
        assert_eq!(*asked.borrow(), ["node1", "node2", "node3"]);

        // node2's copy is newer than this node's disk: it is saved here.
        store.save(&state(5)).unwrap();
        let copies = vec![
            ("node1".into(), Ok(None)),
            ("node2".into(), copy(9, state(9))),
            ("node3".into(), unreachable_agent()),
        ];
        let taken = take_over_state("node1", &candidates, &store, agents(&asked, copies));
        let taken = taken.await.unwrap();
        assert_eq!(
            taken,
            TakenOver::Copy {
                node: "node2".into(),
                serial: 9,
                saved_by: "node2".into()
            }
        );
        assert!(taken.to_string().contains("serial 9 from node2's copy"));
        assert_eq!(store.load::<Value>().unwrap(), Some(state(9)));

        // Now this node's own state is the newest.
        let copies = vec![
            ("node2".into(), copy(7, state(7))),
            ("node3".into(), Ok(None)),
        ];
        let own = take_over_state("node1", &candidates, &store, agents(&asked, copies));
        assert_eq!(own.await.unwrap(), TakenOver::Own { serial: 9 });
        assert_eq!(store.load::<Value>().unwrap(), Some(state(9)));
    }

    #[tokio::test]
    async fn too_few_answers_or_an_invalid_copy_take_nothing_over() {
        let (_dir, store) = store();
        store.save(&state(5)).unwrap();
        let candidates = listed(&["node1", "node2", "node3"]);
        let asked = RefCell::new(Vec::new());

        let copies = vec![
            ("node1".into(), unreachable_agent()),
            ("node2".into(), copy(9, state(9))),
            ("node3".into(), unreachable_agent()),
        ];
        let error = take_over_state("node1", &candidates, &store, agents(&asked, copies))
            .await
            .unwrap_err();
        assert!(matches!(error, TakeOverError::NoMajority(_)), "{error}");

        let copies = vec![
            ("node1".into(), Ok(None)),
            (
                "node2".into(),
                copy(9, json!({"serial": 9, "incidents": 3})),
            ),
        ];
        let error = take_over_state("node1", &candidates, &store, agents(&asked, copies))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the copy of node2 (serial 9) is not a valid state"),
            "{error}"
        );
        // Neither touched this node's state.
        assert_eq!(store.load::<Value>().unwrap(), Some(state(5)));
    }
}
