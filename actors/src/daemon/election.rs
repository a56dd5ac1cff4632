//! MasterElection: the gate. maintd works only on the master node. The election checks
//! mastership at start (not master: exit code 11, like Ganeti's master-only daemons) and
//! then periodically; it starts the cluster supervisor while this node is master and drops
//! it, stopping all work, as soon as it is not.
//!
//! On a Ganeti node whose ssconf names it master, work starts only after the popular vote
//! is won, as in Ganeti's master-only daemons: every node of the configuration is asked
//! through noded who the master is, and a strict majority must name this node. A vote that
//! cannot be won, or stays undecided through all retries, ends the process with exit code 1.
//!
//! With replication on, a node that becomes master first takes over the newest state
//! from its own disk and the copies of the other master candidates; work starts only once
//! a majority of the candidates answered (retried at every master check until then).

use std::{path::PathBuf, rc::Rc, time::Duration};

use actix::prelude::*;
use maintd::{
    backend::{
        noded::NodedClient,
        replica::{fetch_all, take_over, Newest},
        ssconf,
        vote::{self, VOTING_RETRY_SECONDS},
        ClusterBackend,
    },
    model::incident::MaintenanceState,
    store::JsonStore,
};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::{
    daemon::messages::Shutdown,
    daemon::state_replicator::ReplicationDeps,
    daemon::supervisor::{ClusterSupervisor, SupervisorDeps},
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

/// The master-election actor.
pub struct MasterElection {
    backend: Rc<dyn ClusterBackend>,
    check: MasterCheck,
    interval: Duration,
    deps: SupervisorDeps,
    supervisor: Option<Addr<ClusterSupervisor>>,
    /// Exit the process when the first check says "not master".
    exit_if_not_master: bool,
    first_check_done: bool,
    /// The popular vote: not yet held, under way, or won.
    vote: VoteState,
    /// The last check found this node master.
    master: bool,
    /// Reading the candidates' copies before work starts.
    taking_over: bool,
}

/// Progress of the popular vote, held once per process like Ganeti's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VoteState {
    NotHeld,
    Voting,
    Won,
}

impl MasterElection {
    /// An election that starts a supervisor built from `deps` while master.
    pub fn new(
        backend: Rc<dyn ClusterBackend>,
        check: MasterCheck,
        interval: Duration,
        deps: SupervisorDeps,
        exit_if_not_master: bool,
    ) -> Self {
        MasterElection {
            backend,
            check,
            interval,
            deps,
            supervisor: None,
            exit_if_not_master,
            first_check_done: false,
            vote: VoteState::NotHeld,
            master: false,
            taking_over: false,
        }
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let node_name = match &self.check {
            MasterCheck::Assume => {
                self.set_master(true, ctx);
                return;
            }
            MasterCheck::AskCluster {
                node_name,
                ssconf_dir,
                vote,
            } => {
                let ssconf = ssconf_dir.as_deref().map(ssconf::master_node);
                match ssconf {
                    Some(Ok(Some(master))) if &master != node_name => {
                        // The node's own configuration copy already names another master:
                        // no need (and maybe no way) to ask the old master's daemons.
                        self.concluded(master, node_name.clone(), ctx);
                        return;
                    }
                    Some(Ok(Some(_))) if vote.is_some() => {
                        if self.vote == VoteState::Won {
                            // This node's ssconf names it master and a majority of the
                            // nodes agreed: that is Ganeti's own test of mastership. The
                            // cluster is not asked again: right after a failover the
                            // new master's luxid may still answer from an old config.
                            let me = node_name.clone();
                            self.concluded(me.clone(), me, ctx);
                            return;
                        }
                        if let Some(settings) = vote.clone() {
                            self.hold_vote(node_name.clone(), settings, ctx);
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        warn!(target: "maintd::election", error = %e, "cannot read ssconf; asking the cluster")
                    }
                    _ => {}
                }
                node_name.clone()
            }
        };
        self.backend
            .master_node()
            .into_actor(self)
            .map(move |answer, act, ctx| match answer {
                Ok(master) => act.concluded(master, node_name, ctx),
                // Keep the current role: without an answer nothing can be decided.
                Err(e) => warn!(target: "maintd::election", error = %e, "master check failed"),
            })
            .wait(ctx);
    }

    /// Ask every node who the master is, retrying while missing answers leave it open;
    /// start work once won, exit when lost.
    fn hold_vote(&mut self, me: String, settings: VoteSettings, ctx: &mut Context<Self>) {
        if self.vote == VoteState::Voting {
            return;
        }
        self.vote = VoteState::Voting;
        info!(target: "maintd::election", node = %me, "ssconf names this node master; holding the popular vote");
        let voting = async move {
            let config = settings.data_dir.join(vote::CONFIG_FILE);
            let voters = vote::voters_from_config(&config)?;
            let client =
                NodedClient::from_data_dir(&settings.data_dir, settings.port, settings.timeout)
                    .map_err(|e| e.to_string())?;
            let ask = |address: String| {
                let client = client.clone();
                async move { client.master_node_name(&address).await }
            };
            let retry_delay = Duration::from_secs(VOTING_RETRY_SECONDS);
            vote::verify_master(&me, &voters, ask, retry_delay).await
        };
        voting
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(()) => {
                    info!(target: "maintd::election", "won the popular vote");
                    act.vote = VoteState::Won;
                    act.check(ctx);
                }
                Err(why) => {
                    error!(target: "maintd::election", "failed to verify master status: {why}; exiting");
                    System::current().stop_with_code(EXIT_VOTE_FAILED);
                }
            })
            .spawn(ctx);
    }

    /// `master` is the master: work if it is this node, else stop (or exit at startup).
    fn concluded(&mut self, master: String, node_name: String, ctx: &mut Context<Self>) {
        let is_master = master == node_name;
        if !is_master && !self.first_check_done && self.exit_if_not_master {
            error!(target: "maintd::election", this_node = %node_name, %master, "not the master node; exiting");
            System::current().stop_with_code(EXIT_NOT_MASTER);
            return;
        }
        self.first_check_done = true;
        self.set_master(is_master, ctx);
    }

    fn start_work(&mut self) {
        info!(target: "maintd::election", "this node is master; starting work");
        self.supervisor = Some(ClusterSupervisor::new(self.deps.clone()).start());
    }

    fn stop_work(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.do_send(Shutdown);
        }
    }

    fn set_master(&mut self, is_master: bool, ctx: &mut Context<Self>) {
        self.master = is_master;
        match (is_master, self.supervisor.is_some()) {
            (true, false) => {
                let Some(replication) = self.deps.replication.clone() else {
                    self.start_work();
                    return;
                };
                if self.taking_over {
                    return;
                }
                self.taking_over = true;
                let store = self.deps.store.clone();
                async move { take_over_state(&replication, &store).await }
                    .into_actor(self)
                    .map(|result, act, _| {
                        act.taking_over = false;
                        match result {
                            // Mastership may have moved on while the copies were read.
                            Ok(how) if act.master && act.supervisor.is_none() => {
                                info!(target: "maintd::election", "{how}");
                                act.start_work();
                            }
                            Ok(_) => {}
                            Err(why) => {
                                error!(target: "maintd::election", "cannot take over maintd's state yet: {why}; no work until a majority of the master candidates answers (retried at every master check)")
                            }
                        }
                    })
                    .spawn(ctx);
            }
            (false, true) => {
                warn!(target: "maintd::election", "this node is no longer master; stopping all work");
                self.stop_work();
            }
            _ => {}
        }
    }
}

