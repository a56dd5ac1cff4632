//! Notifier: posts every incident transition the registry saved to `notify.webhook_url`
//! (payload, signature, queue and retry policy: [`maintd::notify`]). One request is in
//! flight at a time, each bounded by `notify.timeout`; the queue is saved beside the
//! state after every change, so a restart resends what was not acknowledged. The registry
//! only ever sends it a message: a slow or dead receiver holds up nothing but this actor.
//!
//! Started by the supervisor while this node is master; the queue file is this node's, so
//! after a failover the new master notifies from its own queue (a new stream) and what
//! the old master had not delivered waits on its disk until it is master again. A crash
//! in the instant between saving the state and saving the queue loses that save's
//! notifications: delivery is at least once from the moment they are queued.

use std::time::Duration;

use actix::prelude::*;
use maintd::{
    backoff::Backoff,
    clock::Clock,
    notify::{
        judge, load_queue, signature, Answer, NotifyQueue, Verdict, SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
    },
    signing::HmacKey,
    store::JsonStore,
};
use tracing::{debug, error, info, warn};

use crate::daemon::messages::{Shutdown, TransitionsSaved};

/// Most bytes of a receiver's answer read (and shown in the log).
const MAX_ANSWER_BYTES: usize = 4096;

/// Most characters of an answer put in a log line.
const ANSWER_SHOWN: usize = 200;

/// What the notifier needs, from `[notify]`.
#[derive(Clone)]
pub struct NotifyDeps {
    /// The receiver.
    pub url: String,
    /// The HTTP(S) client, without redirects.
    pub client: awc::Client,
    /// Signs each body.
    pub secret: HmacKey,
    /// The queue file.
    pub store: JsonStore,
    /// At most this many notifications wait.
    pub queue_limit: usize,
    /// Time limit of one delivery.
    pub timeout: Duration,
    /// Delays between attempts at the same notification.
    pub backoff: Backoff,
    /// Dates the signatures.
    pub clock: Clock,
}

/// The notifier actor.
pub struct Notifier {
    deps: NotifyDeps,
    queue: NotifyQueue,
    /// Consecutive failed attempts at the first notification.
    failures: u32,
    /// A request is in flight or a retry is scheduled.
    busy: bool,
    /// Why the last save of the queue failed, while it did.
    unsaved: Option<String>,
}

impl Notifier {
    /// A notifier; its queue is loaded when it starts.
    pub fn new(deps: NotifyDeps) -> Self {
        let queue = NotifyQueue::new(deps.queue_limit);
        Notifier {
            deps,
            queue,
            failures: 0,
            busy: false,
            unsaved: None,
        }
    }

    /// Save the queue; a failure is logged once and leaves the queue in memory, still
    /// delivered.
    fn save(&mut self) {
        match self.deps.store.save(&self.queue) {
            Ok(()) => {
                if self.unsaved.take().is_some() {
                    info!(target: "maintd::notifier", path = %self.deps.store.path().display(), "the notification queue is saved again");
                }
            }
            Err(e) => {
                let why = e.to_string();
                if self.unsaved.as_ref() != Some(&why) {
                    error!(target: "maintd::notifier", error = %why, "could not save the notification queue: a restart would lose the notifications not yet delivered");
                }
                self.unsaved = Some(why);
            }
        }
    }

    /// Post the first notification, unless one is in flight or waits for its retry.
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some(event) = self.queue.begin() else {
            return;
        };
        let (seq, body) = (event.seq, event.body());
        let timestamp = self.deps.clock.now().max(0.0) as u64;
        let request = self
            .deps
            .client
            .post(&self.deps.url)
            .insert_header(("Content-Type", "application/json"))
            .insert_header((TIMESTAMP_HEADER, timestamp.to_string()))
            .insert_header((
                SIGNATURE_HEADER,
                signature(&self.deps.secret, timestamp, &body),
            ));
        self.busy = true;
        let exchange = post(request, body, self.deps.timeout);
        ctx.spawn(
            exchange
                .into_actor(self)
                .map(move |answer, act, ctx| act.answered(seq, answer, ctx)),
        );
    }

    fn answered(&mut self, seq: u64, answer: Answer, ctx: &mut Context<Self>) {
        let url = &self.deps.url;
        match judge(&answer, self.failures + 1, &self.deps.backoff) {
            Verdict::Delivered => {
                if self.failures > 0 {
                    info!(target: "maintd::notifier", %url, seq, attempts = self.failures + 1, "the webhook receiver takes notifications again");
                }
                debug!(target: "maintd::notifier", seq, "notification delivered");
                self.settle(seq, ctx);
            }
            Verdict::Refused(why) => {
                error!(target: "maintd::notifier", %url, seq, reason = %why, "notification refused by the webhook receiver: dropped");
                self.settle(seq, ctx);
            }
            Verdict::Retry { after, why } => {
                self.failures += 1;
                self.queue.release();
                warn!(target: "maintd::notifier", %url, seq, attempt = self.failures, retry_in = ?after, queued = self.queue.len(), reason = %why, "notification not delivered");
                ctx.run_later(after, |act, ctx| {
                    act.busy = false;
                    act.send_next(ctx);
                });
            }
        }
    }

    fn settle(&mut self, seq: u64, ctx: &mut Context<Self>) {
        self.failures = 0;
        self.busy = false;
        if self.queue.settle(seq) {
            self.save();
        }
        self.send_next(ctx);
    }
}

/// POST `body` with `request`, within `timeout`.
async fn post(request: awc::ClientRequest, body: Vec<u8>, timeout: Duration) -> Answer {
    let exchange = async {
        let mut response = request.send_body(body).await.map_err(|e| e.to_string())?;
        // The text only explains a refusal: an answer too long to read is no failure.
        let text = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
            .unwrap_or_default();
        Ok::<_, String>(Answer::Status(
            response.status().as_u16(),
            text.chars().take(ANSWER_SHOWN).collect(),
        ))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(why)) => Answer::Unreachable(why),
        Err(_) => Answer::Unreachable(format!("no answer within {timeout:?}")),
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let suffix = format!("{}", self.deps.clock.now() as u64);
        let (queue, note) = load_queue(&self.deps.store, self.deps.queue_limit, &suffix);
        if let Some(note) = note {
            error!(target: "maintd::notifier", path = %self.deps.store.path().display(), "{note}");
        }
        self.queue = queue;
        info!(target: "maintd::notifier", url = %self.deps.url, queued = self.queue.len(), stream = %self.queue.stream(), "notifying incident transitions");
        self.send_next(ctx);
    }
}

impl Handler<TransitionsSaved> for Notifier {
    type Result = ();

    fn handle(&mut self, msg: TransitionsSaved, ctx: &mut Context<Self>) {
        for transition in msg.0 {
            let dropped = self.queue.push(transition);
            if dropped > 0 {
                warn!(target: "maintd::notifier", dropped, total = self.queue.dropped_total(), limit = self.deps.queue_limit, "notification queue full: the oldest notifications were dropped");
            }
        }
        self.save();
        self.send_next(ctx);
    }
}

impl Handler<Shutdown> for Notifier {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
