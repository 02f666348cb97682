//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side
//! apply, after sigs.k8s.io/structured-merge-diff: a field set is a tree
//! whose keys are `f:<field>`, `k:<key fields as JSON>` for items of
//! keyed lists and `v:<value>` for set items; `.` marks the item itself.

use super::error::ApiError;
use super::patch::{merge_keys_for, strategic_merge, SET_LISTS};
use serde_json::{json, Map, Value};

type Path = Vec<String>;

/// Every leaf path of `v` (the fields a writer of `v` would own).
pub fn leaves(v: &Value) -> Vec<Path> {
    let mut out = Vec::new();
    if let Some(m) = v.as_object() {
        for (k, child) in m {
            if matches!(k.as_str(), "apiVersion" | "kind") {
                continue;
            }
            if k == "metadata" {
                if let Some(mm) = child.as_object() {
                    for (mk, mv) in mm {
                        if matches!(
                            mk.as_str(),
                            "labels" | "annotations" | "finalizers" | "ownerReferences"
                        ) {
                            let mut p = vec!["f:metadata".to_string(), format!("f:{mk}")];
                            walk(mv, mk, &mut p, &mut out);
                        }
                    }
                }
                continue;
            }
            let mut p = vec![format!("f:{k}")];
            walk(child, k, &mut p, &mut out);
        }
    }
    out
}

fn key_segment(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert((*k).to_string(), item.get(*k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn walk(v: &Value, field: &str, path: &mut Path, out: &mut Vec<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if let Some(keys) = merge_keys_for(field, items) {
                if let Some(segs) = items
                    .iter()
                    .map(|i| key_segment(i, keys))
                    .collect::<Option<Vec<_>>>()
                {
                    for (seg, item) in segs.into_iter().zip(items) {
                        path.push(seg);
                        let mut dot = path.clone();
                        dot.push(".".into());
                        out.push(dot);
                        if let Some(m) = item.as_object() {
                            for (k, child) in m {
                                path.push(format!("f:{k}"));
                                walk(child, k, path, out);
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                    return;
                }
            }
            if SET_LISTS.contains(&field) {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.push(p);
                }
                return;
            }
            out.push(path.clone());
        }
        _ => out.push(path.clone()),
    }
}

/// Builds the FieldsV1 tree of a set of leaf paths.
pub fn to_tree(paths: &[Path]) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            if !cur.get(seg.as_str()).is_some_and(Value::is_object) {
                cur[seg.as_str()] = json!({});
            }
            cur = &mut cur[seg.as_str()];
        }
    }
    root
}

/// Leaf paths of a FieldsV1 tree.
pub fn from_tree(tree: &Value) -> Vec<Path> {
    fn rec(v: &Value, path: &mut Path, out: &mut Vec<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    rec(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    rec(tree, &mut Vec::new(), &mut out);
    out
}

fn find_item<'a>(items: &'a [Value], seg: &str) -> Option<(usize, &'a Value)> {
    if let Some(k) = seg.strip_prefix("k:") {
        let want: Value = serde_json::from_str(k).ok()?;
        let want = want.as_object()?;
        items
            .iter()
            .enumerate()
            .find(|(_, i)| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)))
    } else if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        items.iter().enumerate().find(|(_, i)| **i == want)
    } else {
        None
    }
}

/// The value at a field path (`.` is the item itself).
pub fn get_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else {
            find_item(cur.as_array()?, seg)?.1
        };
    }
    Some(cur)
}

/// Removes the field at `path` (for `.`, the list item holding it).
pub fn remove_at(v: &mut Value, path: &[String]) {
    let path: Vec<&String> = path.iter().filter(|s| s.as_str() != ".").collect();
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let idx = cur
                .as_array()
                .and_then(|a| find_item(a, seg))
                .map(|(i, _)| i);
            match idx {
                Some(i) => cur.get_mut(i),
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(a) = cur.as_array_mut() {
        if let Some((i, _)) = find_item(a, last) {
            a.remove(i);
        }
    }
}

fn entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn set_entries(obj: &mut Value, mut list: Vec<Value>) {
    list.retain(|e| {
        e.get("fieldsV1")
            .is_some_and(|f| f.as_object().is_some_and(|m| !m.is_empty()))
    });
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn path_display(p: &Path) -> String {
    p.iter()
        .filter(|s| s.as_str() != ".")
        .map(|s| match s.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", s.get(2..).unwrap_or("")),
        })
        .collect()
}

/// Records an Update by `manager`: it takes ownership of every field that
/// changed from `old` (all fields on create), others lose those fields.
pub fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    api_version: &str,
    operation: &str,
) {
    if manager.is_empty() {
        return;
    }
    let mut list = old.map(entries).unwrap_or_default();
    let changed: Vec<Path> = leaves(new)
        .into_iter()
        .filter(|p| old.is_none_or(|o| get_at(o, p) != get_at(new, p)))
        .collect();
    if changed.is_empty() && old.is_some() {
        set_entries(new, list);
        return;
    }
    for e in list.iter_mut() {
        let mine = e["manager"] == manager && e["operation"] == operation;
        let mut paths = from_tree(&e["fieldsV1"]);
        if mine {
            for c in &changed {
                if !paths.contains(c) {
                    paths.push(c.clone());
                }
            }
            e["time"] = json!(super::objects::now());
        } else {
            paths.retain(|p| !changed.contains(p));
        }
        e["fieldsV1"] = to_tree(&paths);
    }
    if !list
        .iter()
        .any(|e| e["manager"] == manager && e["operation"] == operation)
    {
        list.push(json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": super::objects::now(),
            "fieldsType": "FieldsV1",
            "fieldsV1": to_tree(&changed),
        }));
    }
    set_entries(new, list);
}

