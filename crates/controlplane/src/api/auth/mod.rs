//! Who a request comes from ([`authn`]) and what it may do ([`authz`]).
//! Decisions only, no responses: `server.rs` authenticates, the handlers
//! authorize (through `request::Call::authorize`).

pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod bootstrap_token;
pub mod node_graph;
pub mod rbac;

pub use authn::{user_from_cert, TokenStore, User};
pub use authz::{authorize, node_token_request, Attributes, TokenDenied};
pub use rbac::Rbac;
