//! kubectl's typed-client commands send `application/vnd.kubernetes.protobuf`
//! request bodies: the real kubectl creates one object of each kind that way
//! and reads it back as JSON. Each object is also created a second time from
//! kubectl's own JSON rendering of it (`--dry-run=client -o json`, in another
//! namespace), and the two stored objects must be the same.

use rktup_testkit::controlplane::*;
use serde_json::{json, Value};
use std::time::Duration;

const PROTOBUF: &str = "Content-Type: application/vnd.kubernetes.protobuf";

/// `kubectl -v=8 -n team-a create ARGS…`, which must succeed having sent its
/// object as protobuf (-v=8 logs the request headers); returns stdout. Then
/// the same object as JSON into namespace `json-twin`.
async fn create(c: &Cluster, args: &[&str]) -> String {
    let mut dry = vec!["create"];
    dry.extend_from_slice(args);
    // Flags go before a `--` that ends them.
    let at = dry.iter().position(|a| *a == "--").unwrap_or(dry.len());
    dry.splice(at..at, ["--dry-run=client", "-o", "json"]);
    let rendered = c.ok(&dry).await;
    c.apply_stdin(&["-n", "json-twin", "create", "-f", "-"], &rendered)
        .await;

    let mut all = vec!["-v=8", "-n", "team-a", "create"];
    all.extend_from_slice(args);
    let out = c.kubectl(&all).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl {all:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(PROTOBUF),
        "{all:?} sent no protobuf:\n{stderr}"
    );
    stdout
}

