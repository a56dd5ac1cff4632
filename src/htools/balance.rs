//! Balancing (§5–§8).
