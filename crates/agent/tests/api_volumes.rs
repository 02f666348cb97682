//! API-backed volumes and env for API pods, against the embedded control plane: configMap
//! (items, modes), secret, downwardAPI (labels, resources) and projected volumes and env from
//! configMapKeyRef, secretKeyRef, fieldRef (status.podIP), resourceFieldRef and envFrom reach the
//! container exactly (read back with `kubectl logs`' API, through the kubelet port); a configMap
//! update reaches a running pod; pods referring to missing objects or keys get kubelet's events
//! and status and start once the objects exist; a serviceAccountToken projection gets a token
//! from the TokenRequest API (a JWT); volume directories go away with their pods.

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use rktup_testkit::agent::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

rktup_testkit::cluster_with_helpers!();

impl Cluster {
    fn start_with_sync(prefix: &str) -> Cluster {
        Cluster(ClusterNode::start(prefix, &["--sync-frequency", "2"]))
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    /// Run `f`; whatever happens, delete every pod and wait until the node has none left, then
    /// stop the control plane (printing the agent's log if `f` failed).
    fn run(mut self, f: impl FnOnce(&Cluster)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self)));
        self.finish(r);
    }

    /// Wait for pod `name`'s container `c` to be running, then for its log to contain `want`.
    fn wait_log(&self, name: &str, c: &str, want: &str, secs: u64) -> String {
        let pods = self.pods();
        let lp = LogParams {
            container: Some(c.to_string()),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let l = self.rt.block_on(pods.logs(name, &lp));
            if let Ok(l) = &l {
                if l.contains(want) {
                    return l.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name}/{c} logging {want:?}; last read: {l:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first Event about pod `pod` with `reason`.
    fn wait_event(&self, pod: &str, reason: &str, secs: u64) -> Event {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        let events = &events;
        self.rt.block_on(async {
            eventually(
                &format!("{reason} event for {pod}"),
                Duration::from_secs(secs),
                || async move {
                    let l = events.list(&ListParams::default()).await.ok()?;
                    l.items.into_iter().find(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.involved_object.name.as_deref() == Some(pod)
                    })
                },
            )
            .await
        })
    }

    fn wait_running(&self, name: &str, secs: u64) -> Pod {
        let pods = self.pods();
        let pods = &pods;
        self.rt.block_on(async {
            eventually(
                &format!("pod {name} Running"),
                Duration::from_secs(secs),
                || async move {
                    let p = pods.get_opt(name).await.ok().flatten()?;
                    let s = p.status.clone()?;
                    (s.phase.as_deref() == Some("Running")
                        && s.container_statuses.as_ref()?.iter().all(|c| c.ready))
                    .then_some(p)
                },
            )
            .await
        })
    }
}

fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_string)
        .collect()
}

fn secret(name: &str, data: &[(&str, &str)]) -> serde_json::Value {
    let s = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    serde_json::to_value(s).expect("secret json")
}

