//! NodePoller: one per node. Fetches the node's diagnose report every poll interval and
//! reports it to the registry. A failed fetch is reported too, then the poller stops itself;
//! its `Supervisor` restarts it in place and it waits a capped exponential backoff before
//! polling again, so an unreachable node costs little and never disturbs other pollers.

use std::{rc::Rc, time::Duration};

use actix::{prelude::*, WeakRecipient};
use maintd::{
    backend::{DiagnoseSource, LoadSource},
    backoff::Backoff,
    clock::Clock,
};
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

/// The first-poll delay of the node at `position` (0-based) among `count` nodes: the
/// positions spread evenly over `interval`, so that a cluster's polls (one connection
/// each) do not all start at the same moment. Deterministic; `count` 0 counts as 1.
pub fn poll_offset(interval: Duration, position: usize, count: usize) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let position = u32::try_from(position).unwrap_or(u32::MAX).min(count - 1);
    interval / count * position
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
    /// Delay of the very first poll, so that the pollers of a cluster spread their polls
    /// over the interval instead of all connecting at once.
    offset: Duration,
}

impl NodePoller {
    /// A poller for `node`.
    pub fn new(
        node: String,
        source: Rc<dyn DiagnoseSource>,
        registry: Recipient<NodeObserved>,
        restarts: Option<WeakRecipient<ChildRestarted>>,
        timing: PollTiming,
        clock: Clock,
    ) -> Self {
        NodePoller {
            node,
            source,
            registry,
            restarts,
            timing,
            clock,
            attempt: 0,
            load: None,
            offset: Duration::ZERO,
        }
    }

    /// Wait `offset` before the first poll (see [`poll_offset`]).
    pub fn with_offset(mut self, offset: Duration) -> Self {
        self.offset = offset;
        self
    }

    /// Also fetch the node's `cpu-avg-load` report after each valid diagnose report.
    pub fn with_load(mut self, source: Rc<dyn LoadSource>, sink: Recipient<NodeLoadSeen>) -> Self {
        self.load = Some((source, sink));
        self
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let fetch = self.source.fetch(&self.node);
        let load = self
            .load
            .as_ref()
            .map(|(source, sink)| (source.clone(), sink.clone()));
        let node = self.node.clone();
        async move {
            let report = fetch.await;
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
                ctx.run_later(act.timing.interval, Self::poll);
            }
        })
        .wait(ctx);
    }
}

impl Actor for NodePoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // attempt is 0 only at the first start: a restart follows a failure.
        let delay = if self.attempt == 0 {
            self.offset
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

    #[test]
    fn offsets_spread_evenly_over_the_interval() {
        let interval = Duration::from_secs(5);
        let got: Vec<Duration> = (0..4).map(|i| poll_offset(interval, i, 4)).collect();
        assert_eq!(
            got,
            [0, 1250, 2500, 3750].map(Duration::from_millis).to_vec()
        );
        assert_eq!(poll_offset(interval, 0, 0), Duration::ZERO);
        // Out-of-range positions stay within the interval.
        assert!(poll_offset(interval, 10, 4) < interval);
    }
}
