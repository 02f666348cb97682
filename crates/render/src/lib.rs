//! Rendering: what a master or node boots with, from the tera templates in `templates/`.
//!
//! The output is a Flatcar (CoreOS Container Linux) cloud-config holding the systemd units that
//! install and run the node agent, the CNI configuration, the master's static pods and the PKI.

pub mod ignition;
pub mod pki;
pub mod redact;
pub mod templates;
pub mod userdata;

pub use ignition::IgnitionError;
pub use pki::{ApiServerNames, BootstrapToken, Pki, PkiError};
pub use redact::Redactor;
pub use templates::{TemplateError, Templates};
pub use userdata::{encode_user_data, UserData, UserDataError};

use rktup_config::{BootFormat, ClusterSettings, ContainedNetwork, NetworkProvider, NodeAgent};
use rktup_node_contract::AgentConfig;
use serde::Serialize;

/// etcd release for the master's static pod, per Kubernetes minor (kubeadm's pairing).
/// The kubectl image that applies the master's first-boot objects: registry.k8s.io publishes
/// `kubectl` images from v1.28 on; older clusters get v1.28's (plain v1 objects, applied
/// without validation, need nothing newer from the server).
fn kubectl_tag(settings: &ClusterSettings) -> String {
    if settings.kube_version.minor >= 28 {
        settings.kube_version.tag.clone()
    } else {
        "v1.28.15".into()
    }
}

fn etcd_tag(minor: u32) -> &'static str {
    match minor {
        0..=10 => "3.1.12",
        11..=13 => "3.2.24",
        14..=16 => "3.3.15-0",
        17..=21 => "3.4.13-0",
        22..=28 => "3.5.9-0",
        _ => "3.5.16-0",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Node => "node",
        }
    }
}

/// How nodes reach the master's API server, and where the cluster's machines fetch from; each
/// provider knows its own.
#[derive(Debug, Clone, Serialize)]
pub struct MasterEndpoint {
    /// The master's instance name.
    pub name: String,
    /// Host (name or IP) nodes use.
    pub host: String,
    /// The master's private address when the provider fixes it in advance.
    pub internal_ip: Option<String>,
    pub port: u16,
    /// The cluster's staging bucket, when it has one (cloud providers): the master fetches its
    /// private keys from it instead of carrying them in user-data (issue 16).
    pub staging: Option<Staging>,
}

/// Who a machine is to the staging bucket: `rktup-fetch`'s AUTH argument
/// (`templates/scripts/rktup-fetch.sh.tera`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FetchAuth {
    /// A plain GET (a URL the user gave).
    None,
    /// The instance's service-account token from the GCE metadata server, as `Bearer`.
    Gce,
    /// The instance profile's role credentials from IMDSv2, the GET signed with SigV4.
    Aws { region: String },
}

impl FetchAuth {
    pub fn arg(&self) -> String {
        match self {
            FetchAuth::None => "none".into(),
            FetchAuth::Gce => "gce".into(),
            FetchAuth::Aws { region } => format!("aws:{region}"),
        }
    }
}

/// The cluster's staging bucket as its machines read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Staging {
    /// The URL of the bucket's objects, ending in `/`: an object's URL is this and its name
    /// (`https://<bucket>.s3.<region>.amazonaws.com/`, `https://storage.googleapis.com/<bucket>/`).
    pub base_url: String,
    pub auth: FetchAuth,
}

impl Staging {
    pub fn url(&self, object: &str) -> String {
        format!("{}{object}", self.base_url)
    }
}

/// The private keys a cloud master fetches from the staging bucket (as `pki-<file>`, readable
/// by the master's identity only) instead of carrying them in user-data; certificates and the
/// service-account public key stay in user-data (nothing secret in them).
pub const MASTER_STAGED_KEYS: [&str; 7] = [
    "ca.key",
    "apiserver.key",
    "apiserver-kubelet-client.key",
    "controller-manager.key",
    "scheduler.key",
    "sa.key",
    // kubeadm's admin.conf: what applies the bootstrap objects. No new power on a machine that
    // holds the CA key.
    "admin.key",
];

/// The object prefix of the master's private keys in the staging bucket.
pub const MASTER_PKI_PREFIX: &str = "pki-";

/// The object name of the master's private key `file` (`pki-ca.key`: no `/`, which object
/// URLs would have to encode).
pub fn master_pki_object(file: &str) -> String {
    format!("{MASTER_PKI_PREFIX}{file}")
}

