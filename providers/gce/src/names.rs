//! kube-up's resource names for one cluster, and how `down` recognises what is the cluster's.

use rktup_config::ClusterSettings;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Names {
    pub cluster: String,
    pub project: String,
    pub zone: String,
    pub region: String,
    pub network: String,
    pub master: String,
    pub master_ip: String,
    pub master_https: String,
    pub minion_all: String,
    pub template: String,
    pub group: String,
    /// MIG instances are `<prefix>-minion-xxxx`, as kube-up's NODE_INSTANCE_PREFIX.
    pub node_base: String,
    pub bucket: String,
    /// Written into every resource's description; routes and shared firewalls are only
    /// deleted when it matches.
    pub description: String,
}

/// The label every labelled resource (instances, templates, addresses, buckets) carries.
pub const CLUSTER_LABEL: &str = "rktup-cluster";

impl Names {
    pub fn new(settings: &ClusterSettings, bucket: String) -> Names {
        let g = settings.gce.clone().unwrap_or_else(unreachable_gce);
        let p = &settings.name;
        Names {
            cluster: p.clone(),
            project: g.project.clone(),
            zone: g.zone.clone(),
            region: g.region.clone(),
            network: g.network.clone(),
            master: format!("{p}-master"),
            master_ip: format!("{p}-master-ip"),
            master_https: format!("{p}-master-https"),
            minion_all: format!("{p}-minion-all"),
            template: format!("{p}-minion-template"),
            group: format!("{p}-minion-group"),
            node_base: format!("{p}-minion"),
            bucket,
            description: format!("rktup cluster {p}"),
        }
    }

    /// Named with the cluster's prefix.
    pub fn owns(&self, name: &str) -> bool {
        name.strip_prefix(&self.cluster)
            .is_some_and(|rest| rest.starts_with('-'))
    }

    pub fn described(&self, v: &Value) -> bool {
        v.get("description").and_then(Value::as_str) == Some(self.description.as_str())
    }

    /// Firewalls kube-up named after the network; `down` deletes them only with the network.
    pub fn shared_firewalls(&self) -> [String; 2] {
        [
            format!("{}-default-internal", self.network),
            format!("{}-default-ssh", self.network),
        ]
    }

    /// The master's own service account: the one identity its private keys in the staging
    /// bucket are readable by (object ACLs); nodes keep the project's default account. Its id
    /// is `rktup-<cluster>-master` when that fits IAM's 6–30 characters, else `rktup-m-` and a
    /// hash of the cluster's name.
    pub fn master_service_account(&self) -> String {
        let plain = format!("rktup-{}-master", self.cluster);
        let id = if plain.len() <= 30 {
            plain
        } else {
            use sha2::Digest;
            let h = sha2::Sha256::digest(self.cluster.as_bytes());
            let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("rktup-m-{hex}")
        };
        format!("{id}@{}.iam.gserviceaccount.com", self.project)
    }
}

fn unreachable_gce() -> rktup_config::GceSettings {
    // `rktup_config::load(Provider::Gce, ..)` always fills the GCE section; an empty one makes
    // every call fail with a clear "no project" error rather than a panic.
    rktup_config::GceSettings {
        project: String::new(),
        zone: String::new(),
        region: String::new(),
        network: String::new(),
        master_project: String::new(),
        master_image: String::new(),
        node_project: String::new(),
        node_image: String::new(),
        master_size: String::new(),
        master_disk_size: String::new(),
        master_disk_type: String::new(),
        node_size: String::new(),
        node_disk_size: String::new(),
        node_disk_type: String::new(),
        preemptible_node: false,
        node_scopes: Vec::new(),
    }
}
