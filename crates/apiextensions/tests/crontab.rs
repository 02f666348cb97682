//! The CronTab example of the Kubernetes documentation ("Extend the Kubernetes API with
//! CustomResourceDefinitions", with the validation and defaulting sections' schema), written
//! here from the docs: pruning, defaulting and validation with kube-apiserver's exact texts.

use rktup_apiextensions::{validate_crd, FieldError, Structural};
use serde_json::{json, Value};

fn crontab_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "listKind": "CronTabList", "shortNames": ["ct"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$", "default": "5 0 * * *"},
                                "image": {"type": "string"},
                                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}
                            }
                        },
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
                    }
                }},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [
                    {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ]
            }]
        }
    })
}

fn schema(crd: &Value) -> Structural {
    Structural::from_schema(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        .expect("structural")
}

fn texts(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(|e| e.to_string()).collect()
}

#[test]
fn crontab_crd_is_valid() {
    assert_eq!(validate_crd(&crontab_crd(), None), vec![]);
}

#[test]
fn crontab_prune_default_validate() {
    let s = schema(&crontab_crd());
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "my-new-cron-object"},
        "spec": {"image": "my-awesome-cron-image", "someRandomField": 42}
    });
    assert_eq!(s.prune(&mut obj), vec!["spec.someRandomField"]);
    s.apply_defaults(&mut obj);
    assert_eq!(
        obj["spec"],
        json!({"cronSpec": "5 0 * * *", "image": "my-awesome-cron-image", "replicas": 1})
    );
    assert_eq!(obj["apiVersion"], "stable.example.com/v1");
    assert_eq!(s.validate(&obj, None), vec![]);

    // The documentation's invalid object.
    let bad = json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "my-new-cron-object"},
        "spec": {"cronSpec": "* * * *", "image": "my-awesome-cron-image", "replicas": 15}
    });
    let errs = s.validate(&bad, None);
    assert_eq!(
        texts(&errs),
        vec![
            "spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'",
            "spec.replicas: Invalid value: 15: spec.replicas in body should be less than or equal to 10",
        ]
    );
    assert_eq!(errs[1].field, "spec.replicas");
    assert_eq!(
        errs[1].message,
        "Invalid value: 15: spec.replicas in body should be less than or equal to 10"
    );

    let wrong_type = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"}, "spec": {"replicas": "string"}});
    let errs = s.validate(&wrong_type, None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].reason, "FieldValueTypeInvalid");
    assert_eq!(errs[0].to_string(), "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"");

    // A fractional bound on an integer is itself an error (IsValueValidAgainstRange), on every
    // value, and the comparison is then made as floats.
    let frac = Structural::from_schema(
        &json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 2.5}}}),
    )
    .unwrap();
    assert_eq!(
        texts(&frac.validate(&json!({"n": 3}), None)),
        vec![
            "<nil>: Invalid value: \"\": Maximum boundary value must be of type integer (default format) in n",
            "n: Invalid value: 3: n in body should be less than or equal to 2.5",
        ]
    );

    // On a number, an integer meets the bound cast to int64: 1 passes a 1.5 minimum.
    let num = Structural::from_schema(
        &json!({"type": "object", "properties": {"n": {"type": "number", "minimum": 1.5}}}),
    )
    .unwrap();
    assert_eq!(num.validate(&json!({"n": 1}), None), vec![]);
    assert_eq!(
        texts(&num.validate(&json!({"n": 1.2}), None)),
        vec!["n: Invalid value: 1.2: n in body should be greater than or equal to 1.5"]
    );

    let low = json!({"spec": {"replicas": 0}});
    assert_eq!(texts(&s.validate(&low, None)), vec!["spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"]);
}

#[test]
fn defaults_nulls_and_nullable() {
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "a": {"type": "string", "default": "x"},
            "b": {"type": "string"},
            "c": {"type": "string", "nullable": true},
            "nested": {"type": "object", "default": {}, "properties": {"d": {"type": "integer", "default": 3}}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"e": {"type": "boolean", "default": true}}}}
        }}}
    }))
    .unwrap();
    let mut obj = json!({"spec": {"a": null, "b": null, "c": null, "items": [{}, {"e": false}]}});
    s.apply_defaults(&mut obj);
    assert_eq!(
        obj,
        json!({"spec": {"a": "x", "c": null, "nested": {"d": 3}, "items": [{"e": true}, {"e": false}]}})
    );
}

