//! Clusters on this machine: the embedded control plane and one node agent per node, each in a
//! network namespace of its own.

use rktup_config::{ClusterSettings, LocalSettings};
use rktup_provider::plan::resource;
use rktup_provider::{ClusterProvider, Plan, ProviderError, UpOptions};
use rktup_render::{BinaryRef, MasterEndpoint};

pub struct Local {
    settings: ClusterSettings,
}

impl Local {
    pub fn new(settings: ClusterSettings) -> Local {
        Local { settings }
    }

    fn local(&self) -> &LocalSettings {
        // `rktup_config::load(Provider::Local, ..)` always fills the local section.
        self.settings
            .local
            .as_ref()
            .expect("local settings are resolved for the local provider")
    }

    /// Node names: HOSTNAME_OVERRIDE (with `-<n>` when there are several), else `<name>-node-<n>`.
    pub fn node_names(&self) -> Vec<String> {
        let n = self.settings.num_nodes;
        (1..=n)
            .map(|i| match &self.local().hostname_override {
                Some(h) if n == 1 => h.clone(),
                Some(h) => format!("{h}-{i}"),
                None => format!("{}-node-{i}", self.settings.name),
            })
            .collect()
    }
}

fn not_yet(action: &'static str) -> ProviderError {
    ProviderError::NotYet {
        provider: "local",
        action,
        reason: "local clusters need the node agent and the embedded control plane, tracked in their own issues; `rktup render local` and `rktup config local` work today",
    }
}

impl ClusterProvider for Local {
    fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    fn master_endpoint(&self) -> MasterEndpoint {
        let l = self.local();
        MasterEndpoint {
            name: format!("{}-control-plane", self.settings.name),
            host: l.api_host.to_string(),
            internal_ip: Some(l.api_host.to_string()),
            port: l.api_port,
        }
    }

    fn planned_binary(&self, sha256: &str) -> BinaryRef {
        // Local nodes run this very binary; nothing is downloaded.
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/proc/self/exe".into());
        BinaryRef {
            url: format!("file://{exe}"),
            sha256: sha256.to_string(),
        }
    }

    fn plan(&self) -> Plan {
        let s = &self.settings;
        let l = self.local();
        Plan::default()
            .step(vec![
                resource("state-dir", s.state_dir.display().to_string()),
                resource("control-plane", format!("{}-control-plane", s.name))
                    .with_detail(format!("https://{}:{}", l.api_host, l.api_port)),
            ])
            .step(
                self.node_names()
                    .into_iter()
                    .map(|n| resource("node", n).with_detail("network namespace + node agent"))
                    .collect(),
            )
            .step(vec![resource(
                "kubeconfig-context",
                format!("rktup-{}", s.name),
            )])
    }

    fn up(&self, _options: &UpOptions) -> Result<(), ProviderError> {
        Err(not_yet("up"))
    }

    fn down(&self) -> Result<(), ProviderError> {
        Err(not_yet("down"))
    }

    fn status(&self) -> Result<(), ProviderError> {
        Err(not_yet("status"))
    }
}
