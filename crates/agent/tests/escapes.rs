//! Attacks on the node from an ordinary, unprivileged pod (issue 12): a subPath through a symlink
//! a container planted in a shared volume, images whose layers write through their own symlinks,
//! images whose /etc, workingDir or mount points are symlinks to the host. Each used to change
//! or expose the host; each must now fail with a clear status while the host stays as it was.
//! Run as root after `cargo build --bin rktup` (real agent, registry, overlayfs).

use rktup_testkit::agent::*;
use rktup_testkit::wait_for;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Root is needed for the agent (`rktup_testkit::can_run`: under CI=true its absence fails).
fn root_or_skip(test: &str) -> bool {
    rktup_testkit::can_run_as_root(test, "the agent runs pods")
}

/// A scratch "host" directory the attacks aim at: a canary file, a directory with a file, and a
/// symlink (as /etc/resolv.conf often is); `snapshot` lists everything with its content.
struct Canary {
    dir: PathBuf,
}

impl Canary {
    fn new(parent: &Path) -> Canary {
        let dir = parent.join("host");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("wd")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("canary"), "host file\n").unwrap();
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("passwd", dir.join("etc/resolv.conf")).unwrap();
        Canary { dir }
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        fn walk(base: &Path, p: &Path, out: &mut Vec<(String, String)>) {
            let mut entries: Vec<_> = std::fs::read_dir(p).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                let md = std::fs::symlink_metadata(&path).unwrap();
                if md.is_symlink() {
                    let t = std::fs::read_link(&path).unwrap();
                    out.push((rel, format!("-> {}", t.display())));
                } else if md.is_dir() {
                    out.push((rel, "dir".into()));
                    walk(base, &path, out);
                } else {
                    out.push((rel, std::fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        walk(&self.dir, &self.dir, &mut out);
        out
    }
}

/// An OCI layout with `busybox` and images derived from it.
struct Layout {
    images: rktup_testkit::Images,
    scratch: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        Layout {
            images: rktup_testkit::Images::build(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn img(&self, tag: &str) -> String {
        format!("{}:{tag}", self.images.layout.display())
    }

    /// busybox plus one more layer: exactly the given tar entries (umoci raw add-layer), which
    /// no filesystem diff would produce.
    fn with_raw_layer(&self, tag: &str, layer: Vec<u8>) {
        let tar = self.scratch.path().join(format!("{tag}.tar"));
        std::fs::write(&tar, layer).unwrap();
        sh(Command::new("umoci").args(["tag", "--image", &self.img("busybox"), tag]));
        sh(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &self.img(tag)])
            .arg(&tar));
    }

    /// busybox with its rootfs changed by `edit` (umoci unpack, edit, repack).
    fn with_rootfs(&self, tag: &str, edit: impl FnOnce(&Path)) {
        let bundle = self.scratch.path().join(format!("bundle-{tag}"));
        sh(Command::new("umoci").args(["tag", "--image", &self.img("busybox"), tag]));
        sh(Command::new("umoci")
            .args(["unpack", "--image", &self.img(tag)])
            .arg(&bundle));
        edit(&bundle.join("rootfs"));
        sh(Command::new("umoci")
            .args(["repack", "--image", &self.img(tag)])
            .arg(&bundle));
        std::fs::remove_dir_all(&bundle).unwrap();
    }
}

/// A layer tar: `(path, None)` a symlink to `target`, `(path, Some(data))` a file.
fn layer(entries: &[(&str, &str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, target, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, path, d.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn container<'a>(p: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    p["status"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {p:#}"))
}

/// A container that wrote `ln -s / /vol/x` into an emptyDir must not give a second container the
/// host's root through `subPath: x` (kubelet's CVE-2017-1002101): the second container is
/// refused with CreateContainerConfigError naming the subPath, while subPaths that stay inside
/// the volume (also through an inner link, or from subPathExpr) work.
#[test]
fn subpath_through_a_planted_symlink_is_refused() {
    if !root_or_skip("subpath_through_a_planted_symlink_is_refused") {
        return;
    }
    let node = Node::new(&[]);
    let img = &node.busybox;
    let c = |name: &str, key: &str, val: &str, env: &str| {
        format!(
            "  - name: {name}\n    image: {img}\n    command: [\"sh\", \"-c\", \"ls /host; cat /host/f /host/etc/hostname\"]\n    env: [{{name: SUB_DIR, value: \"{env}\"}}]\n    volumeMounts: [{{name: vol, mountPath: /host, {key}: \"{val}\"}}]\n"
        )
    };
    let yaml = format!(
        r#"metadata: {{name: subpath}}
spec:
  restartPolicy: Never
  hostNetwork: true
  volumes: [{{name: vol, emptyDir: {{}}}}]
  initContainers:
  - name: plant
    image: {img}
    command: ["sh", "-c", "ln -s / /vol/abs && ln -s ../../../../../../../../../.. /vol/rel && mkdir -p /vol/ok/dir && echo fine > /vol/ok/dir/f && ln -s ok /vol/inner"]
    volumeMounts: [{{name: vol, mountPath: /vol}}]
  containers:
{}{}{}{}{}"#,
        c("escape-abs", "subPath", "abs", ""),
        c("escape-rel", "subPath", "rel/etc", ""),
        c("escape-expr", "subPathExpr", "$(SUB_DIR)", "abs"),
        c("inside", "subPath", "inner/dir", ""),
        c("inside-expr", "subPathExpr", "ok/$(SUB_DIR)", "dir"),
    );
    node.put("subpath.yaml", &yaml);
    let p = node.wait_pod("subpath", "every container ended", 60, |p| {
        p["status"]["containers"]
            .as_array()
            .is_some_and(|cs| cs.len() == 5 && cs.iter().all(|c| c["state"] == "terminated"))
    });
    let uuid = uuid_of(&p);
    for (name, sub) in [
        ("escape-abs", "abs"),
        ("escape-rel", "rel/etc"),
        ("escape-expr", "abs"),
    ] {
        let c = container(&p, name);
        assert_eq!(c["reason"], "CreateContainerConfigError", "{name}: {p:#}");
        let msg = c["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("subPath {sub:?}")) && msg.contains("outside volume"),
            "{name}: {msg}"
        );
        // It never ran: nothing of the host's root reached its log.
        let (_, logs, _) = node.rktup(&["logs", &uuid, "-c", name]);
        assert!(
            !logs.contains("hostname") && !logs.contains("bin"),
            "{name}: {logs}"
        );
    }
    for name in ["inside", "inside-expr"] {
        let c = container(&p, name);
        assert_eq!(
            c["exit_code"], 1,
            "{name} (cat of the missing etc/hostname): {p:#}"
        );
        let logs = node.rkt_ok(&["logs", &uuid, "-c", name]);
        assert!(logs.contains("fine"), "{name}: {logs}");
    }
    node.delete("subpath.yaml");
    node.wait_no_pods(30);
    node.assert_pod_clean(&uuid);
}

/// Layers that put a symlink to the host and then a file, a whiteout or an opaque marker through
/// it: the old unpacker replaced, deleted or whited out the host's files as root. Now a file
/// through the link fails the pull (ErrImagePull naming the entry), whiteouts there are skipped,
/// and the host directory is unchanged either way.
#[test]
fn layers_writing_through_their_own_symlinks_fail_the_pull() {
    if !root_or_skip("layers_writing_through_their_own_symlinks_fail_the_pull") {
        return;
    }
    let node = Node::new(&[]);
    let canary = Canary::new(node.dir.path());
    let before = canary.snapshot();
    let host = canary.dir.display().to_string();
    let layout = Layout::new();
    let cases = [
        (
            "file",
            layer(&[("evil", &host, None), ("evil/canary", "", Some("pwned\n"))]),
        ),
        (
            "whiteout",
            layer(&[("evil", &host, None), ("evil/etc/.wh.passwd", "", Some(""))]),
        ),
        (
            "opaque",
            layer(&[
                ("evil", &host, None),
                ("evil/data/.wh..wh..opq", "", Some("")),
            ]),
        ),
        (
            "climb",
            layer(&[
                ("evil", "../../../../../../../../../../../..", None),
                (&format!("evil{host}/canary"), "", Some("pwned\n")),
            ]),
        ),
    ];
    for (tag, l) in cases {
        layout.with_raw_layer(tag, l);
        let image = node
            .registry
            .push(&layout.images.layout, tag, &format!("test/evil-{tag}:1"));
        node.put(
            &format!("{tag}.yaml"),
            &format!(
                "metadata: {{name: {tag}}}\nspec:\n  restartPolicy: Never\n  hostNetwork: true\n  containers:\n  - name: c\n    image: {image}\n    command: [\"true\"]\n"
            ),
        );
    }
    // Files through the link fail the pull, naming the entry: the pod workers log kubelet's
    // ErrImagePull for the static pod (no API server here) and nothing reaches the runtime.
    let failed: Vec<(&str, String)> = ["file", "climb"]
        .into_iter()
        .map(|tag| {
            let who = format!(
                "pod from {} container c: ErrImagePull (",
                node.manifests.join(format!("{tag}.yaml")).display()
            );
            let line = wait_for(
                &format!("{tag}: ErrImagePull"),
                Duration::from_secs(60),
                || {
                    node.agent_log()
                        .lines()
                        .find(|l| l.contains(&who))
                        .map(str::to_string)
                },
            );
            node.delete(&format!("{tag}.yaml"));
            (tag, line)
        })
        .collect();
    let settled: Vec<(&str, serde_json::Value)> = ["whiteout", "opaque"]
        .into_iter()
        .map(|tag| {
            let p = node.wait_pod(tag, "exited", 60, |p| p["status"]["state"] == "exited");
            node.delete(&format!("{tag}.yaml"));
            (tag, p)
        })
        .collect();
    // First what matters most: nothing on the host changed.
    assert_eq!(canary.snapshot(), before, "the host directory changed");
    for (tag, line) in failed {
        assert!(
            line.contains("canary") && line.contains("symbolic link"),
            "{tag}: {line}"
        );
        assert!(
            !node.pods().iter().any(|p| p["name"] == tag),
            "{tag}: a pod whose image failed to pull went to the runtime: {:#?}",
            node.pods()
        );
    }
    for (tag, p) in settled {
        // Whiteouts and opaque markers below the link hide nothing: skipped, the pod runs.
        assert_eq!(container(&p, "c")["exit_code"], 0, "{tag}: {p:#}");
    }
    node.wait_no_pods(30);
}

/// Images whose /etc, workingDir parent or a mount point's parent are symlinks to the host:
/// the old runtime followed them on the host while setting up the container (it deleted the
/// host's resolv.conf link and created hosts/hostname files and directories there). Now every
/// such path resolves inside the container's root: those pods fail with the reason, and the
/// host is unchanged. `/etc -> /etc` (the issue's example) leaves the host's /etc as it was.
#[test]
fn image_symlinks_do_not_move_container_setup_onto_the_host() {
    if !root_or_skip("image_symlinks_do_not_move_container_setup_onto_the_host") {
        return;
    }
    let node = Node::new(&[]);
    let canary = Canary::new(node.dir.path());
    let before = canary.snapshot();
    let host = canary.dir.clone();
    let etc_before = host_etc();
    let layout = Layout::new();
    let link = |root: &Path, name: &str, to: &Path| {
        let p = root.join(name);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        }
        std::os::unix::fs::symlink(to, p).unwrap();
    };
    layout.with_rootfs("etc-host", |r| link(r, "etc", &host.join("etc")));
    layout.with_rootfs("etc-self", |r| link(r, "etc", Path::new("/etc")));
    let climb = format!("../../../../../../../../../../..{}", host.display());
    layout.with_rootfs("paths", |r| {
        link(r, "wd", Path::new(&climb));
        link(r, "data", &host.join("data"));
    });
    let push = |tag: &str| {
        node.registry
            .push(&layout.images.layout, tag, &format!("test/{tag}:1"))
    };
    let (etc_host, etc_self, paths) = (push("etc-host"), push("etc-self"), push("paths"));
    let pod = |name: &str, image: &str, extra: &str| {
        node.put(
            &format!("{name}.yaml"),
            &format!(
                "metadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  hostNetwork: true\n  volumes: [{{name: v, emptyDir: {{}}}}]\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo ran; pwd; ls /data\"]\n{extra}"
            ),
        );
    };
    pod("etc-host", &etc_host, "");
    pod("etc-self", &etc_self, "");
    pod("workdir", &paths, "    workingDir: /wd/x\n");
    pod(
        "mountpoint",
        &paths,
        "    volumeMounts: [{name: v, mountPath: /data/sub}]\n",
    );
    let cases = [
        (
            "etc-host",
            "failed to mount /etc/hosts: etc is a dangling symbolic link",
        ),
        (
            "etc-self",
            "failed to mount /etc/hosts: Too many levels of symbolic links",
        ),
        ("workdir", "failed to enter workingDir /wd/x"),
        (
            "mountpoint",
            "failed to create mount point /data/sub: data is a dangling",
        ),
    ];
    let settled: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, _)| {
            let p = node.wait_pod(name, "ended", 60, |p| p["status"]["state"] == "exited");
            node.delete(&format!("{name}.yaml"));
            p
        })
        .collect();
    // First what matters most: nothing on the host changed.
    assert_eq!(canary.snapshot(), before, "the host directory changed");
    assert_eq!(host_etc(), etc_before, "the host's /etc changed");
    for ((name, why), p) in cases.iter().zip(&settled) {
        let c = container(p, "c");
        assert_ne!(c["exit_code"], 0, "{name} ran: {p:#}");
        let msg = c["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{name}: {msg}");
        let (_, logs, _) = node.rktup(&["logs", &uuid_of(p), "-c", "c"]);
        assert!(!logs.contains("ran"), "{name} ran: {logs}");
    }
    node.wait_no_pods(30);
}

/// The host's /etc entries the runtime could touch: (name, kind and content or link target).
fn host_etc() -> Vec<(String, String)> {
    ["resolv.conf", "hosts", "hostname"]
        .iter()
        .map(|f| {
            let p = Path::new("/etc").join(f);
            let v = match std::fs::symlink_metadata(&p) {
                Err(_) => "missing".to_string(),
                Ok(m) if m.is_symlink() => format!("-> {:?}", std::fs::read_link(&p).ok()),
                Ok(_) => std::fs::read_to_string(&p).unwrap_or_default(),
            };
            (f.to_string(), v)
        })
        .collect()
}