#[test]
fn value_validation_texts() {
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 5},
            "short": {"type": "string", "minLength": 3},
            "mode": {"type": "string", "enum": ["A", "B"]},
            "level": {"type": "integer", "enum": [1, 2]},
            "port": {"x-kubernetes-int-or-string": true},
            "when": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "tags": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"}},
            "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
            "ratio": {"type": "number", "maximum": 1.5, "exclusiveMaximum": true},
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            "flag": {"type": "boolean"}
        }}}
    }))
    .unwrap();
    let obj = json!({"spec": {
        "short": "ab", "mode": "C", "level": 3, "port": true, "when": "yesterday", "ip": "1.2.3",
        "tags": ["a", "b", "c"], "labels": {"a": "1", "b": 2}, "ratio": 1.5,
        "set": ["x", "y", "x"], "ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}, {"port": 1}],
        "flag": null
    }});
    let got = texts(&s.validate(&obj, None));
    let want = [
        "spec.flag: Invalid value: \"null\": spec.flag in body must be of type boolean: \"null\"",
        "spec.ip: Invalid value: \"1.2.3\": spec.ip in body must be of type ipv4: \"1.2.3\"",
        "spec.labels: Too many: 2: must have at most 1 item",
        "spec.labels.b: Invalid value: \"integer\": spec.labels.b in body must be of type string: \"integer\"",
        "spec.level: Unsupported value: 3: supported values: \"1\", \"2\"",
        "spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\"",
        "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        "spec.ports[2].name: Required value",
        "spec.ratio: Invalid value: 1.5: spec.ratio in body should be less than 1.5",
        "spec.short: Invalid value: \"ab\": spec.short in body should be at least 3 chars long",
        "spec.tags: Too many: 3: must have at most 2 items",
        "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
        "spec.name: Required value",
        "spec.set[2]: Duplicate value: \"x\"",
        "spec.ports[1]: Duplicate value: {\"name\":\"http\"}",
    ];
    for w in want {
        assert!(got.contains(&w.to_string()), "missing {w:?} in {got:#?}");
    }
    assert_eq!(got.len(), want.len() + 1, "{got:#?}"); // + the item's own Required (ports[2].name) from the list-map check
    let long = json!({"spec": {"name": "toolong"}});
    let errs = s.validate(&long, None);
    assert_eq!(errs[0].reason, "FieldValueTooLong");
    assert_eq!(
        errs[0].to_string(),
        "spec.name: Too long: may not be more than 5 bytes"
    );
}

