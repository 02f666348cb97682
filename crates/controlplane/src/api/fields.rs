//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side
//! apply, after sigs.k8s.io/structured-merge-diff: a field set is a tree
//! whose keys are `f:<field>`, `k:<key fields as JSON>` for items of
//! keyed lists and `v:<value>` for set items; `.` marks the item itself.
//!
//! How a list or map merges and is owned is a `Shapes`: built-in kinds go by
//! field name (k8s.io/api's patch tags), custom resources by their CRD's
//! structural schema at the field's path (`x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`), as upstream's
//! structured-merge-diff does with the CRD's schema.

use super::error::ApiError;
use super::patch::{merge_keys_for, strategic_merge, SET_LISTS};
use crate::registry::ResourceDef;
use rktup_apiextensions::Structural;
use serde_json::{json, Map, Value};

type Path = Vec<String>;

/// How the items of a list are told apart (structured-merge-diff's list
/// element relationships).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Owned and replaced whole.
    Atomic,
    /// Items are scalars, each owned alone (`v:<value>`).
    Set,
    /// Items are objects identified by these fields (`k:{...}`).
    Map(Vec<String>),
}

/// Where the list and map semantics of an object's fields come from.
#[derive(Debug, Clone, Copy)]
pub enum Shapes<'a> {
    /// Built-in kinds: by field name, from the `patchMergeKey`/`patchStrategy`
    /// tags of k8s.io/api (what strategic merge patch uses too).
    Builtin,
    /// A custom resource: by its structural schema, path by path; without a
    /// schema every list is atomic and every map granular (upstream's deduced type).
    Schema(Option<&'a Structural>),
}

impl<'a> Shapes<'a> {
    /// The shapes of a resource's objects.
    pub fn of(rd: &'a ResourceDef) -> Shapes<'a> {
        match rd.custom {
            Some(c) => Shapes::Schema(c.structural.as_ref()),
            None => Shapes::Builtin,
        }
    }

    /// The field names along a FieldsV1 path (list items are transparent,
    /// as in `Structural::list_type`).
    fn names(path: &[String]) -> Vec<&str> {
        path.iter().filter_map(|s| s.strip_prefix("f:")).collect()
    }

    /// The list semantics of the list at `path` (whose last segment is its field).
    pub fn list_kind(&self, path: &[String], items: &[Value]) -> ListKind {
        let names = Self::names(path);
        match self {
            // A custom resource's metadata is ObjectMeta, merged as for every kind.
            Shapes::Schema(Some(s)) if names.first() != Some(&"metadata") => {
                match s.list_type(&names) {
                    Some((t, keys)) if t == "map" && !keys.is_empty() => ListKind::Map(keys),
                    Some((t, _)) if t == "set" => ListKind::Set,
                    _ => ListKind::Atomic,
                }
            }
            Shapes::Schema(None) if names.first() != Some(&"metadata") => ListKind::Atomic,
            _ => {
                let field = names.last().copied().unwrap_or("");
                if let Some(keys) = merge_keys_for(field, items) {
                    ListKind::Map(keys.iter().map(|k| (*k).to_string()).collect())
                } else if SET_LISTS.contains(&field) {
                    ListKind::Set
                } else {
                    ListKind::Atomic
                }
            }
        }
    }

    /// Whether the map or struct at `path` is `x-kubernetes-map-type: atomic`.
    pub fn atomic_map(&self, path: &[String]) -> bool {
        match self {
            Shapes::Schema(Some(s)) => {
                let names = Self::names(path);
                names.first() != Some(&"metadata")
                    && s.map_type(&names).is_some_and(|t| t == "atomic")
            }
            _ => false,
        }
    }
}

/// Every leaf path of `v` (the fields a writer of `v` would own).
pub fn leaves(v: &Value, shapes: Shapes<'_>) -> Vec<Path> {
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
                            walk(mv, &mut p, &mut out, shapes);
                        }
                    }
                }
                continue;
            }
            let mut p = vec![format!("f:{k}")];
            walk(child, &mut p, &mut out, shapes);
        }
    }
    out
}

