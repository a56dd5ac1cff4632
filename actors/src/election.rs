//! MasterElection: the gate. maintd works only on the master node. The election checks
//! mastership at start (not master: exit code 11, like Ganeti's master-only daemons) and
//! then periodically; it starts the cluster supervisor while this node is master and drops
//! it, stopping all work, as soon as it is not.

use std::{rc::Rc, time::Duration};

use actix::prelude::*;
use maintd::backend::{ssconf, ClusterBackend};
use tracing::{error, info, warn};

use crate::{
    messages::Shutdown,
    supervisor::{ClusterSupervisor, SupervisorDeps},
};

/// Ganeti's exit code for "not master" (`exitNotmaster`).
pub const EXIT_NOT_MASTER: i32 = 11;

/// How mastership is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterCheck {
    /// Ask the cluster who the master is and compare with this node's name; first look at
    /// this node's ssconf copy, which names the new master as soon as the role moves.
    AskCluster {
        /// This node's name.
        node_name: String,
        /// Ganeti's ssconf directory on this node, if it is a Ganeti node.
        ssconf_dir: Option<std::path::PathBuf>,
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
            } => {
                let ssconf = ssconf_dir.as_deref().map(ssconf::master_node);
                match ssconf {
                    Some(Ok(Some(master))) if &master != node_name => {
                        // The node's own configuration copy already names another master:
                        // no need (and maybe no way) to ask the old master's daemons.
                        self.concluded(master, node_name.clone(), ctx);
                        return;
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

    fn stop_work(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.do_send(Shutdown);
        }
    }

    fn set_master(&mut self, is_master: bool, _: &mut Context<Self>) {
        match (is_master, self.supervisor.is_some()) {
            (true, false) => {
                info!(target: "maintd::election", "this node is master; starting work");
                self.supervisor = Some(ClusterSupervisor::new(self.deps.clone()).start());
            }
            (false, true) => {
                warn!(target: "maintd::election", "this node is no longer master; stopping all work");
                self.stop_work();
            }
            _ => {}
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