#[test]
fn cel_rules_messages_and_transitions() {
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
                {"rule": "self.name.startsWith('a')"},
                {"rule": "self.immutable == oldSelf.immutable", "message": "immutable is immutable", "reason": "FieldValueForbidden"},
                {"rule": "!has(self.extra) || self.extra.size() < 3", "fieldPath": ".extra", "messageExpression": "'extra has ' + string(self.extra.size()) + ' letters'"}
            ],
            "properties": {
                "minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
                "name": {"type": "string"}, "immutable": {"type": "string"}, "extra": {"type": "string"},
                "items": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self != 'bad'"}]}}
            }
        }}
    }))
    .unwrap();
    let obj = json!({"spec": {"minReplicas": 3, "maxReplicas": 2, "name": "bob", "immutable": "x", "extra": "long", "items": ["ok", "bad"]}});
    let got = texts(&s.validate(&obj, None));
    assert_eq!(
        got,
        vec![
            "spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas",
            "spec: Invalid value: \"object\": failed rule: self.name.startsWith('a')",
            "spec.extra: Invalid value: \"object\": extra has 4 letters",
            "spec.items[1]: Invalid value: \"string\": failed rule: self != 'bad'",
        ]
    );
    let old =
        json!({"spec": {"minReplicas": 1, "maxReplicas": 2, "name": "abc", "immutable": "y"}});
    let new =
        json!({"spec": {"minReplicas": 1, "maxReplicas": 2, "name": "abc", "immutable": "x"}});
    assert_eq!(
        texts(&s.validate(&new, Some(&old))),
        vec!["spec: Forbidden: immutable is immutable"]
    );
    assert_eq!(s.validate(&new, Some(&new)), vec![]);
    assert_eq!(s.validate(&new, None), vec![]);

    // optionalOldSelf: evaluated on create too, with oldSelf an optional; list-type map items
    // correlate with the old item of the same key.
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "level": {"type": "integer", "x-kubernetes-validations": [
                {"rule": "!oldSelf.hasValue() || self >= oldSelf.value()", "optionalOldSelf": true, "message": "level may not decrease"},
                {"rule": "oldSelf.orValue(0) != 0 || self < 10", "optionalOldSelf": true, "message": "new levels start below 10"}
            ]},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {
                "type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
                    "port": {"type": "integer", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "port is immutable"}]}}}}
        }}}
    }))
    .unwrap();
    assert_eq!(
        texts(&s.validate(&json!({"spec": {"level": 12}}), None)),
        vec!["spec.level: Invalid value: \"integer\": new levels start below 10"]
    );
    let old = json!({"spec": {"level": 5, "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}});
    let new = json!({"spec": {"level": 4, "ports": [{"name": "b", "port": 2}, {"name": "a", "port": 3}, {"name": "c", "port": 9}]}});
    assert_eq!(
        texts(&s.validate(&new, Some(&old))),
        vec![
            "spec.level: Invalid value: \"integer\": level may not decrease",
            "spec.ports[1].port: Invalid value: \"integer\": port is immutable"
        ]
    );
}

#[test]
fn root_rules_see_name_and_generate_name() {
    let crd = with_schema(json!({"type": "object",
        "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith('c')", "message": "names start with c"}],
        "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}}}));
    assert_eq!(validate_crd(&crd, None), vec![]);
    let s = schema(&crd);
    assert_eq!(
        texts(&s.validate(&json!({"metadata": {"name": "x"}, "spec": {}}), None)),
        vec!["<nil>: Invalid value: \"object\": names start with c"]
    );
    assert_eq!(
        s.validate(
            &json!({"metadata": {"name": "cron", "labels": {"a": "b"}}, "spec": {}}),
            None
        ),
        vec![]
    );
    let labels = with_schema(json!({"type": "object",
        "x-kubernetes-validations": [{"rule": "has(self.metadata.labels)"}],
        "properties": {"metadata": {"type": "object"}}}));
    let errs = validate_crd(&labels, None);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].message.contains("undefined field 'labels'"),
        "{}",
        errs[0].message
    );
}

#[test]
fn list_types_and_map_types() {
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "protocol"],
                "items": {"type": "object", "required": ["name", "protocol"], "properties": {"name": {"type": "string"}, "protocol": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}},
            "sel": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}}
        }}}
    }))
    .unwrap();
    assert_eq!(
        s.list_type(&["spec", "ports"]),
        Some(("map".into(), vec!["name".into(), "protocol".into()]))
    );
    assert_eq!(s.list_type(&["spec", "tags"]), Some(("set".into(), vec![])));
    assert_eq!(
        s.list_type(&["spec", "args"]),
        Some(("atomic".into(), vec![]))
    );
    assert_eq!(s.list_type(&["spec", "sel"]), None);
    assert_eq!(s.map_type(&["spec", "sel"]).as_deref(), Some("atomic"));
    assert_eq!(s.map_type(&["spec"]).as_deref(), Some("granular"));
}

#[test]
fn embedded_resources_and_preserve_unknown() {
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
            "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}
        }}}
    }))
    .unwrap();
    let mut obj = json!({"spec": {
        "template": {"metadata": {"name": "x", "junk": 1}, "spec": {"anything": true}},
        "config": {"free": {"form": 1}, "known": {"a": "1", "b": "2"}}
    }});
    let pruned = s.prune(&mut obj);
    assert_eq!(
        pruned,
        vec!["spec.config.known.b", "spec.template.metadata.junk"]
    );
    assert_eq!(obj["spec"]["config"]["free"], json!({"form": 1}));
    assert_eq!(obj["spec"]["template"]["spec"], json!({"anything": true}));
    assert_eq!(
        texts(&s.validate(&obj, None)),
        vec![
            "spec.template.apiVersion: Required value: must not be empty",
            "spec.template.kind: Required value: must not be empty"
        ]
    );
}

