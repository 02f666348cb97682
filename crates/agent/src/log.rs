//! What is left of the agent's hand-made log function: the agent logs through `tracing`'s macros
//! (`info!`, `warn!`, `debug!` for request detail, `trace!` for runtime steps), and `rktup agent`
//! installs the subscriber (crates/logging) at its `--v`. `log` is an `info!` for the callers
//! not moved yet.

pub fn log(msg: &str) {
    tracing::info!("{msg}");
}
