//! Netlink for rktup, over libc only: one socket layer ([`socket`]), nf_tables and ctnetlink
//! messages ([`nft`], used by the service proxy, kubenet's hostPorts and the local provider),
//! rtnetlink links/addresses/routes ([`route`]) and named network namespaces ([`netns`]). With
//! these, nodes and pods are networked without the `ip`, `iptables`, `nft` or CNI plugin
//! binaries. Why no library: see README.md.
pub mod netns;
pub mod nft;
pub mod route;
pub mod socket;
