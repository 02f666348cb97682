//! Clusters on Amazon EC2. kube-up could not bring up rkt clusters on AWS; rktup can.

use rktup_config::{AwsSettings, ClusterSettings, NetworkProvider};
use rktup_provider::plan::resource;
use rktup_provider::{ClusterProvider, Plan, ProviderError, UpOptions};
use rktup_render::{BinaryRef, MasterEndpoint};

pub struct Aws {
    settings: ClusterSettings,
}

impl Aws {
    pub fn new(settings: ClusterSettings) -> Aws {
        Aws { settings }
    }

    fn aws(&self) -> &AwsSettings {
        // `rktup_config::load(Provider::Aws, ..)` always fills the AWS section.
        self.settings
            .aws
            .as_ref()
            .expect("AWS settings are resolved for the aws provider")
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.settings.name)
    }

    /// kube-up gave the master a fixed private address (MASTER_INTERNAL_IP=172.20.0.9) so
    /// nodes' user-data could name it before it existed; rktup keeps the 9th address of the
    /// subnet.
    pub fn master_internal_ip(&self) -> std::net::Ipv4Addr {
        let base = u32::from(self.aws().subnet_cidr.network());
        std::net::Ipv4Addr::from(base + 9)
    }

    pub fn staging_bucket(&self) -> String {
        format!("rktup-staging-{}-{}", self.aws().region, self.settings.name)
    }
}

fn not_yet(action: &'static str) -> ProviderError {
    ProviderError::NotYet {
        provider: "aws",
        action,
        reason: "EC2 provisioning is tracked in its own issue; `up --dry-run` and `rktup render aws` work today",
    }
}

impl ClusterProvider for Aws {
    fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    fn master_endpoint(&self) -> MasterEndpoint {
        let ip = self.master_internal_ip().to_string();
        MasterEndpoint {
            name: self.name("master"),
            host: ip.clone(),
            internal_ip: Some(ip),
            port: 443,
        }
    }

    fn planned_binary(&self, sha256: &str) -> BinaryRef {
        let a = self.aws();
        BinaryRef {
            url: format!(
                "https://{}.s3.{}.amazonaws.com/rktup-{}",
                self.staging_bucket(),
                a.region,
                &sha256[..sha256.len().min(12)]
            ),
            sha256: sha256.to_string(),
        }
    }

    fn plan(&self) -> Plan {
        let s = &self.settings;
        let a = self.aws();
        let vpc = match &a.vpc_id {
            Some(id) => resource("vpc", id.as_str()).with_detail("exists: VPC_ID, never deleted"),
            None => resource("vpc", self.name("vpc")).with_detail(a.vpc_cidr.to_string()),
        };
        let subnet = match &a.subnet_id {
            Some(id) => {
                resource("subnet", id.as_str()).with_detail("exists: SUBNET_ID, never deleted")
            }
            None => resource("subnet", self.name("subnet"))
                .with_detail(format!("{} in {}", a.subnet_cidr, a.zone)),
        };
        let mut network = vec![subnet];
        if a.vpc_id.is_none() {
            network.push(resource("dhcp-options", self.name("dhcp-options")));
            network.push(resource("internet-gateway", self.name("igw")));
            network.push(resource("route-table", self.name("route-table")));
        }
        network.push(resource(
            "security-group",
            format!("kubernetes-master-{}", s.name),
        ));
        network.push(resource(
            "security-group",
            format!("kubernetes-minion-{}", s.name),
        ));
        network.push(
            resource("s3-object", format!("{}/rktup", self.staging_bucket()))
                .with_detail("the rktup binary, sha256-checked by nodes"),
        );
        let mut wiring = vec![
            resource("security-group-rules", self.name("rules")).with_detail(format!(
                "cluster-internal, 22 from {}, 443 from {}",
                a.ssh_cidr, a.http_api_cidr
            )),
        ];
        if a.vpc_id.is_none() {
            wiring.push(
                resource("route", self.name("default-route"))
                    .with_detail("0.0.0.0/0 via the internet gateway"),
            );
        }
        let mut routes = Vec::new();
        if s.network == NetworkProvider::Kubenet {
            routes.push(
                resource("route", self.name("<node>-<pod-cidr>")).with_detail(format!(
                    "one per node, pod CIDRs from {}",
                    s.cluster_ip_range
                )),
            );
        }
        let image = |ami: &Option<String>| {
            ami.clone()
                .unwrap_or_else(|| "Flatcar stable (looked up)".into())
        };
        Plan::default()
            .step(vec![
                vpc,
                resource("s3-bucket", self.staging_bucket()),
                resource("key-pair", self.name("key"))
                    .with_detail(format!("{}.pub", a.ssh_key.display())),
            ])
            .step(network)
            .step(wiring)
            .step(vec![
                resource("instance", self.name("master")).with_detail(format!(
                    "{} {}, {}, {}",
                    a.zone,
                    a.master_size,
                    image(&a.master_image),
                    self.master_internal_ip()
                )),
                resource("launch-template", self.name("minion-template")).with_detail(format!(
                    "{}, {}",
                    a.node_size,
                    image(&a.node_image)
                )),
            ])
            .step(vec![
                resource("elastic-ip", self.name("master-ip")),
                resource("auto-scaling-group", self.name("minion-group"))
                    .with_detail(format!("{} nodes", s.num_nodes)),
            ])
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
