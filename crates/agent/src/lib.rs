//! The node agent (`rktup agent`): the kubelet half of what a rktnetes node ran.
//! The runtime half (images, pods, stage1, CNI) lives in `rktup-runtime`.

pub mod cli;
