//! The embedded control plane (`rktup controlplane`) for local clusters: a
//! Kubernetes API server, a durable store with watch, a scheduler and the
//! core controllers, in one process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rktup_controlplane::StartError> {
//! let handle = rktup_controlplane::ControlPlane::builder()
//!     .data_dir("/tmp/cp")
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .start()
//!     .await?;
//! println!("kubectl --kubeconfig {}", handle.admin_kubeconfig().display());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod cli;
pub mod controllers;
pub mod pki;
pub mod registry;
pub mod store;

use api::auth::{TokenStore, User};
use api::objects::{Core, ServiceCidrs, WriteCtx};
use api::server::ApiServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use store::{FileStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Kubernetes version this server implements (the k8s-openapi feature).
pub const VERSION_MINOR: &str = "33";
pub const VERSION_GIT: &str = "v1.33.0-rktup";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to open the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("failed to set up the PKI: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to configure TLS: {0}")]
    Tls(String),
    #[error("failed to configure the kubelet client's TLS: {0}")]
    KubeletTls(#[from] rktup_tls::TlsError),
    #[error("invalid service cluster IP range {0}")]
    ServiceCidr(String),
    #[error("invalid service node port range {0:?}: want FIRST-LAST, e.g. 30000-32767")]
    NodePortRange(String),
    #[error(transparent)]
    LoadBalancerPool(#[from] controllers::loadbalancer::PoolParseError),
    #[error("the cluster DNS address {ip} is not in the service CIDR {cidr}")]
    ClusterDnsIp {
        ip: std::net::Ipv4Addr,
        cidr: String,
    },
}

/// Builder for an embedded control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    data_dir: PathBuf,
    bind: SocketAddr,
    also_bind: Vec<SocketAddr>,
    service_cidr: String,
    controllers: bool,
    node_monitor_grace: std::time::Duration,
    node_port_range: String,
    load_balancer_ip_range: Option<String>,
    cluster_dns_ip: Option<std::net::Ipv4Addr>,
    clock: controllers::Clock,
    csr_signing_duration: std::time::Duration,
    verify_kubelet_serving: bool,
    approve_kubelet_serving: bool,
    kubelet_ca_pem: Option<String>,
}

impl ControlPlane {
    pub fn builder() -> Self {
        ControlPlane {
            data_dir: PathBuf::from("."),
            bind: SocketAddr::from(([127, 0, 0, 1], 6443)),
            also_bind: Vec::new(),
            service_cidr: "10.96.0.0/12".into(),
            controllers: true,
            node_monitor_grace: std::time::Duration::from_secs(40),
            node_port_range: "30000-32767".into(),
            load_balancer_ip_range: None,
            cluster_dns_ip: None,
            clock: controllers::Clock::default(),
            csr_signing_duration: std::time::Duration::from_secs(365 * 24 * 3600),
            verify_kubelet_serving: false,
            approve_kubelet_serving: true,
            kubelet_ca_pem: None,
        }
    }

    /// The longest lifetime of certificates the CSR signer issues
    /// (kube-controller-manager's `--cluster-signing-duration`, default one
    /// year); a CSR's `spec.expirationSeconds` may shorten it. Tests use
    /// minutes to see rotation.
    pub fn csr_signing_duration(mut self, d: std::time::Duration) -> Self {
        self.csr_signing_duration = d;
        self
    }

    /// Verify kubelets' serving certificates against the cluster CA, for the
    /// dialled node address and `system:node:<node>` (kube-apiserver's
    /// `--kubelet-certificate-authority`). Off by default until every agent
    /// serves a certificate from the `kubernetes.io/kubelet-serving` signer;
    /// off, any serving certificate is accepted (upstream without the flag).
    pub fn verify_kubelet_serving_certs(mut self, on: bool) -> Self {
        self.verify_kubelet_serving = on;
        self
    }

    /// Approve a node's `kubernetes.io/kubelet-serving` CSR for its own addresses (default on,
    /// beyond upstream); off, they stay pending as upstream kube-controller-manager leaves
    /// them (tests of the cloud master's approver, crates/agent `serving_approver.rs`).
    pub fn approve_kubelet_serving_csrs(mut self, on: bool) -> Self {
        self.approve_kubelet_serving = on;
        self
    }

