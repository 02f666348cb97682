//! Static pods driven by the same pod workers as API pods (issue 13; issue 14's item on
//! static pods' Service variables), on a real agent with a real registry:
//! - with an API server, a static pod gets the Service variables API pods get (`default`'s
//!   Services and the master `kubernetes` Service, its own variables winning), kubelet's pull
//!   events about its mirror pod, and a static pod whose image cannot be pulled shows
//!   `ErrImagePull`/`ImagePullBackOff` on its mirror pod;
//! - with no API server (the seed's standalone mode), a static pod whose image cannot be pulled
//!   backs off pulling (`ErrImagePull`, then `Back-off pulling image`, in the agent's log) without
//!   ever reaching the runtime — no start loop of refused pods — and runs once the image exists.

use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, ListParams, LogParams};
use rktup_testkit::agent::*;
use rktup_testkit::{tail, unique, wait_for};
use std::process::Command;
use std::time::{Duration, Instant};

/// Prints the environment between markers, then sleeps.
const SHOW_ENV: &str = "echo '--- env'; env | sort; echo '--- end'; sleep 1000";

fn env_of<'a>(out: &'a str, var: &str) -> Option<&'a str> {
    let env = out.split("--- env\n").nth(1)?.split("--- end").next()?;
    env.lines()
        .find_map(|l| l.strip_prefix(var)?.strip_prefix('='))
}

/// Copy the test busybox image to another name in the node's registry (the image "appears").
fn copy_image(node: &Node, to: &str) {
    let r = &node.registry.addr;
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}", node.busybox))
        .arg(format!("docker://{r}/{to}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first container's waiting reason of a pod, if it waits.
fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[test]
fn static_pods_with_an_api_server_get_service_variables_and_pull_events() {
    if !rktup_testkit::can_run_as_root(
        "static_pods_with_an_api_server_get_service_variables_and_pull_events",
        "the agent runs pods",
    ) {
        return;
    }
    let mut cn = ClusterNode::start("static-env", &[]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let svc: Service = cn.create_json(serde_json::json!({
            "metadata": {"name": "greeter"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }));
        let ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("greeter clusterIP");
        let services: Api<Service> = cn.api();
        let services = &services;
        let kube: Service = cn.rt.block_on(eventually(
            "the kubernetes Service",
            Duration::from_secs(30),
            || async move { services.get_opt("kubernetes").await.ok().flatten() },
        ));
        let kube_ip = kube.spec.and_then(|s| s.cluster_ip).expect("kubernetes IP");
        let pods: Api<Pod> = cn.api();
        let pods = &pods;
        // An API pod first: it starts only once the node's Services cache has listed (kubelet
        // holds API pods back until then; static pods are not held back), so the static pod
        // written after it finds the cache filled.
        let _: Pod = cn.create_json(serde_json::json!({
            "metadata": {"name": "api-env"},
            "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": cn.node.busybox,
                                     "command": ["sh", "-c", SHOW_ENV]}]}
        }));
        let lp = LogParams::default();
        let api_out = cn.rt.block_on(eventually(
            "the API pod's env",
            Duration::from_secs(90),
            || async {
                let l = pods.logs("api-env", &lp).await.ok()?;
                l.contains("--- end").then_some(l)
            },
        ));
        assert_eq!(env_of(&api_out, "GREETER_SERVICE_HOST"), Some(ip.as_str()));

        cn.node.put(
            "static-env.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: static-env}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, {SHOW_ENV:?}]\n    env:\n    - {{name: GREETER_SERVICE_PORT, value: mine}}\n    - {{name: URL, value: 'http://$(GREETER_SERVICE_HOST):$(GREETER_SERVICE_PORT_HTTP)/'}}\n",
                cn.node.busybox
            ),
        );
        let missing = format!(
            "{}/test/static-missing-{}:1",
            cn.node.registry.addr,
            unique()
        );
        cn.node.put(
            "static-missing.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: static-missing}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {missing}\n    command: [sleep, '1000']\n"
            ),
        );
        // The static pod's output, through its mirror pod.
        let mirror = format!("static-env-{}", cn.node_name);
        let m = mirror.as_str();
        let out = cn.rt.block_on(eventually(
            "the static pod's env",
            Duration::from_secs(90),
            || async {
                let l = pods.logs(m, &lp).await.ok()?;
                l.contains("--- end").then_some(l)
            },
        ));
        assert_eq!(
            env_of(&out, "GREETER_SERVICE_HOST"),
            Some(ip.as_str()),
            "{out}"
        );
        assert_eq!(env_of(&out, "GREETER_SERVICE_PORT"), Some("mine"), "{out}");
        assert_eq!(
            env_of(&out, "GREETER_SERVICE_PORT_HTTP"),
            Some("80"),
            "{out}"
        );
        let url = format!("tcp://{ip}:80");
        assert_eq!(env_of(&out, "GREETER_PORT"), Some(url.as_str()), "{out}");
        assert_eq!(env_of(&out, "GREETER_PORT_80_TCP_ADDR"), Some(ip.as_str()));
        let want_url = format!("http://{ip}:80/");
        assert_eq!(env_of(&out, "URL"), Some(want_url.as_str()), "{out}");
        assert_eq!(
            env_of(&out, "KUBERNETES_SERVICE_HOST"),
            Some(kube_ip.as_str()),
            "{out}"
        );

        // kubelet's pull events, about the mirror pod.
        let events: Api<Event> = cn.api();
        let events = &events;
        let about = |name: String, reason: &'static str, prefix: String| async move {
            let l = events.list(&ListParams::default()).await.ok()?;
            l.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(name.as_str())
                    && e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|x| x.starts_with(&prefix))
            })
        };
        let image = cn.node.busybox.clone();
        let ev = cn.rt.block_on(eventually(
            "the static pod's Pulled event",
            Duration::from_secs(30),
            || {
                about(
                    mirror.clone(),
                    "Pulled",
                    format!("Container image \"{image}\""),
                )
            },
        ));
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
        assert_eq!(
            ev.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );

        // The unpullable one: its mirror pod waits ErrImagePull, then ImagePullBackOff, and
        // kubelet's Failed events are about it; nothing of it reaches the runtime.
        let missing_mirror = format!("static-missing-{}", cn.node_name);
        let mm = missing_mirror.as_str();
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while !(seen.contains("ErrImagePull") && seen.contains("ImagePullBackOff")) {
            assert!(
                Instant::now() < deadline,
                "reasons seen on {mm}: {seen:?}\nagent log:\n{}",
                tail(&cn.node.agent_log(), 60)
            );
            if let Some(p) = cn.rt.block_on(pods.get_opt(mm)).ok().flatten() {
                let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                assert_ne!(phase.as_deref(), Some("Failed"), "{p:?}");
                if let Some(r) = waiting_reason(&p) {
                    seen.insert(r);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cn.rt.block_on(eventually(
            "the static pod's failed pull event",
            Duration::from_secs(30),
            || {
                about(
                    missing_mirror.clone(),
                    "Failed",
                    format!("Failed to pull image \"{missing}\""),
                )
            },
        ));
        assert!(
            !cn.node.pods().iter().any(|p| p["name"] == "static-missing"),
            "a static pod whose image cannot be pulled went to the runtime: {:#?}",
            cn.node.pods()
        );
    }));
    cn.finish(r);
}