/// `k:{...}` of a keyed item, its key fields in name order (upstream sorts them). Built-in
/// kinds need every key; a custom resource's item is keyed by the keys it has (as
/// structured-merge-diff does now), but by one at least.
fn key_segment(
    item: &Value,
    keys: &[String],
    shapes: Shapes<'_>,
    path: &[String],
) -> Option<String> {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut m = Map::new();
    for k in sorted {
        match item.get(k) {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            // A missing key with a default in the schema is keyed by that default (the
            // object is stored defaulted, so the next apply finds the same item).
            None => match shapes {
                Shapes::Schema(s) => {
                    if let Some(d) = s.and_then(|s| key_default(s.schema(), path, k)) {
                        m.insert(k.clone(), d);
                    }
                }
                Shapes::Builtin => return None,
            },
        }
    }
    (!m.is_empty()).then(|| format!("k:{}", Value::Object(m)))
}

/// The schema default of the key field `key` of the items of the list at `path`, walked
/// as `Structural::list_type` walks it (properties, additionalProperties, array items).
fn key_default(schema: &Value, path: &[String], key: &str) -> Option<Value> {
    fn items(mut n: &Value) -> Option<&Value> {
        while n.get("type").and_then(Value::as_str) == Some("array") {
            n = n.get("items")?;
        }
        Some(n)
    }
    let mut n = schema;
    for f in path.iter().filter_map(|s| s.strip_prefix("f:")) {
        n = items(n)?;
        n = n
            .get("properties")
            .and_then(|p| p.get(f))
            .or_else(|| n.get("additionalProperties").filter(|a| a.is_object()))?;
    }
    n.get("items")?
        .get("properties")?
        .get(key)?
        .get("default")
        .filter(|d| !d.is_null())
        .cloned()
}

/// What structured-merge-diff refuses in an applied custom resource's lists (its typed
/// conversion): keyed items without any key, set items that are not scalars, the same
/// key or value twice; `(path, message)` as its ValidationErrors say them.
fn list_errors(v: &Value, path: &mut Path, out: &mut Vec<(String, String)>, shapes: Shapes<'_>) {
    match v {
        Value::Object(_) if shapes.atomic_map(path) => {}
        Value::Object(m) => {
            for (k, child) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                path.push(format!("f:{k}"));
                list_errors(child, path, out, shapes);
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = shapes.list_kind(path, items);
            if kind == ListKind::Atomic {
                return;
            }
            let mut seen: Vec<String> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let refused = match (&kind, item) {
                    (ListKind::Map(_), Value::Null) => {
                        Some("associative list with keys may not have a null element".to_string())
                    }
                    (ListKind::Map(_), Value::Object(_)) => None,
                    (ListKind::Map(_), _) => {
                        Some("associative list with keys may not have non-map elements".to_string())
                    }
                    (ListKind::Set, Value::Object(_)) => Some(
                        "associative list without keys has an element that's a map type"
                            .to_string(),
                    ),
                    (ListKind::Set, Value::Array(_)) => {
                        Some("not supported: associative list with lists as elements".to_string())
                    }
                    (ListKind::Set, Value::Null) => Some(
                        "associative list without keys has an element that's an explicit null"
                            .to_string(),
                    ),
                    _ => None,
                };
                if let Some(msg) = refused {
                    out.push((path_display(path), format!("element {i}: {msg}")));
                    continue;
                }
                let Some(id) = item_id(item, &kind, shapes, path) else {
                    // Go's %q of a []string: `["name" "port"]`.
                    let keys = match &kind {
                        ListKind::Map(k) => k.iter().map(|k| format!("{k:?}")).collect(),
                        _ => Vec::new(),
                    }
                    .join(" ");
                    out.push((
                        path_display(path),
                        format!("element {i}: associative list with keys has an element that omits all key fields [{keys}] (and doesn't have default values for any key fields)"),
                    ));
                    continue;
                };
                if seen.contains(&id) {
                    out.push((
                        path_display(path),
                        format!(
                            "duplicate entries for key {}",
                            match kind {
                                ListKind::Set => format!("[={id}]"),
                                _ => path_display(&vec![id]),
                            }
                        ),
                    ));
                    continue;
                }
                if let (ListKind::Map(_), Value::Object(m)) = (&kind, item) {
                    path.push(id.clone());
                    for (k, child) in m {
                        path.push(format!("f:{k}"));
                        list_errors(child, path, out, shapes);
                        path.pop();
                    }
                    path.pop();
                }
                seen.push(id);
            }
        }
        _ => {}
    }
}

