//! The embedded control plane (`rktup controlplane`) for local clusters.

pub mod cli;
