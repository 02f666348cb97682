//! `kubectl top nodes` and `kubectl top pods` on a real local cluster (`rktup local up`, one
//! node agent, a busybox pod), with the real numbers of the agent's `/metrics/resource`: the
//! test metrics.k8s.io server (`support/metrics_apiserver.rs`, in scraping mode, as
//! metrics-server) runs in this process on the host and is registered through an APIService
//! whose Service's EndpointSlice names it; the control plane proxies `kubectl top` to it with
//! the front-proxy identity. Needs root (`rktup local up`) and the built `rktup` binary
//! (`cargo build --bin rktup`).

#[path = "support/metrics_apiserver.rs"]
mod metrics_apiserver;

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
    let up = {
        let (name, reg) = (c.name.clone(), registry.addr.clone());
        let args = [
            "local",
            "up",
            "--name",
            name.as_str(),
            "--num-nodes",
            "1",
            "--wait",
            "90s",
            "--insecure-registry",
            reg.as_str(),
        ];
        c.rktup(&args)
    };
    assert!(
        up.status.success(),
        "rktup local up failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr),
        c.logs()
    );
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
    c.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: burner, namespace: default}}
spec:
  containers:
  - name: burn
    image: {image}
    command: [sh, -c, 'x=0; while true; do x=$((x+1)); done']
"
    ));
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
    let kc = c.admin_kubeconfig();
    let home = c.dir.path().to_path_buf();
    let kubectl = move |args: &[&str]| -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .env("HOME", &home)
            .output()
            .expect("kubectl")
    };
    let k = kubectl.clone();
    until("APIService Available", Duration::from_secs(60), move || {
        let o = k(&[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "-o",
            "jsonpath={.status.conditions[0].status}",
        ]);
        (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
    })
    .await;

    // kubectl top nodes: the node, with its CPU (> 0, the burner runs) and working set.
    let k = kubectl.clone();
    let nodes = until("kubectl top nodes", Duration::from_secs(90), move || {
        let o = k(&["top", "nodes", "--no-headers"]);
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
