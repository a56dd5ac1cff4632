//! # htools: Ganeti's cluster-balancing algorithms, at parity with hbal/hail 3.0.2
//!
//! A port of the decisions of Ganeti's htools (`src/Ganeti/HTools` in release 3.0.2),
//! built so that every step, score and tie-break equals Debian's `hbal` 3.0.2, but
//! evaluated incrementally and therefore orders of magnitude faster.
//!
//! # Layout
//!
//! - [`model`]: the cluster (groups, nodes, instances, policies, tags with meaning), the
//!   derived node state of htools' `Node` and its primitives (`addPri`, `removePri`,
//!   `addSec`, `removeSec`), plus the moves (`applyMoveEx`).
//! - [`text`]: the htools text backend (`hbal -t FILE`), read and written exactly.
//! - [`score`]: the cluster score (`compCV`) in hbal's summation order.
//! - [`balance`]: one balancing step (`tryBalance`), iteration (hbal's `iterateDepth`),
//!   job sets (`splitJobs`) and opcodes (`iMoveToJob`).
//! - [`helpers`]: the spinning helper threads that run a balancing step's phases.

pub mod balance;
pub mod evacuate;
pub mod generate;
pub mod harep;
// The one module that may use `unsafe`: see its documentation.
#[allow(unsafe_code)]
pub mod helpers;
pub mod load;
pub mod model;
pub mod score;
pub mod snapshot;
pub mod text;
