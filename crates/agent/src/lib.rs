//! The node agent (`rktup agent`): the kubelet half of what a rktnetes node ran, for static pods.
//! It watches `--pod-manifest-path`, drives the runtime (`rktup-runtime`) to run, replace and
//! remove pods, re-adopts pods left running by a previous agent, and serves the rkt api-service.
//! The API-server half (node registration, pod watch, status) is `kubelet`. Both pod sources
//! (static manifests, the API watch) hand their pods to one driver, the pod workers
//! (`workers`), which move them through one typed lifecycle (`lifecycle`); they log through
//! `tracing` (the subscriber is `rktup`'s, crates/logging).
//! Module map: crates/agent/README.md.

pub mod cli;
pub mod kubelet;
pub mod lifecycle;
pub mod sync;
pub mod workers;
