//! The glog scale on a real agent and the supervisors it starts: `--v 4` (or `LOG_LEVEL=4`)
//! logs every rkt runtime step in the pod's stage1.log, `--v 2` only what went wrong there, and
//! the agent's own lines at both. Run as root after `cargo build --bin rktup`.

use rktup_testkit::agent::*;

/// Whether the test can run (`rktup_testkit::can_run`: under CI=true a missing need fails it).
fn can_run(test: &str) -> bool {
    rktup_testkit::can_run_as_root(test, "the agent runs pods")
}

/// A blank RUST_LOG is as if unset: a developer's own RUST_LOG would replace the `--v` mapping
/// these tests check.
const NO_RUST_LOG: &[(&str, &str)] = &[("RUST_LOG", "")];

/// One container that runs and exits, one that can never start (its subPathExpr expands to an
/// absolute path: a warning from the supervisor at every verbosity).
fn pod(name: &str, img: &str) -> String {
    format!(
        r#"metadata: {{name: {name}}}
spec:
  hostNetwork: true
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: ok
    image: {img}
    command: ["sh", "-c", "echo ran"]
  - name: bad
    image: {img}
    command: ["true"]
    volumeMounts: [{{name: scratch, mountPath: /s, subPathExpr: /abs}}]
"#
    )
}

struct Seen {
    agent: String,
    stage1: String,
    uuid: String,
}

/// Runs the pod on `node`; returns the agent's and the supervisor's log once both containers are
/// settled (one exited, one refused).
fn run(mut node: Node, name: &str) -> Seen {
    node.put(&format!("{name}.yaml"), &pod(name, &node.busybox));
    let p = node.wait_pod(name, "ok exited and bad refused", 60, |p| {
        let c = &p["status"]["containers"];
        c[0]["state"] == "terminated" && c[1]["reason"] == "CreateContainerConfigError"
    });
    assert_eq!(p["status"]["containers"][0]["exit_code"], 0, "{p:#}");
    let uuid = uuid_of(&p);
    let seen = Seen {
        agent: node.agent_log(),
        stage1: node.stage1_logs(),
        uuid: uuid.clone(),
    };
    node.delete(&format!("{name}.yaml"));
    node.wait_no_pods(30);
    node.assert_pod_clean(&uuid);
    node.kill_agent();
    seen
}

/// What every verbosity shows: the agent's start of the pod and the supervisor's warning, in
/// rktup's line format.
fn assert_always(s: &Seen) {
    let started = format!(" INFO  agent: started pod k8s_{}", s.uuid);
    assert!(s.agent.contains(&started), "{}", s.agent);
    let warn = s
        .stage1
        .lines()
        .find(|l| l.contains("container failed to start"))
        .unwrap_or_else(|| panic!("no warning in stage1.log:\n{}", s.stage1));
    assert!(
        warn.contains(" WARN  stage1[")
            && warn.contains("container=bad")
            && warn.contains("reason=\"CreateContainerConfigError\"")
            && warn.contains("subPathExpr \"/abs\""),
        "{warn}"
    );
}

fn assert_rkt_detail(s: &Seen) {
    assert_always(s);
    // The agent's side: what it asked of the runtime.
    let spawned = " TRACE agent: stage1 supervisor pid ";
    assert!(
        s.agent
            .lines()
            .any(|l| l.contains(spawned) && l.contains(&format!("pod={}", s.uuid))),
        "{}",
        s.agent
    );
    for step in [
        "preparing pod",
        "infra pid",
        "starting container: [\"sh\", \"-c\", \"echo ran\"] container=ok restart=0",
        "container exited with 0",
    ] {
        assert!(
            s.stage1
                .lines()
                .any(|l| l.contains(" TRACE stage1[") && l.contains(step)),
            "{step:?} missing from stage1.log:\n{}",
            s.stage1
        );
    }
}

#[test]
fn v4_logs_every_rkt_step_of_the_pod() {
    if !can_run("v4_logs_every_rkt_step_of_the_pod") {
        return;
    }
    let s = run(Node::with_env(&["--v", "4"], NO_RUST_LOG), "v4");
    assert_rkt_detail(&s);
}

#[test]
fn log_level_4_in_the_environment_is_v4() {
    if !can_run("log_level_4_in_the_environment_is_v4") {
        return;
    }
    let s = run(
        Node::with_env(&[], &[("LOG_LEVEL", "4"), NO_RUST_LOG[0]]),
        "loglevel4",
    );
    assert_rkt_detail(&s);
}

#[test]
fn v2_logs_what_happened_but_no_rkt_detail() {
    if !can_run("v2_logs_what_happened_but_no_rkt_detail") {
        return;
    }
    for (node, name) in [
        (Node::with_env(&["--v=2"], NO_RUST_LOG), "v2"),
        (
            Node::with_env(&[], &[("LOG_LEVEL", "2"), NO_RUST_LOG[0]]),
            "loglevel2",
        ),
    ] {
        let s = run(node, name);
        assert_always(&s);
        for l in s.stage1.lines().chain(s.agent.lines()) {
            assert!(
                !l.contains(" TRACE ")
                    && !l.contains(" DEBUG ")
                    && !l.contains("starting container"),
                "detail at --v 2: {l}\nstage1.log:\n{}",
                s.stage1
            );
        }
    }
}
