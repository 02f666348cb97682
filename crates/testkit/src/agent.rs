//! A node for integration tests: a real `rktup agent` process (the built binary), a private root
//! dir, manifest dir, CNI config dir, api endpoint, and a real registry serving busybox images;
//! or such a node joined to a control plane in this process ([`ClusterNode`]).

use crate::{free_port, unique, wait_for, Images, Registry};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The kit's own helpers these tests use beside the node.
pub use crate::controlplane::{admin_client, client_for};
pub use crate::{eventually, kubectl_1_20, no_kubectl_1_20, rktup_bin, sh, KUBECTL};

/// qemu, a guest kernel and busybox for a test VM, or None after printing why the test skips
/// (under CI=true a host that cannot run the VM fails the test instead).
/// Where /dev/kvm exists but cannot boot the guest (this CI host: PVM nested virtualization),
/// the VM runs under qemu's software emulation instead (`RKTUP_KVM_ACCEL=tcg`, which the agent
/// inherits), so the VM paths are still exercised; `RKTUP_TEST_KVM_TCG=0` skips instead.
pub fn vm_plan(test: &str) -> Option<rktup_runtime::pod::KvmPlan> {
    match rktup_runtime::stage1::kvm::find_kvm() {
        Ok(plan) => Some(plan),
        Err(why)
            if why.to_string().contains("not usable")
                && std::env::var("RKTUP_TEST_KVM_TCG").as_deref() != Ok("0") =>
        {
            println!("NOTE {test}: {why}; running the VM under TCG instead");
            // Edition 2021: set_var is safe; tests in this binary that read it want the same.
            std::env::set_var("RKTUP_KVM_ACCEL", "tcg");
            match rktup_runtime::stage1::kvm::find_kvm() {
                Ok(plan) => Some(plan),
                Err(why) => no_vm(test, why),
            }
        }
        Err(why) if std::env::var("RKTUP_TEST_KVM_TCG").as_deref() == Ok("0") => {
            // Asked for by hand: a skip, not a host that cannot run the test.
            println!("SKIPPED {test}: {why} (RKTUP_TEST_KVM_TCG=0)");
            None
        }
        Err(why) => no_vm(test, why),
    }
}

/// No VM for `test`: under CI=true that fails it ([`crate::can_run`]).
fn no_vm(test: &str, why: impl std::fmt::Display) -> Option<rktup_runtime::pod::KvmPlan> {
    let why = format!("a VM ({why})");
    crate::can_run(test, Some(&why));
    None
}

/// An embedded control plane (in this process, on a free port) and a real agent joined to it as
/// node `<prefix>-<n>` with a node bearer token, serving its kubelet port: the kubelet tests'
/// setup. `extra` are further agent flags.
pub struct ClusterNode {
    pub rt: tokio::runtime::Runtime,
    pub cp: Option<rktup_controlplane::Handle>,
    pub node: Node,
    pub node_name: String,
    pub kubelet_port: u16,
    /// A kube client with the control plane's admin credentials.
    pub admin: kube::Client,
    pub tmp: tempfile::TempDir,
}

impl ClusterNode {
    pub fn start(prefix: &str, extra: &[&str]) -> ClusterNode {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let tmp = tempfile::tempdir().expect("tempdir");
        let cp = rt
            .block_on(
                rktup_controlplane::ControlPlane::builder()
                    .data_dir(tmp.path().join("cp"))
                    .bind("127.0.0.1:0".parse().expect("addr"))
                    .start(),
            )
            .expect("control plane");
        let node_name = format!("{prefix}-{}", unique());
        let token = cp.mint_node_token(&node_name).expect("token");
        let kc = tmp.path().join("node.kubeconfig");
        std::fs::write(
            &kc,
            cp.kubeconfig_for(
                &format!("system:node:{node_name}"),
                &rktup_controlplane::pki::Credential::Token(token),
            ),
        )
        .expect("write kubeconfig");
        let kubelet_port = free_port();
        let (kc_s, port_s) = (kc.display().to_string(), kubelet_port.to_string());
        let mut args = vec![
            "--kubeconfig",
            &kc_s,
            "--hostname-override",
            &node_name,
            "--node-ip",
            "127.0.0.1",
            "--node-status-update-frequency",
            "1",
            "--kubelet-port",
            &port_s,
        ];
        args.extend_from_slice(extra);
        let node = Node::new(&args);
        let admin = rt.block_on(admin_client(&cp));
        ClusterNode {
            rt,
            cp: Some(cp),
            node,
            node_name,
            kubelet_port,
            admin,
            tmp,
        }
    }

