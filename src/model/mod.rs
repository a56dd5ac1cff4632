//! The cluster and maintenance model: plain data, no I/O.

pub mod cluster;
pub mod diagnose;
pub mod incident;
pub mod job;
pub mod job_failure;
pub mod load;
pub mod opcode;
pub mod replication;
pub mod safety;
pub mod transition;
