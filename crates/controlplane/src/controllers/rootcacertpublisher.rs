//! kube-controller-manager's root-ca-cert-publisher: a `kube-root-ca.crt` ConfigMap holding the
//! cluster CA (`ca.crt`) in every active namespace, put back when deleted or changed. Pods read
//! it through the `kube-api-access-*` volume the ServiceAccount admission adds, to verify the API
//! server at `kubernetes.default.svc`.

use super::{deleting, list, rd, Settings};
use crate::api::objects::{meta_str, Core, WriteCtx};
use serde_json::{json, Value};

/// The ConfigMap's name, as upstream's.
pub const NAME: &str = "kube-root-ca.crt";

/// Upstream's description annotation, word for word.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// A change to a `kube-root-ca.crt` ConfigMap (store key `/registry/core/configmaps/NS/NAME`).
pub(super) fn is_root_ca(ev: &crate::store::Event) -> bool {
    ev.key.starts_with("/registry/core/configmaps/") && ev.key.rsplit('/').next() == Some(NAME)
}

pub fn pass(core: &Core, s: &Settings) {
    let Some(ca) = s.root_ca_pem.as_deref() else {
        return;
    };
    let cms = rd("", "configmaps");
    let want = |existing: Option<&Value>| -> Value {
        let mut cm = existing
            .cloned()
            .unwrap_or_else(|| json!({"metadata": {"name": NAME}}));
        cm["data"] = json!({"ca.crt": ca});
        cm["metadata"]["annotations"]["kubernetes.io/description"] = json!(DESCRIPTION);
        cm
    };
    for ns in list(core, "", "namespaces", None) {
        if deleting(&ns) {
            continue;
        }
        let name = meta_str(&ns, "name");
        let mut ctx = WriteCtx::controller("root-ca-cert-publisher");
        match core.get_stored(cms, Some(name), NAME) {
            None => {
                let _ = core.create(cms, Some(name), want(None), &mut ctx);
            }
            Some(cm) => {
                let current = &cm.object;
                let annotated = current
                    .pointer("/metadata/annotations/kubernetes.io~1description")
                    .and_then(Value::as_str)
                    == Some(DESCRIPTION);
                if current.get("data") != Some(&json!({"ca.crt": ca})) || !annotated {
                    let _ = core.update(cms, Some(name), NAME, want(Some(current)), None, &mut ctx);
                }
            }
        }
    }
}