/// The per-object walks skip the parts of a schema with nothing for them (no embedded resource,
/// list type or rule below); what sits deep under plain nodes is still found: a rule, a set and
/// an embedded resource under list items and additionalProperties, each under plain objects.
#[test]
fn checks_deep_below_plain_nodes() {
    let s = Structural::from_schema(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "plain": {"type": "object", "properties": {"x": {"type": "string"}}},
            "groups": {"type": "array", "items": {"type": "object", "properties": {
                "n": {"type": "integer", "x-kubernetes-validations": [{"rule": "self < 5"}]},
                "tags": {"type": "object", "additionalProperties": {
                    "type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}},
                "byName": {"type": "object", "additionalProperties": {
                    "type": "object", "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true}}
            }}}
        }}}
    }))
    .unwrap();
    let mut obj = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "a", "junk": 1},
        "spec": {
            "plain": {"x": "1", "y": 2},
            "groups": [
                {"n": 1, "tags": {"a": ["x", "y"]}},
                {"n": 7, "tags": {"a": ["x", "x"]}, "other": 1,
                 "byName": {"t": {"metadata": {"name": "t", "junk": 2}, "kind": "T"}}}
            ]
        }
    });
    assert_eq!(
        s.prune(&mut obj),
        vec![
            "metadata.junk",
            "spec.groups[1].byName.t.metadata.junk",
            "spec.groups[1].other",
            "spec.plain.y"
        ]
    );
    assert_eq!(
        texts(&s.validate(&obj, None)),
        vec![
            "spec.groups[1].byName[t].apiVersion: Required value: must not be empty",
            "spec.groups[1].tags[a][1]: Duplicate value: \"x\"",
            "spec.groups[1].n: Invalid value: \"integer\": failed rule: self < 5",
        ]
    );
}

fn with_schema(schema: Value) -> Value {
    let mut crd = crontab_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema;
    crd
}

#[test]
fn validate_crd_refusals() {
    // Not structural: a field without a type, a nested metadata, anyOf with a type.
    let crd = with_schema(
        json!({"type": "object", "properties": {"spec": {"properties": {"x": {"type": "string"}}},
        "status": {"type": "object", "anyOf": [{"type": "string"}]}}}),
    );
    assert_eq!(
        texts(&validate_crd(&crd, None)),
        vec![
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
            "spec.versions[0].schema.openAPIV3Schema.properties[status].anyOf[0].type: Forbidden: must be empty to be structural",
        ]
    );

    let mut two = crontab_crd();
    let mut v2 = two["spec"]["versions"][0].clone();
    v2["name"] = json!("v2");
    two["spec"]["versions"].as_array_mut().unwrap().push(v2);
    let errs = validate_crd(&two, None);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "spec.versions");
    assert!(
        errs[0]
            .message
            .ends_with(": must have exactly one version marked as storage version"),
        "{}",
        errs[0].message
    );

    let mut bad_name = crontab_crd();
    bad_name["metadata"]["name"] = json!("crontab.stable.example.com");
    assert_eq!(
        texts(&validate_crd(&bad_name, None)),
        vec!["metadata.name: Invalid value: \"crontab.stable.example.com\": must be spec.names.plural+\".\"+spec.group"]
    );

    let mut no_dot = crontab_crd();
    no_dot["spec"]["group"] = json!("example");
    no_dot["metadata"]["name"] = json!("crontabs.example");
    assert_eq!(
        texts(&validate_crd(&no_dot, None)),
        vec!["spec.group: Invalid value: \"example\": should be a domain with at least one dot"]
    );

    let mut webhook = crontab_crd();
    webhook["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": {"url": "https://example.com"}}});
    let errs = validate_crd(&webhook, None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].reason, "FieldValueNotSupported");
    assert_eq!(
        errs[0].to_string(),
        "spec.conversion.strategy: Unsupported value: \"Webhook\": supported values: \"None\" (conversion webhooks are not supported by rktup yet)"
    );

    let mut names = crontab_crd();
    names["spec"]["names"]["kind"] = json!("Cron_Tab");
    names["spec"]["names"]["listKind"] = json!("Cron_Tab");
    names["spec"]["scope"] = json!("Global");
    let got = texts(&validate_crd(&names, None));
    assert!(got.contains(&"spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"".to_string()), "{got:#?}");
    assert!(got.contains(&"spec.names.kind: Invalid value: \"Cron_Tab\": may have mixed case, but should otherwise match: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()), "{got:#?}");
    assert!(got.contains(&"spec.names.listKind: Invalid value: \"Cron_Tab\": kind and listKind may not be the same".to_string()), "{got:#?}");

    let mut col = crontab_crd();
    col["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"] = json!("spec.cronSpec");
    col["spec"]["versions"][0]["additionalPrinterColumns"][1]["type"] = json!("int");
    assert_eq!(
        texts(&validate_crd(&col, None)),
        vec![
            "spec.versions[0].additionalPrinterColumns[0].JSONPath: Invalid value: \"spec.cronSpec\": must be a simple json path starting with .",
            "spec.versions[0].additionalPrinterColumns[1].type: Invalid value: \"int\": must be one of boolean,date,integer,number,string",
        ]
    );

    let unique = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}}),
    );
    assert_eq!(
        texts(&validate_crd(&unique, None)),
        vec!["spec.versions[0].schema.openAPIV3Schema.properties[spec].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"]
    );

    let bad_default = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "n": {"type": "integer", "default": "one"}, "o": {"type": "object", "default": {"x": 1}, "properties": {"y": {"type": "integer"}}}}}}}),
    );
    assert_eq!(
        texts(&validate_crd(&bad_default, None)),
        vec![
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[n].default: Invalid value: \"string\":  in body must be of type integer: \"string\"",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[o].default: Invalid value: {\"x\":1}: must not have unknown fields",
        ]
    );
}

