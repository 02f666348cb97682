//! RBAC, judged by the real kubectl: a service account gets exactly what
//! its bindings grant (and loses it when the binding goes), `kubectl auth
//! can-i` (with `--list`, `--as`, `--as-group`, subresources and
//! non-resource URLs), impersonation, escalation prevention, ClusterRole
//! aggregation, the bootstrap policy (and its repair at restart), and the
//! public and discovery endpoints for non-admins.

use rktup_controlplane::pki::Credential;
use rktup_testkit::controlplane::*;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A namespace and a service account in it; returns a token for it.
async fn service_account(c: &Cluster, ns: &str, sa: &str) -> String {
    c.ok_line(&format!("create namespace {ns}")).await;
    c.ok_line(&format!("create serviceaccount {sa} -n {ns}"))
        .await;
    c.ok_line(&format!("create token {sa} -n {ns}"))
        .await
        .trim()
        .to_string()
}

/// kubectl as the service account `sa` of `ns` with its token only.
async fn as_sa(c: &Cluster, ns: &str, token: &str, args: &[&str]) -> Output {
    c.kubectl_as(
        &format!("sa-{ns}"),
        &Credential::Token(token.to_string()),
        args,
    )
    .await
}

/// `as_sa` with the arguments as one line, split at white space.
async fn as_sa_line(c: &Cluster, ns: &str, token: &str, line: &str) -> Output {
    as_sa(c, ns, token, &line.split_whitespace().collect::<Vec<_>>()).await
}

/// Role `role` in `ns` with `rules` (`kubectl create role` flags), bound under the same name
/// to service account `sa` of `ns`.
async fn role_for_sa(c: &Cluster, ns: &str, role: &str, rules: &str, sa: &str) {
    c.ok_line(&format!("create role {role} -n {ns} {rules}"))
        .await;
    c.ok_line(&format!(
        "create rolebinding {role} -n {ns} --role={role} --serviceaccount={ns}:{sa}"
    ))
    .await;
}

