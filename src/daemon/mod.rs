//! The decisions of the daemon (`maintd daemon`, on the master), in plain Rust. The actor
//! shells of the `maintd-actors` package hold the timers and mailboxes, perform the side
//! effects these modules ask for, and log what they answer.
//!
//! | module | decides for the actor |
//! | --- | --- |
//! | [`cycle`] | `RoundPlanner`: one step of the round cycle, and when the next round is due |
//! | [`watch`] | `JobWatcher`: recovery after a restart, submission outcomes, status polls |
//! | [`mastership`] | `MasterElection`: whether this node is master, and what follows |
//! | [`polling`] | `NodePoller`: each node's place in the poll interval, and its next slot |

pub mod cycle;
pub mod mastership;
pub mod polling;
pub mod watch;