/// What `up` uploads for the master before it boots: (object name, content), one per key of
/// [`MASTER_STAGED_KEYS`].
pub fn master_staged_objects(pki: &Pki) -> Vec<(String, String)> {
    MASTER_STAGED_KEYS
        .iter()
        .map(|f| (master_pki_object(f), pki.get(f).to_string()))
        .collect()
}

/// The sha256 of `text` in hex: what a machine checks a fetched object against.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a machine fetches the binary `url`: with the bucket's credentials when the URL is an
/// object of the staging bucket, else with a plain GET.
pub fn binary_fetch_auth(staging: Option<&Staging>, url: &str) -> FetchAuth {
    match staging {
        Some(s) if url.starts_with(&s.base_url) => s.auth.clone(),
        _ => FetchAuth::None,
    }
}

/// One `rktup-fetch` command line's arguments, escaped for a systemd `ExecStart=`.
fn fetch_args(auth: &FetchAuth, url: &str, dest: &str, sha256: &str, mode: &str) -> String {
    [auth.arg().as_str(), url, dest, sha256, mode]
        .iter()
        .map(|a| systemd_arg(a))
        .collect::<Vec<_>>()
        .join(" ")
}

impl MasterEndpoint {
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    /// The URL a `role` machine uses: the master's own agent and components talk to its API
    /// server over loopback.
    pub fn url_for(&self, role: Role) -> String {
        match role {
            Role::Master => format!("https://127.0.0.1:{}", self.port),
            Role::Node => self.url(),
        }
    }
}

/// Where nodes download rktup from, and the sha256 they check it against.
#[derive(Debug, Clone, Serialize)]
pub struct BinaryRef {
    pub url: String,
    pub sha256: String,
}

/// One file of the rendered configuration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub permissions: String,
    pub content: String,
}

/// One systemd unit of the rendered configuration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RenderedUnit {
    pub name: String,
    pub command: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub role: Role,
    /// The whole cloud-config, `#cloud-config` first.
    pub cloud_config: String,
    /// The same units and files as an Ignition spec 3 config (`ignition.rs`).
    pub ignition: String,
    /// Which of the two the machine's user-data carries (KUBE_NODE_BOOT_FORMAT).
    pub boot_format: BootFormat,
    pub units: Vec<RenderedUnit>,
    pub files: Vec<RenderedFile>,
    /// The same rendering with its secrets replaced (what `render` prints by default).
    shown: Option<Box<NodeConfig>>,
}

impl NodeConfig {
    /// This rendering with private keys, the bootstrap token's secret and signed URLs'
    /// signatures replaced by placeholders (`redact`), the cloud-config rendered from the
    /// redacted files by the same template. Redacting a redacted rendering changes nothing.
    pub fn redacted(&self) -> NodeConfig {
        match &self.shown {
            Some(shown) => (**shown).clone(),
            None => self.clone(),
        }
    }

    /// Whether this is a redacted view (no secret of the machine in it).
    pub fn is_redacted(&self) -> bool {
        self.shown.is_none()
    }

    /// What the machine's user-data carries: the cloud-config or the Ignition config, as
    /// KUBE_NODE_BOOT_FORMAT says.
    pub fn user_data(&self) -> &str {
        match self.boot_format {
            BootFormat::CloudConfig => &self.cloud_config,
            BootFormat::Ignition => &self.ignition,
        }
    }
}

/// Where the user-data writes `rktup-fetch` (`templates/scripts/rktup-fetch.sh.tera`).
pub const FETCH_SCRIPT: &str = "/opt/bin/rktup-fetch";

/// What the master's first boot replaces with the bootstrap token's expiry (now + the TTL),
/// so the token lives `BOOTSTRAP_TOKEN_TTL_HOURS` from the cluster's birth, as kubeadm's
/// from `kubeadm init`, while the rendering stays a pure function of the settings.
pub const TOKEN_EXPIRATION_PLACEHOLDER: &str = "@BOOTSTRAP_TOKEN_EXPIRATION@";

/// The node bootstrap token's lifetime in hours (`BOOTSTRAP_TOKEN_TTL_HOURS`, kubeadm's 24 by
/// default); 0: it never expires.
pub fn token_ttl_hours(settings: &ClusterSettings) -> u64 {
    settings
        .rows
        .iter()
        .find(|r| r.name == "BOOTSTRAP_TOKEN_TTL_HOURS")
        .and_then(|r| r.value.parse().ok())
        .unwrap_or(24)
}