/// Server-side apply of `config` by `manager` onto `live` (or onto an
/// empty object when creating). Returns the merged object with updated
/// managedFields, or a 409 listing the conflicting fields.
///
/// `defaults` fills in the kind's defaults: a field conflicts only when the applied object,
/// defaulted as it will be stored, changes its value (a list the config writes without the
/// defaults the server added is not a change).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    defaults: &dyn Fn(&mut Value),
) -> Result<Value, ApiError> {
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut list = entries(&base);
    let cfg_paths = leaves(config);
    // The merge once; its defaulted copy is what conflicts are judged on.
    let mut merged = strategic_merge(&base, config);
    let mut outcome = merged.clone();
    defaults(&mut outcome);
    let mut conflicts = Vec::new();
    for e in list.iter_mut() {
        if e["manager"] == manager && e["operation"] == "Apply" {
            continue;
        }
        let mut paths = from_tree(&e["fieldsV1"]);
        let before = paths.len();
        paths.retain(|p| {
            // A list item's own entry (`.`) says it exists, not what it holds: two managers
            // that both list it share it (its fields are compared one by one).
            let is_item = p.last().is_some_and(|l| l == ".");
            let contested =
                !is_item && cfg_paths.contains(p) && get_at(&base, p) != get_at(&outcome, p);
            if contested && !force {
                conflicts.push((
                    e["manager"].as_str().unwrap_or("").to_string(),
                    e["apiVersion"].as_str().unwrap_or("").to_string(),
                    p.clone(),
                ));
            }
            !(contested && force)
        });
        if paths.len() != before {
            e["fieldsV1"] = to_tree(&paths);
        }
    }
    if !conflicts.is_empty() {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, av, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {av}"), "field": path_display(p)}))
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, av, p)| format!("- conflict with \"{m}\" using {av}: {}", path_display(p)))
            .collect();
        let n = conflicts.len();
        let mut err = ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                lines.join("\n").trim_start_matches("- ")
            ),
        );
        err.details = Some(json!({"causes": causes}));
        return Err(err);
    }
    let previously: Vec<Path> = list
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == "Apply")
        .map(|e| from_tree(&e["fieldsV1"]))
        .unwrap_or_default();
    let others: Vec<Path> = list
        .iter()
        .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
        .flat_map(|e| from_tree(&e["fieldsV1"]))
        .collect();
    for p in previously {
        if !cfg_paths.contains(&p) && !others.contains(&p) {
            remove_at(&mut merged, &p);
        }
    }
    let fields_v1 = to_tree(&cfg_paths);
    // The same fields applied again keep their entry's time, so an apply that changes nothing
    // leaves the object as it was and is not written (kube-apiserver skips such writes too).
    let time = list
        .iter()
        .find(|e| {
            e["manager"] == manager
                && e["operation"] == "Apply"
                && e["apiVersion"] == api_version
                && e["fieldsV1"] == fields_v1
        })
        .and_then(|e| e.get("time").cloned())
        .unwrap_or_else(|| json!(super::objects::now()));
    list.retain(|e| !(e["manager"] == manager && e["operation"] == "Apply"));
    list.insert(
        0,
        json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1,
        }),
    );
    set_entries(&mut merged, list);
    Ok(merged)
}

fn quantity_present(c: &Value, kind: &str, res: &str) -> bool {
    c.pointer(&format!("/resources/{kind}/{res}")).is_some()
}

/// The pod's QoS class (`GetPodQOS`, simplified to cpu/memory).
pub fn qos_class(pod: &Value) -> &'static str {
    let cs: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let any = cs.iter().any(|c| {
        ["cpu", "memory"]
            .iter()
            .any(|r| quantity_present(c, "requests", r) || quantity_present(c, "limits", r))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = c.pointer(&format!("/resources/limits/{r}"));
            let q = c.pointer(&format!("/resources/requests/{r}"));
            l.is_some() && (q.is_none() || q == l)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fieldsets_use_keys_for_keyed_lists() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let tree = to_tree(&leaves(&d));
        assert_eq!(tree["f:metadata"]["f:labels"]["f:x"], json!({}));
        assert_eq!(
            tree["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"],
            json!({})
        );
        assert_eq!(from_tree(&tree).len(), leaves(&d).len());
    }

    #[test]
    fn apply_conflicts_and_force() {
        let live = json!({"metadata": {"name": "a", "managedFields": [{"manager": "other", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}]}, "data": {"k": "1"}});
        let cfg = json!({"metadata": {"name": "a"}, "data": {"k": "2"}});
        let err = apply(Some(&live), &cfg, "me", false, "v1", &|_| {}).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"other\""),
            "{}",
            err.message
        );
        let ok = apply(Some(&live), &cfg, "me", true, "v1", &|_| {}).unwrap();
        assert_eq!(ok["data"]["k"], "2");
        let mf = ok["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0]["manager"], "me");
        // Dropping a field from the config removes it.
        let cfg2 = json!({"metadata": {"name": "a"}, "data": {"j": "3"}});
        let again = apply(Some(&ok), &cfg2, "me", false, "v1", &|_| {}).unwrap();
        assert_eq!(again["data"], json!({"j": "3"}));
    }
}