    /// Stops the control plane (the agent stops when `node` is dropped).
    pub fn stop_control_plane(&mut self) {
        if let Some(cp) = self.cp.take() {
            self.rt.block_on(cp.shutdown());
        }
    }

    /// The control plane's admin kubeconfig (for kubectl).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.cp
            .as_ref()
            .expect("control plane")
            .admin_kubeconfig()
            .to_path_buf()
    }

    /// A kubectl cache dir of this test's own.
    pub fn kubectl_cache(&self) -> PathBuf {
        self.tmp.path().join("kubectl-cache")
    }

    /// `K`'s API in namespace default, as the admin.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        kube::Api::namespaced(self.admin.clone(), "default")
    }

    /// Deletes pod `name` of namespace default and waits (60s) until it is gone.
    pub fn delete_and_wait(&self, name: &str) {
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = self.api();
        let pods = &pods;
        self.rt.block_on(async {
            pods.delete(name, &Default::default())
                .await
                .expect("delete");
            eventually(
                &format!("pod {name} gone"),
                Duration::from_secs(60),
                || async move { pods.get_opt(name).await.ok()?.is_none().then_some(()) },
            )
            .await
        });
    }

    /// Creates `obj` (JSON of a namespaced kind) in namespace default, as the admin.
    pub fn create_json<K>(&self, obj: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + k8s_openapi::serde::de::DeserializeOwned
            + k8s_openapi::serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let o: K = serde_json::from_value(obj).expect("object");
        self.rt
            .block_on(self.api::<K>().create(&Default::default(), &o))
            .expect("create")
    }

    /// The end of a test whose body ended with `r`: whatever happened, delete every pod of
    /// namespace default and every static pod manifest and wait until the node has no pods left,
    /// then stop the control plane (printing the agent's log if anything failed); the body's
    /// panic, or pods left on the node, fail the test.
    pub fn finish(&mut self, r: std::thread::Result<()>) {
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = self.api();
        self.rt.block_on(async {
            if let Ok(l) = pods.list(&Default::default()).await {
                for p in l.items {
                    if let Some(n) = p.metadata.name {
                        let _ = pods.delete(&n, &Default::default()).await;
                    }
                }
            }
        });
        for f in std::fs::read_dir(&self.node.manifests)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_file(f.path());
        }
        let cleaned =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.node.wait_no_pods(60)));
        if r.is_err() || cleaned.is_err() {
            eprintln!("agent log:\n{}", self.node.agent_log());
        }
        self.stop_control_plane();
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
        assert!(cleaned.is_ok(), "pods left on the node");
    }
}

/// Declares `struct Cluster(ClusterNode)` in a test file, dereferencing to the kit's
/// [`ClusterNode`]: a file with helpers of its own writes them as `impl Cluster { … }` (an
/// inherent impl needs a type of the test crate) and starts one with
/// `Cluster(ClusterNode::start(…))`.
#[macro_export]
macro_rules! cluster_with_helpers {
    () => {
        /// The kit's `ClusterNode` (`rktup_testkit::agent`), with this file's helpers.
        struct Cluster($crate::agent::ClusterNode);

        impl std::ops::Deref for Cluster {
            type Target = $crate::agent::ClusterNode;
            fn deref(&self) -> &$crate::agent::ClusterNode {
                &self.0
            }
        }

        impl std::ops::DerefMut for Cluster {
            fn deref_mut(&mut self) -> &mut $crate::agent::ClusterNode {
                &mut self.0
            }
        }
    };
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub manifests: PathBuf,
    pub cni: PathBuf,
    pub endpoint: String,
    pub agent: Option<Child>,
    pub registry: Registry,
    pub busybox: String,
    pub multi: String,
    pub extra_args: Vec<String>,
    /// The agent's environment on top of the test's.
    pub env: Vec<(String, String)>,
    /// Links (bridges) this test created, deleted on drop after the pods are gone.
    pub links: std::cell::RefCell<Vec<String>>,
    _images: Images,
}

