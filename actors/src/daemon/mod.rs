//! The daemon (`maintd daemon`, on the master): the actor graph of the crate's diagram.
//!
//! | file | actor or role |
//! | --- | --- |
//! | [`app`] | wires the graph from the settings (the one place that does) |
//! | [`election`] | `MasterElection`: the gate; takes over the state, starts the supervisor while master |
//! | [`supervisor`] | `ClusterSupervisor`: owns and restarts every child below |
//! | [`poller`] | `NodePoller`: one per node, polls its diagnose report |
//! | [`registry`] | `EventRegistry`: owns the maintenance state, saves every change |
//! | [`state_replicator`] | `StateReplicator`: copies each save to the master candidates |
//! | [`round_planner`] | `RoundPlanner`: plans rounds, hands their jobs to the watcher |
//! | [`job_watcher`] | `JobWatcher`: submits jobs and follows them in Ganeti's queue |
//! | [`notifier`] | `Notifier`: posts each saved incident transition to the webhook |
//! | [`api`] | `WebActor`: the HTTP API on port 1816 |
//! | [`access`] | who may use the API: users, Host and Origin checks, failed-login brake |
//! | [`web_ui`] | the web page at `/ui/` (handlers of the API's app, not an actor) |
//! | [`messages`] | every message between them |

pub mod access;
pub mod api;
pub mod app;
pub mod command;
pub mod election;
pub mod job_watcher;
pub mod messages;
pub mod notifier;
pub mod poller;
pub mod registry;
pub mod round_planner;
pub mod state_replicator;
pub mod supervisor;
pub mod web_ui;
