//! # maintd: the domain of the Ganeti maintenance daemon
//!
//! Everything here is plain Rust with no actor code, so it can be tested without an actor
//! system. The actix shells, the HTTP API and the `maintd` binary live in the
//! `maintd-actors` package (`actors/`).
//!
//! # Layout
//!
//! - [`agent`]: the node agent (`maintd agent`): the self-diagnose collector and repair
//!   command execution on each node, for Ganeti 3.x.
//! - [`model`]: the cluster snapshot, diagnose reports, jobs, opcodes and the incident
//!   lifecycle ([`model::incident`]).
//! - [`planner`]: turns open incidents and a cluster snapshot into the jobs of one round.
//! - [`backend`]: how maintd talks to a cluster: Luxi for jobs and configuration, HTTP for
//!   diagnose reports, and in-process adapters for the simulator.
//! - [`daemon`]: the daemon's decisions: the round cycle, job recovery and polling,
//!   mastership.
//! - [`sim`]: the built-in simulated Ganeti cluster, driven by the time its caller passes in.
//! - [`auth`]: who may use maintd's API, from Ganeti's RAPI users file.
//! - [`signing`]: confd-style HMAC signing with the cluster's `hmac.key`.
//! - [`notify`]: webhook notifications of incident transitions: payload, signature,
//!   the persisted queue and the retry policy.
//! - [`store`]: crash-safe persistence of the daemon's state.
//! - [`metrics`]: the Prometheus metrics of `GET /metrics`.
//! - [`config`]: settings, with `config/default.toml` as the documented reference.
//! - [`clock`]: wall-clock time that follows the runtime's (possibly virtual) clock.
//! - [`backoff`]: capped exponential backoff for restarts and retries.
//! - [`limits`]: the process's open-file limit.
//! - [`ratelimit`]: per-peer rate limiting of log lines.

#![warn(missing_docs)]

pub mod agent;
pub mod auth;
pub mod backend;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod htools;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod planner;
pub mod protocol;
pub mod ratelimit;
pub mod signing;
pub mod sim;
pub mod store;