#[test]
fn validate_crd_cel_rules() {
    let bad_rule = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.a =="}], "properties": {"a": {"type": "integer"}}}}}),
    );
    let errs = validate_crd(&bad_rule, None);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        errs[0].field,
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    );
    assert!(
        errs[0].message.starts_with(
            "Invalid value: {\"rule\":\"self.a ==\"}: compilation failed: ERROR: <input>:1:"
        ),
        "{}",
        errs[0].message
    );

    let unsupported = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.l.isSorted()"}], "properties": {"l": {"type": "array", "items": {"type": "integer"}}}}}}),
    );
    let errs = validate_crd(&unsupported, None);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        errs[0].message,
        "Invalid value: {\"rule\":\"self.l.isSorted()\"}: compilation failed: undeclared reference to 'isSorted': rktup's CEL (cel-rust) does not support this function yet"
    );

    let undefined = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.a == 1 && self.nope == 1"}, {"rule": "self.l.all(x, x.b > 0 && has(x.c))"}, {"rule": "foo == 1"}],
        "properties": {"a": {"type": "integer"}, "l": {"type": "array", "items": {"type": "object", "properties": {"b": {"type": "integer"}}}}}}}}),
    );
    let prefix =
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations";
    assert_eq!(
        texts(&validate_crd(&undefined, None)),
        vec![
            format!(
                r#"{prefix}[0].rule: Invalid value: {{"rule":"self.a == 1 \u0026\u0026 self.nope == 1"}}: compilation failed: ERROR: <input>:1:20: undefined field 'nope'
 | self.a == 1 && self.nope == 1
 | ...................^"#
            ),
            format!(
                r#"{prefix}[1].rule: Invalid value: {{"rule":"self.l.all(x, x.b \u003e 0 \u0026\u0026 has(x.c))"}}: compilation failed: ERROR: <input>:1:29: undefined field 'c'
 | self.l.all(x, x.b > 0 && has(x.c))
 | ............................^"#
            ),
            format!(
                r#"{prefix}[2].rule: Invalid value: {{"rule":"foo == 1"}}: compilation failed: ERROR: <input>:1:1: undeclared reference to 'foo' (in container '')
 | foo == 1
 | ^"#
            ),
        ]
    );

    let transition_in_list = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "l": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}},
        "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
            "items": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}, "v": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}}}}}}),
    );
    assert_eq!(
        texts(&validate_crd(&transition_in_list, None)),
        vec!["spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[l].items.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[l]"]
    );

    // A rule long enough to overflow a thread's stack is refused, not run.
    let long_rule = vec!["self.a"; 2000].join(" + ") + " > 0";
    let long = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": long_rule}], "properties": {"a": {"type": "integer"}}}}}),
    );
    let errs = validate_crd(&long, None);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.ends_with("compilation failed: the rule has 4000 operators, more than the 500 rktup's CEL (cel-rust) evaluates safely"), "{}", errs[0].message);

    let empty = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": " "}, {"rule": "true", "reason": "Bogus"}]}}}),
    );
    assert_eq!(
        texts(&validate_crd(&empty, None)),
        vec![
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Required value: rule is not specified",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].reason: Unsupported value: \"Bogus\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\"",
        ]
    );
}

