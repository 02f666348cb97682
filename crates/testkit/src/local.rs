//! A real `rktup local` cluster for the root tests (tests/local_*.rs): its own state root and
//! kubeconfig in a temporary directory (or a [`Home`] several clusters share), `rktup` and real
//! kubectl runs that fail with the command, its status, stdout, stderr and the cluster's log
//! tails, waits on the API, and a `Drop` that runs `local down` and then asserts that nothing of
//! the cluster is left on the machine: processes naming its state directory, its network
//! namespaces, mounts under its state directory or of its namespaces, the state directory.
//!
//! ```ignore
//! let c = rktup_testkit::local_cluster!("e2e").nodes(2).insecure_registry(&reg.addr).build();
//! c.up();
//! let nodes = c.json(&["get", "nodes"]);
//! ```
//!
//! `local_cluster!` names the `rktup` that cargo built for the calling test
//! (`CARGO_BIN_EXE_rktup`); [`LocalCluster::builder`] takes [`crate::rktup_bin`] instead.

use serde_json::Value;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A builder of a [`LocalCluster`] named after its test (see the module docs), with
/// `CARGO_BIN_EXE_rktup` as its binary: only for the root package's tests.
#[macro_export]
macro_rules! local_cluster {
    ($prefix:expr) => {
        $crate::local::LocalCluster::builder($prefix).bin(env!("CARGO_BIN_EXE_rktup"))
    };
}

/// The directory that holds clusters' state root (`<dir>/state`) and kubeconfig
/// (`<dir>/kubeconfig`); removed when its last cluster is dropped.
#[derive(Clone)]
pub struct Home(Arc<tempfile::TempDir>);

impl Home {
    pub fn new() -> Home {
        Home(Arc::new(tempfile::tempdir().expect("tempdir")))
    }
    /// The directory itself (tests put their files here).
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn state_root(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.path().join("kubeconfig")
    }
}

impl Default for Home {
    fn default() -> Home {
        Home::new()
    }
}

/// A finished command: what ran and its output (which it derefs to). `Display` shows the
/// command, its status, stdout and stderr, for failure messages.
pub struct Run {
    pub command: String,
    pub output: Output,
}

impl Run {
    pub fn success(&self) -> bool {
        self.output.status.success()
    }
    pub fn status(&self) -> ExitStatus {
        self.output.status
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// stdout, a newline, stderr.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout(), self.stderr())
    }
    /// Panics (with this run and `more`) unless the command succeeded.
    pub fn assert_ok(&self, more: &str) {
        assert!(self.success(), "{self}\n{more}");
    }
}

impl std::ops::Deref for Run {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
}

/// Runs `cmd` to its end with `input` on its stdin (none: stdin is null).
fn run(mut cmd: Command, input: Option<&str>) -> Run {
    let command = describe(&cmd);
    let output = crate::output_with_input(&mut cmd, input);
    Run { command, output }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `GET /` over HTTP/1.0 from this machine (the host's network namespace) to `addr`
/// (`ip:port`): the body, trimmed, or the error (a refused connection reads "Connection
/// refused").
pub fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default())
}

/// Makes the command that runs a program (given its path), e.g. in another mount namespace.
type Launcher = Box<dyn Fn(&Path) -> Command + Send + Sync>;

/// What a cluster's runs take beyond its name and files.
struct Settings {
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    up_env: Vec<(OsString, OsString)>,
    nodes: Option<usize>,
    wait: String,
    registries: Vec<String>,
    config: Option<PathBuf>,
    flags: Vec<String>,
    launcher: Option<Launcher>,
    kubectl_limit: Option<Duration>,
    mount_namespace_of: Option<u32>,
}

/// The settings of a [`LocalCluster`]; [`Builder::build`] makes it (nothing runs yet).
pub struct Builder {
    prefix: String,
    name: Option<String>,
    bin: Option<PathBuf>,
    home: Option<Home>,
    state_root: Option<PathBuf>,
    kubeconfig: Option<Option<PathBuf>>,
    s: Settings,
}