#[test]
fn a_static_pod_without_an_api_server_backs_off_pulling_and_runs_once_the_image_exists() {
    if !rktup_testkit::can_run_as_root(
        "a_static_pod_without_an_api_server_backs_off_pulling_and_runs_once_the_image_exists",
        "the agent runs pods",
    ) {
        return;
    }
    let node = Node::new(&[]);
    let name = format!("test/static-later-{}:1", unique());
    let image = format!("{}/{name}", node.registry.addr);
    node.put(
        "later.yaml",
        &format!(
            "metadata: {{name: later}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, '1000']\n"
        ),
    );
    let path = node.manifests.join("later.yaml");
    let who = format!("pod from {}", path.display());
    // kubelet's reasons, as log lines: the pull's failure, then the image's back-off.
    let backoff = format!("Back-off pulling image \"{image}\"");
    let log = wait_for(
        "ErrImagePull and then the pull back-off",
        Duration::from_secs(60),
        || {
            let log = node.agent_log();
            (log.contains(&format!("{who} container c: ErrImagePull")) && log.contains(&backoff))
                .then_some(log)
        },
    );
    assert!(
        log.contains(&format!("Failed to pull image \"{image}\"")),
        "{log}"
    );
    // Nothing went to the runtime: no refused pods started over and over.
    assert!(node.pods().is_empty(), "{:#?}", node.pods());
    assert!(!log.contains("started pod"), "{log}");
    assert!(!log.contains(&format!("{who} refused")), "{log}");
    // The image appears: the same static pod is pulled and runs, after its back-off.
    copy_image(&node, &name);
    let p = node.wait_pod("later", "running", 90, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let log = node.agent_log();
    assert!(
        log.contains(&format!("started pod k8s_{}", uuid_of(&p))),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{who} spec.containers{{c}}: Pulled: Successfully pulled image \"{image}\""
        )),
        "{log}"
    );
    node.delete("later.yaml");
    node.wait_no_pods(30);
    node.assert_pod_clean(&uuid_of(&p));
}