#[test]
fn validate_crd_update_immutables() {
    let old = crontab_crd();
    let mut new = crontab_crd();
    new["spec"]["group"] = json!("other.example.com");
    new["metadata"]["name"] = json!("crontabs.other.example.com");
    assert_eq!(
        texts(&validate_crd(&new, Some(&old))),
        vec!["spec.group: Invalid value: \"other.example.com\": field is immutable"]
    );
}

#[test]
fn defaults_checked_by_rules_and_integer_ranges() {
    let crd = with_schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "size": {"type": "integer", "default": 7, "x-kubernetes-validations": [{"rule": "self % 2 == 0", "message": "must be even"}]}}}}}),
    );
    assert_eq!(
        texts(&validate_crd(&crd, None)),
        vec!["spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].default: Invalid value: \"integer\": must be even"]
    );

    let s = Structural::from_schema(
        &json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "small": {"type": "integer", "format": "int32"}, "big": {"type": "integer"}}}}}),
    )
    .unwrap();
    assert_eq!(
        s.validate(
            &json!({"spec": {"small": 2147483647, "big": 9007199254740993_i64}}),
            None
        ),
        vec![]
    );
    assert_eq!(
        texts(&s.validate(&json!({"spec": {"small": 2147483648_i64}}), None)),
        vec!["<nil>: Invalid value: \"\": Checked value must be of type integer with format int32 in spec.small"]
    );
    assert_eq!(
        texts(&s.validate(&json!({"spec": {"big": 18446744073709551615_u64}}), None)),
        vec!["<nil>: Invalid value: \"\": Checked value must be of type integer (default format) in spec.big"]
    );
}

#[test]
fn int_or_string_as_controller_gen_writes_it() {
    let s = Structural::from_schema(&json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "maxUnavailable": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true}}}}}))
    .expect("the int-or-string anyOf pattern is structural");
    assert_eq!(
        s.validate(&json!({"spec": {"maxUnavailable": 1}}), None),
        vec![]
    );
    assert_eq!(
        s.validate(&json!({"spec": {"maxUnavailable": "25%"}}), None),
        vec![]
    );
    assert_eq!(
        texts(&s.validate(&json!({"spec": {"maxUnavailable": true}}), None)),
        vec![
            "spec.maxUnavailable: Invalid value: \"boolean\": spec.maxUnavailable in body must be of type integer,string: \"boolean\"",
            "<nil>: Invalid value: \"\": \"spec.maxUnavailable\" must validate at least one schema (anyOf)",
            "spec.maxUnavailable: Invalid value: \"boolean\": spec.maxUnavailable in body must be of type integer: \"boolean\"",
        ]
    );
    // Any other anyOf with types is not structural.
    let errs = Structural::from_schema(&json!({"type": "object", "properties": {"spec": {
        "anyOf": [{"type": "integer"}, {"type": "boolean"}], "x-kubernetes-int-or-string": true}}}))
    .unwrap_err();
    assert_eq!(
        texts(&errs),
        vec![
            "properties[spec].anyOf[0].type: Forbidden: must be empty to be structural",
            "properties[spec].anyOf[1].type: Forbidden: must be empty to be structural",
        ]
    );
}
