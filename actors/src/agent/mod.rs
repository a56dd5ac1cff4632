//! The node agent (`maintd agent`, on every node): serves the node's signed diagnose
//! report, runs whitelisted repair commands on signed request, and keeps the copy of the
//! daemon's state.
//!
//! | file | actor or role |
//! | --- | --- |
//! | [`app`] | wires the agent's graph |
//! | [`diagnose_collector`] | `DiagnoseCollector`: runs the diagnose command, keeps the latest report |
//! | [`repair_executor`] | `RepairExecutor`: runs repair commands one at a time per node |
//! | [`api`] | `AgentWeb`: the agent's HTTP API on port 1817 |

pub mod api;
pub mod app;
pub mod command;
pub mod diagnose_collector;
pub mod repair_executor;