impl Node {
    pub fn new(extra_args: &[&str]) -> Node {
        Node::with_env(extra_args, &[])
    }

    /// A node whose agent also gets `env`. The agent logs at `--v 4` unless `extra_args` says
    /// `--v` or `env` says `LOG_LEVEL`.
    pub fn with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Node {
        let images = Images::build();
        let registry = Registry::start();
        let busybox = registry.push(&images.layout, "busybox", "test/busybox:1");
        let multi = registry.push(&images.layout, "multi", "test/multi:1");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let manifests = dir.path().join("manifests");
        let cni = dir.path().join("net.d");
        for d in [&root, &manifests, &cni] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let mut n = Node {
            root,
            manifests,
            cni,
            endpoint: format!("127.0.0.1:{}", free_port()),
            agent: None,
            busybox,
            multi,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            links: Default::default(),
            registry,
            dir,
            _images: images,
        };
        n.start_agent();
        n
    }

    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("agent log");
        let says_v = self
            .extra_args
            .iter()
            .any(|a| a == "--v" || a.starts_with("--v="))
            || self.env.iter().any(|(k, _)| k == "LOG_LEVEL");
        let v: &[&str] = if says_v { &[] } else { &["--v", "4"] };
        // These agents live in the host's network namespace: no service proxy table or DNS
        // address on the host (the proxy and DNS are tested in namespaces of their own: crates/
        // proxy, crates/dns, tests/local_e2e.rs), unless a test asks for them.
        let says = |flag: &str| self.extra_args.iter().any(|a| a.starts_with(flag));
        let mut services: Vec<&str> = vec![];
        if !says("--proxy-mode") {
            services.push("--proxy-mode=none");
        }
        if !says("--serve-cluster-dns") {
            services.push("--serve-cluster-dns=false");
        }
        let child = Command::new(rktup_bin())
            .arg("agent")
            .arg("--root-dir")
            .arg(&self.root)
            .arg("--pod-manifest-path")
            .arg(&self.manifests)
            .arg("--cni-conf-dir")
            .arg(&self.cni)
            .arg("--rkt-api-endpoint")
            .arg(&self.endpoint)
            .arg("--insecure-registry")
            .arg(&self.registry.addr)
            .args(["--sync-period-ms", "200", "--restart-backoff-ms", "200"])
            .args(v)
            .args(&services)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start rktup agent");
        // Ready once this agent itself listens on the endpoint (a connect could reach another
        // process that took the port meanwhile) and answers on its unix socket (bound after the
        // endpoint, in this node's private root dir).
        let pid = child.id();
        self.agent = Some(child);
        let port: u16 = self
            .endpoint
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("endpoint host:port");
        let socket = self.socket();
        wait_for("the api-service", Duration::from_secs(30), || {
            (crate::process_listens_on(pid, port)
                && std::os::unix::net::UnixStream::connect(&socket).is_ok())
            .then_some(())
        });
    }

    /// The agent's api-service unix socket (every route).
    pub fn socket(&self) -> PathBuf {
        rktup_runtime::api::socket_path(&self.root)
    }

    /// SIGKILL the agent (pods must survive).
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn put(&self, name: &str, yaml: &str) {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(name)).expect("rename manifest");
    }

    pub fn delete(&self, name: &str) {
        std::fs::remove_file(self.manifests.join(name)).expect("remove manifest");
    }

    /// Run `rktup <args>` against this node (its api-service's unix socket and image store,
    /// `--dir <root>`); (success, stdout, stderr).
    pub fn rktup(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(rktup_bin())
            .args(args)
            .arg("--dir")
            .arg(&self.root)
            .output()
            .expect("run rktup");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn rkt_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.rktup(args);
        assert!(
            ok,
            "rktup {args:?} failed: {err}\n{out}\nagent log:\n{}",
            self.agent_log()
        );
        out
    }

    /// Pods as the api-service reports them.
    pub fn pods(&self) -> Vec<serde_json::Value> {
        let c = rktup_runtime::api::Client::unix(self.socket());
        c.pods()
            .map(|v| {
                v.into_iter()
                    .map(|p| serde_json::to_value(p).expect("json"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait for the pod named `name` to satisfy `f`.
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                &format!("pod {name}: {what}"),
                Duration::from_secs(secs),
                || self.pods().into_iter().find(|p| p["name"] == name && f(p)),
            )
        }));
        match r {
            Ok(v) => v,
            Err(_) => panic!(
                "pod {name}: {what} not reached; pods: {:#?}\nagent log:\n{}\nstage1 logs:\n{}",
                self.pods(),
                self.agent_log(),
                self.stage1_logs()
            ),
        }
    }

    pub fn stage1_logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("pods")) {
            for e in rd.flatten() {
                s.push_str(&format!("== {}\n", e.path().display()));
                s.push_str(
                    &std::fs::read_to_string(e.path().join("stage1.log")).unwrap_or_default(),
                );
            }
        }
        s
    }

    pub fn wait_no_pods(&self, secs: u64) {
        wait_for("all pods removed", Duration::from_secs(secs), || {
            let n = std::fs::read_dir(self.root.join("pods"))
                .map(|r| r.count())
                .unwrap_or(0);
            (n == 0).then_some(())
        });
    }

    /// The CNI contained-network config with a unique bridge, subnet and host-local dataDir.
    pub fn bridge_net(&self, version: &str) -> (String, String) {
        let u = unique();
        let bridge = format!("rkt{:x}", u & 0xfffff);
        let subnet = format!("10.{}.{}.0/24", 100 + (u % 100), (u / 100) % 250);
        let data = self.dir.path().join("ipam");
        self.own_link(&bridge);
        std::fs::write(
            self.cni.join("10-test.conf"),
            format!(
                r#"{{"cniVersion":"{version}","name":"rkt.kubernetes.io","type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","subnet":"{subnet}","dataDir":"{}","routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
                data.display()
            ),
        )
        .expect("write cni conf");
        (bridge, subnet)
    }

    pub fn own_link(&self, name: &str) {
        self.links.borrow_mut().push(name.to_string());
    }

    /// Nothing of one pod left (while other pods may run).
    pub fn assert_pod_clean(&self, uuid: &str) {
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(uuid))
            .map(str::to_string)
            .collect();
        assert!(mounts.is_empty(), "mounts of {uuid} left: {mounts:#?}");
        assert_no_cgroups(uuid);
    }

    /// Nothing of any pod left on the host.
    pub fn assert_clean(&self, uuids: &[String], bridge: Option<&str>) {
        let root = self.root.display().to_string();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_string)
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        for u in uuids {
            assert_no_cgroups(u);
        }
        if let Some(b) = bridge {
            let out = Command::new("ip")
                .args(["-o", "link", "show", "master", b])
                .output()
                .expect("ip");
            let s = String::from_utf8_lossy(&out.stdout);
            assert!(s.trim().is_empty(), "veths left on {b}: {s}");
        }
        let ipam = self.dir.path().join("ipam");
        if ipam.exists() {
            for net in std::fs::read_dir(&ipam).expect("ipam").flatten() {
                let ips: Vec<String> = std::fs::read_dir(net.path())
                    .expect("ipam net")
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
                    .collect();
                assert!(ips.is_empty(), "CNI IPs still reserved: {ips:?}");
            }
        }
    }
}

