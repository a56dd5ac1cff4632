//! The built-in simulated cluster (`maintd sim`): served over a Luxi socket and an HTTP
//! control API with per-node monitoring endpoints.
//!
//! | file | role |
//! | --- | --- |
//! | [`serve`] | starts the Luxi socket and the HTTP server |
//! | [`api`] | the control API and the nodes' monitoring endpoints |

pub mod api;
pub mod command;
pub mod serve;