/// Paths on the node; fixed, as kube-up's were.
#[derive(Serialize)]
struct Paths {
    kubernetes: &'static str,
    manifests: &'static str,
    pki: &'static str,
    kubelet_kubeconfig: &'static str,
    /// A node's bootstrap token kubeconfig (kubelet's --bootstrap-kubeconfig).
    bootstrap_kubeconfig: &'static str,
    cni_bin: &'static str,
}

const PATHS: Paths = Paths {
    kubernetes: "/etc/kubernetes",
    manifests: "/etc/kubernetes/manifests",
    pki: "/etc/kubernetes/pki",
    kubelet_kubeconfig: "/etc/kubernetes/kubelet.kubeconfig",
    bootstrap_kubeconfig: "/etc/kubernetes/bootstrap-kubeconfig",
    cni_bin: "/opt/cni/bin",
};

#[derive(Serialize)]
struct ClusterContext<'a> {
    name: &'a str,
    provider: &'a str,
    kube_version: &'a str,
    kube_minor: u32,
    rkt_version: &'a str,
    stage1: &'a str,
    network_plugin: &'a str,
    cni_conf_dir: &'a str,
    cluster_ip_range: String,
    service_cluster_ip_range: String,
    master_ip_range: String,
    dns_server_ip: String,
    dns_domain: &'a str,
    log_level: u8,
    allow_privileged: bool,
    rkt_api_endpoint: &'a str,
    allocate_node_cidrs: bool,
    /// rktup's agent (not upstream kubelet) on the machines: serving certificates from the
    /// kubelet-serving signer, approved by the master's agent, so the API server checks them.
    embedded_agent: bool,
}

/// The node's CNI configuration directory for the chosen network: rkt's for the contained
/// network, kubelet's otherwise.
pub fn cni_conf_dir(network: NetworkProvider) -> &'static str {
    match network {
        NetworkProvider::Contained => "/etc/rkt/net.d",
        NetworkProvider::Cni | NetworkProvider::Kubenet => "/etc/cni/net.d",
    }
}

/// The embedded agent's settings on a cloud machine of `role` (its `kubelet.service`).
pub fn node_agent_config(
    settings: &ClusterSettings,
    role: Role,
    master: &MasterEndpoint,
) -> AgentConfig {
    AgentConfig {
        root_dir: rktup_node_contract::DEFAULT_ROOT_DIR.into(),
        container_runtime: "rkt".into(),
        rkt_api_endpoint: Some(settings.rkt_api_endpoint.clone()),
        rkt_path: Some("/opt/bin/rkt".into()),
        rkt_stage1_image: Some(settings.stage1),
        network_plugin: settings.network,
        network_plugin_dir: Some(PATHS.cni_bin.into()),
        cni_conf_dir: Some(cni_conf_dir(settings.network).into()),
        kubeconfig: Some(PATHS.kubelet_kubeconfig.into()),
        api_servers: Some(master.url_for(role)),
        pod_manifest_path: PATHS.manifests.into(),
        cluster_dns: Some(settings.dns_server_ip.to_string()),
        cluster_domain: Some(settings.dns_domain.clone()),
        cluster_cidr: Some(settings.cluster_ip_range.to_string()),
        allow_privileged: settings.allow_privileged,
        verbosity: settings.log_level,
        // Every machine joins by TLS bootstrap: a token in user-data, its own key made on the
        // machine, a `system:node:<name>` certificate signed by kube-controller-manager,
        // renewed before it expires. The master too: its agent runs the static pods from files
        // while its kubelet half waits for the API server and the token (applied at first boot),
        // and it is then a node like the others to the Node authorizer (upstream serves no
        // shared `kubelet` identity).
        bootstrap_kubeconfig: Some(PATHS.bootstrap_kubeconfig.into()),
        rotate_certificates: true,
        // The master's Node is named after its instance (kube-up's MASTER_NAME), whatever the
        // cloud's hostname: the serving approver's RBAC binding names it
        // (bootstrap/apiserver-kubelet.yaml). Its fixed private address, when the provider has
        // one, is its InternalIP: the API server dials it there and checks its certificate.
        hostname_override: (role == Role::Master).then(|| master.name.clone()),
        node_ip: match role {
            Role::Master => master.internal_ip.clone(),
            Role::Node => None,
        },
        // Upstream kube-controller-manager never approves kubelet serving CSRs: the master's
        // agent does, for a node's own addresses only.
        approve_kubelet_serving_csrs: role == Role::Master,
        // The kubelet port as upstream kubelets run it (kubeadm's KubeletConfiguration): callers
        // with a certificate of the cluster CA or a bearer token (TokenReview), each request
        // authorized by a SubjectAccessReview on `nodes/<subresource>` — the API server's
        // kubelet client through its `system:kubelet-api-admin` binding, no other node (issue
        // 16). Nodes serve a certificate of the `kubernetes.io/kubelet-serving` signer,
        // requested through the CSR API.
        client_ca_file: Some(format!("{}/ca.crt", PATHS.pki).into()),
        authorization_mode: "Webhook".into(),
        authentication_token_webhook: true,
        rotate_server_certificates: true,
        ..AgentConfig::default()
    }
}

