//! StateReplicator: sends every save of the state to the agents of the master candidates
//! and tells when a save is durable (on a majority of them, this node included). The
//! round planner waits for that before it submits a round's jobs; the registry shows the
//! copies on `/1/safety` and holds new rounds while the majority is lost.
//!
//! Only the newest save is sent: a push carries the whole state, so a candidate that
//! missed some saves catches up with the next one. One push per candidate is in flight at
//! a time; candidates that lag behind are retried every `replication.retry_interval`.

use std::{sync::Arc, time::Duration};

use actix::{prelude::*, WeakRecipient};
use futures_util::future::join_all;
use maintd::{
    backend::replica::{CandidateSource, ReplicaClient},
    clock::Clock,
    model::replication::{ReplicationTracker, ReplicationView},
};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::daemon::messages::{AwaitDurable, ReplicationChanged, Shutdown, StateSaved};

/// What replication needs, from the settings.
#[derive(Clone)]
pub struct ReplicationDeps {
    /// Pushes and fetches; `None` without the cluster's HMAC key (nothing can be signed,
    /// so nothing reaches the candidates).
    pub client: Option<ReplicaClient>,
    /// The master candidates.
    pub candidates: CandidateSource,
    /// This node's name.
    pub me: String,
    /// How long a round waits for its save to become durable.
    pub wait: Duration,
    /// Time between pushes to lagging candidates.
    pub retry: Duration,
    /// Time source (push timestamps, the majority's loss).
    pub clock: Clock,
}

/// The state-replicator actor.
pub struct StateReplicator {
    deps: ReplicationDeps,
    tracker: ReplicationTracker,
    latest: Option<Arc<Value>>,
    pushing: bool,
    waiters: Vec<(u64, oneshot::Sender<Result<(), String>>)>,
    registry: WeakRecipient<ReplicationChanged>,
    shown: Option<ReplicationView>,
}

impl StateReplicator {
    /// A replicator telling `registry` how replication goes.
    pub fn new(deps: ReplicationDeps, registry: Recipient<ReplicationChanged>) -> Self {
        StateReplicator {
            tracker: ReplicationTracker::new(deps.me.clone()),
            deps,
            latest: None,
            pushing: false,
            waiters: Vec::new(),
            registry: registry.downgrade(),
            shown: None,
        }
    }

    fn refresh_candidates(&mut self) {
        match self.deps.candidates.read() {
            Ok(nodes) => self.tracker.set_candidates(&nodes),
            Err(why) => {
                warn!(target: "maintd::replicator", error = %why, "cannot read the master candidates; keeping the last list");
                self.tracker.candidates_unknown(why);
            }
        }
    }

    /// Push the newest save to every candidate that lags behind, unless pushes are under
    /// way (they push again when done if a newer save came meanwhile).
    fn push_lagging(&mut self, ctx: &mut Context<Self>) {
        if self.pushing {
            return;
        }
        let Some(state) = self.latest.clone() else {
            return;
        };
        let lagging = self.tracker.lagging();
        let serial = self.tracker.latest();
        if lagging.is_empty() {
            self.settle(serial);
            return;
        }
        let Some(client) = self.deps.client.clone() else {
            let now = self.deps.clock.now();
            for node in &lagging {
                self.tracker.failed(
                    node,
                    "no HMAC key (cluster.hmac_key) to sign the copy with".into(),
                    now,
                );
            }
            self.settle(serial);
            return;
        };
        self.pushing = true;
        let me = self.deps.me.clone();
        let pushes = lagging
            .iter()
            .map(|node| client.push(node, serial, &me, &state));
        let answers = join_all(pushes);
        answers
            .into_actor(self)
            .map(move |answers, act, ctx| {
                act.pushing = false;
                let now = act.deps.clock.now();
                for (node, answer) in lagging.iter().zip(answers) {
                    match answer {
                        Ok(ack) => {
                            if let Err(conflict) = act.tracker.acked(node, ack, now) {
                                error!(target: "maintd::replicator", %conflict, "a newer state is on a master candidate");
                            }
                        }
                        Err(why) => act.tracker.failed(node, why.to_string(), now),
                    }
                }
                act.settle(serial);
                if act.tracker.latest() > serial {
                    act.push_lagging(ctx);
                }
            })
            .spawn(ctx);
    }

