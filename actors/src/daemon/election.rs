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
//!
//! The decisions are the domain's ([`maintd::daemon::mastership`]); this actor reads
//! ssconf, asks the cluster, holds the vote, takes over the state and starts or stops the
//! supervisor as they say.

use std::{rc::Rc, time::Duration};

use actix::prelude::*;
use maintd::{
    backend::{
        noded::NodedClient,
        replica::fetch_all,
        ssconf,
        vote::{self, VOTING_RETRY_SECONDS},
        ClusterBackend,
    },
    daemon::mastership::{self, Action, Exit, Mastership},
};
use tracing::{error, info, warn};

pub use maintd::daemon::mastership::{
    MasterCheck, VoteSettings, EXIT_NOT_MASTER, EXIT_VOTE_FAILED,
};

use crate::{
    daemon::messages::Shutdown,
    daemon::supervisor::{ClusterSupervisor, SupervisorDeps},
};

/// The master-election actor.
pub struct MasterElection {
    backend: Rc<dyn ClusterBackend>,
    interval: Duration,
    deps: SupervisorDeps,
    supervisor: Option<Addr<ClusterSupervisor>>,
    /// The check, the vote's progress, the role and the take-over.
    mastership: Mastership,
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
        let takes_over = deps.replication.is_some();
        MasterElection {
            backend,
            interval,
            deps,
            supervisor: None,
            mastership: Mastership::new(check, exit_if_not_master, takes_over),
        }
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let ssconf = self
            .mastership
            .master_check()
            .ssconf_dir()
            .map(ssconf::master_node);
        let action = self.mastership.check(ssconf);
        self.carry_out(action, ctx);
    }

    /// Carry out what the domain decided.
    fn carry_out(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::Nothing => {}
            Action::HoldVote { node, settings } => self.hold_vote(node, settings, ctx),
            Action::CheckAgain => self.check(ctx),
            Action::AskCluster { ssconf_error } => {
                if let Some(e) = ssconf_error {
                    warn!(target: "maintd::election", error = %e, "cannot read ssconf; asking the cluster");
                }
                self.backend
                    .master_node()
                    .into_actor(self)
                    .map(|answer, act, ctx| {
                        let action = act.mastership.cluster_answered(answer);
                        act.carry_out(action, ctx);
                    })
                    .wait(ctx);
            }
            Action::KeepRole { error } => {
                warn!(target: "maintd::election", error = %error, "master check failed")
            }
            Action::TakeOver => self.take_over(ctx),
            Action::StartWork => {
                info!(target: "maintd::election", "this node is master; starting work");
                self.supervisor = Some(ClusterSupervisor::new(self.deps.clone()).start());
            }
            Action::StopWork => {
                warn!(target: "maintd::election", "this node is no longer master; stopping all work");
                self.stop_work();
            }
            Action::Exit(exit) => {
                match &exit {
                    Exit::NotMaster { node, master } => {
                        error!(target: "maintd::election", this_node = %node, %master, "not the master node; exiting")
                    }
                    Exit::VoteFailed(why) => {
                        error!(target: "maintd::election", "failed to verify master status: {why}; exiting")
                    }
                }
                System::current().stop_with_code(exit.code());
            }
        }
    }

    /// Ask every node who the master is, retrying while missing answers leave it open.
    fn hold_vote(&mut self, me: String, settings: VoteSettings, ctx: &mut Context<Self>) {
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
            .map(|result, act, ctx| {
                if result.is_ok() {
                    info!(target: "maintd::election", "won the popular vote");
                }
                let action = act.mastership.vote_done(result);
                act.carry_out(action, ctx);
            })
            .spawn(ctx);
    }

    /// Make the newest state of the master candidates this node's before work starts.
    fn take_over(&mut self, ctx: &mut Context<Self>) {
        let Some(replication) = self.deps.replication.clone() else {
            // Replication off: there is nothing to take over.
            let action = self.mastership.taken_over(true);
            self.carry_out(action, ctx);
            return;
        };
        let store = self.deps.store.clone();
        async move {
            // This node's agent too: it may hold a newer copy than this node's disk.
            let fetch = replication.client.clone().map(|client| {
                move |candidates: Vec<String>| async move {
                    let fetched = fetch_all(&client, &candidates).await;
                    for (node, answer) in &fetched {
                        if let Err(why) = answer {
                            warn!(target: "maintd::election", %node, error = %why, "no copy of the state from this master candidate");
                        }
                    }
                    fetched
                }
            });
            mastership::take_over_state(&replication.me, &replication.candidates, &store, fetch)
                .await
        }
        .into_actor(self)
        .map(|result, act, ctx| {
            let action = act.mastership.taken_over(result.is_ok());
            match &result {
                // Mastership may have moved on while the copies were read.
                Ok(how) if action == Action::StartWork => {
                    info!(target: "maintd::election", "{how}")
                }
                Ok(_) => {}
                Err(why) => {
                    error!(target: "maintd::election", "cannot take over maintd's state yet: {why}; no work until a majority of the master candidates answers (retried at every master check)")
                }
            }
            act.carry_out(action, ctx);
        })
        .spawn(ctx);
    }

    fn stop_work(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.do_send(Shutdown);
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
