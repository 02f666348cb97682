//! The kubelet half of the node agent: it joins an API server with standard Kubernetes API only
//! (kube-rs typed handles and a watcher), so the same agent joins the embedded control plane or
//! an upstream kube-apiserver.
//!
//! - `node`: registers the Node (capacity, addresses, nodeInfo, conditions, podCIDR) and
//!   heartbeats through a coordination.k8s.io Lease plus status updates.
//! - `pods`: the API pod source: watches the pods bound to this node (fieldSelector
//!   spec.nodeName), hands them to the pod workers (`crate::workers`), deletes them gracefully,
//!   writes their status, and keeps mirror pods for static pods.
//! - `status`: the runtime's pod status as a core/v1 PodStatus.
//! - `probes`: liveness, readiness and startup probes (one module per handler: exec, http, tcp,
//!   grpc): container
//!   readiness for `status`, restarts of containers failing liveness.
//! - `events`: core/v1 Events (Started, Failed, Killing, FailedMount, Unhealthy) for
//!   `kubectl describe`.
//! - `prepare`: before the runtime gets a pod, its API-backed volumes (`volumes`: configMap,
//!   secret, downwardAPI, projected) are materialised and its env (`env`: configMapKeyRef,
//!   secretKeyRef, fieldRef, resourceFieldRef, envFrom) resolved, from the objects the pod
//!   refers to (`objects`) and the downward API (`downward`).
//! - `certificate`, `credentials`: the node's client and serving certificates from the CSR API
//!   (`--bootstrap-kubeconfig`, rotation), and an API client whose certificate can change.
//! - `mirror`: mirror pods (the API's view of static pods).
//! - `enter`: a command inside a container (`Runtime::enter`), for `server::exec` and exec
//!   probes.
//! - `server`: the kubelet port (HTTPS, client certificates): `/healthz`, `/containerLogs`
//!   (`server::container_logs`) and `/exec` (`server::exec`), which the API server proxies
//!   `kubectl logs` and `kubectl exec` to.
//!
//! Pods go through the typed states of `crate::lifecycle`, driven by `crate::workers` (one
//! driver for API and static pods).

pub mod certificate;
pub mod credentials;
pub mod dns;
pub mod downward;
pub mod enter;
pub mod env;
pub mod events;
pub mod hooks;
pub mod local_path;
pub mod mirror;
pub mod node;
pub mod node_services;
pub mod objects;
pub mod pods;
pub mod prepare;
pub mod probes;
pub mod server;
pub mod serving_approver;
pub mod status;
pub mod volumes;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// What the kubelet half needs besides the runtime.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub kubeconfig: PathBuf,
    /// Overrides the kubeconfig's server (the seed's --api-servers).
    pub api_server: Option<String>,
    pub node_name: String,
    pub node_ip: Option<String>,
    /// A dual-stack node's other address (`--node-ip=v4,v6`): an InternalIP too.
    pub extra_node_ips: Vec<String>,
    pub pod_cidr: Option<String>,
    /// `--node-labels`: added to the kubelet's own labels at every registration.
    pub labels: Vec<rktup_node_contract::NodeLabel>,
    /// `--register-with-taints`: the Node's taints when the agent creates it.
    pub taints: Vec<rktup_node_contract::Taint>,
    /// Lease renewal and node status period (kubelet: 10 s).
    pub heartbeat: Duration,
    /// The kubelet port advertised in status.daemonEndpoints (0: none served).
    pub kubelet_port: u16,
    /// How often running pods' configMap/secret/downwardAPI/projected volumes are brought up to
    /// date (kubelet's --sync-frequency, 1 min).
    pub sync_frequency: Duration,
    /// The service proxy and cluster DNS this node runs once it has the API.
    pub services: Option<node_services::NodeServicesConfig>,
    /// Bootstrap and rotation of the node's certificates (None: the kubeconfig as it is).
    pub certs: Option<CertConfig>,
    /// --approve-kubelet-serving-csrs (the agent on a cloud master).
    pub approve_serving_csrs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("failed to build an API client: {0}")]
    Client(#[from] kube::Error),
}

/// The node's certificates: where they are kept and what is renewed.
#[derive(Debug, Clone)]
pub struct CertConfig {
    /// kubelet's --bootstrap-kubeconfig.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// kubelet's --cert-dir.
    pub cert_dir: PathBuf,
    /// --rotate-certificates: the client certificate is renewed before it expires.
    pub rotate_client: bool,
    /// The client certificate in use (read by TLS at each handshake; shared with the kubelet
    /// port's API client).
    pub client_slot: Arc<certificate::CertSlot>,
    /// --rotate-server-certificates: the kubelet port's certificate, from the CSR API.
    pub serving_slot: Option<Arc<certificate::CertSlot>>,
}

impl CertConfig {
    /// The slot the API client takes its certificate from (when it uses one): only when the
    /// certificate may change under it.
    pub fn slot(&self) -> Option<&Arc<certificate::CertSlot>> {
        (self.rotate_client || self.bootstrap_kubeconfig.is_some()).then_some(&self.client_slot)
    }
}

/// Build the API client from the kubeconfig (and --api-servers).
pub async fn client(cfg: &KubeletConfig) -> Result<kube::Client, KubeletError> {
    Ok(credentials::client(
        &cfg.kubeconfig,
        cfg.api_server.as_deref(),
        cfg.certs.as_ref().and_then(|c| c.slot()),
    )
    .await?)
}