#[test]
fn api_volumes_and_env_reach_the_container() {
    let c = Cluster::start_with_sync("vol");
    let (_bridge, _subnet) = c.node.bridge_net("0.4.0");
    c.run(|c| {
        let _: ConfigMap = c.create_json(serde_json::json!({
            "metadata": {"name": "app-config"},
            "data": {"a": "alpha", "b": "beta"}
        }));
        // `$` in a value must reach the container as written (no `$(VAR)` expansion).
        let _: Secret = c.create_json(secret(
            "app-secret",
            &[("user", "admin"), ("pass", "p$$(HOSTNAME)w")],
        ));
        let script = r#"
show() { echo "--- $1 $(stat -L -c %a $1)"; cat $1; echo; }
for f in /etc/cfg/dir/a.txt /etc/cfg/b /etc/sec/user /etc/sec/pass /etc/info/labels /etc/info/name \
         /etc/info/mem_mi /etc/all/b /etc/all/creds/user /etc/all/ns; do show $f; done
echo "--- ls cfg: $(ls /etc/cfg | tr '\n' ' ')"
echo "--- ls maybe: $(ls /etc/maybe | wc -l)"
touch /etc/cfg/new 2>/dev/null && echo "--- cfg rw" || echo "--- cfg ro"
echo "--- env"
for v in A PASS POD_IP NODE SA CPU_M REF CFG_a CFG_b user pass OPT; do env | grep "^$v=" || echo "$v unset"; done
echo "--- end"
last=
while true; do
  cur=$(cat /etc/cfg/dir/a.txt)
  [ "$cur" != "$last" ] && echo "--- a $cur"
  last=$cur
  sleep 1
done
"#;
        let _: Pod = c.create_json(serde_json::json!({
            "metadata": {"name": "show", "labels": {"app": "show", "tier": "back end"}},
            "spec": {
                "nodeName": c.node_name,
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 0o640,
                        "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o600},
                                  {"key": "b", "path": "b"}]}},
                    {"name": "sec", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                        {"path": "mem_mi", "resourceFieldRef": {"containerName": "show",
                            "resource": "limits.memory", "divisor": "1Mi"}}]}},
                    {"name": "all", "projected": {"sources": [
                        {"configMap": {"name": "app-config", "items": [{"key": "b", "path": "b"}]}},
                        {"secret": {"name": "app-secret", "items": [{"key": "user", "path": "creds/user"}]}},
                        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                    {"name": "maybe", "configMap": {"name": "no-such-config", "optional": true}}
                ],
                "containers": [{
                    "name": "show", "image": c.node.busybox,
                    "command": ["sh", "-c", script],
                    "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                        {"name": "sec", "mountPath": "/etc/sec"},
                        {"name": "info", "mountPath": "/etc/info"},
                        {"name": "all", "mountPath": "/etc/all"},
                        {"name": "maybe", "mountPath": "/etc/maybe"}
                    ],
                    "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"},
                                {"secretRef": {"name": "app-secret"}}],
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "a"}}},
                        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "pass"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "nope", "optional": true}}},
                        {"name": "REF", "value": "a=$(A)"}
                    ]
                }]
            }
        }));
        let p = c.wait_running("show", 90);
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("podIP");
        let uid = p.metadata.uid.clone().expect("uid");
        let logs = c.wait_log("show", "show", "--- end\n--- a alpha\n", 30);
        let expected = format!(
            "--- /etc/cfg/dir/a.txt 600
alpha
--- /etc/cfg/b 640
beta
--- /etc/sec/user 400
admin
--- /etc/sec/pass 400
p$$(HOSTNAME)w
--- /etc/info/labels 644
app=\"show\"
tier=\"back end\"
--- /etc/info/name 644
show
--- /etc/info/mem_mi 644
64
--- /etc/all/b 644
beta
--- /etc/all/creds/user 644
admin
--- /etc/all/ns 644
default
--- ls cfg: b dir 
--- ls maybe: 0
--- cfg ro
--- env
A=alpha
PASS=p$$(HOSTNAME)w
POD_IP={ip}
NODE={node}
SA=default
CPU_M=250
REF=a=alpha
CFG_a=alpha
CFG_b=beta
user=admin
pass=p$$(HOSTNAME)w
OPT unset
--- end
--- a alpha
",
            node = c.node_name
        );
        assert!(
            logs.starts_with(&expected),
            "logs:\n{logs}\nexpected:\n{expected}"
        );

        // On the node: kubelet's layout, secrets on a tmpfs.
        let vols = c.node.root.join("api-volumes").join(&uid);
        let data = std::fs::read_link(vols.join("cfg/..data")).expect("..data link");
        assert!(data.display().to_string().starts_with(".."), "{data:?}");
        assert_eq!(
            std::fs::read_link(vols.join("cfg/dir")).expect("dir link"),
            Path::new("..data/dir")
        );
        assert!(
            mounts_under(&vols.join("sec"))
                .iter()
                .any(|l| l.contains(" tmpfs ")),
            "secret volume not on a tmpfs: {:?}",
            mounts_under(&vols)
        );

        // A ConfigMap update reaches the running container.
        let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), "default");
        c.rt.block_on(cms.patch(
            "app-config",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"a": "alpha2"}})),
        ))
        .expect("patch configmap");
        c.wait_log("show", "show", "--- a alpha2\n", 30);

        // Removing the pod removes its volumes (and unmounts them).
        c.delete_and_wait("show");
        rktup_testkit::wait_for("volumes removed", Duration::from_secs(20), || {
            (!vols.exists()).then_some(())
        });
        assert!(mounts_under(&vols).is_empty(), "{:?}", mounts_under(&vols));
    });
}

