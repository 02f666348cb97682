//! The rkt-like pod runtime used by the node agent: images, stage1 isolation flavours, CNI
//! networking, cgroups, logs and the api-service. The CLI (`cli`) is a thin layer over it.

pub mod api;
pub mod cgroups;
pub mod cli;
pub mod cni;
pub mod confine;
pub mod devices;
pub mod image;
pub mod logs;
pub mod manifest;
pub mod pod;
pub mod runtime;
pub mod stage1;
pub mod util;
