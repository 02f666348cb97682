//! Server-side apply of custom resources through the real kubectl, with lists and maps merged
//! and owned as their CRD's schema says (structured-merge-diff with the CRD's schema in
//! kube-apiserver): `x-kubernetes-list-type: map` items merged by their keys, `set` lists
//! united, atomic lists (said or unsaid) and `x-kubernetes-map-type: atomic` objects replaced
//! and owned whole; managedFields as upstream writes them; conflicts with upstream's message.

use rktup_testkit::controlplane::*;
use serde_json::{json, Value};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.ssa.rktup.test
spec:
  group: ssa.rktup.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    port: {type: integer}
              routes:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name, protocol]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    protocol: {type: string, default: TCP}
                    to: {type: string}
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {type: string}
              args:
                type: array
                x-kubernetes-list-type: atomic
                items: {type: string}
              containers:
                # No list type: atomic, although a Pod's containers are keyed by name.
                type: array
                items:
                  type: object
                  properties:
                    name: {type: string}
                    image: {type: string}
              selector:
                type: object
                x-kubernetes-map-type: atomic
                additionalProperties: {type: string}
              settings:
                type: object
                additionalProperties: {type: string}
          status:
            type: object
            properties:
              conditions:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [type]
                items:
                  type: object
                  required: [type]
                  properties:
                    type: {type: string}
                    status: {type: string}
    subresources:
      status: {}
"#;

const ALPHA: &str = r#"
apiVersion: ssa.rktup.test/v1
kind: Widget
metadata: {name: w1}
spec:
  replicas: 1
  ports:
  - {name: http, port: 80}
  tags: [a, b]
  args: [x1, y1]
  containers:
  - {name: c1, image: i1}
  selector: {app: w, tier: web}
  settings: {one: "1"}
status:
  conditions:
  - {type: Ignored, status: "True"}
"#;

const BETA: &str = r#"
apiVersion: ssa.rktup.test/v1
kind: Widget
metadata: {name: w1}
spec:
  ports:
  - {name: metrics, port: 9090}
  tags: [c]
  settings: {two: "2"}
"#;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn widget(c: &Cluster) -> Value {
    let raw = c
        .ok_line("get --raw /apis/ssa.rktup.test/v1/namespaces/default/widgets/w1")
        .await;
    serde_json::from_str(&raw).expect("widget json")
}

/// The FieldsV1 of `manager`'s entry with `operation`.
fn owned(obj: &Value, manager: &str, operation: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["manager"] == manager && e["operation"] == operation)
        })
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

async fn apply_as(c: &Cluster, manager: &str, yaml: &str, force: bool) -> std::process::Output {
    let fm = format!("--field-manager={manager}");
    let mut args = vec!["apply", "--server-side", fm.as_str(), "-f", "-"];
    if force {
        args.push("--force-conflicts");
    }
    c.kubectl_stdin(&args, Some(yaml)).await
}