#[test]
fn missing_objects_block_pods_until_they_exist() {
    let c = Cluster::start_with_sync("miss");
    c.run(|c| {
        let busybox = c.node.busybox.clone();
        let pod = |name: &str, extra: serde_json::Value| {
            let mut spec = serde_json::json!({
                "nodeName": c.node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
            });
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            serde_json::json!({"metadata": {"name": name}, "spec": spec})
        };
        // A configMap volume whose ConfigMap does not exist yet.
        let _: Pod = c.create_json(pod(
            "late",
            serde_json::json!({
                "volumes": [{"name": "conf", "configMap": {"name": "late-config"}}],
                "containers": [{"name": "c", "image": busybox,
                    "command": ["sh", "-c", "echo \"k=$(cat /etc/conf/k)\"; exec sleep 1000"],
                    "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf"}]}]
            }),
        ));
        // An env key missing from an existing ConfigMap.
        let _: ConfigMap = c.create_json(serde_json::json!({
            "metadata": {"name": "env-config"}, "data": {"y": "1"}
        }));
        let _: Pod = c.create_json(pod(
            "envfail",
            serde_json::json!({
                "containers": [{"name": "c", "image": busybox,
                    "command": ["sh", "-c", "echo \"X=$X IP=$IP\"; exec sleep 1000"],
                    "env": [
                        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-config", "key": "x"}}},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ]}]
            }),
        ));
        // A service account token, from the TokenRequest API: a JWT (three dot-separated parts).
        let _: Pod = c.create_json(pod(
            "tok",
            serde_json::json!({
                "volumes": [{"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}],
                "containers": [{"name": "c", "image": busybox,
                    "command": ["sh", "-c", "tr -cd . < /var/run/secrets/tokens/token | wc -c; exec sleep 1000"],
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/tokens"}]}]
            }),
        ));

        let e = c.wait_event("late", "FailedMount", 60);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(
            e.message.as_deref(),
            Some("MountVolume.SetUp failed for volume \"conf\" : configmap \"late-config\" not found")
        );
        let e = c.wait_event("envfail", "Failed", 60);
        assert_eq!(
            e.message.as_deref(),
            Some("Error: couldn't find key x in ConfigMap default/env-config")
        );
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );
        c.wait_running("tok", 60);
        c.wait_log("tok", "c", "2\n", 30);

        // Kubelet's status for them: Pending, waiting containers.
        let pods = c.pods();
        let pods = &pods;
        c.rt.block_on(async {
            let waiting = |name: &'static str| async move {
                let p = pods.get_opt(name).await.ok().flatten()?;
                let s = p.status?;
                if s.phase.as_deref() != Some("Pending") {
                    return None;
                }
                let w = s.container_statuses?.into_iter().next()?.state?.waiting?;
                Some((w.reason.unwrap_or_default(), w.message))
            };
            let w = eventually("late waiting", Duration::from_secs(30), || waiting("late")).await;
            assert_eq!(w, ("ContainerCreating".to_string(), None));
            let w = eventually("envfail waiting", Duration::from_secs(30), || waiting("envfail")).await;
            assert_eq!(
                w,
                (
                    "CreateContainerConfigError".to_string(),
                    Some("couldn't find key x in ConfigMap default/env-config".to_string())
                )
            );
            // Retried with a back-off: the same Event counted again, not a new one each time.
            let events: Api<Event> = Api::namespaced(c.admin.clone(), "default");
            let events = &events;
            eventually("FailedMount counted twice", Duration::from_secs(30), || async move {
                let l = events.list(&ListParams::default()).await.ok()?;
                let mine: Vec<Event> = l
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.reason.as_deref() == Some("FailedMount")
                            && e.involved_object.name.as_deref() == Some("late")
                    })
                    .collect();
                (mine.len() == 1 && mine[0].count >= Some(2)).then_some(())
            })
            .await;
        });
        assert!(
            !c.node.pods().iter().any(|p| p["name"] == "late" || p["name"] == "envfail"),
            "blocked pods reached the runtime: {:?}",
            c.node.pods()
        );

        // Once the objects exist, the pods start.
        let _: ConfigMap = c.create_json(serde_json::json!({
            "metadata": {"name": "late-config"}, "data": {"k": "v1"}
        }));
        let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), "default");
        c.rt.block_on(cms.patch(
            "env-config",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"x": "42"}})),
        ))
        .expect("patch configmap");
        c.wait_running("late", 60);
        c.wait_log("late", "c", "k=v1\n", 30);
        c.wait_running("envfail", 60);
        // A host-network pod's status.podIP is the node's IP.
        c.wait_log("envfail", "c", "X=42 IP=127.0.0.1\n", 30);

        // Its volume directory goes with the pod.
        let tok_uid = c
            .rt
            .block_on(pods.get("tok"))
            .expect("tok")
            .metadata
            .uid
            .expect("uid");
        c.delete_and_wait("tok");
        let dir = c.node.root.join("api-volumes").join(tok_uid);
        rktup_testkit::wait_for("tok's volumes removed", Duration::from_secs(20), || {
            (!dir.exists()).then_some(())
        });
    });
}
