//! Clusters on this machine (local-up-cluster.sh's replacement): the embedded control plane and
//! one node agent per node, each node in a network namespace of its own on a host bridge.
//!
//! - `layout`: the state directory and the record of names and addresses `up` chose;
//! - `network`: bridge, namespaces, veths, routes (kubenet-style);
//! - `process`: the detached control-plane and agent processes and their pid files;
//! - `supervise`: the supervisor each of them runs under (restarts, exit records);
//! - `up`, `down`, `status`: the actions, each a list of small steps;
//! - `list`, `export`: every local cluster on this machine, and `export logs` of one;
//! - `user_kubeconfig`: the kubeconfig `up` and `down` change (`$SUDO_USER`'s under sudo);
//! - `portmap`: the cluster file's port mappings (host ports to node ports), a supervised proxy.

pub mod down;
pub mod export;
pub mod layout;
pub mod list;
pub mod network;
pub mod portmap;
pub mod process;
pub mod ready;
pub mod status;
pub mod supervise;
pub mod up;
pub mod user_kubeconfig;

use rktup_config::{ClusterSettings, LocalSettings, OutputFormat};
use rktup_provider::{ClusterProvider, DownOptions, Plan, ProviderError, UpOptions};
use rktup_render::{BinaryRef, MasterEndpoint};

pub struct Local {
    settings: ClusterSettings,
    output: OutputFormat,
    /// `--kubeconfig` of `status` and `export logs`: the API is read through this file's
    /// `rktup-<name>` context instead of the cluster's admin kubeconfig.
    kubeconfig: Option<std::path::PathBuf>,
}

impl Local {
    pub fn new(settings: ClusterSettings) -> Local {
        Local::with_output(settings, OutputFormat::Text)
    }

    pub fn with_output(settings: ClusterSettings, output: OutputFormat) -> Local {
        Local {
            settings,
            output,
            kubeconfig: None,
        }
    }

    /// Reads the API through the `rktup-<name>` context of `kubeconfig` (`status`, `export
    /// logs`); None: the admin kubeconfig in the state directory.
    pub fn with_kubeconfig(mut self, kubeconfig: Option<std::path::PathBuf>) -> Local {
        self.kubeconfig = kubeconfig;
        self
    }

    /// The kubeconfig file and context to read the API through.
    pub(crate) fn api_kubeconfig(
        &self,
        layout: &layout::Layout,
    ) -> (std::path::PathBuf, Option<String>) {
        match &self.kubeconfig {
            Some(k) => (k.clone(), Some(format!("rktup-{}", self.settings.name))),
            None => (layout.admin_kubeconfig(), None),
        }
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
            .map(|i| node_name(&self.settings.name, self.local(), n, i))
            .collect()
    }
}

pub(crate) fn node_name(cluster: &str, l: &LocalSettings, count: u32, i: u32) -> String {
    match &l.hostname_override {
        Some(h) if count == 1 => h.clone(),
        Some(h) => format!("{h}-{i}"),
        None => format!("{cluster}-node-{i}"),
    }
}

/// `local up` and `down` change network namespaces, bridges and mounts.
pub(crate) fn require_root(action: &str) -> Result<(), ProviderError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ProviderError::NotRoot {
            provider: "local",
            action: action.to_string(),
            why: "it creates network namespaces, a bridge, mounts and cgroups",
        });
    }
    Ok(())
}

