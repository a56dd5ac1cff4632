//! DiagnoseCollector: runs the node's diagnose command on a schedule (first run at
//! start) and keeps the latest result for the agent's web handlers. The work is
//! [`maintd::agent::diagnose::diagnose`]; this actor only schedules it, one run at a time.

use std::time::Duration;

use actix::prelude::*;
use maintd::{
    agent::{diagnose::diagnose, report_envelope, whitelist::Whitelist},
    clock::Clock,
};
use serde_json::Value;
use tracing::{debug, info, warn};

/// The latest report object, or `None` before the first run has finished.
#[derive(Message)]
#[rtype(result = "Option<Value>")]
pub struct GetDiagnoseReport;

/// How to run the diagnose.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The whitelist of diagnose commands.
    pub whitelist: Whitelist,
    /// The command's name; empty: the built-in diagnose.
    pub command: String,
    /// Time between runs.
    pub interval: Duration,
    /// Time limit of a run.
    pub timeout: Duration,
}

/// The actor.
pub struct DiagnoseCollector {
    config: CollectorConfig,
    clock: Clock,
    /// The latest report object.
    latest: Option<Value>,
    /// A run is under way; ticks meanwhile are skipped.
    running: bool,
    /// The problem of the previous run, so that a persisting one is logged once as a
    /// warning rather than every interval.
    last_problem: Option<String>,
}

impl DiagnoseCollector {
    /// A collector that starts running when started.
    pub fn new(config: CollectorConfig, clock: Clock) -> Self {
        DiagnoseCollector {
            config,
            clock,
            latest: None,
            running: false,
            last_problem: None,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            debug!(target: "maintd::agent", "previous diagnose still running; tick skipped");
            return;
        }
        self.running = true;
        let config = self.config.clone();
        let run = async move { diagnose(&config.whitelist, &config.command, config.timeout).await };
        ctx.spawn(run.into_actor(self).map(|result, act, _| {
            act.running = false;
            match &result.problem {
                Some(problem) if act.last_problem.as_ref() != Some(problem) => {
                    warn!(target: "maintd::agent", command = %act.config.command, problem = %problem, "diagnose");
                }
                Some(problem) => {
                    debug!(target: "maintd::agent", command = %act.config.command, problem = %problem, "diagnose (unchanged)");
                }
                None if act.last_problem.is_some() => {
                    info!(target: "maintd::agent", command = %act.config.command, "diagnose problem gone");
                }
                None => {}
            }
            act.last_problem = result.problem.clone();
            let changed = act
                .latest
                .as_ref()
                .is_none_or(|previous| previous.get("data") != Some(&result.data));
            if changed {
                info!(target: "maintd::agent", data = %result.data, "diagnose result");
            }
            act.latest = Some(report_envelope(&result.data, act.clock.now_ns()));
        }));
    }
}

impl Actor for DiagnoseCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.config.interval, |act, ctx| act.tick(ctx));
    }
}

impl Handler<GetDiagnoseReport> for DiagnoseCollector {
    type Result = Option<Value>;

    fn handle(&mut self, _: GetDiagnoseReport, _: &mut Context<Self>) -> Option<Value> {
        self.latest.clone()
    }
}
