//! The Kubernetes API layer: HTTP handlers over the object layer. The map
//! of its modules is in the crate's README ("The api/ modules").

pub mod admission;
pub mod aggregator;
pub mod auth;
pub(crate) mod convert;
pub(crate) mod custom;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod fields;
mod handlers;
mod kinds;
mod kubelet;
pub mod objects;
pub mod openapi;
mod openapi_custom;
pub mod openapi_v2;
pub mod patch;
pub mod protobuf;
mod request;
mod response;
mod routes;
pub mod satoken;
pub mod selector;
pub mod server;
pub mod service_ips;
pub mod table;
mod table_kinds;
mod watch;

/// TLS client config for the API server's calls to kubelets; serving certificates are
/// verified against `kubelet_ca` when given (`--kubelet-certificate-authority`), as the
/// serving certificates of the nodes the calls are for.
pub fn server_kubelet_config(
    cert_pem: &str,
    key_pem: &str,
    kubelet_ca: Option<&str>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, rktup_tls::TlsError> {
    kubelet::client_config(cert_pem, key_pem, kubelet_ca)
}

/// A TLS client config that skips server verification (benchmarks probe
/// /readyz while the server is still generating its CA): kube-apiserver's
/// calls to kubelets without `--kubelet-certificate-authority`.
pub fn server_kubelet_config_insecure() -> std::sync::Arc<rustls::ClientConfig> {
    rktup_tls::ClientTls::insecure_config(rktup_tls::Insecure::NoKubeletCa)
}
