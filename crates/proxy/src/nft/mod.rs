//! The nf_tables netlink layer the proxy programs the kernel with. It lives in `rktup-netlink`
//! (shared with the runtime's in-process kubenet and the local provider); re-exported here so
//! the proxy's paths stay `nft::msg`, `nft::sock`, `nft::conntrack`.
pub use rktup_netlink::nft::{conntrack, msg, sock};