impl Builder {
    /// The binary (default: [`crate::rktup_bin`]).
    pub fn bin(mut self, p: impl Into<PathBuf>) -> Self {
        self.bin = Some(p.into());
        self
    }
    /// This exact name instead of `<prefix><unique>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// State root and kubeconfig in `home`, shared with other clusters.
    pub fn home(mut self, home: &Home) -> Self {
        self.home = Some(home.clone());
        self
    }
    /// Another state root than the home's.
    pub fn state_root(mut self, p: impl Into<PathBuf>) -> Self {
        self.state_root = Some(p.into());
        self
    }
    /// Another kubeconfig than the home's.
    pub fn kubeconfig(mut self, p: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(Some(p.into()));
        self
    }
    /// No KUBECONFIG at all (removed from rktup's environment): rktup picks the file.
    pub fn no_kubeconfig(mut self) -> Self {
        self.kubeconfig = Some(None);
        self
    }
    /// An environment variable of every `rktup` run.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.s.env.push((k.into(), v.into()));
        self
    }
    /// A variable taken out of every `rktup` run's environment (API_PORT always is).
    pub fn env_remove(mut self, k: impl Into<OsString>) -> Self {
        self.s.env_remove.push(k.into());
        self
    }
    /// An environment variable of [`LocalCluster::up`] only.
    pub fn up_env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.s.up_env.push((k.into(), v.into()));
        self
    }
    /// `--num-nodes` of `up` (default: none given).
    pub fn nodes(mut self, n: usize) -> Self {
        self.s.nodes = Some(n);
        self
    }
    /// `--wait` of `up` (default 60s).
    pub fn wait(mut self, w: &str) -> Self {
        self.s.wait = w.to_string();
        self
    }
    /// `--insecure-registry` of `up` (a registry on this machine's loopback, reachable from the
    /// nodes).
    pub fn insecure_registry(mut self, addr: &str) -> Self {
        self.s.registries.push(addr.to_string());
        self
    }
    /// `--config` of `up` (a cluster file).
    pub fn config(mut self, p: impl Into<PathBuf>) -> Self {
        self.s.config = Some(p.into());
        self
    }
    /// More flags of `up`.
    pub fn flag(mut self, f: &str) -> Self {
        self.s.flags.push(f.to_string());
        self
    }
    /// `rktup` runs through `launcher` (given the binary's path), e.g. into a mount namespace.
    pub fn launcher(mut self, f: impl Fn(&Path) -> Command + Send + Sync + 'static) -> Self {
        self.s.launcher = Some(Box::new(f));
        self
    }
    /// kubectl ended (by `timeout`) after `limit`.
    pub fn kubectl_limit(mut self, limit: Duration) -> Self {
        self.s.kubectl_limit = Some(limit);
        self
    }
    /// rktup runs in the mount namespace of `pid` too: the leftover checks also look at its
    /// mounts and its /run/netns.
    pub fn mount_namespace_of(mut self, pid: u32) -> Self {
        self.s.mount_namespace_of = Some(pid);
        self
    }
    pub fn build(self) -> LocalCluster {
        let home = self.home.unwrap_or_default();
        let state_root = self.state_root.unwrap_or_else(|| home.state_root());
        let kubeconfig = match self.kubeconfig {
            Some(k) => k,
            None => Some(home.kubeconfig()),
        };
        let mut s = self.s;
        s.env_remove.push("API_PORT".into());
        if kubeconfig.is_none() {
            s.env_remove.push("KUBECONFIG".into());
        }
        LocalCluster {
            name: self
                .name
                .unwrap_or_else(|| format!("{}{}", self.prefix, crate::unique())),
            bin: self.bin.unwrap_or_else(crate::rktup_bin),
            home,
            state_root,
            kubeconfig,
            s,
        }
    }
}

/// A local cluster of this test (see the module docs); `local down` and the leftover checks on
/// drop.
pub struct LocalCluster {
    name: String,
    bin: PathBuf,
    home: Home,
    state_root: PathBuf,
    kubeconfig: Option<PathBuf>,
    s: Settings,
}