/// `kind/name` in team-a (created from protobuf) and in json-twin (from JSON)
/// are the same object, but for what the server assigns per object.
async fn same_as_json_twin(c: &Cluster, kind: &str, name: &str) {
    let mut got = Vec::new();
    for ns in ["team-a", "json-twin"] {
        let v = get_json(c, &["-n", ns, kind, name]).await;
        // The uid shows up in labels and selectors the server adds (jobs).
        let uid = v["metadata"]["uid"].as_str().expect("uid").to_string();
        let scrubbed = v.to_string().replace(&uid, "UID");
        let mut v: Value = serde_json::from_str(&scrubbed).expect("JSON");
        let meta = v["metadata"].as_object_mut().expect("metadata");
        for k in [
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(k);
        }
        // Written by the deployment controller whenever it gets to it.
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
        if let Some(spec) = v["spec"].as_object_mut() {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        // Controllers move status along on their own schedule.
        v.as_object_mut().expect("object").remove("status");
        got.push(v);
    }
    assert_eq!(got[0], got[1], "{kind}/{name}: protobuf vs JSON");
}

async fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.ok(&all).await).expect("kubectl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf() {
    let c = start().await;

    let out = c.kubectl(&["create", "namespace", "team-a", "-v=8"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(PROTOBUF), "{stderr}");
    let ns = get_json(&c, &["ns", "team-a"]).await;
    assert_eq!(ns["metadata"]["name"], "team-a");
    assert_eq!(ns["status"]["phase"], "Active");
    let rendered = c
        .ok_line("create namespace json-twin --dry-run=client -o json")
        .await;
    c.apply_stdin(&["create", "-f", "-"], &rendered).await;
    let twin = get_json(&c, &["ns", "json-twin"]).await;
    assert_eq!(ns["spec"], twin["spec"]);
    assert_eq!(ns["status"], twin["status"]);

    let out = create(
        &c,
        &["deployment", "web", "--image=busybox", "--replicas=2"],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let d = get_json(&c, &["-n", "team-a", "deployment", "web"]).await;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(pod["spec"]["containers"][0]["name"], "busybox");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox");
    // Defaulted by the server, not sent as "" by the protobuf form.
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    same_as_json_twin(&c, "deployment", "web").await;
    assert!(
        d["metadata"]["creationTimestamp"].is_string(),
        "{}",
        d["metadata"]
    );
    // The controllers act on it like on a JSON-created one.
    eventually("2 pods", Duration::from_secs(30), || async {
        let names = c.ok_line("-n team-a get po -l app=web -o name").await;
        (names.lines().count() == 2).then_some(())
    })
    .await;

    create(
        &c,
        &[
            "configmap",
            "settings",
            "--from-literal=color=blue",
            "--from-literal=size=L",
        ],
    )
    .await;
    let cm = get_json(&c, &["-n", "team-a", "configmap", "settings"]).await;
    assert_eq!(cm["data"], json!({"color": "blue", "size": "L"}));
    same_as_json_twin(&c, "configmap", "settings").await;

    create(
        &c,
        &[
            "secret",
            "generic",
            "creds",
            "--from-literal=user=admin",
            "--from-literal=password=s3cret",
        ],
    )
    .await;
    let s = get_json(&c, &["-n", "team-a", "secret", "creds"]).await;
    assert_eq!(s["type"], "Opaque");
    // base64 of "admin" and "s3cret".
    assert_eq!(
        s["data"],
        json!({"user": "YWRtaW4=", "password": "czNjcmV0"})
    );
    same_as_json_twin(&c, "secret", "creds").await;

    create(&c, &["job", "once", "--image=busybox", "--", "echo", "hi"]).await;
    let j = get_json(&c, &["-n", "team-a", "job", "once"]).await;
    let jp = &j["spec"]["template"]["spec"];
    assert_eq!(jp["restartPolicy"], "Never");
    assert_eq!(jp["containers"][0]["image"], "busybox");
    assert_eq!(jp["containers"][0]["command"], json!(["echo", "hi"]));
    same_as_json_twin(&c, "job", "once").await;

    create(&c, &["serviceaccount", "robot"]).await;
    let sa = get_json(&c, &["-n", "team-a", "serviceaccount", "robot"]).await;
    assert_eq!(sa["metadata"]["name"], "robot");
    assert_eq!(sa["metadata"]["namespace"], "team-a");
    same_as_json_twin(&c, "serviceaccount", "robot").await;

    create(&c, &["service", "clusterip", "api", "--tcp=80:8080"]).await;
    let svc = get_json(&c, &["-n", "team-a", "service", "api"]).await;
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert_eq!(svc["spec"]["selector"], json!({"app": "api"}));
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{}",
        svc["spec"]
    );
    same_as_json_twin(&c, "service", "api").await;

    // Errors come back as before: AlreadyExists.
    let again = c.kubectl(&["create", "namespace", "team-a"]).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// kubectl drain cordons the node and evicts its pods. (kubectl 1.33 posts
/// its Evictions as JSON; the protobuf form is covered by
/// `protobuf_eviction_and_delete_options` below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_pods() {
    let c = start().await;
    let port = fake_kubelet().await;
    let _n = fake_node(&c, "drain-me", port).await;
    c.running_deployment("web", 2).await;
    let before = c.ok_line("get po -l app=web -o name").await;

    let out = c
        .kubectl(&[
            "drain",
            "drain-me",
            "--ignore-daemonsets",
            "--timeout=60s",
            "-v=6",
        ])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("/eviction"), "{stderr}");
    for pod in before.lines() {
        let name = pod.trim_start_matches("pod/");
        assert!(
            stdout.contains(&format!("evicting pod default/{name}")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("pod/{name} evicted")), "{stdout}");
    }
    assert!(stdout.contains("node/drain-me drained"), "{stdout}");

    let node = get_json(&c, &["node", "drain-me"]).await;
    assert_eq!(node["spec"]["unschedulable"], true);
    // The evicted pods are gone; their replacements wait for a schedulable node.
    for pod in before.lines() {
        let gone = c.kubectl(&["get", pod.trim()]).await;
        assert!(!gone.status.success(), "{pod} still exists");
    }
    eventually("replacements pending", Duration::from_secs(30), || async {
        let p = get_json(&c, &["po", "-l", "app=web"]).await;
        let items = p["items"].as_array()?.clone();
        (items.len() == 2
            && items
                .iter()
                .all(|i| i["status"]["phase"] == "Pending" && i["spec"]["nodeName"].is_null()))
        .then_some(())
    })
    .await;
}

