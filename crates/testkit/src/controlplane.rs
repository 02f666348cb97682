//! A control plane on 127.0.0.1 with a free port and a temp data dir, the real kubectl, kube-rs
//! clients, a stand-in kubelet log endpoint and a stand-in node agent; the metrics.k8s.io test
//! server ([`metrics_apiserver`]).

pub mod metrics_apiserver;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rktup_controlplane::pki::Credential;
use rktup_controlplane::{ControlPlane, Handle};
use serde_json::json;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// The kit's own helpers these tests use beside the cluster.
pub use crate::{eventually, kubectl_1_20, KUBECTL};

pub async fn start_in(dir: &Path) -> Handle {
    ControlPlane::builder()
        .data_dir(dir)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .node_monitor_grace(Duration::from_secs(3))
        .start()
        .await
        .expect("control plane starts")
}

pub struct Cluster {
    pub handle: Handle,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = start_in(dir.path()).await;
    Cluster { handle, dir }
}

impl Cluster {
    /// Runs the real kubectl against this cluster (off the async runtime).
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None).await
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kc = self.handle.admin_kubeconfig().to_path_buf();
        self.kubectl_with(kc, args, stdin).await
    }

    /// Runs kubectl as `user` presenting `cred` (a kubeconfig written to the
    /// temp dir, so no admin client certificate goes along).
    pub async fn kubectl_as(&self, user: &str, cred: &Credential, args: &[&str]) -> Output {
        let kc = self.dir.path().join(format!("{user}.kubeconfig"));
        std::fs::write(&kc, self.handle.kubeconfig_for(user, cred)).expect("write kubeconfig");
        self.kubectl_with(kc, args, None).await
    }

    async fn kubectl_with(
        &self,
        kc: std::path::PathBuf,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        self.run_kubectl(Path::new(KUBECTL), kc, "home", args, stdin)
            .await
    }

    /// Runs another kubectl binary (`kubectl_1_20()`) as admin, with its own
    /// HOME (discovery cache) in the temp dir.
    pub async fn kubectl_bin(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let kc = self.handle.admin_kubeconfig().to_path_buf();
        let home = format!(
            "home-{}",
            bin.to_string_lossy()
                .replace(|c: char| !c.is_alphanumeric(), "_")
        );
        self.run_kubectl(bin, kc, &home, args, stdin).await
    }

    async fn run_kubectl(
        &self,
        bin: &Path,
        kc: std::path::PathBuf,
        home: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let bin = bin.to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(String::from);
        let home = self.dir.path().join(home);
        tokio::task::spawn_blocking(move || {
            crate::output_with_input(
                std::process::Command::new(&bin)
                    .arg("--kubeconfig")
                    .arg(&kc)
                    .args(&args)
                    .env("HOME", &home)
                    .env("KUBECACHEDIR", home.join("cache")),
                stdin.as_deref(),
            )
        })
        .await
        .expect("join")
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.kubectl(args).await)
    }

    /// `ok` with the arguments written as one line, split at white space
    /// (for arguments without spaces: names, flags, selectors).
    pub async fn ok_line(&self, line: &str) -> String {
        self.ok(&line.split_whitespace().collect::<Vec<_>>()).await
    }

    /// `kubectl create deployment name --image=busybox --replicas=n`, then
    /// waits (30s) for its n pods (label app=name) to be Running.
    pub async fn running_deployment(&self, name: &str, replicas: usize) {
        self.ok_line(&format!(
            "create deployment {name} --image=busybox --replicas={replicas}"
        ))
        .await;
        let what = format!("{replicas} running pods");
        eventually(&what, Duration::from_secs(30), || async {
            let phases = self
                .ok_line(&format!(
                    "get po -l app={name} -o jsonpath={{.items[*].status.phase}}"
                ))
                .await;
            (phases.split_whitespace().collect::<Vec<_>>() == vec!["Running"; replicas])
                .then_some(())
        })
        .await
    }

    /// kubectl with `yaml` on its stdin, that must succeed; returns stdout.
    pub async fn apply_stdin(&self, args: &[&str], yaml: &str) -> String {
        succeeded(args, self.kubectl_stdin(args, Some(yaml)).await)
    }

    /// `kubectl apply` of a new CRD (it must be `created`), then waits (10s) until it is
    /// Established.
    pub async fn install_crd(&self, crd: &serde_json::Value) {
        let out = self
            .apply_stdin(&["apply", "-f", "-"], &crd.to_string())
            .await;
        assert!(out.contains("created"), "{out}");
        let name = crd["metadata"]["name"].as_str().expect("the CRD's name");
        self.ok_line(&format!(
            "wait --for condition=established --timeout=10s crd/{name}"
        ))
        .await;
    }

    pub async fn client_for(&self, user: &str, cred: &Credential) -> kube::Client {
        client_for(&self.handle, user, cred).await
    }

    pub async fn admin(&self) -> kube::Client {
        admin_client(&self.handle).await
    }

    pub async fn node_client(&self, node: &str) -> kube::Client {
        let token = self.handle.mint_node_token(node).expect("token");
        self.client_for(&format!("node-{node}"), &Credential::Token(token))
            .await
    }
}

/// The stdout of kubectl `args`, which must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kube client with the control plane's admin credentials.
pub async fn admin_client(cp: &Handle) -> kube::Client {
    client(kube::config::Kubeconfig::read_from(cp.admin_kubeconfig()).expect("read kubeconfig"))
        .await
}

