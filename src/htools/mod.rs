//! # htools: Ganeti's cluster-balancing algorithms, at parity with hbal/hail 3.0.2
//!
//! A port of the decisions of Ganeti's htools (the **R3** behaviour of
//! `shared/reference/ALGORITHMS.md`), built so that every step, score and tie-break
//! equals Debian's `hbal` 3.0.2, but evaluated incrementally and therefore orders of
//! magnitude faster.
//!
//! # Layout
//!
//! - [`model`]: the cluster (groups, nodes, instances, policies, tags with meaning), the
//!   derived node state of §1.6 and the four node primitives of §2, plus the moves of §4.
//! - [`text`]: the htools text backend (`hbal -t FILE`), read and written exactly.
//! - [`score`]: the cluster score of §3 in hbal's summation order.
//! - [`balance`]: one balancing step (§5), iteration (§6.1), job sets (§7) and
//!   opcodes (§8).

pub mod balance;
pub mod evacuate;
pub mod generate;
pub mod harep;
pub mod load;
pub mod model;
pub mod score;
pub mod snapshot;
pub mod text;
