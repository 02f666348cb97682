//! `rktup controlplane`'s log on the glog scale: at `--v 3` (or `LOG_LEVEL=3`) every request as
//! kube-apiserver's httplog shows it, at `--v 2` (the default) only what happened. The real
//! binary, the real kubectl.

use rktup_testkit::{free_port, process_listens_on, wait_for};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KUBECTL: &str = "/usr/bin/kubectl";

/// A control plane process writing its stderr to `<dir>/cp.log`; killed (SIGTERM) on drop.
struct ControlPlane {
    child: Child,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    fn start(args: &[&str], env: &[(&str, &str)]) -> ControlPlane {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("cp.log")).expect("log");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rktup"));
        cmd.arg("controlplane")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--bind-address", "127.0.0.1"])
            .args(["--secure-port", &port.to_string()])
            .args(args)
            .env_remove("LOG_LEVEL")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("start rktup controlplane");
        let pid = child.id();
        let cp = ControlPlane { child, dir };
        wait_for("the control plane", Duration::from_secs(60), || {
            (process_listens_on(pid, port) && cp.kubeconfig().exists()).then_some(())
        });
        cp
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("data/admin.kubeconfig")
    }

    fn kubectl_get_namespaces(&self) {
        let out = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["get", "namespaces", "-o", "name"])
            .output()
            .expect("kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("namespace/default"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops it (SIGTERM, as a local cluster's `down` does) and returns its log.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        std::fs::read_to_string(self.dir.path().join("cp.log")).expect("log")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn can_run(test: &str) -> bool {
    let missing = (!Path::new(KUBECTL).exists()).then_some("kubectl at /usr/bin/kubectl");
    rktup_testkit::can_run(test, missing)
}

/// What every verbosity shows: its start and its end, in rktup's line format.
fn assert_what_happened(log: &str) {
    let serving = log
        .lines()
        .find(|l| l.contains("control plane serving on https://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no start line:\n{log}"));
    assert!(serving.contains(" INFO  controlplane: "), "{serving}");
    // `received SIGTERM from pid N (comm): shutting down`: the end names who asked for it.
    assert!(
        log.lines().any(
            |l| l.contains(" INFO  controlplane: received SIGTERM from pid ")
                && l.ends_with("): shutting down")
        ),
        "{log}"
    );
}

fn request_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(": HTTP ")).collect()
}

#[test]
fn v3_logs_each_request_as_kube_apiserver_httplog() {
    if !can_run("v3_logs_each_request_as_kube_apiserver_httplog") {
        return;
    }
    for (args, env) in [
        (&["--v", "3"][..], &[][..]),
        (&[][..], &[("LOG_LEVEL", "3")][..]),
    ] {
        let cp = ControlPlane::start(args, env);
        cp.kubectl_get_namespaces();
        let log = cp.stop();
        assert_what_happened(&log);
        let get = request_lines(&log)
            .into_iter()
            .find(|l| l.contains("verb=GET URI=/api/v1/namespaces"))
            .unwrap_or_else(|| {
                panic!("no request line for kubectl get ({args:?} {env:?}):\n{log}")
            });
        assert!(get.contains(" DEBUG controlplane: HTTP "), "{get}");
        assert!(get.contains("userAgent=\"kubectl/"), "{get}");
        assert!(get.ends_with(" resp=200"), "{get}");
        assert!(get.contains(" latency="), "{get}");
    }
}

#[test]
fn v2_logs_what_happened_but_no_requests() {
    if !can_run("v2_logs_what_happened_but_no_requests") {
        return;
    }
    for (args, env) in [
        (&[][..], &[][..]),
        (&["--v=2"][..], &[("LOG_LEVEL", "4")][..]),
        (&[][..], &[("LOG_LEVEL", "2")][..]),
    ] {
        let cp = ControlPlane::start(args, env);
        cp.kubectl_get_namespaces();
        let log = cp.stop();
        assert_what_happened(&log);
        assert!(
            request_lines(&log).is_empty() && !log.contains(" DEBUG ") && !log.contains(" TRACE "),
            "{args:?} {env:?}:\n{log}"
        );
    }
}

#[test]
fn rust_log_replaces_the_v_mapping_and_a_bad_one_is_reported() {
    if !can_run("rust_log_replaces_the_v_mapping_and_a_bad_one_is_reported") {
        return;
    }
    let cp = ControlPlane::start(&["--v", "2"], &[("RUST_LOG", "rktup_controlplane=debug")]);
    cp.kubectl_get_namespaces();
    let log = cp.stop();
    assert!(
        request_lines(&log)
            .iter()
            .any(|l| l.contains("verb=GET URI=/api/v1/namespaces")),
        "{log}"
    );

    let cp = ControlPlane::start(&["--v", "3"], &[("RUST_LOG", "rktup=loud")]);
    cp.kubectl_get_namespaces();
    let log = cp.stop();
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN  controlplane: ignoring RUST_LOG \"rktup=loud\"")),
        "{log}"
    );
    assert!(
        !request_lines(&log).is_empty(),
        "--v 3 still applies:\n{log}"
    );
}
