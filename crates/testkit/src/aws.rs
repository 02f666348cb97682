//! A moto server per test (isolated, so tests run in parallel) and clusters pointed at it.

use rktup_aws::cloud::{Clients, RetryPolicy};
use rktup_aws::Aws;
use rktup_config::{ClusterSettings, GlobalArgs, Provider};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Once;
use std::time::Duration;

pub const PUBLIC_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCFCEehsGmDRFwj1w/p/nUOOw5XLswH5ztjJnoGzRMkK3X96KrDZgSOgU6l+cOS17IA4cB4m2e+rxFI4AQnaqRdsULdohK/PnAzVFHK8CVfzeDtVXrMFoo6Jutdj6HIjYw9fw/8XGjO2cEr0TB+FQY6c+j+RDCTNyR3R+hoRcgFzMSxRJNRJCOrd2BV3N2J7dDDybGhDlX3Ww8/5G3eAnkk4BvwcN8pfTHScm0NxWJlXgH/rtbhbtEASIO6A7ncwEbl3L5rtynHc0XlTXo2uxT8/XaZS+2xCMcZzJs3KbKoMxW2xWtrgtaKaSmDgxHwc8DwzC8+0NoT9TQyJ6ptzLUX rktup-test\n";

pub const REGION: &str = "us-west-2";

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        base: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    }
}

/// Credentials for the standard chain, once per process, before any client exists.
pub fn test_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_ENDPOINT_URL");
    });
}

pub struct Moto {
    pub url: String,
    child: Child,
    /// moto's own output, shown when a test fails (a moto that died says why here).
    log: tempfile::NamedTempFile,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!(
                "moto_server at {} ({}), last lines of its log:\n{}",
                self.url,
                exited.map_or("still running".to_string(), |s| format!("exited: {s}")),
                crate::tail(&log, 40)
            );
        }
    }
}

pub fn moto_binary() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("RKTUP_MOTO_SERVER")
            .unwrap_or_else(|_| "/opt/rktup-venv/bin/moto_server".into()),
    );
    assert!(
        p.exists(),
        "moto_server not found at {} (set RKTUP_MOTO_SERVER). Install it with:\n  \
         python3 -m venv /opt/rktup-venv && /opt/rktup-venv/bin/pip install 'moto[server]==5.2.5'",
        p.display()
    );
    p
}

impl Moto {
    pub fn start() -> Moto {
        test_credentials();
        let bin = moto_binary();
        // A moto that lost its port to a parallel test's server exits; the helper retries, and
        // it only returns once this child itself listens (never another test's moto).
        let log = tempfile::NamedTempFile::new().expect("a temp file for moto's log");
        let (child, port) =
            crate::spawn_listening("moto_server", Duration::from_secs(60), |port| {
                // Appending, so stdout and stderr (and a retried start) don't overwrite each other.
                let append = || {
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(log.path())
                        .expect("moto's log")
                };
                let (out, err) = (append(), append());
                let mut cmd = Command::new(&bin);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(out)
                    .stderr(err);
                cmd
            });
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        }
    }

    pub fn clients(&self, rt: &tokio::runtime::Runtime) -> Clients {
        rt.block_on(Clients::connect(REGION, Some(&self.url), fast_retry()))
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A cluster's inputs: a temp dir with the SSH key, the state dir and a kubeconfig.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
}

impl Sandbox {
    pub fn new(name: &str, image: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("id.pub"), PUBLIC_KEY).expect("write the key");
        std::fs::write(dir.path().join("id"), "private").expect("write the key");
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("KUBE_AWS_ZONE", "us-west-2a".to_string()),
            ("INSTANCE_PREFIX", name.to_string()),
            ("AWS_SSH_KEY", dir.path().join("id").display().to_string()),
            (
                "RKTUP_STATE_DIR",
                dir.path().join("state").display().to_string(),
            ),
            ("KUBE_MASTER_IMAGE", image.to_string()),
            ("KUBE_NODE_IMAGE", image.to_string()),
            ("NUM_NODES", "2".to_string()),
        ] {
            env.insert(k.to_string(), v);
        }
        Sandbox { dir, env }
    }

    pub fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn unset(&mut self, k: &str) -> &mut Self {
        self.env.remove(k);
        self
    }

    pub fn settings(&self) -> ClusterSettings {
        let env = |k: &str| self.env.get(k).cloned();
        rktup_config::load(
            Provider::Aws,
            &GlobalArgs::default(),
            &BTreeMap::new(),
            &env,
        )
        .expect("valid settings")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.settings().state_dir
    }

    pub fn aws(&self, moto: &Moto) -> Aws {
        Aws::new(self.settings())
            .endpoint(&moto.url)
            .retry(fast_retry())
            .kubeconfig(self.kubeconfig())
    }
}

/// An AMI moto knows.
pub fn some_image(rt: &tokio::runtime::Runtime, c: &Clients) -> String {
    rt.block_on(async {
        let out = c
            .ec2
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("moto lists its AMIs");
        out.images()
            .iter()
            .filter_map(|i| i.image_id())
            .find(|id| {
                id.strip_prefix("ami-").is_some_and(|h| {
                    (8..=17).contains(&h.len())
                        && h.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
            })
            .map(str::to_string)
            .expect("moto has an AMI")
    })
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}
