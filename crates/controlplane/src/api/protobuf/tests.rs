//! Round trips: objects built with the k8s-pb structs, encoded by prost the way
//! client-go encodes them (every non-pointer Go field written, zero or not),
//! decoded back into JSON.

use super::*;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
use serde_json::json;

fn envelope(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ObjectMeta as Go marshals a client-built one: every non-pointer field
/// present, the zero creationTimestamp an empty message.
fn go_meta(name: &str, namespace: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: map(labels),
        ..Default::default()
    }
}

/// What `kubectl create deployment web --image=busybox --replicas=2` sends.
fn kubectl_deployment() -> apps::Deployment {
    let labels = [("app", "web")];
    let container = core::Container {
        name: s("busybox"),
        image: s("busybox"),
        working_dir: s(""),
        resources: Some(core::ResourceRequirements::default()),
        termination_message_path: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        termination_message_policy: s(""),
        ..Default::default()
    };
    apps::Deployment {
        metadata: Some(go_meta("web", "", &labels)),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: map(&labels),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(go_meta("", "", &labels)),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    restart_policy: s(""),
                    dns_policy: s(""),
                    service_account_name: s(""),
                    service_account: s(""),
                    node_name: s(""),
                    host_network: Some(false),
                    host_pid: Some(false),
                    host_ipc: Some(false),
                    hostname: s(""),
                    subdomain: s(""),
                    scheduler_name: s(""),
                    priority_class_name: s(""),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s(""),
                ..Default::default()
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            updated_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            unavailable_replicas: Some(0),
            ..Default::default()
        }),
    }
}

#[test]
fn deployment_round_trips_to_the_json_form() {
    let body = envelope("apps/v1", "Deployment", &kubectl_deployment());
    let got = decode_body(&body).expect("decodes");
    // What kubectl's JSON encoder writes for the same object.
    let want = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "busybox", "image": "busybox", "resources": {}}]
                }
            },
            "strategy": {}
        },
        "status": {}
    });
    assert_eq!(got, want);
}

#[test]
fn secret_data_is_base64_and_pointers_keep_zero_values() {
    let secret = core::Secret {
        metadata: Some(go_meta("creds", "team-a", &[])),
        immutable: Some(false),
        data: [
            ("password".to_string(), b"s3cr\xffet".to_vec()),
            ("empty".to_string(), Vec::new()),
        ]
        .into_iter()
        .collect(),
        string_data: map(&[("user", "admin")]),
        r#type: s("Opaque"),
    };
    let got = decode_body(&envelope("v1", "Secret", &secret)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "team-a", "creationTimestamp": null},
            "immutable": false,
            "data": {"password": "czNjcv9ldA==", "empty": ""},
            "stringData": {"user": "admin"},
            "type": "Opaque"
        })
    );
}

#[test]
fn replicas_zero_survives_and_intorstring_quantities_and_times_convert() {
    let mut d = kubectl_deployment();
    let spec = d.spec.as_mut().expect("spec");
    spec.replicas = Some(0);
    spec.strategy = Some(apps::DeploymentStrategy {
        r#type: s("RollingUpdate"),
        rolling_update: Some(apps::RollingUpdateDeployment {
            max_unavailable: Some(IntOrString {
                r#type: Some(0),
                int_val: Some(0),
                str_val: s(""),
            }),
            max_surge: Some(IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: s("25%"),
            }),
        }),
    });
    let c = &mut spec
        .template
        .as_mut()
        .and_then(|t| t.spec.as_mut())
        .expect("pod spec")
        .containers[0];
    c.resources = Some(core::ResourceRequirements {
        limits: [("memory".to_string(), Quantity { string: s("64Mi") })]
            .into_iter()
            .collect(),
        requests: [("cpu".to_string(), Quantity { string: s("100m") })]
            .into_iter()
            .collect(),
        ..Default::default()
    });
    c.ports = vec![core::ContainerPort {
        name: s(""),
        host_port: Some(0),
        container_port: Some(8080),
        protocol: s("TCP"),
        host_ip: s(""),
    }];
    d.metadata.as_mut().expect("meta").creation_timestamp = Some(meta::Time {
        seconds: Some(1_700_000_000),
        nanos: Some(0),
    });
    let got = decode_body(&envelope("apps/v1", "Deployment", &d)).expect("decodes");
    assert_eq!(got["spec"]["replicas"], json!(0));
    assert_eq!(
        got["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}})
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"][0]["resources"],
        json!({"limits": {"memory": "64Mi"}, "requests": {"cpu": "100m"}})
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        got["metadata"]["creationTimestamp"],
        json!("2023-11-14T22:13:20Z")
    );
}