/// One argument of a systemd `ExecStart=` line: `%` and `$` escaped, quoted when it holds
/// whitespace, quotes or backslashes (the values rktup renders today need neither).
fn systemd_arg(a: &str) -> String {
    let a = a.replace('%', "%%").replace('$', "$$");
    if a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '\'') {
        format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        a
    }
}

/// `args` as the continuation lines of an `ExecStart=` (`  --a=b \` ..., the last without `\`).
fn exec_args(args: &[String]) -> String {
    args.iter()
        .map(|a| systemd_arg(a))
        .collect::<Vec<_>>()
        .join(" \\\n  ")
}

fn base_context(settings: &ClusterSettings, role: Role, master: &MasterEndpoint) -> tera::Context {
    let cluster = ClusterContext {
        name: &settings.name,
        provider: settings.provider.as_str(),
        kube_version: &settings.kube_version.tag,
        kube_minor: settings.kube_version.minor,
        rkt_version: &settings.rkt_version,
        stage1: settings.stage1.image_name(),
        network_plugin: settings.network.kubelet_plugin(),
        cni_conf_dir: cni_conf_dir(settings.network),
        cluster_ip_range: settings.cluster_ip_range.to_string(),
        service_cluster_ip_range: settings.service_cluster_ip_range.to_string(),
        master_ip_range: settings.master_ip_range.to_string(),
        dns_server_ip: settings.dns_server_ip.to_string(),
        dns_domain: &settings.dns_domain,
        log_level: settings.log_level,
        allow_privileged: settings.allow_privileged,
        rkt_api_endpoint: &settings.rkt_api_endpoint,
        allocate_node_cidrs: settings.network == NetworkProvider::Kubenet,
        embedded_agent: settings.node_agent == NodeAgent::Embedded,
    };
    let mut ctx = tera::Context::new();
    ctx.insert("cluster", &cluster);
    ctx.insert("role", role.as_str());
    ctx.insert("paths", &PATHS);
    ctx.insert("rktup_version", env!("CARGO_PKG_VERSION"));
    // `rktup agent`'s flags, from the node contract (templates/units/kubelet.service.tera), and
    // the directories the unit creates before starting it, from the same config.
    let agent = node_agent_config(settings, role, master);
    ctx.insert("agent_args", &exec_args(&agent.to_args()));
    ctx.insert("agent_root_dir", &agent.root_dir.display().to_string());
    let url = master.url_for(role);
    ctx.insert(
        "master",
        &serde_json::json!({
            "name": master.name,
            "host": master.host,
            "internal_ip": master.internal_ip,
            "port": master.port,
            "url": url,
        }),
    );
    ctx.insert(
        "images",
        &serde_json::json!({
            "etcd_tag": etcd_tag(settings.kube_version.minor),
            "kubectl_tag": kubectl_tag(settings),
        }),
    );
    ctx
}

