//! ClusterSupervisor: started by the master election once this node is master. Starts the
//! event registry, the state replicator, the job watcher, the round planner and one poller
//! per node, and holds the only strong addresses of them all (siblings hold weak ones):
//! dropping the supervisor stops every child. It refreshes the node list periodically,
//! adding pollers for new nodes and dropping those of departed or offline nodes.
//!
//! | child | started | when it stops by itself | restart and backoff |
//! | --- | --- | --- | --- |
//! | `NodePoller` × node | `actix::Supervisor` | after a failed poll | in place, after `monitoring.backoff_initial` doubling up to `backoff_max` |
//! | `JobWatcher` | `actix::Supervisor` | after a failed submission or repeated failed status queries | in place, at once; it then recovers every unfinished job and unconfirmed submission key from the registry, its backoff between queries doubling up to 300 s |
//! | `EventRegistry` | plain | never (only on `Shutdown`) | none: it owns the state; losing it ends the work |
//! | `StateReplicator` | plain | never | none |
//! | `RoundPlanner` | plain | when the registry is gone | none |
//! | `Notifier` (with `[notify] webhook_url`) | plain | never | none: its queue is saved after each change |
//!
//! A panic anywhere is not caught by actix: maintd logs it and exits
//! (`telemetry::exit_on_panic`), and the service manager starts it again from the saved
//! state, which is the restart every piece is built to survive.

use std::{collections::BTreeMap, rc::Rc, sync::Arc, time::Duration};

use actix::prelude::*;
use maintd::{
    backend::{ClusterBackend, DiagnoseSource, LoadSource},
    clock::Clock,
    metrics::Metrics,
    model::incident::MaintenanceState,
    planner::PlannerThread,
    store::JsonStore,
};
use tracing::{debug, error, info, warn};

use crate::{
    daemon::api::RegistryLink,
    daemon::job_watcher::JobWatcher,
    daemon::messages::{ChildRestarted, NodeLoadSeen, NodesListed, Shutdown},
    daemon::notifier::{Notifier, NotifyDeps},
    daemon::poller::{poll_permits, NodePoller, PollPermits, PollTiming},
    daemon::registry::{EventRegistry, RegistryConfig},
    daemon::round_planner::{RoundPlanner, RoundTiming},
    daemon::state_replicator::{ReplicationDeps, StateReplicator},
};

/// Everything the supervisor needs to build its children.
#[derive(Clone)]
pub struct SupervisorDeps {
    /// Job queue and configuration.
    pub backend: Rc<dyn ClusterBackend>,
    /// Diagnose reports.
    pub diagnose: Rc<dyn DiagnoseSource>,
    /// CPU load reports, when balancing uses them.
    pub load: Option<Rc<dyn LoadSource>>,
    /// Round planning.
    pub planner: PlannerThread,
    /// State persistence.
    pub store: JsonStore,
    /// Where the web actor finds the registry.
    pub link: RegistryLink,
    /// Poller timing.
    pub poll: PollTiming,
    /// Most polls in flight at once (`monitoring.max_concurrent_polls`).
    pub max_concurrent_polls: usize,
    /// Round timing.
    pub rounds: RoundTiming,
    /// Job status query interval.
    pub job_poll_interval: Duration,
    /// Node list refresh interval.
    pub node_refresh_interval: Duration,
    /// Time source.
    pub clock: Clock,
    /// The registry's settings: the brakes, the job timeout.
    pub registry: RegistryConfig,
    /// Copies of the state on the master candidates; `None`: off.
    pub replication: Option<ReplicationDeps>,
    /// The process's metrics, which the registry counts events in.
    pub metrics: Arc<Metrics>,
    /// Webhook notifications of incident transitions; `None`: off.
    pub notify: Option<NotifyDeps>,
}

/// The supervisor actor.
pub struct ClusterSupervisor {
    deps: SupervisorDeps,
    registry: Option<Addr<EventRegistry>>,
    watcher: Option<Addr<JobWatcher>>,
    planner: Option<Addr<RoundPlanner>>,
    replicator: Option<Addr<StateReplicator>>,
    notifier: Option<Addr<Notifier>>,
    pollers: BTreeMap<String, Addr<NodePoller>>,
    /// Shared by all pollers: caps the polls in flight.
    poll_permits: PollPermits,
}

impl ClusterSupervisor {
    /// A supervisor; children start with the actor.
    pub fn new(deps: SupervisorDeps) -> Self {
        ClusterSupervisor {
            poll_permits: poll_permits(deps.max_concurrent_polls),
            deps,
            registry: None,
            watcher: None,
            planner: None,
            replicator: None,
            notifier: None,
            pollers: BTreeMap::new(),
        }
    }

    fn refresh_nodes(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        // The nodes alone: on a large cluster a whole snapshot is mostly instances.
        let online = self.deps.backend.online_nodes();
        actix::spawn(async move {
            match online.await {
                Ok(nodes) => {
                    me.do_send(NodesListed { nodes });
                }
                Err(e) => warn!(target: "maintd::supervisor", error = %e, "could not list nodes"),
            }
        });
    }
}