    /// Verify kubelets' serving certificates against this CA (PEM) instead of the cluster CA
    /// (kube-apiserver's `--kubelet-certificate-authority FILE`).
    pub fn kubelet_certificate_authority(mut self, ca_pem: impl Into<String>) -> Self {
        self.kubelet_ca_pem = Some(ca_pem.into());
        self.verify_kubelet_serving = true;
        self
    }

    /// The clock the CronJob controller schedules by (default: the system time). Tests keep a
    /// clone and move it forward to make schedules come due without waiting.
    pub fn clock(mut self, clock: controllers::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// kube-apiserver's `--service-node-port-range` (default 30000-32767).
    pub fn service_node_port_range(mut self, range: impl Into<String>) -> Self {
        self.node_port_range = range.into();
        self
    }

    /// Addresses for LoadBalancer Services (`172.18.255.0/24` or
    /// `FIRST-LAST`): each gets one in `status.loadBalancer.ingress`. Without
    /// it (cloud clusters) they stay `<pending>` with a Warning event.
    pub fn load_balancer_ip_range(mut self, range: impl Into<String>) -> Self {
        self.load_balancer_ip_range = Some(range.into());
        self
    }

    /// The cluster DNS address (kubelet's `--cluster-dns`, `DNS_SERVER_IP`):
    /// `kube-system/kube-dns` is created on it and kept.
    pub fn cluster_dns_ip(mut self, ip: std::net::Ipv4Addr) -> Self {
        self.cluster_dns_ip = Some(ip);
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Address to listen on; port 0 picks a free port.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// One more address to serve on (same API, same certificate), e.g. a local cluster's
    /// bridge address that node agents in their own network namespaces reach.
    pub fn also_bind(mut self, addr: SocketAddr) -> Self {
        self.also_bind.push(addr);
        self
    }

    /// `SERVICE_CLUSTER_IP_RANGE` (default 10.96.0.0/12).
    pub fn service_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.service_cidr = cidr.into();
        self
    }

    /// Run the in-process controllers and scheduler (default true).
    pub fn with_controllers(mut self, on: bool) -> Self {
        self.controllers = on;
        self
    }

    /// How long a node may go without a Lease renewal before it is marked
    /// NotReady (kube-controller-manager's `--node-monitor-grace-period`, 40s).
    pub fn node_monitor_grace(mut self, d: std::time::Duration) -> Self {
        self.node_monitor_grace = d;
        self
    }

    /// Opens the store, sets up PKI, binds and starts serving.
    pub async fn start(self) -> Result<Handle, StartError> {
        // The data dir and all in it are the control plane's alone (0700 dirs, 0600 files), and
        // it refuses key and token files that others can read, before using anything.
        pki::private_dir(&self.data_dir)?;
        for f in [
            "pki/ca.key",
            "pki/apiserver.key",
            "pki/admin.key",
            "pki/sa.key",
            "pki/apiserver-kubelet-client.key",
            "pki/front-proxy-ca.key",
            "pki/front-proxy-client.key",
            "tokens.json",
        ] {
            let p = self.data_dir.join(f);
            if p.exists() {
                pki::check_private(&p)?;
            }
        }
        let cidr = ServiceCidrs::parse(&self.service_cidr).map_err(StartError::ServiceCidr)?;
        let node_ports = api::objects::PortRange::parse(&self.node_port_range)
            .ok_or_else(|| StartError::NodePortRange(self.node_port_range.clone()))?;
        let mut settings = controllers::Settings::new(self.node_monitor_grace);
        settings.clock = self.clock.clone();
        if let Some(r) = &self.load_balancer_ip_range {
            settings.load_balancer_pool =
                Some(controllers::loadbalancer::LoadBalancerPools::parse(r)?);
        }
        if let Some(ip) = self.cluster_dns_ip {
            if !cidr.contains_ip(ip.into()) {
                return Err(StartError::ClusterDnsIp {
                    ip,
                    cidr: self.service_cidr.clone(),
                });
            }
            settings.cluster_dns_ip = Some(ip);
        }
        let store: Arc<dyn Store> = FileStore::open(&self.data_dir.join("store"))?;
        // The serving certificate names every address clients dial, including the
        // `kubernetes` Service's ClusterIP, which in-cluster clients (KUBERNETES_SERVICE_HOST)
        // verify against, as kube-apiserver's does.
        let ips: Vec<std::net::IpAddr> = std::iter::once(self.bind.ip())
            .chain(self.also_bind.iter().map(SocketAddr::ip))
            .chain(std::iter::once(cidr.primary().first()))
            .collect();
        let pki = pki::Pki::load_or_create(&self.data_dir, &ips)?;
        let listener = TcpListener::bind(self.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: self.bind,
                source,
            })?;
        let mut extra_listeners = Vec::new();
        for addr in &self.also_bind {
            extra_listeners.push(TcpListener::bind(addr).await.map_err(|source| {
                StartError::Bind {
                    addr: *addr,
                    source,
                }
            })?);
        }
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: self.bind,
            source,
        })?;
        let tls = tls_config(&pki).map_err(StartError::Tls)?;
        let kubelet_ca = match (&self.kubelet_ca_pem, self.verify_kubelet_serving) {
            (Some(pem), _) => Some(pem.as_str()),
            (None, true) => Some(pki.ca.cert_pem.as_str()),
            (None, false) => None,
        };
        let kubelet_tls = api::server_kubelet_config(
            &pki.kubelet_client.cert_pem,
            &pki.kubelet_client.key_pem,
            kubelet_ca,
        )?;
        let core = Core::with_node_ports(store.clone(), cidr, node_ports);
        let tokens = Arc::new(TokenStore::load(self.data_dir.join("tokens.json")));
        let signer = Arc::new(api::satoken::TokenSigner::load_or_create(&pki.dir)?);
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let server_url = format!("https://{host}:{}", addr.port());
        let rbac = api::auth::Rbac::new(store.clone());
        settings.csr_signer = Some(Arc::new(controllers::csr_signing::Signer {
            pki: pki.clone(),
            duration: self.csr_signing_duration,
            rbac: rbac.clone(),
            approve_serving: self.approve_kubelet_serving,
        }));
        let aggregator = Arc::new(api::aggregator::Aggregator::new(&pki));
        settings.aggregator = Some(aggregator.clone());
        settings.root_ca_pem = Some(pki.ca.cert_pem.clone());
        let server = Arc::new(ApiServer {
            core: core.clone(),
            tokens: tokens.clone(),
            signer,
            server_address: format!("{host}:{}", addr.port()),
            kubelet_tls,
            ready: Default::default(),
            rbac,
            aggregator,
        });
        let kubeconfig_path = self.data_dir.join("admin.kubeconfig");
        let kc = pki::kubeconfig(
            &server_url,
            &pki.ca.cert_pem,
            "admin",
            &pki::Credential::Cert(pki.admin.clone()),
        );
        pki::write_file(&kubeconfig_path, &kc, 0o600)?;

        // What the `kubernetes` Service's endpoints name: the first address
        // that is not loopback (pods cannot reach the host's 127.0.0.1), as
        // kube-apiserver's --advertise-address.
        let advertise = std::iter::once(addr)
            .chain(extra_listeners.iter().filter_map(|l| l.local_addr().ok()))
            .find(|a| !a.ip().is_loopback() && !a.ip().is_unspecified())
            .unwrap_or(addr);
        bootstrap(&core, addr, advertise);
        api::auth::bootstrap::reconcile(&core);
        controllers::apiservice::register_local(&core);
        // Before start() returns, so clients find it at once.
        controllers::ensure_kube_dns(&core, &settings);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for l in extra_listeners {
            tasks.spawn(accept_loop(l, tls.clone(), server.clone(), stop_rx.clone()));
        }
        tasks.spawn(accept_loop(listener, tls, server.clone(), stop_rx.clone()));
        if self.controllers {
            controllers::spawn_all(&mut tasks, core.clone(), stop_rx.clone(), settings);
        }
        server.ready.store(true, Ordering::Release);
        Ok(Handle {
            addr,
            server_url,
            data_dir: self.data_dir,
            kubeconfig_path,
            pki,
            tokens,
            core,
            stop: stop_tx,
            tasks,
        })
    }
}

