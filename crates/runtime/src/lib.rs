//! The rkt-like pod runtime used by the node agent: images, stage1 isolation flavours, CNI
//! networking, cgroups, logs and the api-service. The CLI (`cli`) is a thin layer over it.

pub mod cli;
pub mod image;
pub mod util;