/// No cgroup of pod `uuid` left, in any v1 hierarchy or in v2.
fn assert_no_cgroups(uuid: &str) {
    for base in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/devices",
        "/sys/fs/cgroup",
    ] {
        let p = Path::new(base).join(format!("rktup/k8s_{uuid}"));
        assert!(!p.exists(), "cgroup left: {}", p.display());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Remove every manifest so the agent stops and cleans its pods, then stop the agent.
        if let Ok(rd) = std::fs::read_dir(&self.manifests) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if self.agent.is_none()
            && std::fs::read_dir(self.root.join("pods"))
                .map(|r| r.count())
                .unwrap_or(0)
                > 0
        {
            self.start_agent();
        }
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.wait_no_pods(60)));
        if let Some(c) = &self.agent {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        if let Some(mut c) = self.agent.take() {
            let _ = c.wait();
        }
        for l in self.links.borrow().iter() {
            delete_link(l);
        }
    }
}

pub fn delete_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stderr(Stdio::null())
        .status();
}

pub fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("ns")
        .display()
        .to_string()
}

pub fn uuid_of(p: &serde_json::Value) -> String {
    p["uuid"].as_str().unwrap_or_default().to_string()
}

/// What a kubectl run gave.
pub struct KubectlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlRun {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// `/usr/bin/kubectl` with this kubeconfig and cache, `input` on its stdin, ended after 60 s (so
/// a `logs -f` or an exec that does not end fails instead of hanging).
pub fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str], input: Option<&str>) -> KubectlRun {
    run_kubectl(Path::new(KUBECTL), kubeconfig, Some(cache), args, input)
}