#[test]
fn inline_structs_are_flattened() {
    let pod = core::Pod {
        metadata: Some(go_meta("p", "default", &[])),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: s("settings"),
                        }),
                        default_mode: Some(0o644),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: s("main"),
                liveness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: s("http"),
                            }),
                            host: s(""),
                            scheme: s("HTTP"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    initial_delay_seconds: Some(0),
                    timeout_seconds: Some(5),
                    period_seconds: Some(0),
                    success_threshold: Some(0),
                    failure_threshold: Some(0),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        }),
        status: None,
    };
    let got = decode_body(&envelope("v1", "Pod", &pod)).expect("decodes");
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}}])
    );
    assert_eq!(
        got["spec"]["containers"][0]["livenessProbe"],
        json!({"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "timeoutSeconds": 5})
    );
    assert_eq!(got["spec"]["terminationGracePeriodSeconds"], json!(0));
}

#[test]
fn micro_time_raw_extension_and_managed_fields() {
    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("node-a"),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubelet"),
                operation: s("Update"),
                api_version: s("coordination.k8s.io/v1"),
                time: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(FieldsV1 {
                    raw: Some(br#"{"f:spec":{"f:holderIdentity":{}}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s(""),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let got = decode_body(&envelope("coordination.k8s.io/v1", "Lease", &lease)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": "node-a",
                "managedFields": [{
                    "manager": "kubelet",
                    "operation": "Update",
                    "apiVersion": "coordination.k8s.io/v1",
                    "time": "1970-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:holderIdentity": {}}}
                }]
            },
            "spec": {
                "holderIdentity": "",
                "leaseDurationSeconds": 40,
                "renewTime": "2023-11-14T22:13:20.123456Z",
                "leaseTransitions": 0
            }
        })
    );

    let rev = apps::ControllerRevision {
        metadata: Some(go_meta("ds-1", "default", &[])),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"template":{"$patch":"replace"}}}"#.to_vec()),
        }),
        revision: Some(1),
    };
    let got = decode_body(&envelope("apps/v1", "ControllerRevision", &rev)).expect("decodes");
    assert_eq!(
        got["data"],
        json!({"spec": {"template": {"$patch": "replace"}}})
    );
    assert_eq!(got["revision"], json!(1));

    let bad = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"\x01not json".to_vec()),
        }),
        ..Default::default()
    };
    let err = decode_body(&envelope("apps/v1", "ControllerRevision", &bad)).expect_err("rejects");
    assert_eq!(err.code, 400);
    assert!(err.message.contains("RawExtension"), "{}", err.message);
}

#[test]
fn eviction_and_delete_options() {
    let ev = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(go_meta("web-1", "default", &[])),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            dry_run: vec!["All".into()],
            ..Default::default()
        }),
    };
    let got = decode_body(&envelope("policy/v1", "Eviction", &ev)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": null},
            "deleteOptions": {"gracePeriodSeconds": 0, "dryRun": ["All"]}
        })
    );
    // DeleteOptions is registered in every group version.
    let opts = meta::DeleteOptions {
        propagation_policy: s("Foreground"),
        ..Default::default()
    };
    for av in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let got = decode_body(&envelope(av, "DeleteOptions", &opts)).expect("decodes");
        assert_eq!(got["propagationPolicy"], json!("Foreground"), "{av}");
        assert_eq!(got["apiVersion"], json!(av));
    }
}

#[test]
fn bad_bodies_are_rejected_clearly() {
    let err = decode_body(b"{\"kind\":\"Pod\"}").expect_err("no magic");
    assert_eq!(err.code, 400);
    let mut garbage = MAGIC.to_vec();
    garbage.extend([0x0a, 0xff, 0xff]);
    assert_eq!(decode_body(&garbage).expect_err("garbage").code, 400);

    let cm = core::ConfigMap::default();
    let err = decode_body(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &cm,
    ))
    .expect_err("unknown kind");
    assert_eq!(err.code, 415);
    assert_eq!(err.reason, "UnsupportedMediaType");
    assert!(
        err.message.contains("\"CustomResourceDefinition\"")
            && err.message.contains("apiextensions.k8s.io/v1"),
        "{}",
        err.message
    );
    // The object message must match the kind in the envelope.
    let err = decode_body(&envelope(
        "v1",
        "Pod",
        &core::Secret {
            r#type: s("Opaque"),
            ..Default::default()
        },
    ))
    .expect_err("wrong message");
    assert_eq!(err.code, 400, "{}", err.message);
}

