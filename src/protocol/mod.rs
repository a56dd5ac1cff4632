//! Wire protocols on their own, below the backends that use them and the simulator that
//! serves them.

pub mod luxi;