/// The kubectl at `program` with this kubeconfig (and cache dir, if given), `input` on its
/// stdin, ended after 60 s.
pub fn run_kubectl(
    program: &Path,
    kubeconfig: &Path,
    cache: Option<&Path>,
    args: &[&str],
    input: Option<&str>,
) -> KubectlRun {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(program)
        .arg("--kubeconfig")
        .arg(kubeconfig);
    if let Some(cache) = cache {
        cmd.arg("--cache-dir").arg(cache);
    }
    let out = crate::output_with_input(cmd.args(args), input);
    KubectlRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Creates `pod` in `default` and waits until it runs with every container ready.
pub fn run_pod(
    rt: &tokio::runtime::Runtime,
    admin: &kube::Client,
    pod: &k8s_openapi::api::core::v1::Pod,
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    let name = pod.metadata.name.clone().unwrap_or_default();
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        pods.create(&PostParams::default(), pod)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        let (pods, name) = (&pods, name.as_str());
        eventually(
            &format!("{name} running"),
            Duration::from_secs(90),
            || async move {
                let p = pods.get_opt(name).await.ok().flatten()?;
                let s = p.status?;
                (s.phase.as_deref() == Some("Running")
                    && s.container_statuses?.iter().all(|c| c.ready))
                .then_some(())
            },
        )
        .await;
    });
}

// ---- a minimal HTTPS client: client certificate optional, server certificate not verified
// (as the API server treats kubelets) ----

pub struct Answer {
    pub status: u16,
    pub body: String,
    pub server_cert: Vec<u8>,
}

/// `method path` on 127.0.0.1:`port` over HTTP/1.0 (body delimited by the close), presenting
/// `client` (cert PEM, key PEM) if given.
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    client: Option<(&str, &str)>,
) -> Result<Answer, String> {
    call_with(port, method, path, client, &[])
}

