//! The rkt-like pod runtime used by the node agent.

pub mod cli;
