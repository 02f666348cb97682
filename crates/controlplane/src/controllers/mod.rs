//! In-process controllers.

use crate::api::objects::Core;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub fn spawn_all(
    _tasks: &mut JoinSet<()>,
    _core: Arc<Core>,
    _stop: watch::Receiver<bool>,
    _grace: std::time::Duration,
) {
}