/// [`ProviderError::Step`]: `context` (what was being done, on which path or node) failed with
/// `e`, which is kept as the error's source.
pub(crate) fn err(
    context: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ProviderError {
    ProviderError::step(context, e)
}

/// No record of cluster `name` in `layout`; the hint: how to create it.
pub(crate) fn no_cluster(name: &str, layout: &layout::Layout) -> ProviderError {
    no_cluster_hint(
        name,
        layout,
        format!("create it with `rktup local up --name {name}`"),
    )
}

/// No record of cluster `name` in `layout`, with what to run instead.
pub(crate) fn no_cluster_hint(name: &str, layout: &layout::Layout, hint: String) -> ProviderError {
    ProviderError::NoCluster {
        provider: "local",
        name: name.to_string(),
        in_dir: Some(layout.root.clone()),
        hint,
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
            staging: None,
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

    /// The graph `up` runs (`up::graph`).
    fn plan(&self) -> Plan {
        let options = UpOptions::default();
        let (graph, _) = up::graph(self, &options);
        graph.plan()
    }

    fn up(&self, options: &UpOptions) -> Result<(), ProviderError> {
        up::up(self, options)
    }

    fn down(&self) -> Result<(), ProviderError> {
        down::down(self, &DownOptions::default())
    }

    fn down_with(&self, options: &DownOptions) -> Result<(), ProviderError> {
        down::down(self, options)
    }

    fn status(&self) -> Result<(), ProviderError> {
        status::status(self)
    }
}

impl Local {
    /// `rktup local image import FILE`: an oci-archive or docker-archive tar into every node's
    /// image store (kind's `load image-archive`), for clusters without a registry.
    pub fn image_import(
        &self,
        file: &std::path::Path,
        name: Option<&str>,
    ) -> Result<(), ProviderError> {
        require_root("image import")?;
        let layout = layout::Layout::new(&self.settings.state_dir);
        let Some(rec) = layout.load() else {
            return Err(no_cluster(&self.settings.name, &layout));
        };
        if !file.is_file() {
            return Err(ProviderError::Invalid {
                input: "image archive".into(),
                value: file.display().to_string(),
                expected: "no such file (expected an oci-archive or docker-archive tar)".into(),
            });
        }
        // `--kubeconfig`: the file's `rktup-<name>` context must point at this cluster, so a
        // CI job importing for the cluster it talks to cannot fill another one's nodes.
        if let Some(k) = &self.kubeconfig {
            let context = format!("rktup-{}", self.settings.name);
            match user_kubeconfig::context_server(k, &context)? {
                Some(server) if server == rec.api_url() => {}
                Some(server) => {
                    return Err(ProviderError::Invalid {
                        input: format!("kubeconfig {}", k.display()),
                        value: format!("context {context} points at {server:?}"),
                        expected: format!(
                            "not at cluster \"{}\" ({}); run `rktup local up --name {} --kubeconfig {}` to refresh it",
                            self.settings.name,
                            rec.api_url(),
                            self.settings.name,
                            k.display()
                        ),
                    })
                }
                None => {
                    return Err(ProviderError::Invalid {
                        input: format!("kubeconfig {}", k.display()),
                        value: format!("has no context {context}"),
                        expected: format!(
                            "expected the one `rktup local up --name {} --kubeconfig {}` writes",
                            self.settings.name,
                            k.display()
                        ),
                    })
                }
            }
        }
        // Each node's store is checked by digest first: an image a node holds whole is not
        // copied or unpacked again (`already present`).
        for node in &rec.nodes {
            let store = rktup_runtime::image::ImageStore::open(&layout.node_root(&node.name))
                .map_err(|e| err(&node.name, e))?;
            let done = rktup_runtime::image::archive::import_or_skip(&store, file, name)
                .map_err(|e| err(&format!("import {} into {}", file.display(), node.name), e))?;
            for i in done {
                let r = &i.record;
                let how = if i.already_present {
                    "already present"
                } else {
                    "imported"
                };
                println!(
                    "{}: {} {} {how}",
                    node.name,
                    r.names.join(","),
                    r.short_id()
                );
            }
        }
        Ok(())
    }

    /// `rktup local list`: every local cluster under this cluster's state root (the parent
    /// of its state directory, RKTUP_STATE_DIR); with `--kubeconfig`, only those whose
    /// `rktup-<name>` context that file holds.
    pub fn list(&self) -> Result<(), ProviderError> {
        let root = self
            .settings
            .state_dir
            .parent()
            .unwrap_or(&self.settings.state_dir);
        list::list(root, self.output, self.kubeconfig.as_deref())
    }

    /// `rktup local export logs [DIR]`: prints where it wrote, and says when the API could not
    /// be read (then the export holds what was on disk only).
    pub fn export_logs(
        &self,
        dir: Option<&std::path::Path>,
    ) -> Result<export::Exported, ProviderError> {
        eprintln!("Exporting logs for cluster \"{}\"...", self.settings.name);
        let done = export::export_logs(self, dir)?;
        if let Some(e) = &done.api_error {
            eprintln!("warning: the API could not be read ({e}); exported what is on disk only");
        }
        for p in &done.problems {
            eprintln!("warning: not exported: {p}");
        }
        println!("{}", done.dir.display());
        Ok(done)
    }
}
