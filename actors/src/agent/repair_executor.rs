//! RepairExecutor: holds this node's repair executions ([`RepairBook`]), runs them one at
//! a time in submission order, and persists the book after every change. Decisions live
//! in [`maintd::agent::repair`]; this actor sequences them around the command runs.

use std::time::Duration;

use actix::prelude::*;
use maintd::{
    agent::{
        repair::{AcceptedRequest, Execution, RepairBook, Submission},
        run::{run, RunSpec},
        whitelist::Whitelist,
    },
    clock::Clock,
    store::JsonStore,
};
use tracing::{error, info, warn};
use uuid::Uuid;

/// The name of the executions file in the state directory.
pub const EXECUTIONS_FILE: &str = "executions.json";

/// Record an authenticated request; answers what was recorded, or why nothing was (the
/// book could not be persisted, so nothing will run).
#[derive(Message)]
#[rtype(result = "Result<Submission, String>")]
pub struct SubmitRepair(pub AcceptedRequest);

/// The execution of an incident.
#[derive(Message)]
#[rtype(result = "Option<Execution>")]
pub struct GetExecution(pub Uuid);

/// How repair commands run.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// The whitelist of repair commands.
    pub whitelist: Whitelist,
    /// Time limit of one command.
    pub timeout: Duration,
    /// Output bytes kept per execution.
    pub max_output: usize,
}

/// The actor.
pub struct RepairExecutor {
    book: RepairBook,
    store: JsonStore,
    config: RepairConfig,
    clock: Clock,
}

impl RepairExecutor {
    /// An executor over a book restored from `store`.
    pub fn new(book: RepairBook, store: JsonStore, config: RepairConfig, clock: Clock) -> Self {
        RepairExecutor {
            book,
            store,
            config,
            clock,
        }
    }

    fn persist(&self) -> Result<(), String> {
        self.store.save(&self.book.document()).map_err(|e| {
            error!(target: "maintd::agent", error = %e, "cannot persist the repair executions");
            e.to_string()
        })
    }

    /// Start the next queued execution unless one is running. Executions whose command
    /// the whitelist refuses fail at once, without running anything.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while let Some(next) = self.book.next_to_start() {
            let incident = next.incident;
            let command = next.command.clone();
            let now = self.clock.now();
            let program = match self.config.whitelist.check(&command) {
                Ok(program) => program,
                Err(refusal) => {
                    warn!(target: "maintd::agent", %incident, %command, reason = %refusal, "repair command refused");
                    self.book.fail(incident, refusal.to_string(), now);
                    let _ = self.persist();
                    continue;
                }
            };
            let Some((_, input)) = self.book.start(incident, now) else {
                return;
            };
            let _ = self.persist();
            info!(target: "maintd::agent", %incident, %command, "repair command started");
            let spec = RunSpec {
                program,
                stdin: input.into_bytes(),
                timeout: self.config.timeout,
                max_output: self.config.max_output,
            };
            ctx.spawn(async move { run(&spec).await }.into_actor(self).map(
                move |outcome, act, ctx| {
                    let now = act.clock.now();
                    match outcome {
                        Ok(outcome) => act.book.finish(
                            incident,
                            &outcome,
                            act.config.timeout.as_secs_f64(),
                            act.config.max_output,
                            now,
                        ),
                        Err(e) => act.book.fail(incident, e.to_string(), now),
                    }
                    if let Some(done) = act.book.get(incident) {
                        info!(target: "maintd::agent", %incident, command = %done.command, state = ?done.state, exit_code = ?done.exit_code, message = ?done.message, "repair command finished");
                    }
                    let _ = act.persist();
                    act.pump(ctx);
                },
            ));
            return;
        }
    }
}

impl Actor for RepairExecutor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A restored book has nothing queued, but keep the invariant explicit.
        self.pump(ctx);
    }
}

impl Handler<SubmitRepair> for RepairExecutor {
    type Result = Result<Submission, String>;

    fn handle(
        &mut self,
        SubmitRepair(request): SubmitRepair,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let submission = self.book.submit(&request, self.clock.now());
        if let Submission::Queued(execution) = &submission {
            if let Err(e) = self.persist() {
                // Never run what could not be recorded: after a crash it would be unknown,
                // and a resubmission could run it again.
                self.book.withdraw(execution.incident);
                return Err(format!("cannot record the execution: {e}"));
            }
            info!(target: "maintd::agent", incident = %execution.incident, command = %execution.command, "repair request queued");
            self.pump(ctx);
        }
        Ok(submission)
    }
}

impl Handler<GetExecution> for RepairExecutor {
    type Result = Option<Execution>;

    fn handle(
        &mut self,
        GetExecution(incident): GetExecution,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.book.get(incident).cloned()
    }
}
