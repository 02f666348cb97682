//! Clusters on Amazon EC2. kube-up could not bring up rkt clusters on AWS; rktup can.

pub mod cloud;
pub mod down;
pub mod graph;
pub mod iam;
pub mod up;

use cloud::{Clients, Error, RetryPolicy};
use rktup_config::{AwsSettings, ClusterSettings, OutputFormat};
use rktup_provider::progress::Progress;
use rktup_provider::{ClusterProvider, Plan, ProviderError, UpError, UpOptions};
use rktup_render::{BinaryRef, MasterEndpoint};
use std::path::PathBuf;
use std::time::Duration;

pub struct Aws {
    settings: ClusterSettings,
    output: OutputFormat,
    templates: Option<PathBuf>,
    endpoint: Option<String>,
    retry: RetryPolicy,
    kubeconfig: Option<PathBuf>,
    stop_after_step: Option<usize>,
}

/// The 9th address of the subnet (see [`Aws::master_internal_ip`]).
pub(crate) fn master_ip(a: &AwsSettings) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(a.subnet_cidr.network()) + 9)
}

impl Aws {
    pub fn new(settings: ClusterSettings) -> Aws {
        Aws {
            settings,
            output: OutputFormat::Text,
            templates: None,
            endpoint: None,
            retry: RetryPolicy::default(),
            kubeconfig: None,
            // A test hook: stop `up` after this many steps, as a killed run would.
            stop_after_step: std::env::var("RKTUP_AWS_STOP_AFTER_STEP")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// As the CLI makes it: with the global output format and template overrides.
    pub fn with_cli(
        settings: ClusterSettings,
        output: OutputFormat,
        templates: Option<PathBuf>,
    ) -> Aws {
        Aws {
            output,
            templates,
            ..Aws::new(settings)
        }
    }

    pub fn output(mut self, output: OutputFormat) -> Aws {
        self.output = output;
        self
    }

    /// Talk to this endpoint instead of AWS_ENDPOINT_URL / AWS.
    pub fn endpoint(mut self, url: impl Into<String>) -> Aws {
        self.endpoint = Some(url.into());
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Aws {
        self.retry = retry;
        self
    }

    /// Write the context to this file instead of KUBECONFIG / ~/.kube/config.
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Aws {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Stop `up` after `n` steps (tests: an interrupted run).
    pub fn stop_after_step(mut self, n: usize) -> Aws {
        self.stop_after_step = Some(n);
        self
    }

    pub fn context_name(&self) -> String {
        format!("rktup-aws-{}", self.settings.name)
    }

    fn kubeconfig_path(&self) -> Option<PathBuf> {
        rktup_provider::kubeconfig::kubeconfig_path(self.kubeconfig.as_deref()).ok()
    }

    fn runtime(&self) -> Result<tokio::runtime::Runtime, ProviderError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .map_err(ProviderError::runtime)
    }

    async fn clients(&self) -> Clients {
        Clients::connect(&self.aws().region, self.endpoint.as_deref(), self.retry).await
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
        master_ip(self.aws())
    }

    /// The staging bucket as the cluster's machines read it: S3's virtual-hosted URLs, each GET
    /// signed (SigV4) with the instance profile's role credentials.
    pub fn staging(&self) -> rktup_render::Staging {
        let region = self.aws().region.clone();
        rktup_render::Staging {
            base_url: format!(
                "https://{}.s3.{region}.amazonaws.com/",
                self.staging_bucket()
            ),
            auth: rktup_render::FetchAuth::Aws { region },
        }
    }

    pub fn staging_bucket(&self) -> String {
        format!("rktup-staging-{}-{}", self.aws().region, self.settings.name)
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
            staging: Some(self.staging()),
        }
    }

    fn planned_binary(&self, sha256: &str) -> BinaryRef {
        BinaryRef {
            url: self
                .staging()
                .url(&format!("rktup-{}", &sha256[..sha256.len().min(12)])),
            sha256: sha256.to_string(),
        }
    }

    /// The graph `up` runs (`graph::graph`), with the staged binary's key left generic.
    fn plan(&self) -> Plan {
        let options = UpOptions::default();
        let (graph, _) = graph::graph(self, &options, "rktup");
        graph.plan()
    }

    fn up(&self, options: &UpOptions) -> Result<(), ProviderError> {
        let rt = self.runtime()?;
        Ok(rt.block_on(self.up_async(options))?)
    }

    fn down(&self) -> Result<(), ProviderError> {
        let rt = self.runtime()?;
        let report = rt.block_on(self.down_async())?;
        let state = rktup_provider::StateDir::for_cluster(&self.settings);
        if !report.failed.is_empty() {
            // The keys stay while something of the cluster still runs.
            return Err(ProviderError::DownIncomplete {
                provider: "aws",
                cluster: self.settings.name.clone(),
                deleted: report.deleted,
                failed: report.failed,
                state_dir: state.path,
            });
        }
        eprintln!(
            "deleted {} resources of cluster {}",
            report.deleted, self.settings.name
        );
        let keep = self
            .settings
            .rows
            .iter()
            .any(|r| r.name == "RKTUP_KEEP_STATE" && r.value == "true");
        rktup_provider::forget_state(&state, keep)
    }

    fn status(&self) -> Result<(), ProviderError> {
        let rt = self.runtime()?;
        let all = rt.block_on(self.inventory())?;
        match self.output {
            OutputFormat::Json => {
                let doc = serde_json::json!({
                    "cluster": self.settings.name,
                    "provider": "aws",
                    "region": self.aws().region,
                    "resources": all,
                });
                let text =
                    serde_json::to_string_pretty(&doc).map_err(|source| ProviderError::Json {
                        what: "the cluster's status",
                        source,
                    })?;
                println!("{text}");
            }
            OutputFormat::Text => {
                if all.is_empty() {
                    println!(
                        "cluster {} has no resources in {}",
                        self.settings.name,
                        self.aws().region
                    );
                } else {
                    println!("{:<20} {:<28} {:<32} STATE", "KIND", "ID", "NAME");
                    for f in &all {
                        println!("{:<20} {:<28} {:<32} {}", f.kind, f.id, f.name, f.state);
                    }
                }
            }
        }
        Ok(())
    }
}

/// What `down` did: how many resources went, and each one that did not with EC2's error.
struct DownReport {
    deleted: usize,
    failed: Vec<String>,
}

impl Aws {
    fn inventory_of<'a>(&'a self, c: &'a Clients) -> down::Inventory<'a> {
        let a = self.aws();
        down::Inventory {
            c,
            cluster: &self.settings.name,
            bucket: self.staging_bucket(),
            protected: a.vpc_id.iter().chain(a.subnet_id.iter()).cloned().collect(),
        }
    }

    /// Every resource tagged with the cluster.
    pub async fn inventory(&self) -> Result<Vec<down::Found>, Error> {
        let c = self.clients().await;
        self.inventory_of(&c).list().await
    }

    async fn up_async(&self, options: &UpOptions) -> Result<(), UpError> {
        let s = &self.settings;
        let err = |e: &dyn std::fmt::Display| Error::new(e.to_string());
        // RKTUP_NODE_BINARY (e.g. the node build) when set, else the running binary.
        let (path, sha) = rktup_provider::boot::node_binary(s).map_err(|e| err(&e))?;
        let cx = graph::Ctx {
            cl: up::Cluster {
                aws: self,
                c: self.clients().await,
                s,
                a: self.aws(),
            },
            state: rktup_provider::StateDir::for_cluster(s),
            binary: graph::Binary {
                key: format!("rktup-{}", &sha[..sha.len().min(12)]),
                path,
                sha,
            },
        };
        let (g, keys) = graph::graph(self, options, &cx.binary.key);
        // Every resource, each as soon as what it needs exists (see graph.rs).
        let through = self.stop_after_step.map(|n| n.max(1));
        let ran = g.run(&cx, &Progress::new(), through).await;
        // What exists is recorded on the way out, whether the run ended well or not.
        let recorded = graph::record(self, &cx.state, &keys.made(self, &ran.outputs));
        ran.result?;
        recorded?;
        Ok(())
    }

    fn record(&self, recorded: &mut rktup_provider::state::Recorded, m: &up::Made) {
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                recorded.resources.insert(k.into(), v.into());
            }
        };
        put("vpc", &m.vpc);
        put("subnet", &m.subnet);
        put("securityGroupMaster", &m.sg_master);
        put("securityGroupNode", &m.sg_node);
        put("elasticIp", &m.eip);
        put("elasticIpAllocation", &m.eip_alloc);
        put("master", &m.master);
        put("routeTable", m.route_table.as_deref().unwrap_or(""));
        put("internetGateway", m.igw.as_deref().unwrap_or(""));
    }