    /// After pushes of the save `pushed`: judge the majority, answer the waiters, tell
    /// the registry.
    fn settle(&mut self, pushed: u64) {
        let was_lost = self.tracker.majority_lost();
        self.tracker.pushes_done(pushed, self.deps.clock.now());
        let view = self.tracker.view();
        match (was_lost, self.tracker.majority_lost()) {
            (false, true) => {
                error!(target: "maintd::replicator", reason = %view.halt_reason().unwrap_or_default(), "majority of master candidates lost: no new round until it is back")
            }
            (true, false) => {
                info!(target: "maintd::replicator", serial = view.serial, holders = view.holders, "the state is on a majority of the master candidates again; work resumes")
            }
            _ => {}
        }
        let durable = self.tracker.durable();
        self.waiters.retain(|(_, tx)| !tx.is_closed());
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(serial, _)| *serial <= durable);
        for (_, tx) in done {
            let _ = tx.send(Ok(()));
        }
        // With the majority lost, waiting longer would only delay the answer for the
        // saves this round of pushes carried: say so now. Later saves wait for their own.
        match view.halt_reason() {
            Some(why) => {
                let (failed, later): (Vec<_>, Vec<_>) = waiting
                    .into_iter()
                    .partition(|(serial, _)| *serial <= pushed);
                for (_, tx) in failed {
                    let _ = tx.send(Err(why.clone()));
                }
                self.waiters = later;
            }
            None => self.waiters = waiting,
        }
        self.show(view);
    }

    fn show(&mut self, view: ReplicationView) {
        // Timestamps of answers change at every push; tell the registry on every change
        // all the same: /1/safety shows them and a message is cheap.
        if self.shown.as_ref() != Some(&view) {
            if let Some(registry) = self.registry.upgrade() {
                registry.do_send(ReplicationChanged(view.clone()));
            }
            self.shown = Some(view);
        }
    }
}

impl Actor for StateReplicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.refresh_candidates();
        let view = self.tracker.view();
        info!(target: "maintd::replicator", candidates = ?view.candidates.iter().map(|c| c.node.as_str()).collect::<Vec<_>>(), needed = view.needed, "replicating the state to the master candidates");
        self.show(view);
        ctx.run_interval(self.deps.retry, |act, ctx| {
            act.refresh_candidates();
            act.push_lagging(ctx);
        });
    }
}

impl Handler<StateSaved> for StateReplicator {
    type Result = ();

    fn handle(&mut self, msg: StateSaved, ctx: &mut Context<Self>) {
        self.tracker.saved(msg.serial);
        self.latest = Some(msg.state);
        self.refresh_candidates();
        self.push_lagging(ctx);
    }
}

impl Handler<AwaitDurable> for StateReplicator {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: AwaitDurable, ctx: &mut Context<Self>) -> Self::Result {
        if self.tracker.is_durable(msg.serial) {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push((msg.serial, tx));
        self.push_lagging(ctx);
        let wait = self.deps.wait;
        let me = ctx.address();
        Box::pin(async move {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err("the state replicator stopped".into()),
                Err(_) => {
                    let why = me
                        .send(GetReplication)
                        .await
                        .ok()
                        .and_then(|view| view.halt_reason())
                        .unwrap_or_else(|| "no majority of the master candidates answered".into());
                    Err(format!(
                        "serial {} not durable after {wait:?}: {why}",
                        msg.serial
                    ))
                }
            }
        })
    }
}

/// The replication view now.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ReplicationView")]
pub struct GetReplication;

impl Handler<GetReplication> for StateReplicator {
    type Result = MessageResult<GetReplication>;

    fn handle(&mut self, _: GetReplication, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tracker.view())
    }
}

impl Handler<Shutdown> for StateReplicator {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
