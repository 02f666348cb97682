//! A small typed nf_tables netlink layer: message encoding ([`msg`]) and the socket ([`sock`]).
pub mod conntrack;
pub mod msg;
pub mod sock;
