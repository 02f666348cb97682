//! Clusters on Google Compute Engine, named as kube-up named them so its users recognise them.

pub mod client;
pub mod down;
#[cfg(feature = "fake")]
pub mod fake;
pub mod inventory;
mod kubeconfig;
pub mod names;
pub mod up;

use client::{Backoff, Client, Endpoints, GceError};
use rktup_config::{ClusterSettings, GceSettings, OutputFormat};
use rktup_provider::{ClusterProvider, Plan, ProviderError, UpError, UpOptions};
use rktup_render::{BinaryRef, MasterEndpoint};

pub struct Gce {
    settings: ClusterSettings,
    output: OutputFormat,
    backoff: Backoff,
    credentials: Option<std::path::PathBuf>,
    kubeconfig: Option<std::path::PathBuf>,
    templates: Option<std::path::PathBuf>,
}

impl Gce {
    pub fn new(settings: ClusterSettings) -> Gce {
        Gce::with_output(settings, OutputFormat::Text)
    }

    /// `status` prints a table or, with `-o json`, JSON.
    pub fn with_output(settings: ClusterSettings, output: OutputFormat) -> Gce {
        Gce {
            settings,
            output,
            backoff: Backoff::default(),
            credentials: None,
            kubeconfig: None,
            templates: None,
        }
    }

    /// A service-account key file instead of Application Default Credentials.
    pub fn with_credentials(mut self, path: impl Into<std::path::PathBuf>) -> Gce {
        self.credentials = Some(path.into());
        self
    }

    /// The kubeconfig file to merge the context into instead of $KUBECONFIG or ~/.kube/config.
    pub fn with_kubeconfig(mut self, path: impl Into<std::path::PathBuf>) -> Gce {
        self.kubeconfig = Some(path.into());
        self
    }

    /// `--templates DIR`: template overrides for the machines' cloud-config.
    pub fn with_templates(mut self, dir: Option<std::path::PathBuf>) -> Gce {
        self.templates = dir;
        self
    }

    /// Operation polling back-off (tests poll a fake quickly).
    pub fn with_backoff(mut self, backoff: Backoff) -> Gce {
        self.backoff = backoff;
        self
    }

    /// A resolved setting that has no typed field (the GCE additions of issue 7).
    fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .rows
            .iter()
            .find(|r| r.name == key)
            .map(|r| r.value.as_str())
            .filter(|v| !v.is_empty())
    }

    fn setting_bool(&self, key: &str) -> bool {
        matches!(
            self.setting(key).map(str::to_ascii_lowercase).as_deref(),
            Some("true" | "1" | "yes" | "y" | "on")
        )
    }

    pub fn names(&self) -> names::Names {
        names::Names::new(&self.settings, self.staging_bucket())
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints::new(
            self.setting("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"),
            self.setting("CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE"),
        )
        .with_iam(self.setting("CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM"))
    }

    /// The master's own service account (`up` makes it, `Names::master_service_account`).
    pub fn master_service_account(&self) -> String {
        self.names().master_service_account()
    }

    fn runtime() -> Result<tokio::runtime::Runtime, ProviderError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .map_err(ProviderError::runtime)
    }

    pub async fn client(&self) -> Result<Client, GceError> {
        let mut c = Client::new(
            self.endpoints(),
            &self.gce().project,
            self.credentials.as_deref(),
        )
        .await?;
        c.backoff = self.backoff;
        Ok(c)
    }

    /// `up` with its report (the trait's `up` discards it).
    pub async fn up_async(&self, options: &UpOptions) -> Result<up::UpReport, UpError> {
        let client = self.client().await?;
        up::run(self, &client, options).await
    }

    pub async fn down_async(&self) -> Result<down::DownReport, GceError> {
        let client = self.client().await?;
        down::run(self, &client).await
    }

    pub async fn status_async(&self) -> Result<Vec<inventory::Found>, GceError> {
        let client = self.client().await?;
        Ok(inventory::discover(&client, &self.names()).await?.items)
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

    /// The staging bucket as the cluster's machines read it: Cloud Storage's XML API with the
    /// instance's service-account token (`Authorization: Bearer`).
    pub fn staging(&self) -> rktup_render::Staging {
        rktup_render::Staging {
            base_url: format!("https://storage.googleapis.com/{}/", self.staging_bucket()),
            auth: rktup_render::FetchAuth::Gce,
        }
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

fn other(e: GceError) -> ProviderError {
    ProviderError::Cloud(e.into())
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

    /// The graph `up` runs (`up::graph`), with the staged binary's name left generic.
    fn plan(&self) -> Plan {
        let options = UpOptions::default();
        let (graph, _) = up::graph(self, &options, "rktup".into());
        graph.plan()
    }

    fn up(&self, options: &UpOptions) -> Result<(), ProviderError> {
        let report = Gce::runtime()?.block_on(self.up_async(options))?;
        eprintln!(
            "cluster {} is up: https://{} (kubectl --context {})",
            self.settings.name,
            report.master_ip,
            kubeconfig::context_name(self)
        );
        Ok(())
    }

    fn down(&self) -> Result<(), ProviderError> {
        let report = Gce::runtime()?.block_on(self.down_async()).map_err(other)?;
        let state = rktup_provider::StateDir::for_cluster(&self.settings);
        if !report.failed.is_empty() {
            // The keys stay while something of the cluster still runs: a second `down`, or
            // the operator, may still need the admin credentials.
            return Err(ProviderError::DownIncomplete {
                provider: "gce",
                cluster: self.settings.name.clone(),
                deleted: report.deleted.len(),
                failed: report.failed,
                state_dir: state.path,
            });
        }
        eprintln!(
            "cluster {} is down ({} resources deleted)",
            self.settings.name,
            report.deleted.len()
        );
        rktup_provider::forget_state(&state, self.setting_bool("RKTUP_KEEP_STATE"))
    }

    fn status(&self) -> Result<(), ProviderError> {
        let items = Gce::runtime()?
            .block_on(self.status_async())
            .map_err(other)?;
        match self.output {
            OutputFormat::Json => {
                let v = serde_json::json!({
                    "cluster": self.settings.name,
                    "project": self.gce().project,
                    "zone": self.gce().zone,
                    "resources": items,
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|source| ProviderError::Json {
                        what: "the cluster's status",
                        source
                    })?
                );
            }
            OutputFormat::Text => {
                if items.is_empty() {
                    println!("cluster {}: no resources", self.settings.name);
                    return Ok(());
                }
                println!("{:<22} {:<48} STATUS", "KIND", "NAME");
                for f in &items {
                    println!("{:<22} {:<48} {}", f.kind, f.name, f.status);
                }
            }
        }
        Ok(())
    }
}
