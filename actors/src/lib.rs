//! # maintd-actors: the maintd daemon
//!
//! Thin actix shells over the domain crate `maintd`, the HTTP API and the `maintd` binary.
//!
//! ```text
//! MasterElection ──starts while master──▶ ClusterSupervisor ──spawns──▶ NodePoller × N (supervised)
//!                                          │ owns every child                 │ NodeObserved
//!                                          ├──▶ EventRegistry ◀────────────────┘
//!  WebActor ──GetStatus / CancelIncident──▶ │      ▲ Reconcile, StartRound
//!                                          ├──▶ RoundPlanner ──SubmitJobs──▶ JobWatcher (supervised)
//!                                          └─────────────────────────────────┘ JobsSubmitted, JobStatusesSeen → registry
//! ```
//!
//! [`daemon::app::start`] is the one place that wires the graph; `main.rs` and the tests use it.
//!
//! The node agent (`maintd agent`, one per node) is a separate, small graph wired in
//! [`agent::app::start`]: `AgentWeb` asks `DiagnoseCollector` for the latest report and
//! hands signed repair requests to `RepairExecutor`.

pub mod agent;
#[cfg(test)]
mod captured_log;
pub mod cli;
pub mod daemon;
pub mod http_server;
pub mod service_manager;
pub mod sim;
pub mod startup;
pub mod telemetry;