/// Renders what a `role` machine of the cluster boots with.
pub fn render_node_config(
    templates: &Templates,
    settings: &ClusterSettings,
    role: Role,
    master: &MasterEndpoint,
    pki: &Pki,
    binary: &BinaryRef,
) -> Result<NodeConfig, TemplateError> {
    let mut ctx = base_context(settings, role, master);
    ctx.insert("binary", binary);
    // The binary through `rktup-fetch`: with the machine's bucket credentials when it is the
    // staging bucket's object (no pre-signed URL to expire in a launch template).
    let binary_auth = binary_fetch_auth(master.staging.as_ref(), &binary.url);
    ctx.insert(
        "binary_fetch",
        &fetch_args(
            &binary_auth,
            &binary.url,
            "/opt/bin/rktup",
            &binary.sha256,
            "0755",
        ),
    );

    let unit =
        |name: &str, template: &str, ctx: &tera::Context| -> Result<RenderedUnit, TemplateError> {
            Ok(RenderedUnit {
                name: name.to_string(),
                command: "start".into(),
                content: templates.render(template, ctx)?,
            })
        };
    let units = match settings.node_agent {
        NodeAgent::Embedded => vec![
            unit(
                "rktup-install.service",
                "units/rktup-install.service.tera",
                &ctx,
            )?,
            unit("kubelet.service", "units/kubelet.service.tera", &ctx)?,
        ],
        NodeAgent::Kubelet => vec![
            unit(
                "rkt-install.service",
                "units/rkt-install.service.tera",
                &ctx,
            )?,
            unit(
                "rkt-api-service.service",
                "units/rkt-api-service.service.tera",
                &ctx,
            )?,
            unit(
                "kubelet-install.service",
                "units/kubelet-install.service.tera",
                &ctx,
            )?,
            unit("kubelet.service", "units/kubelet-legacy.service.tera", &ctx)?,
        ],
    };

    let mut files = vec![RenderedFile {
        path: FETCH_SCRIPT.into(),
        permissions: "0755".into(),
        content: templates.render("scripts/rktup-fetch.sh.tera", &ctx)?,
    }];
    let pem = |name: &str, mode: &str| RenderedFile {
        path: format!("{}/{name}", PATHS.pki),
        permissions: mode.to_string(),
        content: pki.get(name).to_string(),
    };
    files.push(pem("ca.crt", "0644"));
    // The master's private keys: fetched from the staging bucket at boot, each checked by the
    // sha256 written here (a hash is not a secret), or, without a bucket (`render local`), as
    // files.
    let mut key_fetches = Vec::new();
    let mut master_key = |files: &mut Vec<RenderedFile>, name: &str| match &master.staging {
        Some(staging) => key_fetches.push(fetch_args(
            &staging.auth,
            &staging.url(&master_pki_object(name)),
            &format!("{}/{name}", PATHS.pki),
            &sha256_hex(pki.get(name)),
            "0600",
        )),
        None => files.push(pem(name, "0600")),
    };
    let kubeconfig = |path: &str,
                      user: &str,
                      cert: &str,
                      server: String|
     -> Result<RenderedFile, TemplateError> {
        let mut c = ctx.clone();
        c.insert("user", user);
        c.insert("cert", cert);
        c.insert("server", &server);
        Ok(RenderedFile {
            path: path.to_string(),
            permissions: "0600".into(),
            content: templates.render("kubeconfig/component.kubeconfig.tera", &c)?,
        })
    };
    let server = master.url_for(role);
    let token = pki.bootstrap_token();
    // No agent key in any user-data: only the token, which can do nothing but ask for a node
    // certificate (issue 16).
    {
        let mut c = ctx.clone();
        c.insert("server", &server);
        c.insert("token", &token.token());
        files.push(RenderedFile {
            path: PATHS.bootstrap_kubeconfig.to_string(),
            permissions: "0600".into(),
            content: templates.render("kubeconfig/bootstrap.kubeconfig.tera", &c)?,
        });
    }
    if settings.network == NetworkProvider::Contained {
        let (name, template) = match settings.contained_network {
            ContainedNetwork::Bridge => (
                "k8s_network_example.conf",
                "cni/k8s_network_example.conf.tera",
            ),
            ContainedNetwork::Flannel => (
                "k8s_flannel_example.conf",
                "cni/k8s_flannel_example.conf.tera",
            ),
        };
        files.push(RenderedFile {
            path: format!("/etc/rkt/net.d/{name}"),
            permissions: "0644".into(),
            content: templates.render(template, &ctx)?,
        });
    }
    if role == Role::Master {
        for name in [
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "apiserver-kubelet-client.crt",
            "apiserver-kubelet-client.key",
            "controller-manager.crt",
            "controller-manager.key",
            "scheduler.crt",
            "scheduler.key",
            "sa.key",
            "sa.pub",
            // kubeadm's admin.conf: what applies the bootstrap objects below. No new power on
            // a machine that holds the CA key.
            "admin.crt",
            "admin.key",
        ] {
            if name.ends_with(".key") {
                master_key(&mut files, name);
            } else {
                files.push(pem(name, "0644"));
            }
        }
        for (file, user) in [
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
        ] {
            files.push(kubeconfig(
                &format!("{}/{file}.kubeconfig", PATHS.kubernetes),
                user,
                file,
                server.clone(),
            )?);
        }
        files.push(kubeconfig(
            &format!("{}/admin.conf", PATHS.kubernetes),
            "kubernetes-admin",
            "admin",
            server.clone(),
        )?);
        let mut c = ctx.clone();
        c.insert("token_id", &token.id);
        c.insert("token_secret", &token.secret);
        c.insert("token_expires", &(token_ttl_hours(settings) > 0));
        c.insert("token_expiration_placeholder", TOKEN_EXPIRATION_PLACEHOLDER);
        files.push(RenderedFile {
            path: format!("{}/bootstrap/node-bootstrap.yaml", PATHS.kubernetes),
            permissions: "0600".into(),
            content: templates.render("bootstrap/node-bootstrap.yaml.tera", &c)?,
        });
        // What the API server's kubelet client may do on the kubelet ports (issue 16).
        files.push(RenderedFile {
            path: format!("{}/bootstrap/apiserver-kubelet.yaml", PATHS.kubernetes),
            permissions: "0644".into(),
            content: templates.render("bootstrap/apiserver-kubelet.yaml.tera", &ctx)?,
        });
        // What the nodes' service proxy and DNS read (issue 14), applied with the above.
        files.push(RenderedFile {
            path: format!("{}/bootstrap/node-services.yaml", PATHS.kubernetes),
            permissions: "0644".into(),
            content: templates.render("bootstrap/node-services.yaml.tera", &ctx)?,
        });
        for manifest in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "node-bootstrap",
        ] {
            files.push(RenderedFile {
                path: format!("{}/{manifest}.yaml", PATHS.manifests),
                permissions: "0644".into(),
                content: templates.render(&format!("manifests/{manifest}.yaml.tera"), &ctx)?,
            });
        }
    }

    let mut units = units;
    if role == Role::Master {
        // Before the agent starts the static pods that read them (`Before=kubelet.service`;
        // listed first, so cloud-init starts it first).
        let mut c = ctx.clone();
        c.insert("key_fetches", &key_fetches);
        c.insert("token_ttl_hours", &token_ttl_hours(settings));
        c.insert("token_expiration_placeholder", TOKEN_EXPIRATION_PLACEHOLDER);
        c.insert(
            "node_bootstrap",
            &format!("{}/bootstrap/node-bootstrap.yaml", PATHS.kubernetes),
        );
        units.insert(
            0,
            unit(
                "rktup-master-secrets.service",
                "units/rktup-master-secrets.service.tera",
                &c,
            )?,
        );
    }

    let cloud_config = |units: &[RenderedUnit], files: &[RenderedFile]| {
        let mut doc = ctx.clone();
        doc.insert("units", units);
        doc.insert("files", files);
        templates.render("cloud-config/cloud-config.yaml.tera", &doc)
    };
    let redactor = Redactor::new(&token.secret);
    let shown_units: Vec<RenderedUnit> = units.iter().map(|u| redactor.unit(u)).collect();
    let shown_files: Vec<RenderedFile> = files.iter().map(|f| redactor.file(f)).collect();
    let shown = NodeConfig {
        role,
        cloud_config: cloud_config(&shown_units, &shown_files)?,
        ignition: ignition::render(&shown_units, &shown_files)?,
        boot_format: settings.boot_format,
        units: shown_units,
        files: shown_files,
        shown: None,
    };
    Ok(NodeConfig {
        role,
        cloud_config: cloud_config(&units, &files)?,
        ignition: ignition::render(&units, &files)?,
        boot_format: settings.boot_format,
        units,
        files,
        shown: Some(Box::new(shown)),
    })
}

/// A kubeconfig with the admin's credentials embedded, for the user's machine.
pub fn render_admin_kubeconfig(
    templates: &Templates,
    context_name: &str,
    server: &str,
    pki: &Pki,
) -> Result<String, TemplateError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut ctx = tera::Context::new();
    ctx.insert("context", context_name);
    ctx.insert("server", server);
    ctx.insert("ca_data", &b64(pki.get("ca.crt")));
    ctx.insert("cert_data", &b64(pki.get("admin.crt")));
    ctx.insert("key_data", &b64(pki.get("admin.key")));
    templates.render("kubeconfig/admin.kubeconfig.tera", &ctx)
}
