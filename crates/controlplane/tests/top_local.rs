//! `kubectl top nodes` and `kubectl top pods` on a real local cluster (`rktup local up`, one
//! node agent, a busybox pod), with the real numbers of the agent's `/metrics/resource`: the
//! test kit's metrics.k8s.io server (`rktup_testkit::controlplane::metrics_apiserver`, in
//! scraping mode, as metrics-server) runs in this process on the host and is registered through an APIService
//! whose Service's EndpointSlice names it; the control plane proxies `kubectl top` to it with
//! the front-proxy identity. Needs root (`rktup local up`) and the built `rktup` binary
//! (`cargo build --bin rktup`).

use rktup_testkit::controlplane::metrics_apiserver;

use base64::Engine;
use rktup_testkit::{rktup_bin, unique, Images, Registry};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

struct Local {
    name: String,
    dir: tempfile::TempDir,
}

impl Local {
    fn state_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join(format!("local-{}", self.name))
    }
    fn admin_kubeconfig(&self) -> PathBuf {
        self.state_dir().join("controlplane/admin.kubeconfig")
    }
    fn rktup(&self, args: &[&str]) -> Output {
        Command::new(rktup_bin())
            .env("RKTUP_STATE_DIR", self.dir.path().join("state"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env_remove("API_PORT")
            .args(args)
            .output()
            .expect("run rktup")
    }
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .expect("run kubectl")
    }
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn apply(&self, yaml: &str) {
        let file = self.dir.path().join(format!("apply-{}.yaml", unique()));
        std::fs::write(&file, yaml).expect("write manifest");
        self.kubectl_ok(&["apply", "-f", &file.display().to_string()]);
    }
    fn logs(&self) -> String {
        rktup_testkit::log_tails(&self.state_dir().join("logs"))
    }
    /// `rktup local up` of one node, pulling from `registry` (insecure).
    fn up_one_node(&self, registry: &str) {
        let up = self.rktup(&[
            "local",
            "up",
            "--name",
            &self.name,
            "--num-nodes",
            "1",
            "--wait",
            "90s",
            "--insecure-registry",
            registry,
        ]);
        assert!(
            up.status.success(),
            "rktup local up failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr),
            self.logs()
        );
    }
    /// A kubectl with the admin kubeconfig that can move into blocking tasks.
    fn kubectl_fn(&self) -> impl Fn(&[&str]) -> Output + Clone + Send + Sync + 'static {
        let kc = self.admin_kubeconfig();
        let home = self.dir.path().to_path_buf();
        move |args: &[&str]| -> Output {
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kc)
                .args(args)
                .env("HOME", &home)
                .output()
                .expect("kubectl")
        }
    }
}

/// A pod in `default` that keeps a CPU busy.
fn burner(image: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: burner, namespace: default}}
spec:
  containers:
  - name: burn
    image: {image}
    command: [sh, -c, 'x=0; while true; do x=$((x+1)); done']
"
    )
}