/// Namespaces and the `kubernetes` service every cluster has, with its
/// Endpoints and EndpointSlice (written by the API server itself, as
/// kube-apiserver's endpoint reconciler does, naming `advertise`).
fn bootstrap(core: &Arc<Core>, addr: SocketAddr, advertise: SocketAddr) {
    let mut ctx = WriteCtx::controller("kube-apiserver");
    // The default StorageClass `standard` (local-path volumes on the pod's node).
    controllers::volumes::ensure_default_class(core);
    let nsrd = &registry::RESOURCES[0];
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if core.get_stored(nsrd, None, ns).is_none() {
            let _ = core.create(
                nsrd,
                None,
                serde_json::json!({"metadata": {"name": ns}}),
                &mut ctx,
            );
        }
    }
    if let Some(svc) = registry::find("", "v1", "services") {
        if core
            .get_stored(svc, Some("default"), "kubernetes")
            .is_none()
        {
            let ip = core.service_cidrs.primary().first().to_string();
            let _ = core.create(svc, Some("default"), serde_json::json!({
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}]}
            }), &mut ctx);
        }
    }
    core.ensure_system_priority_classes();
    let advertise_ip = if advertise.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        advertise.ip().to_string()
    };
    if let Some(ep) = registry::find("", "v1", "endpoints") {
        let body = serde_json::json!({
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}]}]
        });
        if core.get_stored(ep, Some("default"), "kubernetes").is_none() {
            let _ = core.create(ep, Some("default"), body, &mut ctx);
        } else {
            let _ = core.modify(ep, Some("default"), "kubernetes", None, &mut ctx, |o| {
                let mut o = o.clone();
                o["subsets"] = body["subsets"].clone();
                Ok(o)
            });
        }
    }
    if let Some(rd) = registry::find("discovery.k8s.io", "v1", "endpointslices") {
        // Named like the Service and without a managed-by label, as
        // upstream's; the mirroring controller skips the Endpoints (skip-mirror).
        let family = if advertise.ip().is_ipv6() {
            "IPv6"
        } else {
            "IPv4"
        };
        let body = serde_json::json!({
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": [{"addresses": [advertise_ip], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}],
        });
        if core.get_stored(rd, Some("default"), "kubernetes").is_none() {
            let _ = core.create(rd, Some("default"), body, &mut ctx);
        } else {
            let _ = core.modify(rd, Some("default"), "kubernetes", None, &mut ctx, |o| {
                let mut o = o.clone();
                for f in ["addressType", "endpoints", "ports"] {
                    o[f] = body[f].clone();
                }
                Ok(o)
            });
        }
    }
}

