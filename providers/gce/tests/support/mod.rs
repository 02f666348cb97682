//! Shared test setup: a fake Compute Engine per test, a service-account key file whose
//! token_uri is the fake, and settings resolved as the CLI resolves them.
#![allow(dead_code)]

use rktup_config::{ClusterSettings, GlobalArgs, Provider};
use rktup_gce::client::Backoff;
use rktup_gce::fake::{service_account_json, Fake};
use rktup_gce::Gce;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub struct Env {
    pub fake: Fake,
    pub dir: tempfile::TempDir,
    pub sa: PathBuf,
}

/// Fails (never skips) when Google's discovery document is missing.
pub fn env() -> Env {
    let fake = match Fake::start() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = include_str!("test-service-account.pem");
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, service_account_json(&fake, key)).expect("write sa.json");
    Env { fake, dir, sa }
}

impl Env {
    pub fn vars(&self, name: &str) -> BTreeMap<String, String> {
        let d = self.dir.path();
        [
            ("INSTANCE_PREFIX", name.to_string()),
            ("PROJECT", "rktup-test".into()),
            ("NUM_NODES", "2".into()),
            ("KUBE_GCE_NETWORK", format!("{name}-net")),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
                self.fake.compute_endpoint(),
            ),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE",
                self.fake.storage_endpoint(),
            ),
            (
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM",
                self.fake.iam_endpoint(),
            ),
            ("RKTUP_STATE_DIR", d.join("state").display().to_string()),
            ("HOME", d.display().to_string()),
            ("KUBECONFIG", d.join("kubeconfig").display().to_string()),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.sa.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn settings(&self, name: &str, extra: &[(&str, &str)]) -> ClusterSettings {
        let mut vars = self.vars(name);
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let env = move |k: &str| vars.get(k).cloned();
        rktup_config::load(
            Provider::Gce,
            &GlobalArgs::default(),
            &BTreeMap::new(),
            &env,
        )
        .expect("settings resolve")
    }

    pub fn gce(&self, name: &str, extra: &[(&str, &str)]) -> Gce {
        Gce::new(self.settings(name, extra))
            .with_credentials(&self.sa)
            .with_kubeconfig(self.dir.path().join("kubeconfig"))
            .with_backoff(Backoff {
                first: Duration::from_millis(5),
                max: Duration::from_millis(50),
            })
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn no_wait() -> rktup_provider::UpOptions {
    rktup_provider::UpOptions {
        no_wait: true,
        ..Default::default()
    }
}
