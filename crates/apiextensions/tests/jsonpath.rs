//! The JSONPath subset of additionalPrinterColumns and the table cells made from it.

use rktup_apiextensions::{jsonpath, JsonPath};
use serde_json::{json, Value};

fn obj() -> Value {
    json!({
        "metadata": {"name": "a", "creationTimestamp": "2024-01-02T03:04:05Z", "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {"replicas": 3, "ratio": 1.5, "paused": false,
            "items": [{"name": "x", "port": 80}, {"name": "y", "port": 443}],
            "list": [{"name": "p"}, {"name": "q"}]},
        "status": {"conditions": [{"type": "Progressing", "status": "True"}, {"type": "Ready", "status": "False"}]}
    })
}

#[test]
fn paths() {
    let o = obj();
    assert_eq!(jsonpath(".spec.replicas", &o).unwrap(), vec![json!(3)]);
    assert_eq!(
        jsonpath(".metadata.creationTimestamp", &o).unwrap(),
        vec![json!("2024-01-02T03:04:05Z")]
    );
    assert_eq!(
        jsonpath(".status.conditions[?(@.type==\"Ready\")].status", &o).unwrap(),
        vec![json!("False")]
    );
    assert_eq!(
        jsonpath(".spec.items[0].name", &o).unwrap(),
        vec![json!("x")]
    );
    assert_eq!(
        jsonpath(".spec.items[-1].port", &o).unwrap(),
        vec![json!(443)]
    );
    assert_eq!(
        jsonpath(".spec.list[*].name", &o).unwrap(),
        vec![json!("p"), json!("q")]
    );
    assert_eq!(
        jsonpath(".spec.items[?(@.port > 100)].name", &o).unwrap(),
        vec![json!("y")]
    );
    assert_eq!(
        jsonpath(".metadata.labels['app.kubernetes.io/name']", &o).unwrap(),
        vec![json!("web")]
    );
    assert_eq!(
        jsonpath(".spec.items[0:1].name", &o).unwrap(),
        vec![json!("x")]
    );
    assert_eq!(jsonpath("..port", &o).unwrap(), vec![json!(80), json!(443)]);
    assert_eq!(
        jsonpath(".spec.missing.deeper", &o).unwrap(),
        Vec::<Value>::new()
    );
    assert!(jsonpath(".spec.items[x]", &o).is_err());
    let deep = format!(".a{}{}", "[?(@".repeat(5000), ")]".repeat(5000));
    assert!(jsonpath(&deep, &o).is_err());
}

#[test]
fn cells() {
    let o = obj();
    let cell = |p: &str, t: &str| JsonPath::parse(p).unwrap().cell(t, &o);
    assert_eq!(cell(".spec.replicas", "integer"), json!(3));
    assert_eq!(cell(".spec.ratio", "integer"), json!(1));
    assert_eq!(cell(".spec.replicas", "number"), json!(3.0));
    assert_eq!(cell(".spec.paused", "boolean"), json!(false));
    assert_eq!(cell(".spec.replicas", "string"), json!("3"));
    assert_eq!(
        cell(".spec.items[0]", "string"),
        json!("map[name:x port:80]")
    );
    assert_eq!(cell(".spec.list[*].name", "string"), json!("p"));
    assert_eq!(cell(".spec.replicas", "boolean"), Value::Null);
    assert_eq!(cell(".spec.nothing", "string"), Value::Null);
    assert_eq!(
        cell(".metadata.creationTimestamp", "date"),
        json!("2024-01-02T03:04:05Z")
    );
    assert_eq!(cell(".metadata.name", "date"), json!("<invalid>"));
    let odd = json!({"t": "2024-01-0é03:04:05Z-xxxxxx"});
    assert_eq!(
        JsonPath::parse(".t").unwrap().cell("date", &odd),
        json!("<invalid>")
    );
}