impl Actor for ClusterSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let state = match self.deps.store.load::<MaintenanceState>() {
            Ok(Some(state)) => state,
            Ok(None) => MaintenanceState::new(),
            Err(e) => {
                // Never start from a blank state over an unreadable one: that would lose
                // incidents. Idling would hide it; exiting lets the service manager and
                // the operator see it.
                error!(target: "maintd::supervisor", error = %e, "cannot load the state; exiting");
                ctx.stop();
                System::current().stop_with_code(1);
                return;
            }
        };
        info!(target: "maintd::supervisor", path = %self.deps.store.path().display(), incidents = state.incidents.len(), "starting maintenance work");
        let registry = EventRegistry::new(
            state,
            self.deps.store.clone(),
            self.deps.registry.clone(),
            self.deps.clock,
            self.deps.metrics.clone(),
        );
        let notifier = self
            .deps
            .notify
            .clone()
            .map(|deps| Notifier::new(deps).start());
        let registry = match &notifier {
            Some(notifier) => registry.notifying(notifier.clone().recipient()),
            None => registry,
        };
        self.notifier = notifier;
        let replication = self.deps.replication.clone();
        let mut replicator = None;
        let registry = EventRegistry::create(|ctx| match replication {
            Some(deps) => {
                let started = StateReplicator::new(deps, ctx.address().recipient()).start();
                let registry = registry
                    .replicated_by(started.clone().recipient(), started.clone().recipient());
                replicator = Some(started);
                registry
            }
            None => registry,
        });
        let restarts = ctx.address().recipient::<ChildRestarted>().downgrade();
        let watcher = {
            let (backend, registry, clock, interval) = (
                self.deps.backend.clone(),
                registry.clone(),
                self.deps.clock,
                self.deps.job_poll_interval,
            );
            let restarts = restarts.clone();
            Supervisor::start(move |_| {
                JobWatcher::new(backend, registry, Some(restarts), interval, clock)
            })
        };
        let planner = RoundPlanner::new(
            self.deps.backend.clone(),
            self.deps.planner.clone(),
            registry.clone(),
            watcher.clone(),
            self.deps.rounds,
            self.deps.clock,
        );
        let planner = match &replicator {
            Some(replicator) => planner.replicated_by(replicator.clone()),
            None => planner,
        }
        .start();
        self.replicator = replicator;
        self.deps.link.attach(&registry);
        self.registry = Some(registry);
        self.watcher = Some(watcher);
        self.planner = Some(planner);
        self.refresh_nodes(ctx);
        ctx.run_interval(self.deps.node_refresh_interval, Self::refresh_nodes);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        info!(target: "maintd::supervisor", "stopping all maintenance work");
        self.deps.link.detach();
        // Tell every child to stop, then drop the only strong addresses so that the
        // supervised ones are not restarted.
        for poller in std::mem::take(&mut self.pollers).into_values() {
            poller.do_send(Shutdown);
        }
        if let Some(planner) = self.planner.take() {
            planner.do_send(Shutdown);
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.do_send(Shutdown);
        }
        if let Some(registry) = self.registry.take() {
            registry.do_send(Shutdown);
        }
        if let Some(replicator) = self.replicator.take() {
            replicator.do_send(Shutdown);
        }
        if let Some(notifier) = self.notifier.take() {
            notifier.do_send(Shutdown);
        }
        Running::Stop
    }
}

impl Handler<NodesListed> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, msg: NodesListed, ctx: &mut Context<Self>) {
        let Some(registry) = &self.registry else {
            return;
        };
        let wanted: std::collections::BTreeSet<String> = msg.nodes.into_iter().collect();
        self.pollers.retain(|node, poller| {
            let keep = wanted.contains(node);
            if !keep {
                info!(target: "maintd::supervisor", %node, "node left or went offline; poller stopped");
                poller.do_send(Shutdown);
            }
            keep
        });
        let mut added = 0usize;
        for node in wanted {
            if self.pollers.contains_key(&node) {
                continue;
            }
            // Each poller finds its own place in the interval from its node's name, so
            // that nodes coming and going move no other node's polls.
            debug!(target: "maintd::supervisor", %node, "polling node");
            added += 1;
            let (source, sink, timing, clock) = (
                self.deps.diagnose.clone(),
                registry.clone().recipient(),
                self.deps.poll,
                self.deps.clock,
            );
            let restarts = ctx.address().recipient::<ChildRestarted>().downgrade();
            let permits = self.poll_permits.clone();
            let name = node.clone();
            let load = self
                .deps
                .load
                .clone()
                .map(|source| (source, registry.clone().recipient::<NodeLoadSeen>()));
            let poller = Supervisor::start(move |_| {
                let poller =
                    NodePoller::new(name, source, sink, Some(restarts), timing, clock, permits);
                match load {
                    Some((source, sink)) => poller.with_load(source, sink),
                    None => poller,
                }
            });
            self.pollers.insert(node, poller);
        }
        if added > 0 {
            info!(target: "maintd::supervisor", added, polled = self.pollers.len(), "polling nodes");
        }
    }
}

impl Handler<ChildRestarted> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildRestarted, _: &mut Context<Self>) {
        warn!(target: "maintd::supervisor", child = %msg.child, attempt = msg.attempt, backoff = ?msg.backoff, "child restarted");
    }
}

impl Handler<Shutdown> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