fn tls_config(pki: &pki::Pki) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    // rktup's one crypto provider (crates/tls), as the kubelet client's.
    let provider = rktup_tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca.cert_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<ApiServer>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let server = server.clone();
                conns.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
                    let user: Option<User> = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| api::auth::user_from_cert(c));
                    let svc = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        let user = user.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(user, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// A running control plane.
pub struct Handle {
    addr: SocketAddr,
    server_url: String,
    data_dir: PathBuf,
    kubeconfig_path: PathBuf,
    pki: pki::Pki,
    tokens: Arc<TokenStore>,
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Handle {
    /// The address the API server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `https://host:port`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// `DATA_DIR/admin.kubeconfig` (client certificate in `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.kubeconfig_path
    }
    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca.cert_pem
    }
    /// The object layer, for in-process callers.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
    /// Mints a bearer token for node `name` (`system:node:<name>` in `system:nodes`).
    pub fn mint_node_token(&self, name: &str) -> Result<String, pki::PkiError> {
        self.tokens.mint(User {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into()],
        })
    }
    /// Creates a bootstrap token valid for `ttl` (a `bootstrap.kubernetes.io/token` Secret in
    /// kube-system, as kubeadm's `token create`) and returns it as `<id>.<secret>`: it
    /// authenticates as `system:bootstrap:<id>` in `system:bootstrappers`, which may create
    /// CSRs and get node client certificates approved.
    pub fn create_bootstrap_token(
        &self,
        ttl: std::time::Duration,
    ) -> Result<String, api::auth::bootstrap_token::BootstrapTokenError> {
        api::auth::bootstrap_token::create(&self.core, ttl)
    }
    /// Issues a client certificate for node `name`.
    pub fn issue_node_cert(&self, name: &str) -> Result<pki::CertPair, pki::PkiError> {
        self.pki.issue_node(name)
    }
    /// Issues a client certificate for any user and groups.
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<pki::CertPair, pki::PkiError> {
        self.pki.issue_client(user, groups)
    }
    /// A kubeconfig for `cred` against this server.
    pub fn kubeconfig_for(&self, user: &str, cred: &pki::Credential) -> String {
        pki::kubeconfig(&self.server_url, &self.pki.ca.cert_pem, user, cred)
    }
    /// Stops serving and the controllers, and flushes the store to disk.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
        // Let in-flight watch streams notice the closed connections and drop
        // their references, so the store (and its data-dir lock) is released
        // when the caller drops the last one.
        let wait_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while Arc::strong_count(&self.core) > 1 && std::time::Instant::now() < wait_until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = self.core.store.sync();
    }
}