/// The 500 kube-apiserver answers when an applied object does not fit its schema's lists.
fn typed_patch_error(config: &Value, errs: &[(String, String)]) -> ApiError {
    let meta = |k: &str| config["metadata"][k].as_str().unwrap_or("").to_string();
    let av = config["apiVersion"].as_str().unwrap_or("");
    // GroupVersionKind's String: the core group is empty before its slash.
    let gv = if av.contains('/') {
        av.to_string()
    } else {
        format!("/{av}")
    };
    let detail = match errs {
        [(p, m)] => format!("{p}: {m}"),
        _ => {
            let mut lines = vec!["errors:".to_string()];
            lines.extend(errs.iter().map(|(p, m)| format!("  {p}: {m}")));
            lines.join("\n")
        }
    };
    ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({}/{}; {gv}, Kind={}): {detail}",
            meta("namespace"),
            meta("name"),
            config["kind"].as_str().unwrap_or("")
        ),
    )
}

fn walk(v: &Value, path: &mut Path, out: &mut Vec<Path>, shapes: Shapes<'_>) {
    match v {
        Value::Object(_) if shapes.atomic_map(path) => out.push(path.clone()),
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, path, out, shapes);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match shapes.list_kind(path, items) {
            ListKind::Map(keys) => {
                // Items without their keys cannot be told apart: the list is owned whole.
                let Some(segs) = items
                    .iter()
                    .map(|i| key_segment(i, &keys, shapes, path))
                    .collect::<Option<Vec<_>>>()
                else {
                    out.push(path.clone());
                    return;
                };
                for (seg, item) in segs.into_iter().zip(items) {
                    path.push(seg);
                    let mut dot = path.clone();
                    dot.push(".".into());
                    out.push(dot);
                    if let Some(m) = item.as_object() {
                        for (k, child) in m {
                            path.push(format!("f:{k}"));
                            walk(child, path, out, shapes);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.push(p);
                }
            }
            ListKind::Atomic => out.push(path.clone()),
        },
        _ => out.push(path.clone()),
    }
}

/// The identity of a list item under `kind`, to match live items with applied ones.
fn item_id(item: &Value, kind: &ListKind, shapes: Shapes<'_>, path: &[String]) -> Option<String> {
    match kind {
        ListKind::Map(keys) => key_segment(item, keys, shapes, path),
        ListKind::Set => Some(item.to_string()),
        ListKind::Atomic => None,
    }
}

/// Merges an applied list into a live one as structured-merge-diff does: items both
/// have are merged in the applied order, items only the live list has keep their place
/// among them, new items come where the applied list puts them.
fn merge_items(
    live: &[Value],
    applied: &[Value],
    kind: &ListKind,
    path: &mut Path,
    shapes: Shapes<'_>,
) -> Option<Vec<Value>> {
    let lids: Vec<String> = live
        .iter()
        .map(|i| item_id(i, kind, shapes, path))
        .collect::<Option<_>>()?;
    let rids: Vec<String> = applied
        .iter()
        .map(|i| item_id(i, kind, shapes, path))
        .collect::<Option<_>>()?;
    let merge_one = |id: &str, r: &Value, path: &mut Path| -> Value {
        match (kind, lids.iter().position(|l| l == id)) {
            (ListKind::Map(_), Some(i)) => {
                path.push(id.to_string());
                let v = merge_value(Some(&live[i]), r, path, shapes);
                path.pop();
                v
            }
            _ => r.clone(),
        }
    };
    // The shared items in the applied order: the live walk waits for the next of them.
    let mut shared = rids.iter().filter(|r| lids.contains(r)).peekable();
    let mut done: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(live.len().max(applied.len()));
    let (mut li, mut ri) = (0, 0);
    while li < live.len() || ri < applied.len() {
        if li < live.len() && ri < applied.len() {
            if lids[li] == rids[ri] {
                out.push(merge_one(&rids[ri], &applied[ri], path));
                done.push(&rids[ri]);
                li += 1;
                ri += 1;
                shared.next();
                continue;
            }
            if rids.contains(&lids[li]) && shared.peek().is_some_and(|s| **s != lids[li]) {
                li += 1;
                continue;
            }
        }
        if li < live.len() {
            if !rids.contains(&lids[li]) {
                out.push(live[li].clone());
                li += 1;
                continue;
            }
            if done.contains(&lids[li].as_str()) {
                li += 1;
            }
        }
        if ri < applied.len() {
            let id = &rids[ri];
            if !done.contains(&id.as_str()) {
                out.push(merge_one(id, &applied[ri], path));
                done.push(id);
            }
            if shared.peek().is_some_and(|s| *s == id) {
                shared.next();
            }
            ri += 1;
        }
    }
    Some(out)
}

/// Merges an applied value into the live one by `shapes` (server-side apply for
/// custom resources): granular maps field by field, atomic maps and lists replaced,
/// sets united, map lists merged item by item by their keys. A `null` removes the field.
fn merge_value(
    live: Option<&Value>,
    applied: &Value,
    path: &mut Path,
    shapes: Shapes<'_>,
) -> Value {
    match applied {
        Value::Object(_) if shapes.atomic_map(path) => applied.clone(),
        Value::Object(am) => {
            let mut out = live.and_then(Value::as_object).cloned().unwrap_or_default();
            for (k, av) in am {
                if av.is_null() {
                    out.remove(k);
                    continue;
                }
                path.push(format!("f:{k}"));
                let merged = merge_value(out.get(k), av, path, shapes);
                path.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let kind = shapes.list_kind(path, items);
            let lv: &[Value] = live.and_then(Value::as_array).map_or(&[], Vec::as_slice);
            if kind == ListKind::Atomic {
                return applied.clone();
            }
            match merge_items(lv, items, &kind, path, shapes) {
                Some(out) => Value::Array(out),
                // Items without their keys: the applied list as given.
                None => applied.clone(),
            }
        }
        other => other.clone(),
    }
}

/// The object server-side apply makes of `live` and an applied `config`:
/// built-in kinds through strategic merge (their patch tags), custom resources
/// by their schema.
pub fn merge_applied(live: &Value, config: &Value, shapes: Shapes<'_>) -> Value {
    match shapes {
        Shapes::Builtin => strategic_merge(live, config),
        // metadata goes by ObjectMeta's tags there too (`Shapes::list_kind`).
        Shapes::Schema(_) => merge_value(Some(live), config, &mut Vec::new(), shapes),
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

/// The list item a `k:`/`v:` segment names. A custom resource's keyed item is the one whose
/// key (by the schema's key fields, at `list`) is exactly the segment's: `{name: b}` is not
/// `{name: b, port: 2}`. Built-in kinds' items match on the segment's fields.
fn find_item<'a>(
    items: &'a [Value],
    seg: &str,
    shapes: Shapes<'_>,
    list: &[String],
) -> Option<(usize, &'a Value)> {
    if let Some(k) = seg.strip_prefix("k:") {
        if let Shapes::Schema(Some(_)) = shapes {
            if let ListKind::Map(keys) = shapes.list_kind(list, items) {
                return items.iter().enumerate().find(|(_, i)| {
                    key_segment(i, &keys, shapes, list).is_some_and(|ks| ks == seg)
                });
            }
        }
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
pub fn get_at<'a>(v: &'a Value, path: &[String], shapes: Shapes<'_>) -> Option<&'a Value> {
    let mut cur = v;
    for (n, seg) in path.iter().enumerate() {
        if seg == "." {
            continue;
        }
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else {
            find_item(cur.as_array()?, seg, shapes, &path[..n])?.1
        };
    }
    Some(cur)
}

/// Removes the field at `path` (for `.`, the list item holding it).
pub fn remove_at(v: &mut Value, path: &[String], shapes: Shapes<'_>) {
    let path: Vec<String> = path.iter().filter(|s| s.as_str() != ".").cloned().collect();
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for (n, seg) in parents.iter().enumerate() {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let idx = cur
                .as_array()
                .and_then(|a| find_item(a, seg, shapes, &path[..n]))
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
        if let Some((i, _)) = find_item(a, last, shapes, parents) {
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

/// A field path as upstream prints it in conflicts (fieldpath.Path's String):
/// `.spec.items[name="a"].value`, `.spec.tags[="x"]`.
fn path_display(p: &Path) -> String {
    p.iter()
        .filter(|s| s.as_str() != ".")
        .map(|s| {
            if let Some(f) = s.strip_prefix("f:") {
                format!(".{f}")
            } else if let Some(k) = s.strip_prefix("k:") {
                match serde_json::from_str::<Map<String, Value>>(k) {
                    Ok(m) => {
                        let parts: Vec<String> =
                            m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("[{}]", parts.join(","))
                    }
                    Err(_) => format!("[{k}]"),
                }
            } else if let Some(v) = s.strip_prefix("v:") {
                format!("[={v}]")
            } else {
                format!("[{s}]")
            }
        })
        .collect()
}

/// A manager as upstream names it in conflicts (printManager): an Update
/// says its apiVersion, an Apply only its name.
fn manager_display(e: &Value) -> String {
    let name = format!("{:?}", e["manager"].as_str().unwrap_or(""));
    let sub = match e["subresource"].as_str() {
        Some(s) if !s.is_empty() => format!(" with subresource {s:?}"),
        _ => String::new(),
    };
    if e["operation"] == "Update" {
        format!(
            "{name}{sub} using {}",
            e["apiVersion"].as_str().unwrap_or("")
        )
    } else {
        format!("{name}{sub}")
    }
}

/// Records an Update by `manager`: it takes ownership of every field that
/// changed from `old` (all fields on create), others lose those fields.
pub fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    api_version: &str,
    operation: &str,
    shapes: Shapes<'_>,
) {
    if manager.is_empty() {
        return;
    }
    let mut list = old.map(entries).unwrap_or_default();
    let changed: Vec<Path> = leaves(new, shapes)
        .into_iter()
        .filter(|p| old.is_none_or(|o| get_at(o, p, shapes) != get_at(new, p, shapes)))
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

/// The 409 of an apply that conflicts, in upstream's words (fieldmanager's
/// NewConflictError): one conflict on one line, several grouped by manager.
fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": path_display(p)}))
        .collect();
    let message = match conflicts {
        [(m, p)] => format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            path_display(p)
        ),
        _ => {
            let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for m in managers {
                lines.push(format!("conflicts with {m}:"));
                for (_, p) in conflicts.iter().filter(|(cm, _)| cm == m) {
                    lines.push(format!("- {}", path_display(p)));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    let mut err = ApiError::new(409, "Conflict", message);
    err.details = Some(json!({"causes": causes}));
    err
}

/// Who applies: a field manager, through the main resource or a subresource (upstream keeps
/// one managedFields entry per manager, operation and subresource).
#[derive(Debug, Clone, Copy)]
pub struct Manager<'a> {
    pub name: &'a str,
    pub subresource: Option<&'a str>,
}

impl<'a> From<&'a str> for Manager<'a> {
    fn from(name: &'a str) -> Self {
        Manager {
            name,
            subresource: None,
        }
    }
}

impl Manager<'_> {
    /// Whether `e` is this manager's Apply entry.
    fn owns(&self, e: &Value) -> bool {
        e["manager"] == self.name
            && e["operation"] == "Apply"
            && e.get("subresource").and_then(Value::as_str) == self.subresource
    }
}

/// Server-side apply of `config` by `manager` onto `live` (or onto an
/// empty object when creating). Returns the merged object with updated
/// managedFields, or a 409 listing the conflicting fields.
///
/// `defaults` fills in the kind's defaults: a field conflicts only when the applied object,
/// defaulted as it will be stored, changes its value (a list the config writes without the
/// defaults the server added is not a change).
pub fn apply<'m>(
    live: Option<&Value>,
    config: &Value,
    manager: impl Into<Manager<'m>>,
    force: bool,
    api_version: &str,
    defaults: &dyn Fn(&mut Value),
    shapes: Shapes<'_>,
) -> Result<Value, ApiError> {
    let who: Manager<'m> = manager.into();
    let manager = who.name;
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut list = entries(&base);
    if matches!(shapes, Shapes::Schema(_)) {
        let mut errs = Vec::new();
        list_errors(config, &mut Vec::new(), &mut errs, shapes);
        if !errs.is_empty() {
            return Err(typed_patch_error(config, &errs));
        }
    }
    let cfg_paths = leaves(config, shapes);
    // The merge once; its defaulted copy is what conflicts are judged on.
    let mut merged = merge_applied(&base, config, shapes);
    let mut outcome = merged.clone();
    defaults(&mut outcome);
    let mut conflicts = Vec::new();
    for e in list.iter_mut() {
        if who.owns(e) {
            continue;
        }
        let mut paths = from_tree(&e["fieldsV1"]);
        let before = paths.len();
        paths.retain(|p| {
            // A list item's own entry (`.`) says it exists, not what it holds: two managers
            // that both list it share it (its fields are compared one by one).
            let is_item = p.last().is_some_and(|l| l == ".");
            let contested = !is_item
                && cfg_paths.contains(p)
                && get_at(&base, p, shapes) != get_at(&outcome, p, shapes);
            if contested && !force {
                conflicts.push((manager_display(e), p.clone()));
            }
            !(contested && force)
        });
        if paths.len() != before {
            e["fieldsV1"] = to_tree(&paths);
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    let previously: Vec<Path> = list
        .iter()
        .find(|e| who.owns(e))
        .map(|e| from_tree(&e["fieldsV1"]))
        .unwrap_or_default();
    let others: Vec<Path> = list
        .iter()
        .filter(|e| !who.owns(e))
        .flat_map(|e| from_tree(&e["fieldsV1"]))
        .collect();
    for p in previously {
        if !cfg_paths.contains(&p) && !others.contains(&p) {
            remove_at(&mut merged, &p, shapes);
        }
    }
    let fields_v1 = to_tree(&cfg_paths);
    // The same fields applied again keep their entry's time, so an apply that changes nothing
    // leaves the object as it was and is not written (kube-apiserver skips such writes too).
    let time = list
        .iter()
        .find(|e| who.owns(e) && e["apiVersion"] == api_version && e["fieldsV1"] == fields_v1)
        .and_then(|e| e.get("time").cloned())
        .unwrap_or_else(|| json!(super::objects::now()));
    list.retain(|e| !who.owns(e));
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1,
    });
    if let Some(sub) = who.subresource {
        entry["subresource"] = json!(sub);
    }
    list.insert(0, entry);
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
        let tree = to_tree(&leaves(&d, Shapes::Builtin));
        assert_eq!(tree["f:metadata"]["f:labels"]["f:x"], json!({}));
        assert_eq!(
            tree["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"],
            json!({})
        );
        assert_eq!(from_tree(&tree).len(), leaves(&d, Shapes::Builtin).len());
    }

    #[test]
    fn apply_conflicts_and_force() {
        let live = json!({"metadata": {"name": "a", "managedFields": [{"manager": "other", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}]}, "data": {"k": "1"}});
        let cfg = json!({"metadata": {"name": "a"}, "data": {"k": "2"}});
        let err = apply(
            Some(&live),
            &cfg,
            "me",
            false,
            "v1",
            &|_| {},
            Shapes::Builtin,
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"other\""),
            "{}",
            err.message
        );
        let ok = apply(
            Some(&live),
            &cfg,
            "me",
            true,
            "v1",
            &|_| {},
            Shapes::Builtin,
        )
        .unwrap();
        assert_eq!(ok["data"]["k"], "2");
        let mf = ok["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0]["manager"], "me");
        // Dropping a field from the config removes it.
        let cfg2 = json!({"metadata": {"name": "a"}, "data": {"j": "3"}});
        let again = apply(
            Some(&ok),
            &cfg2,
            "me",
            false,
            "v1",
            &|_| {},
            Shapes::Builtin,
        )
        .unwrap();
        assert_eq!(again["data"], json!({"j": "3"}));
    }

    fn cr_schema() -> Structural {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "port"],
                "items": {"type": "object", "required": ["name", "port"], "properties": {
                    "name": {"type": "string"}, "port": {"type": "integer"}, "note": {"type": "string"},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "routes": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "protocol"],
                "items": {"type": "object", "properties": {"name": {"type": "string"},
                    "protocol": {"type": "string", "default": "TCP"}, "to": {"type": "string"}}}},
            "containers": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}}}}}});
        Structural::from_schema(&schema).unwrap()
    }

    #[test]
    fn custom_resource_fieldsets_follow_the_schema() {
        let s = cr_schema();
        let shapes = Shapes::Schema(Some(&s));
        let cr = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "finalizers": ["f"]},
            "spec": {"ports": [{"port": 80, "name": "web", "tags": ["t"]}], "tags": ["a", "b"],
                "containers": [{"name": "c"}], "selector": {"app": "x"}}});
        let tree = to_tree(&leaves(&cr, shapes));
        let port = &tree["f:spec"]["f:ports"]["k:{\"name\":\"web\",\"port\":80}"];
        assert_eq!(port["."], json!({}));
        assert_eq!(port["f:tags"]["v:\"t\""], json!({}));
        assert_eq!(tree["f:spec"]["f:tags"]["v:\"b\""], json!({}));
        // Not keyed by name as a Pod's containers are: the schema says nothing, so atomic.
        assert_eq!(tree["f:spec"]["f:containers"], json!({}));
        assert_eq!(tree["f:spec"]["f:selector"], json!({}));
        assert_eq!(tree["f:metadata"]["f:finalizers"]["v:\"f\""], json!({}));
    }

    #[test]
    fn custom_resource_apply_merges_by_the_schema() {
        let s = cr_schema();
        let shapes = Shapes::Schema(Some(&s));
        let a = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "a", "port": 1}], "tags": ["x"],
            "containers": [{"name": "c1"}], "selector": {"k": "1", "j": "2"}}});
        let one = apply(None, &a, "m1", false, "x/v1", &|_| {}, shapes).unwrap();
        let b = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "b", "port": 2}], "tags": ["y"]}});
        let two = apply(Some(&one), &b, "m2", false, "x/v1", &|_| {}, shapes).unwrap();
        assert_eq!(
            two["spec"]["ports"],
            json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}])
        );
        assert_eq!(two["spec"]["tags"], json!(["x", "y"]));
        // An atomic list or map written differently by another manager conflicts, whole.
        let c = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c2"}], "selector": {"k": "1"}}});
        let err = apply(Some(&two), &c, "m2", false, "x/v1", &|_| {}, shapes).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 2 conflicts: conflicts with \"m1\":\n- .spec.containers\n- .spec.selector"
        );
        let forced = apply(Some(&two), &c, "m2", true, "x/v1", &|_| {}, shapes).unwrap();
        assert_eq!(forced["spec"]["selector"], json!({"k": "1"}));
        assert_eq!(forced["spec"]["containers"], json!([{"name": "c2"}]));
        // A keyed item's field owned by another manager conflicts by its key.
        let d = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "a", "port": 1, "note": "n"}]}});
        let ok = apply(Some(&forced), &d, "m3", false, "x/v1", &|_| {}, shapes).unwrap();
        let e = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "a", "port": 1, "note": "o"}]}});
        let err = apply(Some(&ok), &e, "m4", false, "x/v1", &|_| {}, shapes).unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"m3\": .spec.ports[name=\"a\",port=1].note"
        );
    }

    #[test]
    fn list_merge_keeps_the_order_upstream_keeps() {
        let s = cr_schema();
        let shapes = Shapes::Schema(Some(&s));
        let live = json!({"spec": {"tags": ["a", "b", "c", "d"]}});
        let cfg = json!({"spec": {"tags": ["c", "e", "a"]}});
        let out = merge_applied(&live, &cfg, shapes);
        // Walked as structured-merge-diff walks it: a, already applied later, waits; b stays; c
        // shared; d stays; then the applied e and a.
        assert_eq!(out["spec"]["tags"], json!(["b", "c", "d", "e", "a"]));
    }

    #[test]
    fn custom_resource_lists_refused_as_upstream_refuses_them() {
        let s = cr_schema();
        let shapes = Shapes::Schema(Some(&s));
        let cfg = json!({"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "a", "namespace": "n"},
            "spec": {"ports": [{"note": "x"}, {"name": "b"}, {"name": "b", "port": 2}], "tags": ["t", "t"]}});
        let err = apply(None, &cfg, "m", false, "x.io/v1", &|_| {}, shapes).unwrap_err();
        assert_eq!(err.code, 500);
        assert_eq!(
            err.message,
            "failed to create typed patch object (n/a; x.io/v1, Kind=X): errors:\n  .spec.ports: element 0: associative list with keys has an element that omits all key fields [\"name\" \"port\"] (and doesn't have default values for any key fields)\n  .spec.tags: duplicate entries for key [=\"t\"]"
        );
        // Keyed by the keys an item has: {name: b} and {name: b, port: 2} are two items.
        let ok = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "b"}, {"name": "b", "port": 2}]}});
        let out = apply(None, &ok, "m", false, "x.io/v1", &|_| {}, shapes).unwrap();
        let tree = &out["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"];
        assert!(tree.get("k:{\"name\":\"b\"}").is_some(), "{tree}");
        assert!(
            tree.get("k:{\"name\":\"b\",\"port\":2}").is_some(),
            "{tree}"
        );
    }

    #[test]
    fn missing_keys_are_keyed_by_their_defaults() {
        let s = cr_schema();
        let shapes = Shapes::Schema(Some(&s));
        let cfg =
            json!({"metadata": {"name": "a"}, "spec": {"routes": [{"name": "r", "to": "x"}]}});
        let default = |v: &mut Value| {
            if let Some(r) = v.pointer_mut("/spec/routes/0") {
                if r.get("protocol").is_none() {
                    r["protocol"] = json!("TCP");
                }
            }
        };
        let mut one = apply(None, &cfg, "m", false, "x/v1", &default, shapes).unwrap();
        default(&mut one); // stored defaulted, as the create path does
        let tree = &one["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:routes"];
        assert!(
            tree.get("k:{\"name\":\"r\",\"protocol\":\"TCP\"}")
                .is_some(),
            "{tree}"
        );
        let cfg2 =
            json!({"metadata": {"name": "a"}, "spec": {"routes": [{"name": "r", "to": "y"}]}});
        let two = apply(Some(&one), &cfg2, "m", false, "x/v1", &default, shapes).unwrap();
        assert_eq!(
            two["spec"]["routes"],
            json!([{"name": "r", "protocol": "TCP", "to": "y"}])
        );
    }

    #[test]
    fn partial_keys_name_their_own_item() {
        let s = cr_schema();
        let shapes = Shapes::Schema(Some(&s));
        let cfg = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "b", "port": 2}, {"name": "b"}]}});
        let one = apply(None, &cfg, "m", false, "x/v1", &|_| {}, shapes).unwrap();
        // Dropping {name: b} removes that item, not the {name: b, port: 2} before it.
        let cfg2 =
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"name": "b", "port": 2}]}});
        let two = apply(Some(&one), &cfg2, "m", false, "x/v1", &|_| {}, shapes).unwrap();
        assert_eq!(two["spec"]["ports"], json!([{"name": "b", "port": 2}]));
    }
}