#[test]
fn go_duration_strings() {
    for (ns, want) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (300_000_000, "300ms"),
        (1_500_000_000, "1.5s"),
        (30_000_000_000, "30s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(ns), want, "{ns}");
    }
    let mut cx = Cx {
        err: None,
        depth: 0,
    };
    assert_eq!(
        Duration {
            duration: Some(5_000_000_000)
        }
        .json(&mut cx),
        json!("5s")
    );
    assert!(cx.err.is_none());
}

#[test]
fn raw_extension_may_hold_a_protobuf_document_but_not_endlessly_nested() {
    let cm = core::ConfigMap {
        metadata: Some(go_meta("inner", "", &[])),
        data: map(&[("k", "v")]),
        ..Default::default()
    };
    let revision = |raw: Vec<u8>| apps::ControllerRevision {
        data: Some(RawExtension { raw: Some(raw) }),
        revision: Some(1),
        ..Default::default()
    };
    let one = revision(envelope("v1", "ConfigMap", &cm));
    let got = decode_body(&envelope("apps/v1", "ControllerRevision", &one)).expect("decodes");
    assert_eq!(
        got["data"],
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "inner", "creationTimestamp": null},
            "data": {"k": "v"}
        })
    );

    // Revisions inside revisions: MAX_NESTING levels are fine, one more is not.
    let mut doc = envelope("v1", "ConfigMap", &cm);
    for _ in 0..MAX_NESTING {
        doc = envelope("apps/v1", "ControllerRevision", &revision(doc));
    }
    decode_body(&doc).expect("MAX_NESTING levels decode");
    let doc = envelope("apps/v1", "ControllerRevision", &revision(doc));
    let err = decode_body(&doc).expect_err("too deep");
    assert_eq!(err.code, 400);
    assert!(err.message.contains("nested"), "{}", err.message);
}

#[test]
fn token_request_and_self_subject_review() {
    use k8s_pb::api::authentication::v1 as authn;
    // What `kubectl create token default --duration=10m --audience=x
    // --bound-object-kind=Pod --bound-object-name=p --bound-object-uid=u` sends.
    let tr = authn::TokenRequest {
        metadata: Some(go_meta("", "", &[])),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec!["x".into()],
            expiration_seconds: Some(600),
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: s("Pod"),
                api_version: s("v1"),
                name: s("p"),
                u_id: s("u"),
            }),
        }),
        status: Some(authn::TokenRequestStatus {
            token: s(""),
            expiration_timestamp: Some(meta::Time::default()),
        }),
    };
    let got =
        decode_body(&envelope("authentication.k8s.io/v1", "TokenRequest", &tr)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"creationTimestamp": null},
            "spec": {
                "audiences": ["x"],
                "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"},
            },
            "status": {"expirationTimestamp": null},
        })
    );
    // No expirationSeconds on the wire (a nil pointer): absent, so the server defaults it.
    let bare = authn::TokenRequest {
        spec: Some(authn::TokenRequestSpec::default()),
        ..Default::default()
    };
    let got =
        decode_body(&envelope("authentication.k8s.io/v1", "TokenRequest", &bare)).expect("decodes");
    assert_eq!(got["spec"], json!({}));

    // ExtraValue is a Go []string: a JSON list.
    let ssr = authn::SelfSubjectReview {
        status: Some(authn::SelfSubjectReviewStatus {
            user_info: Some(authn::UserInfo {
                username: s("u"),
                extra: [(
                    "k".to_string(),
                    authn::ExtraValue {
                        items: vec!["a".into(), "b".into()],
                    },
                )]
                .into(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let got = decode_body(&envelope(
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &ssr,
    ))
    .expect("decodes");
    assert_eq!(
        got["status"],
        json!({"userInfo": {"username": "u", "extra": {"k": ["a", "b"]}}})
    );
}
