//! The node contract: what rktup tells a node's agent, typed once.
//!
//! [`AgentConfig`] holds every `rktup agent` flag. The agent parses its command line straight
//! into it (it derives `clap::Args`); crates/render (a cloud node's `kubelet.service`) and
//! providers/local (each local node's agent process) build one and call
//! [`AgentConfig::to_args`]. [`Stage1`] and [`NetworkMode`] are the only parsers of stage1 and
//! network names in rktup; crates/config and crates/runtime use these types.
//!
//! No IO here: the environment is read by clap (`env = ...`, shown in `--help`) and by
//! [`AgentConfig::with_env_fallbacks`], which is handed the lookup.

mod agent;
mod names;
mod node;

pub use agent::{
    AgentConfig, DEFAULT_MANIFESTS, DEFAULT_ROOT_DIR, ENV_LOG_LEVEL, ENV_STAGE1, ENV_STAGE1_LOCAL,
};
pub use names::{NetworkMode, Stage1, UnknownNetworkMode, UnknownStage1, STAGE1_NAMES};
pub use node::{
    check_label_value, check_mirror_endpoint, check_qualified_name, check_registry_host,
    HostPathMount, InvalidNodeValue, NodeLabel, RegistryMirror, Taint, TaintEffect, TAINT_FORMAT,
};