impl LocalCluster {
    /// A cluster named `<prefix><unique>` (parallel-safe), in a home of its own.
    pub fn builder(prefix: &str) -> Builder {
        Builder {
            prefix: prefix.to_string(),
            name: None,
            bin: None,
            home: None,
            state_root: None,
            kubeconfig: None,
            s: Settings {
                env: vec![],
                env_remove: vec![],
                up_env: vec![],
                nodes: None,
                wait: "60s".to_string(),
                registries: vec![],
                config: None,
                flags: vec![],
                launcher: None,
                kubectl_limit: None,
                mount_namespace_of: None,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// `rktup-<name>`, the cluster's kubeconfig context.
    pub fn context(&self) -> String {
        format!("rktup-{}", self.name)
    }
    pub fn home(&self) -> &Home {
        &self.home
    }
    /// The home directory (for the test's own files).
    pub fn dir(&self) -> &Path {
        self.home.path()
    }
    pub fn state_root(&self) -> PathBuf {
        self.state_root.clone()
    }
    /// `<state root>/local-<name>`.
    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join(format!("local-{}", self.name))
    }
    /// The kubeconfig rktup writes and kubectl reads (the home's unless set otherwise).
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig
            .clone()
            .unwrap_or_else(|| self.home.kubeconfig())
    }
    /// The last lines of the cluster's component logs, for failure messages.
    pub fn logs(&self) -> String {
        crate::log_tails(&self.state_dir().join("logs"))
    }
    /// The cluster record (`cluster.json`).
    pub fn record(&self) -> Value {
        let p = self.state_dir().join("cluster.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// `rktup <args>` with this cluster's state root, kubeconfig and environment, not run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.s.launcher {
            Some(l) => l(&self.bin),
            None => Command::new(&self.bin),
        };
        cmd.env("RKTUP_STATE_DIR", &self.state_root);
        if let Some(k) = &self.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        for k in &self.s.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(self.s.env.iter().map(|(k, v)| (k, v)));
        cmd.args(args);
        cmd
    }
    /// `rktup <args>`, to its end.
    pub fn rktup(&self, args: &[&str]) -> Run {
        self.rktup_with(args, &[])
    }
    /// `rktup <args>` with `env` added.
    pub fn rktup_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        run(cmd, None)
    }
    /// `rktup <args>`'s stdout; panics with the run and the logs when it fails.
    pub fn rktup_ok(&self, args: &[&str]) -> String {
        self.ok(self.rktup(args))
    }
    /// `rktup local up` with the builder's settings (`--wait`, `--num-nodes`, registries,
    /// `--config`, flags) and `extra` after them, `env` added to its environment; its stdout.
    pub fn up_with(&self, extra: &[&str], env: &[(&str, &str)]) -> String {
        let mut args: Vec<String> = ["local", "up", "--name", &self.name]
            .map(String::from)
            .to_vec();
        if let Some(n) = self.s.nodes {
            args.extend(["--num-nodes".to_string(), n.to_string()]);
        }
        args.extend(["--wait".to_string(), self.s.wait.clone()]);
        for r in &self.s.registries {
            args.extend(["--insecure-registry".to_string(), r.clone()]);
        }
        if let Some(c) = &self.s.config {
            args.extend(["--config".to_string(), c.display().to_string()]);
        }
        args.extend(self.s.flags.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(&args);
        cmd.envs(self.s.up_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(env.iter().copied());
        self.ok(run(cmd, None))
    }
    /// [`LocalCluster::up_with`] nothing more.
    pub fn up(&self) -> String {
        self.up_with(&[], &[])
    }
    /// `rktup local down --name <name>`, which must succeed; its stdout.
    pub fn down(&self) -> String {
        self.rktup_ok(&["local", "down", "--name", &self.name])
    }

    /// Real kubectl with this cluster's kubeconfig and context.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_in(args, None)
    }
    /// [`LocalCluster::kubectl`] with `input` on its stdin.
    pub fn kubectl_in(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut all = vec!["--context".to_string(), self.context()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.kubectl_file(&self.kubeconfig(), &all, input)
    }
    /// Real kubectl with another kubeconfig (its current context), e.g. a node's.
    pub fn kubectl_file(&self, kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = match self.s.kubectl_limit {
            Some(l) => {
                let mut c = Command::new("timeout");
                c.arg(l.as_secs().max(1).to_string()).arg(crate::KUBECTL);
                c
            }
            None => Command::new(crate::KUBECTL),
        };
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        run(cmd, input)
    }
    /// kubectl's stdout; panics with the run and the logs when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.ok(self.kubectl(args))
    }
    /// [`LocalCluster::kubectl_ok`] with `input` on its stdin.
    pub fn kubectl_ok_in(&self, args: &[&str], input: &str) -> String {
        self.ok(self.kubectl_in(args, Some(input)))
    }
    /// `kubectl <args> -o json`, parsed; panics when it fails.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {a:?}: {e}: {out}"))
    }
    /// `kubectl <args> -o json`, or None while it fails (the API not answering yet).
    pub fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let o = self.kubectl(&a);
        o.success()
            .then(|| serde_json::from_slice(&o.stdout).ok())
            .flatten()
    }
    /// Writes `obj` to `<home>/<file>.json` and `kubectl apply -f`s it.
    pub fn apply(&self, file: &str, obj: &Value) {
        let p = self.write(&format!("{file}.json"), &obj.to_string());
        self.kubectl_ok(&["apply", "-f", &p]);
    }
    /// Runs `script` once (`sh -c`) in a pod `name` of `image` pinned to `node`; its log once it
    /// succeeded (panics with the log and the cluster's logs if it failed, or after 90 s).
    pub fn run_pod(&self, name: &str, node: &str, image: &str, script: &str) -> String {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": image, "command": ["sh", "-c", script]}]}
        });
        self.apply(name, &pod);
        crate::wait_for(&format!("pod {name} done"), Duration::from_secs(90), || {
            let p = self.json(&["get", "pod", name]);
            match p["status"]["phase"].as_str().unwrap_or_default() {
                "Succeeded" => Some(()),
                "Failed" => panic!(
                    "pod {name} failed: {}\n{}",
                    self.kubectl(&["logs", name]).text(),
                    self.logs()
                ),
                _ => None,
            }
        });
        self.kubectl_ok(&["logs", name])
    }
    /// Writes `text` to `<home>/<file>`; the path.
    pub fn write(&self, file: &str, text: &str) -> String {
        let p = self.dir().join(file);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p.display().to_string()
    }
    /// The items of `kubectl get <args> -o json`.
    pub fn items(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        self.json(&a)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    /// The names of the cluster's nodes, asserting that there are `n`, all Ready (now: `up
    /// --wait` returns only then).
    pub fn ready_nodes(&self, n: usize) -> Vec<String> {
        let nodes = self.json(&["get", "nodes"]);
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), n, "{nodes}");
        for node in &items {
            assert!(
                node["status"]["conditions"].as_array().is_some_and(|c| c
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")),
                "{node}"
            );
        }
        items
            .iter()
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// The InternalIP address node `node` reports.
    pub fn node_ip(&self, node: &str) -> String {
        let n = self.json(&["get", "node", node]);
        n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or_else(|| panic!("node {node} has no InternalIP: {n}"))
            .to_string()
    }

    /// The live pid a component's pid file (`run/<component>.pid`) names; None when it is
    /// missing, gone, or a zombie (killed, not yet reaped).
    pub fn pid(&self, component: &str) -> Option<i32> {
        let text =
            std::fs::read_to_string(self.state_dir().join(format!("run/{component}.pid"))).ok()?;
        let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.split_whitespace().next()?;
        (state != "Z").then_some(pid)
    }

    fn ok(&self, r: Run) -> String {
        assert!(r.success(), "{r}\n--- the cluster's logs\n{}", self.logs());
        r.stdout()
    }

    /// What of this cluster is still on the machine: processes naming its state directory,
    /// network namespaces `rktup-<name>-*`, mounts under its state directory or of those
    /// namespaces (here and in the mount namespace rktup ran in), the state directory.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let state = self.state_dir().display().to_string();
        let ns_prefix = format!("rktup-{}-", self.name);
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(&state) {
                left.push(format!(
                    "process {}: {cmd}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
        let mut roots = vec![PathBuf::from("/")];
        let mut mountinfos = vec![PathBuf::from("/proc/self/mountinfo")];
        if let Some(pid) = self.s.mount_namespace_of {
            roots.push(PathBuf::from(format!("/proc/{pid}/root")));
            mountinfos.push(PathBuf::from(format!("/proc/{pid}/mountinfo")));
        }
        for root in &roots {
            let dir = root.join("run/netns");
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&ns_prefix) {
                    left.push(format!("network namespace {n} (in {})", dir.display()));
                }
            }
        }
        let ns_mount = format!("/run/netns/{ns_prefix}");
        for mi in &mountinfos {
            let mounts = std::fs::read_to_string(mi).unwrap_or_default();
            for l in mounts
                .lines()
                .filter(|l| l.contains(&state) || l.contains(&ns_mount))
            {
                left.push(format!("mount ({}): {l}", mi.display()));
            }
        }
        if self.state_dir().exists() {
            left.push(format!("state directory {state}"));
        }
        left
    }

    /// Panics naming whatever [`LocalCluster::leftovers`] finds.
    pub fn assert_nothing_left(&self) {
        let left = self.leftovers();
        assert!(
            left.is_empty(),
            "cluster {} left after down: {left:#?}",
            self.name
        );
    }

    /// [`LocalCluster::assert_nothing_left`] and the rest a `down` must leave clean: iptables
    /// rules naming the cluster, its kubeconfig context.
    pub fn assert_all_gone(&self) {
        self.assert_nothing_left();
        let rules = Command::new("iptables")
            .arg("-S")
            .stdin(Stdio::null())
            .output()
            .expect("run iptables -S");
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            !rules.contains(&format!("rktup cluster {}", self.name)),
            "iptables rules left: {rules}"
        );
        let kc = std::fs::read_to_string(self.kubeconfig()).unwrap_or_default();
        assert!(
            !kc.contains(&self.context()),
            "kubeconfig context left: {kc}"
        );
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Whatever happened, leave nothing behind, and say so when something was.
        let _ = self.rktup(&["local", "down", "--name", &self.name]);
        if !std::thread::panicking() {
            self.assert_nothing_left();
        }
    }
}
