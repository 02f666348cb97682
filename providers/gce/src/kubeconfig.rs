//! The `rktup-gce-<name>` kubeconfig context, through the shared helper
//! (`rktup_provider::kubeconfig`): KUBECONFIG's first file or ~/.kube/config, other contexts kept.

use crate::client::GceError;
use crate::Gce;
use rktup_provider::kubeconfig::{merge_context, remove_context};
use rktup_provider::ClusterProvider;
use rktup_render::Pki;

pub fn context_name(gce: &Gce) -> String {
    format!("rktup-gce-{}", gce.settings().name)
}

/// Merges the context into `path` (`--kubeconfig`), else the provider's, else the default file.
pub fn write(
    gce: &Gce,
    pki: &Pki,
    ip: &str,
    path: Option<&std::path::Path>,
) -> Result<(), GceError> {
    merge_context(
        path.or(gce.kubeconfig.as_deref()),
        &context_name(gce),
        &format!("https://{ip}"),
        pki.get("ca.crt"),
        pki.get("admin.crt"),
        pki.get("admin.key"),
    )
    .map(|_| ())
    .map_err(|e| GceError::other("write the kubeconfig context", e.to_string()))
}

pub fn remove(gce: &Gce) -> Result<(), GceError> {
    remove_context(gce.kubeconfig.as_deref(), &context_name(gce))
        .map(|_| ())
        .map_err(|e| GceError::other("remove the kubeconfig context", e.to_string()))
}