/// [`call`] with extra request `headers`.
pub fn call_with(
    port: u16,
    method: &str,
    path: &str,
    client: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    // The kubelet port as the API server without --kubelet-certificate-authority calls it: its
    // serving certificate is not verified (tests read it from the answer).
    let mut tls = rktup_tls::ClientTls::insecure(rktup_tls::Insecure::NoKubeletCa);
    if let Some((cert, key)) = client {
        tls = tls
            .with_client_pem("the test's client", cert.as_bytes(), key.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let cfg = tls.build().map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        tls,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok(Answer {
        status,
        body: body.to_string(),
        server_cert,
    })
}

/// A guest booted by [`boot_guest`]: where its console and qemu's messages went.
pub struct Guest {
    pub dir: PathBuf,
    pub io: PathBuf,
    /// How long it ran until it powered off.
    pub secs: f64,
}

impl Guest {
    /// A file the guest wrote into the shared `io` directory ("" if absent).
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.io.join(name)).unwrap_or_default()
    }

    /// What to show when an assertion fails: the guest script's log, the agent's log's tail,
    /// the console and qemu's stderr.
    pub fn report(&self) -> String {
        let lines: Vec<String> = self.read("agent.log").lines().map(String::from).collect();
        let mut files: Vec<String> = std::fs::read_dir(&self.io)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        format!(
            "files the guest wrote: {}\nguest.log:\n{}\ndiag:\n{}\nagent.log (tail):\n{}\nconsole:\n{}\nqemu:\n{}",
            files.join(" "),
            self.read("guest.log"),
            self.read("diag"),
            lines[lines.len().saturating_sub(60)..].join("\n"),
            std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default()
        )
    }
}

/// A directory for a guest: `io/` (shared with it read-write) holding the busybox test image as
/// `busybox.tar` (an OCI archive for `rktup rkt image import`).
pub fn guest_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let io = dir.path().join("io");
    std::fs::create_dir_all(&io).expect("mkdir io");
    Images::build().oci_archive("busybox", &io.join("busybox.tar"));
    dir
}

/// Boot Debian's kernel (`kvm`) under qemu with an initramfs of busybox, the kernel's modules
/// and the `/init` that `init` writes (given the modules' insmod lines) (1 GiB, 2 CPUs, serial console to
/// `<dir>/console.log`) and wait until the guest powers off (600 s at most, or
/// `RKTUP_TEST_GUEST_SECS`, then panic with its report). The guest sees this host's / read-only as 9p tag `host` and `<dir>/io` read-write
/// as tag `io`; `append` is added to the kernel command line.
pub fn boot_guest(
    kvm: &rktup_runtime::pod::KvmPlan,
    dir: &Path,
    init: impl FnOnce(&str) -> String,
    append: &str,
) -> Guest {
    let io = dir.join("io");
    let busybox = std::fs::read(&kvm.busybox).expect("read busybox");
    let initrd =
        rktup_runtime::stage1::kvm::initramfs(kvm, &busybox, &["host"], init).expect("initramfs");
    std::fs::write(dir.join("initrd"), initrd).expect("write initrd");
    let mut qemu = Command::new(&kvm.qemu)
        .args(rktup_runtime::stage1::kvm::cpu_args())
        .args([
            "-m",
            "1024",
            "-smp",
            "2",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
        ])
        .arg(format!("file:{}", dir.join("console.log").display()))
        .arg("-kernel")
        .arg(&kvm.kernel)
        .arg("-initrd")
        .arg(dir.join("initrd"))
        .args(["-append", &format!("console=ttyS0 panic=-1 {append}")])
        .args([
            "-fsdev",
            // The host's / spans several filesystems (its /proc, /sys, /dev among them):
            // multidevs=remap keeps their inode numbers apart, which qemu 7.2 (bookworm's)
            // otherwise confuses so that the guest cannot mount /proc on the share.
            "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=host,mount_tag=host",
            "-fsdev",
        ])
        .arg(format!(
            "local,id=io,path={},security_model=passthrough",
            io.display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=io,mount_tag=io"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.log")).expect("qemu log"))
        .spawn()
        .expect("start qemu");
    let start = std::time::Instant::now();
    // RKTUP_TEST_GUEST_SECS shortens the wait when debugging a guest by hand.
    let limit = Duration::from_secs(
        std::env::var("RKTUP_TEST_GUEST_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let mut guest = Guest {
        dir: dir.to_path_buf(),
        io,
        secs: 0.0,
    };
    loop {
        if let Ok(Some(_)) = qemu.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            let _ = qemu.kill();
            let _ = qemu.wait();
            panic!(
                "the guest did not finish in {} s\n{}",
                limit.as_secs(),
                guest.report()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    guest.secs = start.elapsed().as_secs_f64();
    println!("guest ran for {:.1} s", guest.secs);
    guest
}