fn forbidden_text(o: &Output, text: &str) {
    assert!(!o.status.success(), "expected a refusal, got {}", out(o));
    assert!(err(o).contains(text), "expected {text:?} in:\n{}", err(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_gets_what_its_role_binding_grants() {
    let c = start().await;
    let ns = "rbac-grants";
    let token = service_account(&c, ns, "robot").await;
    let user = format!("system:serviceaccount:{ns}:robot");

    // Without a binding: 403 in kube-apiserver's words.
    let o = as_sa_line(&c, ns, &token, &format!("get pods -n {ns}")).await;
    forbidden_text(&o, &format!("Error from server (Forbidden): pods is forbidden: User \"{user}\" cannot list resource \"pods\" in API group \"\" in the namespace \"{ns}\""));

    c.ok_line(&format!(
        "create role pod-reader -n {ns} --verb=get,list,watch --resource=pods,pods/log"
    ))
    .await;
    c.ok_line(&format!(
        "create rolebinding robot-reads -n {ns} --role=pod-reader --serviceaccount={ns}:robot"
    ))
    .await;

    // Allowed verbs work (the next request sees the new binding).
    let o = as_sa_line(&c, ns, &token, &format!("get pods -n {ns}")).await;
    assert!(o.status.success(), "{}", err(&o));
    // Others are refused, with the verb and resource named.
    let o = as_sa_line(&c, ns, &token, &format!("delete pod x -n {ns}")).await;
    forbidden_text(&o, &format!("pods \"x\" is forbidden: User \"{user}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"{ns}\""));
    let o = as_sa_line(&c, ns, &token, &format!("get secrets -n {ns}")).await;
    forbidden_text(&o, &format!("secrets is forbidden: User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""));
    // Another namespace is not granted.
    let o = as_sa_line(&c, ns, &token, "get pods -n default").await;
    forbidden_text(&o, "in the namespace \"default\"");

    // can-i, as the service account itself.
    let can = |args: &'static [&'static str]| {
        let (c, token) = (&c, &token);
        async move {
            let mut a = vec!["auth", "can-i"];
            a.extend_from_slice(args);
            let o = as_sa(c, ns, token, &a).await;
            (o.status.success(), out(&o).trim().to_string())
        }
    };
    assert_eq!(
        can(&["list", "pods", "-n", "rbac-grants"]).await,
        (true, "yes".into())
    );
    assert_eq!(
        can(&["get", "pods", "--subresource=log", "-n", "rbac-grants"]).await,
        (true, "yes".into())
    );
    assert_eq!(
        can(&["get", "pods", "--subresource=exec", "-n", "rbac-grants"]).await,
        (false, "no".into())
    );
    assert_eq!(
        can(&["delete", "pods", "-n", "rbac-grants"]).await,
        (false, "no".into())
    );
    assert_eq!(can(&["get", "/version"]).await, (true, "yes".into()));
    assert_eq!(can(&["get", "/apis/apps"]).await, (true, "yes".into()));
    assert_eq!(can(&["post", "/version"]).await, (false, "no".into()));

    // --list: the rules of the binding, and the basic-user and discovery ones.
    let o = as_sa_line(&c, ns, &token, &format!("auth can-i --list -n {ns}")).await;
    assert!(o.status.success(), "{}", err(&o));
    let list = out(&o);
    let row = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{list}"))
            .to_string()
    };
    assert!(row("pods").ends_with("[get list watch]"), "{list}");
    assert!(row("pods/log").ends_with("[get list watch]"), "{list}");
    assert!(
        row("selfsubjectaccessreviews.authorization.k8s.io").ends_with("[create]"),
        "{list}"
    );
    assert!(list.contains("[/version]"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets")), "{list}");

    // A namespace object is in itself: a RoleBinding there may grant it.
    let o = as_sa_line(&c, ns, &token, &format!("get namespace {ns}")).await;
    forbidden_text(&o, &format!("namespaces \"{ns}\" is forbidden: User \"{user}\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"{ns}\""));
    role_for_sa(
        &c,
        ns,
        "ns-reader",
        "--verb=get --resource=namespaces",
        "robot",
    )
    .await;
    let o = as_sa_line(&c, ns, &token, &format!("get namespace {ns}")).await;
    assert!(o.status.success(), "{}", err(&o));
    let o = as_sa_line(&c, ns, &token, "get namespace default").await;
    forbidden_text(&o, "in the namespace \"default\"");

    // The binding goes: refused again.
    c.ok_line(&format!("delete rolebinding robot-reads -n {ns}"))
        .await;
    let o = as_sa_line(&c, ns, &token, &format!("get pods -n {ns}")).await;
    forbidden_text(&o, "cannot list resource \"pods\"");
    assert_eq!(
        can(&["list", "pods", "-n", "rbac-grants"]).await,
        (false, "no".into())
    );

    // A ClusterRoleBinding grants in every namespace.
    c.ok_line(&format!(
        "create clusterrolebinding rbac-grants-view --clusterrole=view --serviceaccount={ns}:robot"
    ))
    .await;
    let o = as_sa_line(&c, ns, &token, "get deployments -n default").await;
    assert!(o.status.success(), "{}", err(&o));
    let o = as_sa_line(&c, ns, &token, "get secrets -n default").await;
    forbidden_text(&o, "cannot list resource \"secrets\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_and_impersonation() {
    let c = start().await;
    let ns = "rbac-imp";
    let token = service_account(&c, ns, "robot").await;
    let sa = format!("system:serviceaccount:{ns}:robot");
    c.ok_line(&format!(
        "create role cm -n {ns} --verb=get,list --resource=configmaps"
    ))
    .await;
    c.ok_line(&format!(
        "create rolebinding cm -n {ns} --role=cm --user=alice --group=devs"
    ))
    .await;

    let can = |args: Vec<String>| {
        let c = &c;
        async move {
            let mut a: Vec<&str> = vec!["auth", "can-i"];
            a.extend(args.iter().map(String::as_str));
            let o = c.kubectl(&a).await;
            out(&o).trim().to_string()
        }
    };
    let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    // The admin, as itself and as others.
    assert_eq!(can(v("delete nodes")).await, "yes");
    assert_eq!(
        can(v(&format!("list configmaps -n {ns} --as=alice"))).await,
        "yes"
    );
    assert_eq!(
        can(v(&format!("list configmaps -n {ns} --as=bob"))).await,
        "no"
    );
    assert_eq!(
        can(v(&format!(
            "list configmaps -n {ns} --as=bob --as-group=devs"
        )))
        .await,
        "yes"
    );
    assert_eq!(
        can(v(&format!(
            "list secrets -n {ns} --as=bob --as-group=system:masters"
        )))
        .await,
        "yes"
    );
    assert_eq!(
        can(v(&format!("list configmaps -n {ns} --as={sa}"))).await,
        "no"
    );
    // kubectl --as: the request runs as the impersonated user.
    let o = c
        .kubectl(&["get", "configmaps", "-n", ns, "--as=alice"])
        .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = c.kubectl(&["get", "secrets", "-n", ns, "--as=alice"]).await;
    forbidden_text(&o, &format!("secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""));
    let o = c
        .kubectl(&[
            "auth",
            "whoami",
            "--as=alice",
            "--as-group=devs",
            "-o",
            "json",
        ])
        .await;
    let me: Value = serde_json::from_slice(&o.stdout).expect("whoami JSON");
    assert_eq!(me["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );

    // kubectl 1.20 asks the same reviews.
    match kubectl_1_20() {
        Some(old) => {
            let args = [
                "auth",
                "can-i",
                "list",
                "configmaps",
                "-n",
                ns,
                "--as=alice",
            ];
            let o = c.kubectl_bin(&old, &args, None).await;
            assert_eq!(out(&o).trim(), "yes", "{}", err(&o));
            let args = [
                "auth",
                "can-i",
                "--list",
                "-n",
                ns,
                "--as=bob",
                "--as-group=devs",
            ];
            let o = c.kubectl_bin(&old, &args, None).await;
            assert!(
                out(&o)
                    .lines()
                    .any(|l| l.starts_with("configmaps ") && l.ends_with("[get list]")),
                "{}{}",
                out(&o),
                err(&o)
            );
        }
        None => {
            rktup_testkit::can_run(
                "can_i_and_impersonation (kubectl 1.20)",
                Some("kubectl 1.20 at /opt/kubectl-1.20"),
            );
        }
    }

    // The service account may not impersonate.
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("get configmaps -n {ns} --as=alice"),
    )
    .await;
    forbidden_text(&o, &format!("users \"alice\" is forbidden: User \"{sa}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"));
    // Until a role grants it: users, then groups.
    c.ok_line(
        "create clusterrole imp-alice --verb=impersonate --resource=users --resource-name=alice",
    )
    .await;
    c.ok_line(&format!(
        "create clusterrolebinding imp-alice --clusterrole=imp-alice --serviceaccount={ns}:robot"
    ))
    .await;
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("get configmaps -n {ns} --as=alice"),
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("get configmaps -n {ns} --as=alice --as-group=system:masters"),
    )
    .await;
    forbidden_text(&o, &format!("groups \"system:masters\" is forbidden: User \"{sa}\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_is_refused_without_escalate_or_bind() {
    let c = start().await;
    let ns = "rbac-esc";
    let token = service_account(&c, ns, "admin-ish").await;
    let sa = format!("system:serviceaccount:{ns}:admin-ish");
    role_for_sa(&c, ns, "role-manager", "--verb=create,get,list,update,patch,delete --resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,configmaps", "admin-ish").await;

    // Rules it holds: fine.
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create role cm-reader -n {ns} --verb=get --resource=configmaps"),
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    // Rules it lacks: refused, the missing rules listed.
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create role secret-reader -n {ns} --verb=get,list --resource=secrets,configmaps"),
    )
    .await;
    forbidden_text(&o, &format!("roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: user \"{sa}\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:{ns}\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}}"));
    // Nor by growing a role it may update.
    let o = as_sa(&c, ns, &token, &["patch", "role", "cm-reader", "-n", ns, "--type=json", "-p", r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}}]"#]).await;
    forbidden_text(
        &o,
        "is attempting to grant RBAC permissions not currently held",
    );

    // Binding to a role whose rules it lacks: refused; to one it holds: fine.
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create rolebinding root -n {ns} --clusterrole=cluster-admin --user=mallory"),
    )
    .await;
    forbidden_text(
        &o,
        "rolebindings.rbac.authorization.k8s.io \"root\" is forbidden: user",
    );
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create rolebinding cm -n {ns} --role=cm-reader --user=alice"),
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));

    // With `escalate` on roles it may write any rules; with `bind` on
    // cluster-admin, bind it.
    role_for_sa(
        &c,
        ns,
        "escalator",
        "--verb=escalate --resource=roles.rbac.authorization.k8s.io",
        "admin-ish",
    )
    .await;
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create role secret-reader -n {ns} --verb=get,list --resource=secrets"),
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    role_for_sa(&c, ns, "binder", "--verb=bind --resource=clusterroles.rbac.authorization.k8s.io --resource-name=cluster-admin", "admin-ish").await;
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create rolebinding root -n {ns} --clusterrole=cluster-admin --user=mallory"),
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    // Still not `edit`, which it was not given `bind` on.
    let o = as_sa_line(
        &c,
        ns,
        &token,
        &format!("create rolebinding editor -n {ns} --clusterrole=edit --user=mallory"),
    )
    .await;
    forbidden_text(
        &o,
        "is attempting to grant RBAC permissions not currently held",
    );

    // Validation: roleRef cannot change.
    let o = c
        .kubectl(&[
            "patch",
            "rolebinding",
            "cm",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"secret-reader"}}"#,
        ])
        .await;
    forbidden_text(&o, "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"secret-reader\"}: cannot change roleRef");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_and_bootstrap_policy() {
    let c = start().await;
    let roles = c.ok_line("get clusterroles -o name").await;
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:discovery",
        "system:public-info-viewer",
        "system:basic-user",
        "system:node-proxier",
        "system:kube-dns",
    ] {
        assert!(
            roles
                .lines()
                .any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{r}")),
            "{r} in {roles}"
        );
    }
    let bindings = c.ok_line("get clusterrolebindings -o name").await;
    assert!(
        bindings.contains("clusterrolebinding.rbac.authorization.k8s.io/cluster-admin\n"),
        "{bindings}"
    );
    // Namespaced defaults too.
    let roles = c.ok_line("get roles -n kube-system -o name").await;
    for r in [
        "extension-apiserver-authentication-reader",
        "system::leader-locking-kube-scheduler",
    ] {
        assert!(
            roles.contains(&format!("role.rbac.authorization.k8s.io/{r}\n")),
            "{roles}"
        );
    }
    let rb = c.ok_line("get rolebindings -n kube-public -o name").await;
    assert!(
        rb.contains("rolebinding.rbac.authorization.k8s.io/system:controller:bootstrap-signer\n"),
        "{rb}"
    );
    let view: Value =
        serde_json::from_str(&c.ok_line("get clusterrole view -o json").await).expect("json");
    assert_eq!(
        view["metadata"]["labels"]["kubernetes.io/bootstrapping"],
        "rbac-defaults"
    );
    assert_eq!(
        view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
        "true"
    );
    // view got system:aggregate-to-view's rules at start.
    assert!(
        view["rules"].as_array().is_some_and(|r| r.len() >= 10),
        "{view}"
    );

    // A ClusterRole labelled aggregate-to-view shows up in view, edit and admin.
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- {apiGroups: [example.com], resources: [widgets], verbs: [get, list, watch]}
"#,
    )
    .await;
    for role in ["view", "edit", "admin"] {
        eventually(
            &format!("widgets in {role}"),
            Duration::from_secs(20),
            || async {
                let r: Value = serde_json::from_str(
                    &c.ok_line(&format!("get clusterrole {role} -o json")).await,
                )
                .ok()?;
                r["rules"]
                    .as_array()?
                    .iter()
                    .any(|x| x["resources"][0] == "widgets")
                    .then_some(())
            },
        )
        .await;
    }
    // And leaves when the role goes.
    c.ok_line("delete clusterrole widgets-view").await;
    eventually("widgets out of view", Duration::from_secs(20), || async {
        let r: Value =
            serde_json::from_str(&c.ok_line("get clusterrole view -o json").await).ok()?;
        (!r["rules"]
            .as_array()?
            .iter()
            .any(|x| x["resources"][0] == "widgets"))
        .then_some(())
    })
    .await;

    // A deleted bootstrap role and a trimmed auto-updated one are repaired
    // at restart; one whose autoupdate is "false" is left alone.
    c.ok_line("delete clusterrole system:node-proxier").await;
    c.ok(&[
        "patch",
        "clusterrole",
        "system:kube-dns",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/rules","value":[]}]"#,
    ])
    .await;
    c.ok_line("annotate --overwrite clusterrole system:heapster rbac.authorization.kubernetes.io/autoupdate=false")
    .await;
    c.ok(&[
        "patch",
        "clusterrole",
        "system:heapster",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/rules","value":[]}]"#,
    ])
    .await;
    let Cluster { handle, dir } = c;
    handle.shutdown().await;
    let c = Cluster {
        handle: start_in(dir.path()).await,
        dir,
    };
    let proxier: Value = serde_json::from_str(
        &c.ok_line("get clusterrole system:node-proxier -o json")
            .await,
    )
    .expect("json");
    assert!(
        proxier["rules"].as_array().is_some_and(|r| !r.is_empty()),
        "{proxier}"
    );
    let dns: Value =
        serde_json::from_str(&c.ok_line("get clusterrole system:kube-dns -o json").await)
            .expect("json");
    assert_eq!(
        dns["rules"][0]["resources"],
        serde_json::json!(["endpoints", "services"]),
        "{dns}"
    );
    let heapster: Value =
        serde_json::from_str(&c.ok_line("get clusterrole system:heapster -o json").await)
            .expect("json");
    assert!(
        heapster["rules"].as_array().is_none_or(|r| r.is_empty()),
        "{heapster}"
    );

    // Validation in upstream's words.
    let o = c
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(
                r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: bad, namespace: default}
rules:
- {apiGroups: [""], resources: [pods]}
- {nonResourceURLs: [/x], verbs: [get]}
"#,
            ),
        )
        .await;
    forbidden_text(
        &o,
        "rules[0].verbs: Required value: verbs must contain at least one value",
    );
    forbidden_text(&o, "rules[1].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_discovery_endpoints_for_non_admins() {
    let c = start().await;
    let ns = "rbac-public";
    let token = service_account(&c, ns, "nobody").await;
    // A service account with no bindings reads /version, /healthz (system:
    // public-info-viewer) and discovery (system:discovery).
    for path in [
        "/version",
        "/healthz",
        "/readyz",
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
        "/openapi/v2",
    ] {
        let o = as_sa_line(&c, ns, &token, &format!("get --raw {path}")).await;
        assert!(o.status.success(), "{path}: {}", err(&o));
    }
    // The service-account issuer discovery is for service accounts.
    let o = as_sa_line(&c, ns, &token, "get --raw /openid/v1/jwks").await;
    assert!(o.status.success(), "{}", err(&o));
    // Without system:discovery's binding, discovery is refused as upstream.
    c.ok_line("delete clusterrolebinding system:discovery")
        .await;
    let o = as_sa_line(&c, ns, &token, "get --raw /apis").await;
    forbidden_text(
        &o,
        &format!("forbidden: User \"system:serviceaccount:{ns}:nobody\" cannot get path \"/apis\""),
    );

    // No credentials at all (kube-rs with no auth info): the public
    // endpoints still answer; discovery wants a user.
    let kc = kube::config::Kubeconfig::from_yaml(&anonymous_kubeconfig(&c)).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let anon = kube::Client::try_from(cfg).expect("client");
    let v = anon
        .apiserver_version()
        .await
        .expect("GET /version without credentials");
    assert!(!v.git_version.is_empty());
    let req = http::Request::get("/healthz")
        .body(Vec::new())
        .expect("request");
    assert_eq!(anon.request_text(req).await.expect("GET /healthz"), "ok");
    let req = http::Request::get("/api")
        .body(Vec::new())
        .expect("request");
    assert!(anon.request_text(req).await.is_err());
}

/// A kubeconfig with the cluster and no user credentials.
fn anonymous_kubeconfig(c: &Cluster) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(c.handle.ca_pem());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: c\n  context: {{cluster: c, user: anon}}\ncurrent-context: c\nusers:\n- name: anon\n  user: {{}}\n",
        c.handle.server_url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_access_reviews_through_kube_rs() {
    use k8s_openapi::api::authorization::v1::{
        LocalSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
    };
    use kube::api::{Api, PostParams};
    let c = start().await;
    let ns = "rbac-sar";
    let token = service_account(&c, ns, "robot").await;
    c.ok_line(&format!(
        "create role cm -n {ns} --verb=get --resource=configmaps --resource-name=app"
    ))
    .await;
    c.ok_line(&format!(
        "create rolebinding cm -n {ns} --role=cm --group=devs"
    ))
    .await;
    let admin = c.admin().await;
    let sar = |user: &str, groups: &[&str], name: &str| -> SubjectAccessReview {
        serde_json::from_value(serde_json::json!({"spec": {
            "user": user, "groups": groups,
            "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "configmaps", "name": name}
        }}))
        .expect("review")
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let pp = PostParams::default();
    let r = reviews
        .create(&pp, &sar("bob", &["devs"], "app"))
        .await
        .expect("review");
    let status = r.status.expect("status");
    assert!(status.allowed);
    assert_eq!(
        status.reason.as_deref(),
        Some(
            format!("RBAC: allowed by RoleBinding \"cm/{ns}\" of Role \"cm\" to Group \"devs\"")
                .as_str()
        )
    );
    // resourceNames: another ConfigMap is not granted; nor to another group.
    let r = reviews
        .create(&pp, &sar("bob", &["devs"], "other"))
        .await
        .expect("review");
    assert!(!r.status.expect("status").allowed);
    let r = reviews
        .create(&pp, &sar("bob", &["ops"], "app"))
        .await
        .expect("review");
    assert!(!r.status.expect("status").allowed);
    // The groups are taken as given: system:basic-user is bound to
    // system:authenticated, which this review's user is not said to be in.
    let basic = |groups: &[&str]| -> SubjectAccessReview {
        serde_json::from_value(serde_json::json!({"spec": {
            "user": "bob", "groups": groups,
            "resourceAttributes": {"verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectaccessreviews"}
        }}))
        .expect("review")
    };
    let r = reviews.create(&pp, &basic(&[])).await.expect("review");
    assert!(!r.status.expect("status").allowed);
    let r = reviews
        .create(&pp, &basic(&["system:authenticated"]))
        .await
        .expect("review");
    assert!(r.status.expect("status").allowed);
    // Neither user nor groups: 422 as upstream.
    let e = reviews
        .create(&pp, &sar("", &[], "app"))
        .await
        .expect_err("invalid");
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.contains("at least one of user or group must be specified")),
        "{e}"
    );

    // LocalSubjectAccessReview: namespaced, the namespaces must agree.
    let local: Api<LocalSubjectAccessReview> = Api::namespaced(admin.clone(), ns);
    let l: LocalSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns},
        "spec": {"groups": ["devs"], "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "configmaps", "name": "app"}}
    })).expect("review");
    let r = local.create(&pp, &l).await.expect("local review");
    assert!(r.status.expect("status").allowed);
    let other: Api<LocalSubjectAccessReview> = Api::namespaced(admin.clone(), "default");
    let e = other.create(&pp, &l).await.expect_err("namespace mismatch");
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 400 && s.message == "spec.resourceAttributes.namespace must match namespace: default"),
        "{e}"
    );

    // A service account may not ask about others (system:auth-delegator is not its),
    // but may list its own rules.
    let sa = c
        .client_for("sa-rbac-sar", &Credential::Token(token.clone()))
        .await;
    let e = Api::<SubjectAccessReview>::all(sa.clone())
        .create(&pp, &sar("bob", &["devs"], "app"))
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 403 && s.message == "subjectaccessreviews.authorization.k8s.io is forbidden: User \"system:serviceaccount:rbac-sar:robot\" cannot create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope"),
        "{e}"
    );
    let rules: SelfSubjectRulesReview =
        serde_json::from_value(serde_json::json!({"spec": {"namespace": ns}})).expect("review");
    let r = Api::<SelfSubjectRulesReview>::all(sa)
        .create(&pp, &rules)
        .await
        .expect("rules review");
    let status = r.status.expect("status");
    assert!(!status.incomplete);
    assert!(
        status.resource_rules.iter().any(|r| r.resources.as_deref()
            == Some(
                &[
                    "selfsubjectaccessreviews".to_string(),
                    "selfsubjectrulesreviews".to_string()
                ][..]
            )),
        "{status:?}"
    );
    assert!(!status.resource_rules.iter().any(|r| r
        .resources
        .as_ref()
        .is_some_and(|x| x.contains(&"configmaps".to_string()))));
}
