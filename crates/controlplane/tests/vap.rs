//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) through the real kubectl:
//! the Kubernetes docs' `demo-policy.example.com` (replicas <= 5 on Deployments, a Deny
//! binding selecting namespaces by label), a ConfigMap as params (paramRef by name and by
//! selector, parameterNotFoundAction), the Warn action, reasons and messageExpression,
//! variables, matchConditions, `request` and `namespaceObject`, failurePolicy Fail/Ignore
//! on evaluation errors, and policies whose expressions do not compile refused at create.

use rktup_testkit::controlplane::*;
use serde_json::{json, Value};

/// kubectl that must fail; its stderr.
async fn refused(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = c.kubectl_stdin(args, stdin).await;
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// kubectl that must succeed; its stderr (warnings).
async fn allowed(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = c.kubectl_stdin(args, stdin).await;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn create(c: &Cluster, obj: Value) {
    c.apply_stdin(&["create", "-f", "-"], &obj.to_string())
        .await;
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn binding(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1",
           "kind": "ValidatingAdmissionPolicyBinding",
           "metadata": {"name": name}, "spec": spec})
}

fn deployments_rule() -> Value {
    json!({"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]})
}

fn configmaps_rule() -> Value {
    json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]})
}

fn configmap(ns: &str, name: &str, data: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns}, "data": data})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_example_denies_in_selected_namespaces() {
    let c = start().await;
    c.ok(&["create", "namespace", "vap-test"]).await;
    c.ok(&["label", "namespace", "vap-test", "environment=test"])
        .await;
    c.ok(&["create", "namespace", "vap-prod"]).await;
    create(
        &c,
        policy(
            "demo-policy.example.com",
            json!({"failurePolicy": "Fail", "matchConstraints": deployments_rule(),
                   "validations": [{"expression": "object.spec.replicas <= 5"}]}),
        ),
    )
    .await;
    create(
        &c,
        binding(
            "demo-binding-test.example.com",
            json!({"policyName": "demo-policy.example.com", "validationActions": ["Deny"],
                   "matchResources": {"namespaceSelector":
                       {"matchLabels": {"environment": "test"}}}}),
        ),
    )
    .await;

    // Defaults as upstream's SetDefaults_ValidatingAdmissionPolicySpec / _MatchResources.
    let stored: Value = serde_json::from_str(
        &c.ok(&[
            "get",
            "validatingadmissionpolicy",
            "demo-policy.example.com",
            "-o",
            "json",
        ])
        .await,
    )
    .expect("json");
    let mc = &stored["spec"]["matchConstraints"];
    assert_eq!(stored["spec"]["failurePolicy"], "Fail", "{stored}");
    assert_eq!(mc["matchPolicy"], "Equivalent", "{stored}");
    assert_eq!(mc["namespaceSelector"], json!({}), "{stored}");
    assert_eq!(mc["objectSelector"], json!({}), "{stored}");
    assert_eq!(mc["resourceRules"][0]["scope"], "*", "{stored}");
    // The docs' refusal text, prefixed as admission.NewForbidden words it.
    let err = refused(
        &c,
        &[
            "create",
            "deployment",
            "nginx",
            "-n",
            "vap-test",
            "--image=nginx",
            "--replicas=6",
        ],
        None,
    )
    .await;
    assert!(
        err.contains("deployments.apps \"nginx\" is forbidden: ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"),
        "{err}"
    );
    // Reason Invalid (422) by default: kubectl words it as the docs show.
    let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "vap-test"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "nginx"}},
                 "template": {"metadata": {"labels": {"app": "nginx"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}})
    .to_string();
    let err = refused(&c, &["create", "-f", "-"], Some(&manifest)).await;
    assert!(
        err.contains("The deployments \"nginx\" is invalid: : ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"),
        "{err}"
    );
    // Within the limit: created; then an update over it is refused too.
    c.ok(&[
        "create",
        "deployment",
        "nginx",
        "-n",
        "vap-test",
        "--image=nginx",
        "--replicas=5",
    ])
    .await;
    let err = refused(
        &c,
        &[
            "patch",
            "deployment",
            "nginx",
            "-n",
            "vap-test",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":9}}"#,
        ],
        None,
    )
    .await;
    assert!(err.contains("denied request: failed expression"), "{err}");
    // A namespace the binding does not select is not checked.
    c.ok(&[
        "create",
        "deployment",
        "nginx",
        "-n",
        "vap-prod",
        "--image=nginx",
        "--replicas=6",
    ])
    .await;
    // Other kinds are not matched by the policy's constraints.
    c.ok(&["create", "configmap", "cm", "-n", "vap-test"]).await;
    // Without its binding the policy does nothing.
    c.ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "demo-binding-test.example.com",
    ])
    .await;
    c.ok(&[
        "create",
        "deployment",
        "big",
        "-n",
        "vap-test",
        "--image=nginx",
        "--replicas=7",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_params_by_name_and_selector() {
    let c = start().await;
    c.ok(&["create", "namespace", "vap-params"]).await;
    create(
        &c,
        policy(
            "replica-limit.example.com",
            json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                   "matchConstraints": deployments_rule(),
                   "validations": [{
                       "expression": "object.spec.replicas <= int(params.data.maxReplicas)",
                       "messageExpression": "'replicas must be no greater than ' + params.data.maxReplicas",
                       "reason": "Forbidden"}]}),
        ),
    )
    .await;
    create(
        &c,
        binding(
            "replica-limit-by-name.example.com",
            json!({"policyName": "replica-limit.example.com", "validationActions": ["Deny"],
                   "paramRef": {"name": "replica-limit", "namespace": "vap-params",
                                "parameterNotFoundAction": "Deny"}}),
        ),
    )
    .await;
    let deploy = |name: &'static str, n: u32| {
        let replicas = format!("--replicas={n}");
        let c = &c;
        async move {
            c.kubectl(&[
                "create",
                "deployment",
                name,
                "-n",
                "vap-params",
                "--image=nginx",
                &replicas,
            ])
            .await
        }
    };
    // No param object yet: Deny.
    let out = deploy("a", 1).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{err}"
    );
    c.apply_stdin(
        &["create", "-f", "-"],
        &configmap("vap-params", "replica-limit", json!({"maxReplicas": "3"})),
    )
    .await;
    let out = deploy("a", 4).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("with binding 'replica-limit-by-name.example.com' denied request: replicas must be no greater than 3"),
        "{err}"
    );
    // reason Forbidden: 403, as kubectl names it.
    let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "a", "namespace": "vap-params"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}},
                              "spec": {"containers": [{"name": "a", "image": "nginx"}]}}}})
    .to_string();
    let err = refused(&c, &["create", "-f", "-"], Some(&manifest)).await;
    assert!(
        err.contains("Error from server (Forbidden): error when creating \"STDIN\": deployments.apps \"a\" is forbidden: ValidatingAdmissionPolicy"),
        "{err}"
    );
    assert!(deploy("a", 3).await.status.success());
    // The param object changes: the next request sees it.
    c.ok(&[
        "patch",
        "configmap",
        "replica-limit",
        "-n",
        "vap-params",
        "--type=merge",
        "-p",
        r#"{"data":{"maxReplicas":"10"}}"#,
    ])
    .await;
    assert!(deploy("b", 8).await.status.success());

    // By selector: every selected object is a param; none selected with Allow admits.
    c.ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "replica-limit-by-name.example.com",
    ])
    .await;
    create(
        &c,
        binding(
            "replica-limit-by-label.example.com",
            json!({"policyName": "replica-limit.example.com", "validationActions": ["Deny"],
                   "paramRef": {"selector": {"matchLabels": {"limits": "on"}},
                                "parameterNotFoundAction": "Allow"}}),
        ),
    )
    .await;
    assert!(deploy("c", 50).await.status.success());
    c.apply_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "strict", "namespace": "vap-params",
                             "labels": {"limits": "on"}},
                "data": {"maxReplicas": "2"}})
        .to_string(),
    )
    .await;
    // No paramRef.namespace: the request's namespace is searched.
    let out = deploy("d", 5).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("denied request: replicas must be no greater than 2"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_action_variables_and_request() {
    let c = start().await;
    c.ok(&["create", "namespace", "vap-warn"]).await;
    c.ok(&["label", "namespace", "vap-warn", "team=blue"]).await;
    create(
        &c,
        policy(
            "team-label.example.com",
            json!({"matchConstraints": configmaps_rule(),
                   "matchConditions": [{"name": "not-skipped",
                       "expression": "!object.metadata.name.startsWith('skip')"}],
                   "variables": [
                       {"name": "labels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"},
                       {"name": "team", "expression": "'team' in variables.labels ? variables.labels.team : ''"}],
                   "validations": [
                       {"expression": "variables.team != ''", "message": "a team label is required"},
                       {"expression": "variables.team == '' || variables.team == namespaceObject.metadata.labels.team",
                        "messageExpression": "'team ' + variables.team + ' does not own namespace ' + request.namespace"}]}),
        ),
    )
    .await;
    create(
        &c,
        binding(
            "team-label-warn.example.com",
            json!({"policyName": "team-label.example.com", "validationActions": ["Warn", "Audit"]}),
        ),
    )
    .await;
    // Warn: admitted, with upstream's warning text.
    let stderr = allowed(
        &c,
        &["create", "-f", "-"],
        Some(&configmap("vap-warn", "plain", json!({"k": "v"}))),
    )
    .await;
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'team-label.example.com' with binding 'team-label-warn.example.com': a team label is required"),
        "{stderr}"
    );
    let labelled = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "red", "namespace": "vap-warn", "labels": {"team": "red"}}})
    .to_string();
    let stderr = allowed(&c, &["create", "-f", "-"], Some(&labelled)).await;
    assert!(
        stderr.contains("team-label-warn.example.com': team red does not own namespace vap-warn"),
        "{stderr}"
    );
    let ok = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "blue", "namespace": "vap-warn", "labels": {"team": "blue"}}})
    .to_string();
    let stderr = allowed(&c, &["create", "-f", "-"], Some(&ok)).await;
    assert!(!stderr.contains("Warning"), "{stderr}");
    // matchCondition false: not evaluated.
    let stderr = allowed(
        &c,
        &["create", "-f", "-"],
        Some(&configmap("vap-warn", "skip-me", json!({}))),
    )
    .await;
    assert!(!stderr.contains("Warning"), "{stderr}");
    // Deny and Warn together are refused by the binding's validation, as upstream.
    let err = refused(
        &c,
        &[
            "patch",
            "validatingadmissionpolicybinding",
            "team-label-warn.example.com",
            "--type=merge",
            "-p",
            r#"{"spec":{"validationActions":["Deny","Warn"]}}"#,
        ],
        None,
    )
    .await;
    assert!(err.contains("must not contain both Deny and Warn"), "{err}");
    // Deny: refused, naming the binding.
    c.ok(&[
        "patch",
        "validatingadmissionpolicybinding",
        "team-label-warn.example.com",
        "--type=merge",
        "-p",
        r#"{"spec":{"validationActions":["Deny"]}}"#,
    ])
    .await;
    let err = refused(
        &c,
        &["create", "-f", "-"],
        Some(&configmap("vap-warn", "plain2", json!({}))),
    )
    .await;
    assert!(
        err.contains("The configmaps \"plain2\" is invalid: : ValidatingAdmissionPolicy 'team-label.example.com' with binding 'team-label-warn.example.com' denied request: a team label is required"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_on_evaluation_errors() {
    let c = start().await;
    c.ok(&["create", "namespace", "vap-fail"]).await;
    for (name, fp) in [("strict", "Fail"), ("lenient", "Ignore")] {
        create(
            &c,
            policy(
                &format!("{name}.example.com"),
                json!({"failurePolicy": fp, "matchConstraints": {
                           "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vap-fail"}},
                           "objectSelector": {"matchLabels": {"policy": name}},
                           "resourceRules": configmaps_rule()["resourceRules"]},
                       // data.missing does not exist: an evaluation error, not false.
                       "validations": [{"expression": "object.data.missing == 'x'"}]}),
            ),
        )
        .await;
        create(
            &c,
            binding(
                &format!("{name}-binding.example.com"),
                json!({"policyName": format!("{name}.example.com"), "validationActions": ["Deny"]}),
            ),
        )
        .await;
    }
    let cm = |name: &str, policy: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "vap-fail", "labels": {"policy": policy}},
            "data": {"k": "v"}})
        .to_string()
    };
    let err = refused(&c, &["create", "-f", "-"], Some(&cm("a", "strict"))).await;
    assert!(
        err.contains("ValidatingAdmissionPolicy 'strict.example.com' with binding 'strict-binding.example.com' denied request: expression 'object.data.missing == 'x'' resulted in error"),
        "{err}"
    );
    allowed(&c, &["create", "-f", "-"], Some(&cm("b", "lenient"))).await;
    // A variable that fails is reported by the validation that uses it.
    create(
        &c,
        policy(
            "bad-variable.example.com",
            json!({"matchConstraints": {
                       "objectSelector": {"matchLabels": {"policy": "bad-variable"}},
                       "resourceRules": configmaps_rule()["resourceRules"]},
                   "variables": [{"name": "missing", "expression": "object.data.absent"}],
                   "validations": [{"expression": "variables.missing == 'x'"}]}),
        ),
    )
    .await;
    create(
        &c,
        binding(
            "bad-variable-binding.example.com",
            json!({"policyName": "bad-variable.example.com", "validationActions": ["Deny"]}),
        ),
    )
    .await;
    let err = refused(&c, &["create", "-f", "-"], Some(&cm("g", "bad-variable"))).await;
    assert!(
        err.contains("denied request: expression 'variables.missing == 'x'' resulted in error: ")
            && err.contains("absent"),
        "{err}"
    );
    // Neither selector matches: untouched.
    allowed(&c, &["create", "-f", "-"], Some(&cm("c", "other"))).await;
    // Configuration errors (a paramKind not served) follow the failure policy too.
    for (name, fp) in [("unknown-kind", "Fail"), ("unknown-kind-ignored", "Ignore")] {
        create(
            &c,
            policy(
                &format!("{name}.example.com"),
                json!({"failurePolicy": fp,
                       "paramKind": {"apiVersion": "example.com/v1", "kind": "Nope"},
                       "matchConstraints": {
                           "objectSelector": {"matchLabels": {"policy": name}},
                           "resourceRules": configmaps_rule()["resourceRules"]},
                       "validations": [{"expression": "true"}]}),
            ),
        )
        .await;
        create(
            &c,
            binding(
                &format!("{name}-binding.example.com"),
                json!({"policyName": format!("{name}.example.com"), "validationActions": ["Deny"],
                       "paramRef": {"name": "x", "parameterNotFoundAction": "Allow"}}),
            ),
        )
        .await;
    }
    let err = refused(&c, &["create", "-f", "-"], Some(&cm("e", "unknown-kind"))).await;
    assert!(
        err.contains("with binding 'unknown-kind-binding.example.com' denied request: failed to configure binding: paramKind kind `&ParamKind{APIVersion:example.com/v1,Kind:Nope,}` not known"),
        "{err}"
    );
    allowed(
        &c,
        &["create", "-f", "-"],
        Some(&cm("f", "unknown-kind-ignored")),
    )
    .await;
    // A binding whose policy does not exist does nothing.
    create(
        &c,
        binding(
            "orphan.example.com",
            json!({"policyName": "absent.example.com", "validationActions": ["Deny"]}),
        ),
    )
    .await;
    allowed(&c, &["create", "-f", "-"], Some(&cm("d", "other"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_that_do_not_compile_are_refused() {
    let c = start().await;
    let bad = policy(
        "bad.example.com",
        json!({"matchConstraints": deployments_rule(),
               "validations": [{"expression": "object.spec.replicas <="}]}),
    );
    let err = refused(&c, &["create", "-f", "-"], Some(&bad.to_string())).await;
    assert!(
        err.contains("spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed"),
        "{err}"
    );
    let bad_binding = binding(
        "bad-binding.example.com",
        json!({"policyName": "p", "validationActions": ["Deny", "Deny", "Block"],
               "paramRef": {"name": "a", "selector": {}}}),
    );
    let err = refused(&c, &["create", "-f", "-"], Some(&bad_binding.to_string())).await;
    for want in [
        "spec.validationActions[1]: Duplicate value: \"Deny\"",
        "spec.validationActions[2]: Unsupported value: \"Block\"",
        "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
        "spec.paramRef.parameterNotFoundAction: Required value",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Benchmark (ignored by default; `cargo test --release --test vap -- --ignored --nocapture
/// bench`): ConfigMap creates through kube-rs with no binding, with a policy whose
/// selector does not match, and with one that evaluates two validations, a variable and a
/// ConfigMap param on every create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_policy_overhead() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(500);
    let c = start().await;
    let api: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
    let run = |label: &'static str| {
        let api = api.clone();
        async move {
            let mut lat = Vec::with_capacity(rounds);
            for i in 0..rounds {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("{label}-{i}"), "labels": {"bench": label}},
                    "data": {"k": "v"}}))
                .expect("configmap");
                let t = std::time::Instant::now();
                api.create(&PostParams::default(), &cm)
                    .await
                    .expect("created");
                lat.push(t.elapsed());
            }
            lat.sort();
            let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
            println!(
                "vap-bench {label:<10} n={rounds} p50={:.2}ms p99={:.2}ms",
                p(0.50).as_secs_f64() * 1e3,
                p(0.99).as_secs_f64() * 1e3
            );
        }
    };
    run("none").await;
    c.apply_stdin(
        &["create", "-f", "-"],
        &configmap("default", "limits", json!({"max": "10"})),
    )
    .await;
    create(
        &c,
        policy(
            "bench.example.com",
            json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                   "matchConstraints": {
                       "objectSelector": {"matchLabels": {"bench": "policy"}},
                       "resourceRules": configmaps_rule()["resourceRules"]},
                   "variables": [{"name": "n", "expression": "size(object.data)"}],
                   "validations": [
                       {"expression": "variables.n <= int(params.data.max)"},
                       {"expression": "object.metadata.name.startsWith('policy')"}]}),
        ),
    )
    .await;
    create(
        &c,
        binding(
            "bench-binding.example.com",
            json!({"policyName": "bench.example.com", "validationActions": ["Deny"],
                   "paramRef": {"name": "limits", "namespace": "default",
                                "parameterNotFoundAction": "Deny"}}),
        ),
    )
    .await;
    run("unmatched").await;
    run("policy").await;
}
