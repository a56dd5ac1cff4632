//! NodePoller: one per node. Fetches the node's diagnose report every poll interval, at
//! the node's own place in the interval ([`maintd::daemon::polling`]), and reports it to
//! the registry. A poll first takes one of the cluster's shared [`PollPermits`], so that at
//! most `monitoring.max_concurrent_polls` are in flight at once. A failed fetch is
//! reported too, then the poller stops itself; its `Supervisor` restarts it in place and
//! it waits a capped exponential backoff before polling again, so an unreachable node
//! costs little and never disturbs other pollers.

use std::{rc::Rc, time::Duration};

use actix::{prelude::*, WeakRecipient};
use maintd::{
    backend::{DiagnoseSource, LoadSource},
    backoff::Backoff,
    clock::Clock,
    daemon::polling::{poll_offset, until_next_slot},
};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::daemon::messages::{ChildRestarted, NodeLoadSeen, NodeObserved, Shutdown};

/// Timing of a poller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollTiming {
    /// Between two successful polls.
    pub interval: Duration,
    /// Delay before polling again after consecutive failures (`monitoring.backoff_initial`
    /// doubling up to `monitoring.backoff_max`).
    pub backoff: Backoff,
}

/// The polls that may be in flight at once, shared by all the pollers of a cluster: a
/// poll holds one from before its first request until its last answer.
pub type PollPermits = Rc<Semaphore>;

/// Permits for at most `max` polls at once (at least 1).
pub fn poll_permits(max: usize) -> PollPermits {
    Rc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)))
}

/// The poller actor of one node.
pub struct NodePoller {
    node: String,
    source: Rc<dyn DiagnoseSource>,
    registry: Recipient<NodeObserved>,
    /// Weak: the supervisor owns the poller, not the other way round.
    restarts: Option<WeakRecipient<ChildRestarted>>,
    timing: PollTiming,
    clock: Clock,
    /// Consecutive failures; survives restarts (actix keeps the actor value).
    attempt: u32,
    /// Where to fetch the node's CPU load too, and where to send it.
    load: Option<(Rc<dyn LoadSource>, Recipient<NodeLoadSeen>)>,
    /// The node's place in the interval ([`poll_offset`]).
    offset: Duration,
    /// Taken for each poll; shared with the cluster's other pollers.
    permits: PollPermits,
}

impl NodePoller {
    /// A poller for `node`, polling only while it holds one of `permits`.
    pub fn new(
        node: String,
        source: Rc<dyn DiagnoseSource>,
        registry: Recipient<NodeObserved>,
        restarts: Option<WeakRecipient<ChildRestarted>>,
        timing: PollTiming,
        clock: Clock,
        permits: PollPermits,
    ) -> Self {
        let offset = poll_offset(timing.interval, &node);
        NodePoller {
            node,
            source,
            registry,
            restarts,
            timing,
            clock,
            attempt: 0,
            load: None,
            offset,
            permits,
        }
    }

    /// The wait until this node's next slot.
    fn until_next_slot(&self) -> Duration {
        let since_epoch = Duration::try_from_secs_f64(self.clock.now()).unwrap_or_default();
        until_next_slot(self.timing.interval, self.offset, since_epoch)
    }

    /// Also fetch the node's `cpu-avg-load` report after each valid diagnose report.
    pub fn with_load(mut self, source: Rc<dyn LoadSource>, sink: Recipient<NodeLoadSeen>) -> Self {
        self.load = Some((source, sink));
        self
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let source = self.source.clone();
        let load = self
            .load
            .as_ref()
            .map(|(source, sink)| (source.clone(), sink.clone()));
        let node = self.node.clone();
        let permits = self.permits.clone();
        async move {
            // The permit is never closed; should it be, the poll goes ahead uncapped. The
            // wait for it is not part of the fetch's time limit.
            let _permit = permits.acquire().await.ok();
            let report = source.fetch(&node).await;
            // The load matters only from a node that answers; its failure is reported
            // but never stops the diagnose polling.
            if let (Ok(_), Some((source, sink))) = (&report, load) {
                let load = source.fetch_load(&node).await;
                sink.do_send(NodeLoadSeen { node, load });
            }
            report
        }
        .into_actor(self)
        .map(|report, act, ctx| {
            let failed = report.is_err();
            act.registry.do_send(NodeObserved {
                node: act.node.clone(),
                report,
                at: act.clock.now(),
            });
            if failed {
                ctx.stop();
            } else {
                act.attempt = 0;
                ctx.run_later(act.until_next_slot(), Self::poll);
            }
        })
        // Spawned, not awaited: a shutdown stops the poller at once, its poll dropped
        // (and its permit given back), even while it waits for a permit.
        .spawn(ctx);
    }
}

impl Actor for NodePoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // attempt is 0 only at the first start: a restart follows a failure.
        let delay = if self.attempt == 0 {
            self.until_next_slot()
        } else {
            self.timing.backoff.delay(self.attempt)
        };
        debug!(target: "maintd::poller", node = %self.node, ?delay, "poller started");
        ctx.run_later(delay, Self::poll);
    }
}

impl Supervised for NodePoller {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.attempt = self.attempt.saturating_add(1);
        if let Some(restarts) = self.restarts.as_ref().and_then(WeakRecipient::upgrade) {
            restarts.do_send(ChildRestarted {
                child: format!("poller:{}", self.node),
                attempt: self.attempt,
                backoff: self.timing.backoff.delay(self.attempt),
            });
        }
    }
}

impl Handler<Shutdown> for NodePoller {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t = PollTiming {
            interval: Duration::from_secs(5),
            backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(60)),
        };
        let got: Vec<u64> = (1..=6).map(|a| t.backoff.delay(a).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(t.backoff.delay(u32::MAX), Duration::from_secs(60));
    }
}
