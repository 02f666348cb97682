//! `sudo rktup local up` (issue 18): with SUDO_USER set and neither KUBECONFIG nor
//! `--kubeconfig`, the context goes into that user's `~/.kube/config` — made 0600 and owned by
//! the user, as is `~/.kube` — not into root's; the user's own kubectl reaches the cluster
//! through it; `down` takes the context out again and the file stays the user's. The user is a
//! throwaway account made here (useradd) and removed at the end (userdel -r).

use rktup_testkit::local::Home;
use rktup_testkit::unique;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throwaway account with a home directory, removed with it on drop.
struct User {
    name: String,
    home: PathBuf,
    uid: u32,
}

impl User {
    fn add() -> User {
        let name = format!("rktsudo{}", unique());
        let home = PathBuf::from("/home").join(&name);
        let o = Command::new("useradd")
            .args(["--create-home", "--home-dir"])
            .arg(&home)
            .args(["--shell", "/usr/sbin/nologin", &name])
            .output()
            .expect("run useradd");
        assert!(
            o.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let uid = std::fs::metadata(&home).expect("home made").uid();
        User { name, home, uid }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn sudo_up_writes_the_context_into_the_sudo_users_kubeconfig() {
    if !rktup_testkit::can_run_as_root("local_sudo", "`rktup local up` and useradd") {
        return;
    }
    let user = User::add();
    let home = Home::new();
    // root's HOME as sudo leaves it (its own kubeconfig must stay untouched).
    let root_home = home.path().join("root-home");
    std::fs::create_dir_all(&root_home).unwrap();
    let c = rktup_testkit::local_cluster!("sudo")
        .home(&home)
        .no_kubeconfig()
        .env("HOME", &root_home)
        .env("SUDO_USER", &user.name)
        .env("SUDO_UID", user.uid.to_string())
        .build();
    let name = c.name();
    let up = c.rktup(&["local", "up", "--name", name, "--wait", "60s"]);
    up.assert_ok(&c.logs());
    let up = up.text();

    let kube_dir = user.home.join(".kube");
    let config = kube_dir.join("config");
    let meta = std::fs::metadata(&config).unwrap_or_else(|e| {
        panic!("{}: {e}\n{up}", config.display());
    });
    assert_eq!(meta.uid(), user.uid, "kubeconfig owned by {}", user.name);
    assert_eq!(meta.mode() & 0o777, 0o600);
    let dmeta = std::fs::metadata(&kube_dir).unwrap();
    assert_eq!(dmeta.uid(), user.uid, "~/.kube owned by {}", user.name);
    assert!(
        !root_home.join(".kube").exists(),
        "nothing written into root's HOME"
    );
    assert!(
        up.contains(&config.display().to_string()),
        "up names the file it wrote: {up}"
    );

    // The user's own kubectl (their uid, their HOME, no root) reaches the cluster.
    let context = format!("rktup-{name}");
    let nodes = Command::new("setpriv")
        .args([
            &format!("--reuid={}", user.uid),
            &format!("--regid={}", meta.gid()),
            "--clear-groups",
            "--",
            "env",
        ])
        .arg(format!("HOME={}", user.home.display()))
        .args([
            "kubectl",
            "--context",
            &context,
            "get",
            "nodes",
            "-o",
            "name",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl as the user");
    assert!(
        nodes.status.success(),
        "kubectl as {}: {}",
        user.name,
        text(&nodes)
    );
    assert_eq!(
        String::from_utf8_lossy(&nodes.stdout).trim(),
        format!("node/{name}-node-1")
    );

    // down: the context leaves the user's file, which stays theirs.
    c.down();
    let after = std::fs::read_to_string(&config).unwrap();
    assert!(!after.contains(&context), "context removed: {after}");
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(meta.uid(), user.uid);
    assert_eq!(meta.mode() & 0o777, 0o600);
    check_unknown_user(&home, &root_home);
}

/// A SUDO_USER with no passwd entry fails `up` before anything is made, naming the way out.
fn check_unknown_user(home: &Home, root_home: &Path) {
    let c = rktup_testkit::local_cluster!("sudox")
        .home(home)
        .no_kubeconfig()
        .env("HOME", root_home)
        .env("SUDO_USER", format!("nosuchuser{}", unique()))
        .build();
    let o = c.rktup(&["local", "up", "--name", c.name(), "--wait", "60s"]);
    let _ = c
        .command(&["local", "down", "--name", c.name()])
        .env_remove("SUDO_USER")
        .env("KUBECONFIG", root_home.join("unused"))
        .output();
    assert!(!o.status.success(), "{o}");
    assert!(!c.state_dir().exists(), "nothing made: {o}");
    assert!(
        o.text().contains("no such user") && o.text().contains("--kubeconfig"),
        "{o}"
    );
}