/// Until the metrics APIService is Available.
async fn apiservice_available(kubectl: impl Fn(&[&str]) -> Output + Send + Sync + 'static) {
    until("APIService Available", Duration::from_secs(60), move || {
        let o = kubectl(&[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
        ]);
        (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
    })
    .await;
}

/// `kubectl top nodes` until the node's row shows CPU in use: its five columns.
async fn top_nodes_busy(
    kubectl: impl Fn(&[&str]) -> Output + Send + Sync + 'static,
) -> Vec<String> {
    let nodes = until("kubectl top nodes", Duration::from_secs(90), move || {
        let o = kubectl(&["top", "nodes", "--no-headers"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let row: Vec<String> = text
            .lines()
            .next()?
            .split_whitespace()
            .map(String::from)
            .collect();
        (row.len() == 5 && number(&row[1]) > 0.0).then_some(row)
    })
    .await;
    assert!(nodes[2].ends_with('%'), "{nodes:?}");
    assert!(
        nodes[3].ends_with("Mi") && number(&nodes[3]) > 0.0,
        "{nodes:?}"
    );
    nodes
}

impl Drop for Local {
    fn drop(&mut self) {
        // Whatever happened, leave nothing behind.
        let _ = self.rktup(&["local", "down", "--name", &self.name]);
    }
}

async fn admin_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Polls `f` (blocking, off the runtime) until it returns Some.
async fn until<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl Fn() -> Option<T> + Send + Sync + 'static,
) -> T {
    let f = std::sync::Arc::new(f);
    rktup_testkit::eventually(what, timeout, || {
        let f = f.clone();
        async move {
            tokio::task::spawn_blocking(move || f())
                .await
                .ok()
                .flatten()
        }
    })
    .await
}

/// A Kubernetes quantity of CPU (`123m`, `1`) in millicores, or of memory (`12Mi`) in MiB.
fn number(q: &str) -> f64 {
    let digits: String = q
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_top_with_the_agents_numbers() {
    if !rktup_testkit::can_run_as_root("top_local", "`rktup local up`") {
        return;
    }
    let c = Local {
        name: format!("top{}", unique()),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let (registry, image) = tokio::task::spawn_blocking(|| {
        let images = Images::build();
        let registry = Registry::start();
        let image = registry.push(&images.layout, "busybox", "top:1.0");
        (registry, image)
    })
    .await
    .expect("images");
    c.up_one_node(&registry.addr);
    // nodes/proxy to the real agent's kubelet port (as the API server's kubelet client, its
    // serving certificate verified): what `kubectl get --raw` users and metrics tools read.
    let node = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let raw =
        |path: &str| c.kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy{path}")]);
    assert_eq!(raw("/healthz"), "ok");
    let summary: serde_json::Value =
        serde_json::from_str(&raw("/stats/summary")).expect("stats/summary is JSON");
    assert_eq!(summary["node"]["nodeName"], node.as_str(), "{summary}");
    assert!(
        raw("/metrics/resource").contains("node_cpu_usage_seconds_total"),
        "metrics/resource"
    );
    let pki = c.state_dir().join("controlplane/pki");
    let usage = metrics_apiserver::Usage::Scrape {
        cert_pem: std::fs::read_to_string(pki.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(pki.join("admin.key")).expect("admin.key"),
    };
    let client = admin_client(&c.admin_kubeconfig()).await;
    let backend =
        metrics_apiserver::start(client, "metrics-server.kube-system.svc", 0, usage).await;

    // A pod that uses some CPU and memory.
    c.apply(&burner(&image));
    // Registered as metrics-server is: a Service, its endpoint (this process), the APIService.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&backend.ca_pem);
    c.apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  ports: [{{name: https, port: 443, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels: {{kubernetes.io/service-name: metrics-server}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
ports: [{{name: https, port: {port}, protocol: TCP}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {b64}
  service: {{name: metrics-server, namespace: kube-system, port: 443}}
",
        port = backend.port
    ));
    let kubectl = c.kubectl_fn();
    apiservice_available(kubectl.clone()).await;

    // kubectl top nodes: the node, with its CPU (> 0, the burner runs) and working set.
    let nodes = top_nodes_busy(kubectl.clone()).await;

    // kubectl top pods: the burner's container, busy, with some memory.
    let k = kubectl.clone();
    let pod = until("kubectl top pods", Duration::from_secs(120), move || {
        let o = k(&["top", "pods", "--no-headers"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let row: Vec<String> = text
            .lines()
            .find(|l| l.starts_with("burner"))?
            .split_whitespace()
            .map(String::from)
            .collect();
        // Busy: at least 50 millicores (a shell loop takes a core when it can).
        (row.len() == 3 && number(&row[1]) >= 50.0).then_some(row)
    })
    .await;
    assert!(pod[1].ends_with('m'), "{pod:?}");
    assert!(pod[2].ends_with("Mi") && number(&pod[2]) >= 0.0, "{pod:?}");
    let containers = c.kubectl_ok(&["top", "pod", "burner", "--containers", "--no-headers"]);
    assert!(
        containers.split_whitespace().nth(1) == Some("burn"),
        "{containers}"
    );
    eprintln!("kubectl top nodes: {nodes:?}\nkubectl top pods: {pod:?}\n{containers}");
    // Every call reached the server through the front proxy.
    let seen = backend.seen.lock().expect("seen").clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.client_cn == "front-proxy-client"),
        "{seen:?}"
    );
    c.kubectl_ok(&["delete", "pod", "burner", "--grace-period=0", "--force"]);
    backend.stop();
    drop(registry);
}

/// The program of the metrics-server image `metrics_server_from_its_public_manifest` builds:
/// this test binary, started by the image's entrypoint inside the pod the public manifest's
/// Deployment makes. It serves metrics.k8s.io as metrics-server does, with its ServiceAccount
/// (in-cluster configuration), on the manifest's `--secure-port`, scraping the kubelets with
/// its token and verifying their serving certificates against the cluster CA (the manifest
/// does not pass `--kubelet-insecure-tls`). The real metrics-server is a Go program whose
/// modules cannot be fetched here; its manifest, RBAC, probes, Service and APIService are the
/// real ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the metrics-server container's program: runs inside a pod, started by the image"]
async fn metrics_server_in_a_pod() {
    let args = std::env::var("METRICS_SERVER_ARGS").ok();
    let missing = args.is_none().then_some(
        "METRICS_SERVER_ARGS, set by the entrypoint of the test's metrics-server image (it runs only there)",
    );
    let (true, Some(args)) = (
        rktup_testkit::can_run("metrics_server_in_a_pod", missing),
        args,
    ) else {
        return;
    };
    let mut port = 10250u16;
    for a in args.split_whitespace() {
        if let Some(p) = a.strip_prefix("--secure-port=") {
            port = p.parse().expect("--secure-port");
        }
        assert_ne!(
            a, "--kubelet-insecure-tls",
            "this server always verifies kubelets"
        );
    }
    let sa = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
    let token = std::fs::read_to_string(sa.join("token")).expect("ServiceAccount token");
    let ca_pem = std::fs::read_to_string(sa.join("ca.crt")).expect("ServiceAccount ca.crt");
    let client = kube::Client::try_default()
        .await
        .expect("in-cluster configuration");
    let _server = metrics_apiserver::start_on(
        client,
        "metrics-server.kube-system.svc",
        std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        metrics_apiserver::Usage::ScrapeWithToken {
            token: token.trim().to_string(),
            ca_pem,
        },
    )
    .await;
    eprintln!("metrics-server (test image): serving metrics.k8s.io on :{port} ({args})");
    std::future::pending::<()>().await;
}

/// An image `metrics:latest` in `images`' layout: busybox plus this test binary, the shared
/// libraries it links, and an entrypoint that runs [`metrics_server_in_a_pod`] with the
/// container's arguments.
fn add_metrics_server_image(images: &Images) {
    let exe = std::env::current_exe().expect("current exe");
    let img = |tag: &str| format!("{}:{tag}", images.layout.display());
    let bundle = tempfile::tempdir().expect("tempdir");
    let bundle = bundle.path().join("bundle");
    rktup_testkit::sh(Command::new("umoci").args(["tag", "--image", &img("busybox"), "metrics"]));
    rktup_testkit::sh(
        Command::new("umoci")
            .args(["unpack", "--image", &img("metrics")])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    copy(&exe, &rootfs.join("metrics-server-bin"));
    // The dynamic loader and libraries, at the paths the binary names them by.
    let ldd = rktup_testkit::sh(Command::new("ldd").arg(&exe));
    for lib in ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(Path::new)
    {
        let target = std::fs::canonicalize(lib).expect("library path");
        copy(
            &target,
            &rootfs.join(lib.strip_prefix("/").expect("absolute")),
        );
    }
    let entry = rootfs.join("metrics-server");
    std::fs::write(
        &entry,
        "#!/bin/sh\nexport METRICS_SERVER_ARGS=\"$*\"\nexec /metrics-server-bin --ignored --exact metrics_server_in_a_pod --nocapture --test-threads=1\n",
    )
    .expect("write entrypoint");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    rktup_testkit::sh(
        Command::new("umoci")
            .args(["repack", "--image", &img("metrics")])
            .arg(&bundle),
    );
    rktup_testkit::sh(Command::new("umoci").args([
        "config",
        "--image",
        &img("metrics"),
        "--config.entrypoint",
        "/metrics-server",
        "--clear=config.cmd",
    ]));
}

/// metrics-server installed from its public manifest (the release `components.yaml`, kept as
/// a fixture; the only change is the image, which the test builds: see
/// [`metrics_server_in_a_pod`]) on a real local cluster: its Deployment's pod runs with the
/// manifest's ServiceAccount, RBAC, security context and probes, its Service and APIService
/// route `kubectl top` to it, and the numbers are the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_server_from_its_public_manifest() {
    if !rktup_testkit::can_run_as_root("top_local", "`rktup local up`") {
        return;
    }
    let c = Local {
        name: format!("msv{}", unique()),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let (registry, busybox, metrics) = tokio::task::spawn_blocking(|| {
        let images = Images::build();
        add_metrics_server_image(&images);
        let registry = Registry::start();
        let busybox = registry.push(&images.layout, "busybox", "top:1.0");
        let metrics = registry.push(
            &images.layout,
            "metrics",
            "metrics-server/metrics-server:v0.9.0",
        );
        (registry, busybox, metrics)
    })
    .await
    .expect("images");
    c.up_one_node(&registry.addr);
    let manifest = {
        use std::io::Read;
        let gz = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/bundles/metrics-server.yaml.gz"),
        )
        .expect("fixture");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        text
    };
    let public_image = "registry.k8s.io/metrics-server/metrics-server:v0.9.0";
    assert_eq!(
        manifest.matches(public_image).count(),
        1,
        "the fixture's image"
    );
    c.apply(&manifest.replace(public_image, &metrics));
    c.apply(&burner(&busybox));
    let kubectl = c.kubectl_fn();
    // The Deployment becomes available (its readiness probe, /readyz over HTTPS, passes) and
    // the APIService Available through the Service's endpoint, the pod.
    let k = kubectl.clone();
    // (`until` would panic at its own deadline; this one ends first, with the pod's story.)
    let ready = until(
        "metrics-server available",
        Duration::from_secs(600),
        move || {
            let o = k(&[
                "-n",
                "kube-system",
                "get",
                "deployment",
                "metrics-server",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ]);
            (String::from_utf8_lossy(&o.stdout) == "1").then_some(())
        },
    );
    if tokio::time::timeout(Duration::from_secs(160), ready)
        .await
        .is_err()
    {
        panic!(
            "metrics-server did not become available:\n{}\n{}\n{}",
            c.kubectl_ok(&[
                "-n",
                "kube-system",
                "describe",
                "pods",
                "-l",
                "k8s-app=metrics-server"
            ]),
            String::from_utf8_lossy(
                &c.kubectl(&["-n", "kube-system", "logs", "deploy/metrics-server"])
                    .stdout
            ),
            c.logs()
        );
    }
    apiservice_available(kubectl.clone()).await;
    let endpoints = c.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=metrics-server",
        "-o",
        "jsonpath={.items[*].endpoints[*].addresses[*]}",
    ]);
    let pod_ip = c.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "k8s-app=metrics-server",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    assert_eq!(
        endpoints.trim(),
        pod_ip.trim(),
        "the Service routes to the pod"
    );

    // kubectl top: the node busy (the burner), the burner's container busy.
    let nodes = top_nodes_busy(kubectl.clone()).await;
    let k = kubectl.clone();
    let pod = until("kubectl top pods", Duration::from_secs(120), move || {
        let o = k(&["top", "pods", "-A", "--no-headers"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let row: Vec<String> = text
            .lines()
            .find(|l| l.starts_with("default") && l.contains("burner"))?
            .split_whitespace()
            .map(String::from)
            .collect();
        (row.len() == 4 && number(&row[2]) >= 50.0).then_some(row)
    })
    .await;
    assert!(pod[3].ends_with("Mi"), "{pod:?}");
    // metrics-server's own pod is measured too.
    let own = c.kubectl_ok(&["top", "pods", "-n", "kube-system", "--no-headers"]);
    assert!(own.contains("metrics-server-"), "{own}");
    eprintln!("kubectl top nodes: {nodes:?}\nkubectl top pods: {pod:?}\n{own}");
    // The pod ran as the manifest says: non-root, read-only root, no capabilities.
    let pod_name = c.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "k8s-app=metrics-server",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let id = c.kubectl_ok(&["-n", "kube-system", "exec", &pod_name, "--", "id", "-u"]);
    assert_eq!(id.trim(), "1000");
    let mounts = c.kubectl_ok(&[
        "-n",
        "kube-system",
        "exec",
        &pod_name,
        "--",
        "cat",
        "/proc/mounts",
    ]);
    let root = mounts
        .lines()
        .rfind(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_default();
    let options = root.split_whitespace().nth(3).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "readOnlyRootFilesystem: {root}"
    );
    c.kubectl_ok(&["delete", "pod", "burner", "--grace-period=0", "--force"]);
    drop(registry);
}
