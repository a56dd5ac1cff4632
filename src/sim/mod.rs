//! The built-in simulated Ganeti cluster (being written).