/// Sends `msg` as a protobuf body (`k8s\0` + runtime.Unknown) with kube-rs's
/// client; returns the status and the JSON answer.
async fn send_protobuf(
    client: &kube::Client,
    method: &str,
    path: &str,
    api_version: &str,
    kind: &str,
    msg: &impl prost::Message,
) -> (u16, Value) {
    use http_body_util::BodyExt;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: None,
        content_type: None,
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(prost::Message::encode_to_vec(&unknown));
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )
        .body(kube::client::Body::from(body))
        .expect("request");
    let resp = client.send(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_eviction_and_delete_options() {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta};
    let c = start().await;
    let client = c.admin().await;
    c.ok_line("create configmap keep --from-literal=k=v").await;
    c.apply_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    )
    .await;

    // A dry-run DELETE whose DeleteOptions body is protobuf leaves the object.
    let dry = DeleteOptions {
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    let (code, answer) = send_protobuf(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/keep",
        "v1",
        "DeleteOptions",
        &dry,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    c.ok_line("get configmap keep").await;

    // policy/v1 Eviction with gracePeriodSeconds: 0 (a pointer zero that must
    // survive) removes the pod at once.
    let eviction = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(ObjectMeta {
            name: Some("p1".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        delete_options: Some(DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        }),
    };
    let (code, answer) = send_protobuf(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods/p1/eviction",
        "policy/v1",
        "Eviction",
        &eviction,
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"], "Success");
    let gone = c.kubectl(&["get", "pod", "p1"]).await;
    assert!(!gone.status.success(), "pod p1 still exists");

    // A kind without a protobuf decoder is a 415 that names it.
    let (code, answer) = send_protobuf(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &ObjectMeta::default(),
    )
    .await;
    assert_eq!(code, 415, "{answer}");
    assert_eq!(answer["reason"], "UnsupportedMediaType");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"CustomResourceDefinition\"")),
        "{answer}"
    );
}

/// The kinds `kubectl create` makes beyond the first eighteen, sent as protobuf, stored the
/// same as from their JSON rendering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_for_the_new_kinds() {
    let c = start().await;
    c.ok_line("create namespace team-a").await;
    c.ok_line("create namespace json-twin").await;

    let out = create(
        &c,
        &[
            "cronjob",
            "nightly",
            "--image=busybox",
            "--schedule=0 3 * * *",
            "--",
            "date",
        ],
    )
    .await;
    assert_eq!(out.trim(), "cronjob.batch/nightly created");
    let cj = get_json(&c, &["-n", "team-a", "cronjob", "nightly"]).await;
    assert_eq!(cj["spec"]["schedule"], "0 3 * * *");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    let tmpl = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(tmpl["containers"][0]["command"], json!(["date"]));
    same_as_json_twin(&c, "cronjob", "nightly").await;

    let out = create(
        &c,
        &["pdb", "web", "--selector=app=web", "--min-available=1"],
    )
    .await;
    assert_eq!(out.trim(), "poddisruptionbudget.policy/web created");
    let pdb = get_json(&c, &["-n", "team-a", "pdb", "web"]).await;
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    same_as_json_twin(&c, "pdb", "web").await;

    let out = create(&c, &["quota", "q", "--hard=pods=10,requests.cpu=2"]).await;
    assert_eq!(out.trim(), "resourcequota/q created");
    let q = get_json(&c, &["-n", "team-a", "quota", "q"]).await;
    assert_eq!(
        q["spec"]["hard"],
        json!({"pods": "10", "requests.cpu": "2"})
    );
    same_as_json_twin(&c, "quota", "q").await;

    let out = create(
        &c,
        &[
            "ingress",
            "web",
            "--class=nginx",
            "--rule=web.example.com/=web:80",
        ],
    )
    .await;
    assert_eq!(out.trim(), "ingress.networking.k8s.io/web created");
    let ing = get_json(&c, &["-n", "team-a", "ingress", "web"]).await;
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    let path = &ing["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["pathType"], "Exact");
    assert_eq!(
        path["backend"]["service"],
        json!({"name": "web", "port": {"number": 80}})
    );
    same_as_json_twin(&c, "ingress", "web").await;

    // Cluster-scoped: no twin in another namespace.
    let out = c
        .kubectl(&[
            "-v=8",
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=x",
        ])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(PROTOBUF), "{stderr}");
    let pc = get_json(&c, &["priorityclass", "high"]).await;
    assert_eq!(pc["value"], 1000);
    assert_eq!(pc["description"], "x");
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    c.handle.shutdown().await;
}
