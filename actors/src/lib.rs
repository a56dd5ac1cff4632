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
//! [`app::start`] is the one place that wires the graph; `main.rs` and the tests use it.
//!
//! The node agent (`maintd agent`, one per node) is a separate, small graph wired in
//! [`agent_app::start`]: `AgentWeb` asks `DiagnoseCollector` for the latest report and
//! hands signed repair requests to `RepairExecutor`.

pub mod agent_app;
pub mod agent_collector;
pub mod agent_repairs;
pub mod agent_web;
pub mod app;
pub mod cli;
pub mod client;
pub mod election;
pub mod http_server;
pub mod messages;
pub mod plan;
pub mod planner;
pub mod poller;
pub mod registry;
pub mod replicator;
pub mod sim_api;
pub mod simulation;
pub mod state_cmd;
pub mod supervisor;
pub mod telemetry;
pub mod watcher;
pub mod web;