    async fn wait_api(&self, ip: &str, wait: Duration) -> Result<(), Error> {
        let start = std::time::Instant::now();
        loop {
            let connect = tokio::net::TcpStream::connect((ip, 443));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
                return Ok(());
            }
            if start.elapsed() > wait {
                return Err(Error::new(format!(
                    "the API server at {ip}:443 did not answer within {wait:?} (use --no-wait to skip)"
                )));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// Deletes everything tagged with the cluster; what could not be deleted is in the report
    /// (the trait's `down` turns it into [`ProviderError::DownIncomplete`]).
    async fn down_async(&self) -> Result<DownReport, Error> {
        let c = self.clients().await;
        let state = rktup_provider::StateDir::for_cluster(&self.settings);
        let all = self.inventory_of(&c).list().await.map_err(|mut e| {
            e.message.push_str(&format!(
                "\nthe state directory {} (the cluster's CA and admin keys) is kept until every resource is gone",
                state.path.display()
            ));
            e
        })?;
        let deleter = down::Deleter {
            c: &c,
            cluster: &self.settings.name,
            timeout: Duration::from_secs(900),
        };
        let (deleted, failed) = deleter.delete(&all).await;
        if let Some(path) = self.kubeconfig_path() {
            if let Ok(true) =
                rktup_provider::kubeconfig::remove_context(Some(&path), &self.context_name())
            {
                eprintln!("removed kubeconfig context {}", self.context_name());
            }
        }
        Ok(DownReport {
            deleted: deleted.len(),
            failed: failed
                .iter()
                .map(|(f, e)| format!("{} {} {}: {e}", f.kind, f.id, f.name))
                .collect(),
        })
    }
}
