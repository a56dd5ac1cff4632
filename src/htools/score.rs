//! Cluster score (§3).
