//! A small typed nf_tables netlink layer: message encoding ([`msg`]), the socket ([`sock`]),
//! ctnetlink's stale-flow cleanup ([`conntrack`]) and the match/action fragments rules are
//! written with ([`expr`]).
pub mod conntrack;
pub mod expr;
pub mod msg;
pub mod sock;
