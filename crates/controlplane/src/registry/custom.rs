//! Resources served from CustomResourceDefinitions: one [`ResourceDef`] per
//! served version of every CRD whose names are accepted, rebuilt from the
//! stored CRDs after each CRD write (so a custom resource can be created
//! as soon as its CRD's create returns, as `kubectl apply -f crd.yaml -f
//! cr.yaml` expects).
//!
//! Handlers, watches and controllers hold `&'static ResourceDef`s, as they
//! do for built-in kinds. A custom definition is therefore interned for the
//! life of the process: the same CRD spec always yields the same definition,
//! and only a changed spec allocates a new one (a few KB per distinct CRD
//! revision), so `kubectl apply` of an unchanged CRD costs nothing.

use super::{ResourceDef, Typed};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// What a custom resource's definition says beyond its names.
#[derive(Debug)]
pub struct CustomDef {
    /// The CRD's name (`crontabs.stable.example.com`).
    pub crd_name: String,
    /// The version objects are stored at.
    pub storage_version: String,
    /// This version's `schema.openAPIV3Schema`.
    pub schema: Option<Value>,
    /// This version's structural schema (pruning, defaults, validation); none
    /// when the CRD has none (stored before validation refused that).
    pub structural: Option<rktup_apiextensions::Structural>,
    /// `spec.preserveUnknownFields` (v1 CRDs: false).
    pub preserve_unknown_fields: bool,
    /// The scale subresource's paths, if it has one.
    pub scale: Option<ScalePaths>,
    /// `additionalPrinterColumns` of this version, their JSONPaths parsed.
    pub printer_columns: Vec<(Value, Option<rktup_apiextensions::JsonPath>)>,
    /// `spec.names.listKind`.
    pub list_kind: String,
}

/// `subresources.scale` of a CRD version.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    /// `.spec.replicas`
    pub spec_replicas: String,
    /// `.status.replicas`
    pub status_replicas: String,
    /// `.status.selector`, if set.
    pub label_selector: Option<String>,
}

/// The custom resources of one control plane.
#[derive(Default)]
pub struct CustomResources {
    served: RwLock<Arc<Vec<&'static ResourceDef>>>,
    /// Interned definitions by their source (group, version, names, spec).
    interned: Mutex<HashMap<String, &'static ResourceDef>>,
}

impl CustomResources {
    /// The definitions served now.
    pub fn snapshot(&self) -> Arc<Vec<&'static ResourceDef>> {
        match self.served.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Rebuilds the served set from the stored CRDs. A CRD is served while
    /// its names are not refused (`NamesAccepted` not False); a terminating
    /// one is still served, so its objects can be listed and deleted.
    pub fn rebuild<'a>(&self, crds: impl IntoIterator<Item = &'a Value>) {
        let mut out = Vec::new();
        let mut interned = match self.interned.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for crd in crds {
            if condition(crd, "NamesAccepted") == Some("False") {
                continue;
            }
            for (key, def) in definitions(crd) {
                let rd = *interned
                    .entry(key)
                    .or_insert_with(|| Box::leak(Box::new(def())));
                out.push(rd);
            }
        }
        let mut served = match self.served.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *served = Arc::new(out);
    }
}

/// A condition's status on an object.
pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))?
        .get("status")?
        .as_str()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: Option<&Value>) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    Box::leak(items.into_boxed_slice())
}