/// The kubelet port's serving certificate's SANs: the node name (kubelet: the hostname) and
/// its IP.
fn serving_sans(cfg: &KubeletConfig) -> Vec<String> {
    let mut sans = vec![cfg.node_name.clone()];
    if let Some(ip) = cfg.node_ip.as_deref().map(str::trim) {
        if !ip.is_empty() && !sans.iter().any(|s| s == ip) {
            sans.push(ip.to_string());
        }
    }
    sans
}

/// --bootstrap-kubeconfig, then the renewals of the client and serving certificates (tasks
/// that live as long as the kubelet half).
async fn certificates(
    cfg: &KubeletConfig,
) -> Result<(kube::Client, Vec<tokio::task::JoinHandle<()>>), KubeletError> {
    let mut tasks = vec![];
    if let Some(c) = &cfg.certs {
        if let Some(b) = &c.bootstrap_kubeconfig {
            credentials::load_client_cert(
                &cfg.kubeconfig,
                b,
                &c.cert_dir,
                &cfg.node_name,
                cfg.api_server.as_deref(),
            )
            .await?;
        }
    }
    let client = client(cfg).await?;
    if let Some(c) = &cfg.certs {
        if c.rotate_client && c.client_slot.pair().is_some() {
            // The bootstrap credentials again if the certificate runs out before it is renewed.
            let bootstrap = match &c.bootstrap_kubeconfig {
                Some(b) => credentials::client(b, cfg.api_server.as_deref(), None)
                    .await
                    .map_err(|e| warn!("certificate: bootstrap client: {e}"))
                    .ok(),
                None => None,
            };
            tasks.push(tokio::spawn(certificate::rotate(
                client.clone(),
                certificate::Request::client(&cfg.node_name, false),
                certificate::FileStore::client(&c.cert_dir),
                c.client_slot.clone(),
                bootstrap,
            )));
        }
    }
    Ok((client, tasks))
}

/// --rotate-server-certificates: the kubelet port's certificate from the kubelet-serving signer,
/// asked for once the Node is registered (approvers check the SANs against its addresses) and
/// renewed before expiry.
fn serving_certificate(
    cfg: &KubeletConfig,
    client: &kube::Client,
) -> Option<tokio::task::JoinHandle<()>> {
    let c = cfg.certs.as_ref()?;
    let slot = c.serving_slot.as_ref()?;
    let store = certificate::FileStore::server(&c.cert_dir);
    // A stored one that is still valid is served at once (and renewed at its deadline).
    if let Some(p) = store.load().filter(|p| p.valid_at(certificate::now())) {
        if let Err(e) = slot.set(p) {
            warn!("certificate: {e}");
        }
    }
    Some(tokio::spawn(certificate::rotate(
        client.clone(),
        certificate::Request::serving(&cfg.node_name, serving_sans(cfg)),
        store,
        slot.clone(),
        None,
    )))
}

/// Start the kubelet half on its own thread (with its own tokio runtime); it ends when `term`
/// is set. `pods` is the writer of the store of this node's pods (its reader serves the kubelet
/// port); `workers` are the agent's pod workers (the static source's too: once the API is
/// there, static pods report to it and get the Service variables).
pub fn spawn(
    cfg: KubeletConfig,
    workers: crate::workers::Workers,
    pods: reflector::store::Writer<Pod>,
    term: &'static AtomicBool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kubelet".into())
        .spawn(move || {
            let tokio_rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    error!("kubelet: failed to start the async runtime: {e}");
                    return;
                }
            };
            tokio_rt.block_on(async move {
                let stop = async {
                    while !term.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    r = run(cfg, workers, pods) => {
                        if let Err(e) = r {
                            error!("kubelet: {e}");
                        }
                    }
                    _ = stop => {}
                }
            });
        })
}

/// Register the node, then heartbeat and sync pods until cancelled.
pub async fn run(
    cfg: KubeletConfig,
    workers: crate::workers::Workers,
    pods: reflector::store::Writer<Pod>,
) -> Result<(), KubeletError> {
    let (client, mut cert_tasks) = certificates(&cfg).await?;
    // The API server may not be up yet (agents start with the control plane): retry.
    let mut delay = Duration::from_millis(200);
    loop {
        match node::register(&client, &cfg).await {
            Ok(()) => break,
            Err(e) => {
                warn!(
                    "kubelet: failed to register node {}: {e}; retrying",
                    cfg.node_name
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    info!("kubelet: registered node {}", cfg.node_name);
    cert_tasks.extend(serving_certificate(&cfg, &client));
    if cfg.approve_serving_csrs {
        let approver = serving_approver::Approver {
            node_name: cfg.node_name.clone(),
        };
        cert_tasks.push(tokio::spawn(serving_approver::run(
            client.clone(),
            approver,
            Duration::from_secs(10),
        )));
    }
    let hb = tokio::spawn(node::heartbeat(client.clone(), cfg.clone()));
    // The proxy and DNS start beside the pods, not before them (kubelet does not wait for
    // kube-proxy or CoreDNS either); they keep running, and their rules and address stay, while
    // the agent restarts.
    let services = cfg.services.clone().map(|s| {
        let client = client.clone();
        tokio::spawn(async move {
            let _running = node_services::start(client, &s).await;
            // Held until the kubelet half ends (the task is aborted then).
            std::future::pending::<()>().await
        })
    });
    let r = pods::run(client, cfg, workers, pods).await;
    hb.abort();
    for t in cert_tasks {
        t.abort();
    }
    if let Some(s) = services {
        s.abort();
    }
    r
}