/// A kube client of `cp` as `user` with `cred`.
pub async fn client_for(cp: &Handle, user: &str, cred: &Credential) -> kube::Client {
    let text = cp.kubeconfig_for(user, cred);
    client(kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig parses")).await
}

/// A kube client from a kubeconfig (its current context).
async fn client(kc: kube::config::Kubeconfig) -> kube::Client {
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Registers node `name` (as the node itself) with `kubelet_port` as its
/// kubelet endpoint, and starts a stand-in node agent that heartbeats, runs
/// pods bound to it (Running + Ready, with a pod IP) and finishes their
/// graceful deletion.
pub async fn fake_node(
    cluster: &Cluster,
    name: &str,
    kubelet_port: u16,
) -> tokio::task::JoinHandle<()> {
    let client = cluster.node_client(name).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1", "containerRuntimeVersion": "rkt://1.30", "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "machineID": "", "systemUUID": "", "kubeProxyVersion": ""},
        }
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node registers itself");
    let name = name.to_string();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut ip = 10u32;
        loop {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let _ = nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}]}})))
                .await;
            if let Ok(list) = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
                .await
            {
                for p in list.items {
                    let pname = p.metadata.name.clone().unwrap_or_default();
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    if p.metadata.deletion_timestamp.is_some() {
                        let _ = api
                            .delete(
                                &pname,
                                &DeleteParams {
                                    grace_period_seconds: Some(0),
                                    ..Default::default()
                                },
                            )
                            .await;
                        continue;
                    }
                    let phase = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    let run_to_completion =
                        p.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) != Some("Always");
                    if phase == "Running" && run_to_completion {
                        // Batch pods finish successfully.
                        let _ = api.patch_status(&pname, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}]}}))).await;
                        continue;
                    }
                    if phase == "Pending" {
                        ip += 1;
                        let cs: Vec<serde_json::Value> = p.spec.as_ref().map(|s| s.containers.iter().map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})).collect()).unwrap_or_default();
                        let _ = api
                            .patch_status(&pname, &PatchParams::default(), &Patch::Merge(json!({"status": {
                                "phase": "Running",
                                "podIP": format!("10.244.0.{ip}"),
                                "podIPs": [{"ip": format!("10.244.0.{ip}")}],
                                "hostIP": "127.0.0.1",
                                "startTime": now,
                                "containerStatuses": cs,
                                "conditions": [
                                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                                    {"type": "Ready", "status": "True", "lastTransitionTime": now}
                                ]
                            }})))
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// A stand-in kubelet serving `/containerLogs/<ns>/<pod>/<container>`, `/healthz`,
/// `/stats/summary` and `/echo` (what the request carried) over HTTPS, 404 otherwise;
/// returns its port.
pub async fn fake_kubelet() -> u16 {
    use http_body_util::Full;
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.pem().as_bytes())
        .collect::<Result<_, _>>()
        .expect("pem");
    let pk = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key pem");
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, pk)
    .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let path = req.uri().path().to_string();
                        let mut status = 200;
                        let body = match path.as_str() {
                            "/healthz" => "ok".to_string(),
                            "/stats/summary" => json!({"node": {"nodeName": "fake", "cpu": {"usageNanoCores": 1000}}, "pods": []}).to_string(),
                            // What arrived, for nodes/proxy's tests: method, path and query,
                            // whether credentials came along, the body.
                            "/echo" => {
                                let head = format!(
                                    "{} {} authorization={}",
                                    req.method(),
                                    req.uri(),
                                    req.headers().contains_key("authorization")
                                );
                                let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                format!("{head} body={}", String::from_utf8_lossy(&body))
                            }
                            p => match p.strip_prefix("/containerLogs/") {
                                Some(rest) => {
                                    format!("log line 1 from {rest}\nlog line 2 from {rest}\n")
                                }
                                None => {
                                    status = 404;
                                    "404 page not found\n".to_string()
                                }
                            },
                        };
                        let mut resp = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// The CronTab CustomResourceDefinition of the Kubernetes docs ("Extend the Kubernetes API with
/// CustomResourceDefinitions" and "Versions in CustomResourceDefinitions", kubernetes/website,
/// CC BY 4.0) as the CRD suites (`crds.rs`, `openapi_crd.rs`) start from it: group
/// stable.example.com, namespaced, short name `ct`; the storage version v1 (`spec.cronSpec`
/// with the docs' pattern, `image`, `replicas` 1 to 10 defaulting to 1; `status.replicas` and
/// `status.labelSelector`; the status and scale subresources) and a served v1beta1 whose schema
/// (an object) each suite gives. JSON, which kubectl reads as YAML too.
pub fn crontab_crd() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {
                "plural": "crontabs",
                "singular": "crontab",
                "kind": "CronTab",
                "shortNames": ["ct"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "cronSpec": {
                                        "type": "string",
                                        "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$",
                                    },
                                    "image": {"type": "string"},
                                    "replicas": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": 10,
                                        "default": 1,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer"},
                                    "labelSelector": {"type": "string"},
                                },
                            },
                        },
                    }},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.labelSelector",
                        },
                    },
                },
                {
                    "name": "v1beta1",
                    "served": true,
                    "storage": false,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                },
            ],
        },
    })
}