/// Make the newest state the one on this node's disk before work starts: its own, or the
/// newest copy of the other master candidates (validated, then saved). Says what it took.
async fn take_over_state(
    replication: &ReplicationDeps,
    store: &JsonStore,
) -> Result<String, String> {
    let candidates = replication.candidates.read()?;
    let local = store
        .load::<Value>()
        .map_err(|e| e.to_string())?
        .map(|state| (state["serial"].as_u64().unwrap_or(0), state));
    if candidates.iter().all(|node| *node == replication.me) {
        return Ok("no other master candidate: the state is this node's own".into());
    }
    let Some(client) = &replication.client else {
        return Err(format!(
            "no HMAC key (cluster.hmac_key) to read the copies of {} with; set replication.enabled = false to run without copies",
            candidates.join(", ")
        ));
    };
    // This node's agent too: it may hold a newer copy than this node's disk (if this
    // node was master, lost the role and got it back, say).
    let fetched = fetch_all(client, &candidates).await;
    for (node, answer) in &fetched {
        if let Err(why) = answer {
            warn!(target: "maintd::election", %node, error = %why, "no copy of the state from this master candidate");
        }
    }
    match take_over(local, &fetched, candidates.len())? {
        None => Ok("no state on any master candidate: starting empty".into()),
        Some(Newest::Local { serial, .. }) => Ok(format!(
            "this node's own state (serial {serial}) is the newest of the master candidates'"
        )),
        Some(Newest::Replica { node, replica }) => {
            serde_json::from_value::<MaintenanceState>(replica.state.clone()).map_err(|e| {
                format!(
                    "the copy of {node} (serial {}) is not a valid state: {e}",
                    replica.serial
                )
            })?;
            store.save(&replica.state).map_err(|e| e.to_string())?;
            Ok(format!(
                "took over the state of serial {} from {node}'s copy (saved by maintd on {})",
                replica.serial, replica.master
            ))
        }
    }
}

impl Actor for MasterElection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.check(ctx);
        ctx.run_interval(self.interval, Self::check);
    }
}

impl Handler<Shutdown> for MasterElection {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.stop_work();
        ctx.stop();
    }
}