/// The served versions of a CRD, each as an intern key and a constructor.
#[allow(clippy::type_complexity)]
fn definitions(crd: &Value) -> Vec<(String, Box<dyn FnOnce() -> ResourceDef + '_>)> {
    let spec = &crd["spec"];
    fn str_at<'v>(v: &'v Value, p: &str) -> &'v str {
        v.pointer(p).and_then(Value::as_str).unwrap_or("")
    }
    let group = str_at(spec, "/group");
    let names = &spec["names"];
    if group.is_empty() || str_at(names, "/plural").is_empty() || str_at(names, "/kind").is_empty()
    {
        return Vec::new();
    }
    let versions: &[Value] = spec["versions"].as_array().map_or(&[], Vec::as_slice);
    let storage = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| str_at(v, "/name").to_string())
        .unwrap_or_default();
    let crd_name = str_at(crd, "/metadata/name").to_string();
    let mut out: Vec<(String, Box<dyn FnOnce() -> ResourceDef + '_>)> = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = str_at(v, "/name").to_string();
        if version.is_empty() {
            continue;
        }
        // What identifies the spec the definition is built from, so an unchanged CRD re-uses
        // it: its uid and generation (bumped by every spec change; not by status writes, which
        // would otherwise re-serialise every schema), else the spec itself.
        let uid = str_at(crd, "/metadata/uid");
        let key = match crd.pointer("/metadata/generation").and_then(Value::as_i64) {
            Some(generation) if !uid.is_empty() => format!("{uid}/{generation}/{version}"),
            _ => serde_json::json!([crd_name, storage, spec, version]).to_string(),
        };
        let (crd_name, storage) = (crd_name.clone(), storage.clone());
        out.push((
            key,
            Box::new(move || build(spec, v, &version, crd_name, storage)),
        ));
    }
    out
}

fn build(spec: &Value, v: &Value, version: &str, crd_name: String, storage: String) -> ResourceDef {
    let names = &spec["names"];
    let s = |p: &str| names.get(p).and_then(Value::as_str).unwrap_or("");
    let kind = s("kind");
    let list_kind = match s("listKind") {
        "" => format!("{kind}List"),
        l => l.to_string(),
    };
    let subs = &v["subresources"];
    let mut subresources: Vec<&'static str> = Vec::new();
    if subs.get("status").is_some_and(|x| !x.is_null()) {
        subresources.push("status");
    }
    let scale = subs.get("scale").filter(|x| x.is_object()).map(|sc| {
        let p = |k: &str| sc.get(k).and_then(Value::as_str).map(String::from);
        ScalePaths {
            spec_replicas: p("specReplicasPath").unwrap_or_default(),
            status_replicas: p("statusReplicasPath").unwrap_or_default(),
            label_selector: p("labelSelectorPath"),
        }
    });
    if scale.is_some() {
        subresources.push("scale");
    }
    let schema = v.pointer("/schema/openAPIV3Schema").cloned();
    let structural = schema
        .as_ref()
        .and_then(|s| rktup_apiextensions::Structural::from_schema(s).ok());
    let custom = CustomDef {
        crd_name,
        storage_version: storage,
        schema,
        structural,
        preserve_unknown_fields: spec.get("preserveUnknownFields").and_then(Value::as_bool)
            == Some(true),
        scale,
        printer_columns: v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let path = c["jsonPath"].as_str().unwrap_or("");
                (c.clone(), rktup_apiextensions::JsonPath::parse(path).ok())
            })
            .collect(),
        list_kind,
    };
    let singular = match s("singular") {
        "" => kind.to_ascii_lowercase(),
        x => x.to_string(),
    };
    ResourceDef {
        group: leak(spec["group"].as_str().unwrap_or("")),
        version: leak(version),
        kind: leak(kind),
        plural: leak(s("plural")),
        singular: leak(&singular),
        namespaced: spec["scope"].as_str() != Some("Cluster"),
        short_names: leak_list(names.get("shortNames")),
        categories: leak_list(names.get("categories")),
        subresources: Box::leak(subresources.into_boxed_slice()),
        typed: Typed::untyped(),
        custom: Some(Box::leak(Box::new(custom))),
        conversion: None,
    }
}

/// Kubernetes' version priority (k8s.io/apimachinery/pkg/version
/// CompareKubeAwareVersionStrings): GA before beta before alpha, higher
/// major then higher minor first; names not of that form last,
/// alphabetically.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        if major == 0 {
            return None;
        }
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 3, 0));
        }
        let (stage, n) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        let minor: u64 = n.parse().ok()?;
        (minor > 0).then_some((major, stage, minor))
    }
    match (parse(a), parse(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_aware_version_order() {
        let mut v = vec![
            "v1alpha1",
            "foo",
            "v1",
            "v2beta1",
            "v11alpha2",
            "v1beta2",
            "v2",
            "bar",
            "v1beta1",
            "v12alpha1",
        ];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v2beta1",
                "v1beta2",
                "v1beta1",
                "v12alpha1",
                "v11alpha2",
                "v1alpha1",
                "bar",
                "foo"
            ]
        );
    }
}
