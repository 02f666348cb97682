//! The rkt-like pod runtime used by the node agent: images, stage1 isolation flavours, CNI
//! networking, cgroups, logs and the api-service. The CLI (`cli`) is a thin layer over it.
//!
//! What the crate exports (see README.md, "What the room exports"): the `Runtime` façade
//! (`runtime`), the plan and status types (`pod`), manifest planning helpers (`manifest`),
//! images (`image`), the api-service and its client (`api`), the CLI (`cli`), the kvm helpers
//! the tests boot guests with (`stage1::kvm`), the log-reading types of `Runtime::read_log`
//! and the runtime's clock (`util::now_secs`). Everything else is private to the runtime.

pub mod api;
pub(crate) mod cgroups;
pub mod cli;
pub(crate) mod cni;
pub(crate) mod confine;
pub(crate) mod devices;
pub mod image;
pub mod kubenet;
pub(crate) mod logs;
pub mod manifest;
pub mod pidfd;
pub mod pod;
pub mod runtime;
pub mod stage1;
pub(crate) mod systemd;
pub mod util;

pub use logs::{LogRead, LogRecord, LogSink, Stream};