#[tokio::test]
async fn apply_merges_custom_resources_by_their_schema() {
    let c = start().await;
    c.apply_stdin(&["apply", "-f", "-"], WIDGET_CRD).await;
    c.ok_line("wait --for condition=established --timeout=10s crd/widgets.ssa.rktup.test")
        .await;

    let out = apply_as(&c, "alpha", ALPHA, false).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let w = widget(&c).await;
    // Status is a subresource of its own: applied through the main resource, it is reset.
    assert!(w.get("status").is_none(), "{w}");
    assert_eq!(
        owned(&w, "alpha", "Apply"),
        json!({"f:spec": {
            "f:args": {},
            "f:containers": {},
            "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}},
            "f:replicas": {},
            "f:selector": {},
            "f:settings": {"f:one": {}},
            "f:tags": {"v:\"a\"": {}, "v:\"b\"": {}},
        }}),
        "alpha's fields: {w}"
    );

    // A second manager: its map-list item, set value and map key join alpha's.
    let out = apply_as(&c, "beta", BETA, false).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let w = widget(&c).await;
    assert_eq!(
        w["spec"]["ports"],
        json!([{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}])
    );
    assert_eq!(w["spec"]["tags"], json!(["a", "b", "c"]));
    assert_eq!(w["spec"]["settings"], json!({"one": "1", "two": "2"}));
    assert_eq!(
        owned(&w, "beta", "Apply"),
        json!({"f:spec": {
            "f:ports": {"k:{\"name\":\"metrics\"}": {".": {}, "f:name": {}, "f:port": {}}},
            "f:settings": {"f:two": {}},
            "f:tags": {"v:\"c\"": {}},
        }})
    );
    assert!(
        owned(&w, "alpha", "Apply")["f:spec"]["f:ports"]
            .get("k:{\"name\":\"http\"}")
            .is_some(),
        "alpha keeps its item: {w}"
    );

    // Fields alpha owns, written differently: an atomic list, a keyed item's field, an
    // atomic map (a key less is a change of the whole map), a list keyed by name in Pods only.
    let contested = r#"
apiVersion: ssa.rktup.test/v1
kind: Widget
metadata: {name: w1}
spec:
  ports:
  - {name: http, port: 8080}
  - {name: metrics, port: 9090}
  tags: [c]
  args: [z]
  containers:
  - {name: c1, image: i2}
  selector: {app: w}
  settings: {two: "2"}
"#;
    let out = apply_as(&c, "beta", contested, false).await;
    assert!(!out.status.success(), "conflicts must refuse the apply");
    assert!(
        stderr(&out).contains(
            "Apply failed with 4 conflicts: conflicts with \"alpha\":\n- .spec.args\n- .spec.containers\n- .spec.ports[name=\"http\"].port\n- .spec.selector"
        ),
        "{}",
        stderr(&out)
    );
    // One conflict reads as one line.
    let one = BETA.replace("tags: [c]", "tags: [c]\n  args: [z]");
    let out = apply_as(&c, "beta", &one, false).await;
    assert!(
        stderr(&out).contains("Apply failed with 1 conflict: conflict with \"alpha\": .spec.args"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        widget(&c).await["spec"]["args"],
        json!(["x1", "y1"]),
        "unchanged"
    );

    // --force-conflicts takes them over: atomic values replaced whole, owned whole.
    let out = apply_as(&c, "beta", contested, true).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let w = widget(&c).await;
    assert_eq!(w["spec"]["args"], json!(["z"]));
    assert_eq!(w["spec"]["selector"], json!({"app": "w"}));
    assert_eq!(
        w["spec"]["containers"],
        json!([{"name": "c1", "image": "i2"}])
    );
    assert_eq!(
        w["spec"]["ports"],
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}])
    );
    assert_eq!(
        owned(&w, "alpha", "Apply"),
        json!({"f:spec": {
            "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}}},
            "f:replicas": {},
            "f:settings": {"f:one": {}},
            "f:tags": {"v:\"a\"": {}, "v:\"b\"": {}},
        }}),
        "alpha lost what beta forced: {w}"
    );
    assert_eq!(
        owned(&w, "beta", "Apply"),
        json!({"f:spec": {
            "f:args": {},
            "f:containers": {},
            "f:ports": {
                "k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}},
                "k:{\"name\":\"metrics\"}": {".": {}, "f:name": {}, "f:port": {}},
            },
            "f:selector": {},
            "f:settings": {"f:two": {}},
            "f:tags": {"v:\"c\"": {}},
        }})
    );

    // Alpha applies without tag b and without its http item: b goes (only alpha had it);
    // http stays, beta owns it too.
    let alpha2 = r#"
apiVersion: ssa.rktup.test/v1
kind: Widget
metadata: {name: w1}
spec:
  replicas: 1
  tags: [a]
  settings: {one: "1"}
"#;
    let out = apply_as(&c, "alpha", alpha2, false).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let w = widget(&c).await;
    assert_eq!(w["spec"]["tags"], json!(["a", "c"]));
    assert_eq!(
        w["spec"]["ports"],
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}])
    );
    // Beta drops its metrics item and tag: they go; what alpha still applies stays.
    let beta2 = r#"
apiVersion: ssa.rktup.test/v1
kind: Widget
metadata: {name: w1}
spec:
  ports:
  - {name: http, port: 8080}
  args: [z]
