//! Clusters on Google Compute Engine, named as kube-up named them so its users recognise them.

use rktup_config::{ClusterSettings, GceSettings, NetworkProvider};
use rktup_provider::plan::resource;
use rktup_provider::{ClusterProvider, Plan, ProviderError, UpOptions};
use rktup_render::{BinaryRef, MasterEndpoint};

pub struct Gce {
    settings: ClusterSettings,
}

impl Gce {
    pub fn new(settings: ClusterSettings) -> Gce {
        Gce { settings }
    }

    fn gce(&self) -> &GceSettings {
        // `rktup_config::load(Provider::Gce, ..)` always fills the GCE section.
        self.settings
            .gce
            .as_ref()
            .expect("GCE settings are resolved for the gce provider")
    }

    /// kube-up's names: `<prefix>-master`, `<prefix>-minion-template`, ...
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.settings.name)
    }

    /// The staging bucket: bucket names are global, so the project keeps it unique.
    pub fn staging_bucket(&self) -> String {
        let project = if self.gce().project.is_empty() {
            "PROJECT"
        } else {
            &self.gce().project
        };
        format!("rktup-staging-{project}-{}", self.settings.name)
    }
}

fn not_yet(action: &'static str) -> ProviderError {
    ProviderError::NotYet {
        provider: "gce",
        action,
        reason: "Compute Engine provisioning is tracked in its own issue; `up --dry-run` and `rktup render gce` work today",
    }
}

impl ClusterProvider for Gce {
    fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    fn master_endpoint(&self) -> MasterEndpoint {
        // Nodes reach the master by its instance name through the VPC's internal DNS.
        let name = self.name("master");
        MasterEndpoint {
            host: name.clone(),
            name,
            internal_ip: None,
            port: 443,
        }
    }

    fn planned_binary(&self, sha256: &str) -> BinaryRef {
        BinaryRef {
            url: format!(
                "https://storage.googleapis.com/{}/rktup-{}",
                self.staging_bucket(),
                &sha256[..sha256.len().min(12)]
            ),
            sha256: sha256.to_string(),
        }
    }

    fn plan(&self) -> Plan {
        let s = &self.settings;
        let g = self.gce();
        let net = &g.network;
        let mut routes = Vec::new();
        if s.network == NetworkProvider::Kubenet {
            routes.push(
                resource("route", self.name("<node>-<pod-cidr>")).with_detail(format!(
                    "one per node, pod CIDRs from {}",
                    s.cluster_ip_range
                )),
            );
        }
        Plan::default()
            .step(vec![
                resource("network", net).with_detail("created if missing"),
                resource("address", self.name("master-ip")).with_detail(&g.region),
                resource("bucket", self.staging_bucket()),
            ])
            .step(vec![
                resource("firewall", format!("{net}-default-internal")),
                resource("firewall", format!("{net}-default-ssh")),
                resource("firewall", self.name("master-https")),
                resource("firewall", self.name("minion-all")),
                resource("object", format!("{}/rktup", self.staging_bucket()))
                    .with_detail("the rktup binary, sha256-checked by nodes"),
            ])
            .step(vec![
                resource("instance", self.name("master")).with_detail(format!(
                    "{} {}, {}/{}",
                    g.zone, g.master_size, g.master_project, g.master_image
                )),
                resource("instanceTemplate", self.name("minion-template")).with_detail(format!(
                    "{}, {}/{}",
                    g.node_size, g.node_project, g.node_image
                )),
            ])
            .step(vec![resource(
                "instanceGroupManager",
                self.name("minion-group"),
            )
            .with_detail(format!("{} nodes in {}", s.num_nodes, g.zone))])
            .step(routes)
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
