//! A controller in a pod with its service account's token (issue 15 §2): the
//! real kubectl, run inside a pod on a real node, creates ConfigMaps with the
//! projected token of its ServiceAccount while a Role + RoleBinding allow it,
//! and is refused (kube-apiserver's 403) once the RoleBinding is deleted.
//! Needs root (the agent runs pods); with CI=true a missing need fails it.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use rktup_testkit::agent::*;
use std::time::Duration;

#[test]
fn controller_in_a_pod_has_what_its_service_account_is_bound_to() {
    if !rktup_testkit::can_run_as_root(
        "controller_in_a_pod_has_what_its_service_account_is_bound_to",
        "the agent runs pods",
    ) {
        return;
    }
    let mut cluster = ClusterNode::start("rb", &[]);
    let (admin_kc, cache) = (cluster.admin_kubeconfig(), cluster.kubectl_cache());
    let server = cluster
        .cp
        .as_ref()
        .expect("control plane")
        .server_url()
        .to_string();
    let ca = cluster
        .cp
        .as_ref()
        .expect("control plane")
        .ca_pem()
        .to_string();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ClusterNode {
            rt,
            node,
            node_name,
            admin,
            tmp,
            ..
        } = &cluster;
        let k = |args: &[&str]| {
            let r = kubectl(&admin_kc, &cache, args, None);
            assert!(r.ok(), "kubectl {args:?}: {}", r.stderr);
            r.stdout
        };
        k(&["create", "serviceaccount", "ctl"]);
        k(&[
            "create",
            "role",
            "cm-writer",
            "--verb=get,list,create",
            "--resource=configmaps",
        ]);
        k(&[
            "create",
            "rolebinding",
            "ctl",
            "--role=cm-writer",
            "--serviceaccount=default:ctl",
        ]);

        // kubectl (a static binary) and the cluster CA reach the pod through a hostPath; the
        // token is the pod's own, projected from the TokenRequest API.
        let tools = tmp.path().join("tools");
        std::fs::create_dir_all(&tools).expect("mkdir");
        std::fs::copy(KUBECTL, tools.join("kubectl")).expect("copy kubectl");
        std::fs::write(tools.join("ca.pem"), &ca).expect("write ca");
        let script = format!(
            "i=0; while true; do i=$((i+1)); \
             if /opt/tools/kubectl --server={server} --certificate-authority=/opt/tools/ca.pem \
             --token=\"$(cat /var/run/secrets/sa/token)\" -n default \
             create configmap tick-$i --from-literal=i=$i >/dev/null 2>/tmp/err; \
             then echo ok $i; else echo \"denied $i: $(cat /tmp/err)\"; fi; sleep 1; done"
        );
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ctl"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "serviceAccountName": "ctl",
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "tools", "hostPath": {"path": tools.display().to_string()}},
                    {"name": "sa", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}
                ],
                "containers": [{
                    "name": "ctl", "image": &node.busybox, "command": ["sh", "-c", script],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "volumeMounts": [
                        {"name": "tools", "mountPath": "/opt/tools"},
                        {"name": "sa", "mountPath": "/var/run/secrets/sa"}
                    ]
                }]
            }
        }))
        .expect("pod");
        run_pod(rt, admin, &pod);

        // Allowed: its ConfigMaps appear.
        let cms: kube::Api<ConfigMap> = kube::Api::namespaced(admin.clone(), "default");
        let ticks = || {
            rt.block_on(cms.list(&Default::default()))
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|c| {
                            c.metadata
                                .name
                                .as_deref()
                                .is_some_and(|n| n.starts_with("tick-"))
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        rktup_testkit::wait_for(
            "the pod's controller to create ConfigMaps",
            Duration::from_secs(60),
            || (ticks() >= 2).then_some(()),
        );

        // The binding goes: the same token is refused, in kube-apiserver's words.
        k(&["delete", "rolebinding", "ctl"]);
        let logs = rktup_testkit::wait_for("three refusals", Duration::from_secs(60), || {
            let r = kubectl(&admin_kc, &cache, &["logs", "ctl"], None);
            (r.stdout.matches("denied").count() >= 3).then_some(r.stdout)
        });
        assert!(
            logs.contains("configmaps is forbidden: User \"system:serviceaccount:default:ctl\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""),
            "{logs}"
        );
        // Refused from the first refusal on (the index is rebuilt for the next request).
        let after: Vec<&str> = logs
            .lines()
            .skip_while(|l| !l.starts_with("denied"))
            .collect();
        assert!(after.iter().all(|l| l.starts_with("denied")), "{logs}");
    }));
    cluster.finish(r);
}