"#;
    let out = apply_as(&c, "beta", beta2, false).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let w = widget(&c).await;
    assert_eq!(w["spec"]["ports"], json!([{"name": "http", "port": 8080}]));
    assert_eq!(w["spec"]["tags"], json!(["a"]));
    assert_eq!(w["spec"]["settings"], json!({"one": "1"}));
    assert!(w["spec"].get("selector").is_none(), "{w}");
    assert!(w["spec"].get("containers").is_none(), "{w}");

    // An Update (merge patch) is recorded by the same schema: a set value, not the whole list.
    c.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "--field-manager=patcher",
        "-p",
        r#"{"spec":{"tags":["a","d"]}}"#,
    ])
    .await;
    let w = widget(&c).await;
    assert_eq!(
        owned(&w, "patcher", "Update"),
        json!({"f:spec": {"f:tags": {"v:\"d\"": {}}}})
    );
    // A set value is owned alone: alpha applying "a" again leaves "d" to its owner.
    let out = apply_as(&c, "alpha", alpha2, false).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(widget(&c).await["spec"]["tags"], json!(["a", "d"]));
    // An Update's manager is named with its apiVersion in a conflict.
    c.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "--field-manager=patcher",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ])
    .await;
    let out = apply_as(&c, "alpha", alpha2, false).await;
    assert!(
        stderr(&out).contains(
            "Apply failed with 1 conflict: conflict with \"patcher\" using ssa.rktup.test/v1: .spec.replicas"
        ),
        "{}",
        stderr(&out)
    );

    // What structured-merge-diff's typed conversion refuses, refused in its words.
    let dup = "apiVersion: ssa.rktup.test/v1\nkind: Widget\nmetadata: {name: w2}\nspec:\n  tags: [a, a]\n";
    let out = apply_as(&c, "alpha", dup, false).await;
    assert!(
        !out.status.success(),
        "duplicate set values must be refused"
    );
    assert!(
        stderr(&out).contains(
            "Error from server: failed to create typed patch object (default/w2; ssa.rktup.test/v1, Kind=Widget): .spec.tags: duplicate entries for key [=\"a\"]"
        ),
        "{}",
        stderr(&out)
    );

    // A key the item leaves out is keyed by its schema default: applied again, the same item.
    let route = |to: &str| {
        format!("apiVersion: ssa.rktup.test/v1\nkind: Widget\nmetadata: {{name: w3}}\nspec:\n  routes:\n  - {{name: r, to: {to}}}\n")
    };
    for to in ["x1", "y1"] {
        let out = apply_as(&c, "gamma", &route(to), false).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let raw = c
        .ok_line("get --raw /apis/ssa.rktup.test/v1/namespaces/default/widgets/w3")
        .await;
    let w3: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(
        w3["spec"]["routes"],
        json!([{"name": "r", "protocol": "TCP", "to": "y1"}])
    );
    assert_eq!(
        owned(&w3, "gamma", "Apply"),
        json!({"f:spec": {"f:routes": {"k:{\"name\":\"r\",\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:to": {}}}}})
    );

    // Controllers apply conditions through /status: each keeps its own, keyed by type; the
    // entries say their subresource, and a conflict names it.
    let cond = |ty: &str, st: &str| {
        format!("apiVersion: ssa.rktup.test/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{replicas: 9}}\nstatus:\n  conditions:\n  - {{type: {ty}, status: \"{st}\"}}\n")
    };
    for (mgr, ty) in [("ctrl1", "Ready"), ("ctrl2", "Synced")] {
        let fm = format!("--field-manager={mgr}");
        let out = c
            .kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--subresource=status",
                    &fm,
                    "-f",
                    "-",
                ],
                Some(&cond(ty, "True")),
            )
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let w = widget(&c).await;
    assert_eq!(
        w["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}])
    );
    assert_ne!(
        w["spec"]["replicas"], 9,
        "spec is not written through /status"
    );
    let entry = w["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "ctrl1"))
        .cloned()
        .expect("ctrl1's entry");
    assert_eq!(entry["subresource"], "status");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    let out = c
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--subresource=status",
                "--field-manager=ctrl2",
                "-f",
                "-",
            ],
            Some(&cond("Ready", "False")),
        )
        .await;
    assert!(
        stderr(&out).contains(
            "Apply failed with 1 conflict: conflict with \"ctrl1\" with subresource \"status\": .status.conditions[type=\"Ready\"].status"
        ),
        "{}",
        stderr(&out)
    );
}
