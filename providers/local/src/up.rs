//! `rktup local up`: small steps in order, each converging (a step finds what an earlier run
//! made and only adds what is missing), so `up` after a crash or on a running cluster is safe.
//! The steps are a chain of nodes of the shared engine's graph (`rktup_provider::engine`);
//! `up --dry-run` prints the same graph.

use crate::layout::{self, ClusterRecord, Layout, NodeRecord};
use crate::process::{self, Spec};
use crate::{err, network, node_name, portmap, ready, require_root, Local};
use rktup_config::{ClusterLayout, OutputFormat};
use rktup_controlplane::pki::{self, Credential, Pki};
use rktup_node_contract::AgentConfig;
use rktup_provider::engine::{Dep, Done, Graph, Key};
use rktup_provider::plan::resource;
use rktup_provider::progress::Progress;
use rktup_provider::{CloudError, ProviderError, UpOptions};
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long `up` waits for nodes to be Ready without `--wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// What the nodes of `up` run against; the machine lock is held from the cluster record until
/// the control plane listens.
pub struct Ctx<'a> {
    local: &'a Local,
    layout: Layout,
    exe: PathBuf,
    lock: RefCell<Option<std::fs::File>>,
}

/// The engine's error for a local step (this machine has no error codes of its own).
fn local_error(e: ProviderError) -> CloudError {
    CloudError::new(e.to_string())
}

/// The cluster record's and the PKI's keys, and the kubeconfig written.
pub struct Keys {
    rec: Key<ClusterRecord>,
    pki: Key<Pki>,
    kubeconfig: Key<PathBuf>,
}

/// `up` as the shared engine's graph: a chain, each step converging, one progress line each.
pub fn graph<'a>(local: &'a Local, opts: &'a UpOptions) -> (Graph<'a, Ctx<'a>>, Keys) {
    let s = &local.settings;
    let l = local.local();
    let mut g: Graph<'a, Ctx<'a>> = Graph::new();
    // Choosing a free node network and API port, and taking them (bridge, listening control
    // plane), happen under one machine-wide lock, so `up`s running at once never pick the same.
    let rec = g.add(
        resource("state-dir", s.state_dir.display().to_string())
            .with_detail("names and addresses, under the machine lock"),
        &[],
        move |cx: &'a Ctx<'a>, _| {
            Box::pin(async move {
                *cx.lock.borrow_mut() = Some(lock_machine().map_err(local_error)?);
                let rec = prepare(local, &cx.layout, opts).map_err(local_error)?;
                let detail = format!("{} node(s), API {}", rec.nodes.len(), rec.api_url());
                Ok(Done::new(rec, detail))
            })
        },
    );
    let pki = g.add(
        resource("certificates", "control plane, nodes"),
        &[rec.into()],
        move |cx, i| {
            Box::pin(async move {
                let pki = certificates(&cx.layout, i.get(rec)).map_err(local_error)?;
                Ok(Done::new(pki, ""))
            })
        },
    );
    let net = g.add(
        resource("bridge", layout::bridge_name(&s.name)).with_detail(format!(
            "a /24 of {}, node namespaces, pod routes",
            layout::NODE_NETWORK_POOL
        )),
        &[rec.into(), pki.into()],
        move |_, i| {
            Box::pin(async move {
                let rec = i.get(rec);
                network(rec).map_err(local_error)?;
                let detail = format!(
                    "{}, {} node namespace(s)",
                    rec.node_network,
                    rec.nodes.len()
                );
                Ok(Done::new((), detail))
            })
        },
    );
    let controlplane = g.add(
        resource("control-plane", format!("{}-control-plane", s.name))
            .with_detail(format!("https://{}:{}", l.api_host, l.api_port)),
        &[rec.into(), net.into()],
        move |cx, i| {
            Box::pin(async move {
                let rec = i.get(rec);
                start_controlplane(local, &cx.layout, rec, &cx.exe).map_err(local_error)?;
                // Its addresses are taken: other `up`s may choose theirs.
                cx.lock.borrow_mut().take();
                Ok(Done::new((), rec.api_url()))
            })
        },
    );
    let mut last: Dep = g
        .add(
            resource("node-agents", local.node_names().join(", "))
                .with_detail("one agent per node, in its network namespace"),
            &[rec.into(), pki.into(), controlplane.into()],
            move |cx, i| {
                Box::pin(async move {
                    bootstrap_kubeconfigs(&cx.layout, i.get(rec), i.get(pki))
                        .await
                        .map_err(local_error)?;
                    start_agents(local, &cx.layout, i.get(rec), &cx.exe).map_err(local_error)?;
                    Ok(Done::new((), ""))
                })
            },
        )
        .into();
    // The cluster file's, or (a later `up` without `--config`) the record's.
    let port_mappings = match (s.layout.is_empty(), Layout::new(&s.state_dir).load()) {
        (true, Some(rec)) => rec.layout.unwrap_or_default().port_mappings.len(),
        _ => s.layout.port_mappings.len(),
    };
    if port_mappings > 0 {
        last = g
            .add(
                resource("port-mappings", format!("{}-portmap", s.name))
                    .with_detail(format!("{port_mappings} host port(s) to node ports")),
                &[rec.into(), last],
                move |cx, i| {
                    Box::pin(async move {
                        let f = start_port_mappings(&cx.layout, i.get(rec), &cx.exe)
                            .map_err(local_error)?;
                        let detail = f.iter().map(|f| f.to_string()).collect::<Vec<_>>();
                        Ok(Done::new((), detail.join(", ")))
                    })
                },
            )
            .into();
    }
    if !opts.no_wait {
        let timeout = opts.wait.unwrap_or(DEFAULT_WAIT);
        last = g
            .add(
                resource("nodes-ready", local.node_names().join(", ")).with_detail(format!(
                    "nodes Ready, then cluster DNS answering on each node and kube-system pods \
                     Ready, within {timeout:?}; --no-wait skips"
                )),
                &[rec.into(), last],
                move |cx, i| {
                    Box::pin(async move {
                        let names: Vec<String> =
                            i.get(rec).nodes.iter().map(|n| n.name.clone()).collect();
                        let layout = &cx.layout;
                        let deadline = std::time::Instant::now() + timeout;
                        ready::wait_nodes_ready(&layout.admin_kubeconfig(), &names, timeout)
                            .await
                            .map_err(|e| {
                                err(
                                    &format!("nodes not Ready within {timeout:?}"),
                                    format!("{e}; see the logs in {}", layout.logs_dir().display()),
                                )
                            })
                            .map_err(local_error)?;
                        // Then what kube-system serves: DNS (answered by each agent).
                        let netns: Vec<(String, String)> = i
                            .get(rec)
                            .nodes
                            .iter()
                            .map(|n| (n.name.clone(), n.netns.clone()))
                            .collect();
                        ready::wait_dns_and_system_pods(
                            &layout.admin_kubeconfig(),
                            &netns,
                            recorded(i.get(rec), s).dns_server_ip,
                            &recorded(i.get(rec), s).dns_domain,
                            deadline,
                        )
                        .await
                        .map_err(|e| {
                            err(
                                &format!("cluster not serving within {timeout:?}"),
                                format!("{e}; see the logs in {}", layout.logs_dir().display()),
                            )
                        })
                        .map_err(local_error)?;
                        Ok(Done::new(
                            (),
                            format!(
                                "{} node(s) Ready, cluster DNS answering on each",
                                names.len()
                            ),
                        ))
                    })
                },
            )
            .into();
    }
    let context = format!("rktup-{}", s.name);
    let kubeconfig = g.add(
        resource("kubeconfig-context", &context),
        &[rec.into(), pki.into(), last],
        move |cx, i| {
            Box::pin(async move {
                let (rec, pki) = (i.get(rec), i.get(pki));
                let target = crate::user_kubeconfig::target(opts.kubeconfig.as_deref())
                    .map_err(local_error)?;
                let path = crate::user_kubeconfig::merge_context(
                    &target,
                    &context,
                    &rec.api_url(),
                    &pki.ca.cert_pem,
                    &pki.admin.cert_pem,
                    &pki.admin.key_pem,
                )
                .map_err(local_error)?;
                let mut rec = rec.clone();
                rec.kubeconfig = Some(path.clone());
                cx.layout
                    .save(&rec)
                    .map_err(|e| local_error(err("failed to save the cluster record", e)))?;
                let detail = path.display().to_string();
                Ok(Done::new(path, detail))
            })
        },
    );
    (
        g,
        Keys {
            rec,
            pki,
            kubeconfig,
        },
    )
}

/// The host namespace, the bridge, one namespace per node and the routes between them.
fn network(rec: &ClusterRecord) -> Result<(), ProviderError> {
    network::ensure_host_netns(&layout::host_netns_name(&rec.name))
        .map_err(|e| err("host namespace", e))?;
    network::ensure_bridge(rec).map_err(|e| err("bridge", e))?;
    for n in &rec.nodes {
        network::ensure_node(rec, n).map_err(|e| err(&n.name, e))?;
    }
    network::ensure_routes(rec).map_err(|e| err("routes", e))?;
    network::ensure_pod_routes(rec).map_err(|e| err("pod routes", e))?;
    network::ensure_load_balancer_route(rec).map_err(|e| err("load balancer route", e))
}

pub fn up(local: &Local, opts: &UpOptions) -> Result<(), ProviderError> {
    require_root("up")?;
    // Where the context will go is settled before anything is made (an unknown SUDO_USER
    // fails here, not after the cluster is up).
    crate::user_kubeconfig::target(opts.kubeconfig.as_deref())?;
    let started = Instant::now();
    let cx = Ctx {
        local,
        layout: Layout::new(&local.settings.state_dir),
        exe: std::env::current_exe().map_err(|e| err("failed to find the rktup binary", e))?,
        lock: RefCell::new(None),
    };
    let (g, keys) = graph(local, opts);
    let ran = ready::block_on(g.run(&cx, &Progress::new(), None)).map_err(|e| err("up", e))?;
    cx.lock.borrow_mut().take();
    ran.result?;
    let (Some(rec), Some(kubeconfig), Some(_)) = (
        ran.outputs.get(keys.rec),
        ran.outputs.get(keys.kubeconfig),
        ran.outputs.get(keys.pki),
    ) else {
        return Err(err("up", "the graph ended without the cluster record"));
    };
    let context = format!("rktup-{}", local.settings.name);
    summary(
        cx.local,
        &cx.layout,
        rec,
        &context,
        kubeconfig,
        started.elapsed(),
    );
    if opts.foreground {
        wait_for_signal();
        eprintln!("Stopping: tearing the cluster down");
        return crate::down::down(
            local,
            &rktup_provider::DownOptions {
                graceful: false,
                kubeconfig: Some(kubeconfig.to_path_buf()),
            },
        );
    }
    Ok(())
}

/// An exclusive flock on /run/rktup/local.lock, released when the file is dropped.
fn lock_machine() -> Result<std::fs::File, ProviderError> {
    use std::os::fd::AsRawFd;
    let dir = Path::new("/run/rktup");
    std::fs::create_dir_all(dir).map_err(|e| err(&dir.display().to_string(), e))?;
    let path = dir.join("local.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(&path.display().to_string(), e))?;
    // SAFETY: flock on a file we own; blocks until other `up`s have taken their addresses.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(err(
            &path.display().to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}

/// The cluster record: the existing one (with nodes added if more are asked for), or new names
/// and addresses. Saved before anything is made, so `down` finds a half-made cluster.
fn prepare(
    local: &Local,
    layout: &Layout,
    opts: &UpOptions,
) -> Result<ClusterRecord, ProviderError> {
    let s = &local.settings;
    let l = local.local();
    let mut rec = match layout.load() {
        Some(rec) => rec,
        None => {
            let api_port = choose_port(l.api_host, l.api_port, l.api_port_is_default)?;
            let mut taken = network::host_routes();
            taken.extend(other_clusters_networks(&s.state_dir));
            taken.push(s.service_cluster_ip_range);
            let cluster_ip_range = if l.cluster_ip_range_is_default {
                layout::free_pod_range(&taken, s.num_nodes).ok_or_else(|| {
                    err(
                        &format!(
                            "failed to choose a pod range for {} node(s) in {}",
                            s.num_nodes,
                            layout::POD_RANGE_POOL
                        ),
                        "every one overlaps a route on this machine or another cluster; set \
                         CLUSTER_IP_RANGE",
                    )
                })?
            } else {
                s.cluster_ip_range
            };
            taken.push(cluster_ip_range);
            let node_network = layout::free_node_network(&taken).ok_or_else(|| {
                err(
                    &format!(
                        "failed to choose a /24 for the node network in {}",
                        layout::NODE_NETWORK_POOL
                    ),
                    "every one overlaps a route on this machine or another cluster",
                )
            })?;
            ClusterRecord {
                name: s.name.clone(),
                bridge: layout::bridge_name(&s.name),
                node_network,
                api_host: l.api_host,
                api_port,
                cluster_ip_range,
                cluster_ip_range_v6: s.cluster_ip_range_v6,
                nodes: vec![],
                kubeconfig: opts.kubeconfig.clone(),
                insecure_registries: vec![],
                layout: None,
                settings: None,
            }
        }
    };
    rec.layout = Some(settled_layout(&rec, &s.layout)?);
    match &rec.settings {
        None => rec.settings = Some(layout::RecordedSettings::of(s)),
        Some(kept) => {
            for (name, kept, given) in kept.differences(s) {
                eprintln!(
                    "note: cluster \"{}\" keeps {name}={kept}, as it was made; {name}={given} is \
                     not used (`rktup local down` first to change it)",
                    s.name
                );
            }
        }
    }
    for r in &opts.insecure_registries {
        if !rec.insecure_registries.contains(r) {
            rec.insecure_registries.push(r.clone());
        }
    }
    let want = s.num_nodes.max(rec.nodes.len() as u32);
    // Node addresses count up from .2 of the node network's /24; .192/26 is the LoadBalancer pool.
    let max_nodes = (1u32 << (24 - rec.cluster_ip_range.prefix_len().min(24))).min(189);
    if want > max_nodes {
        return Err(ProviderError::Invalid {
            input: "NUM_NODES".into(),
            value: want.to_string(),
            expected: format!(
                "more than CLUSTER_IP_RANGE {} holds (one /24 per node, at most {max_nodes}); \
                 use a wider range (e.g. 10.244.0.0/16) or fewer nodes",
                rec.cluster_ip_range
            ),
        });
    }
    for i in rec.nodes.len() as u32 + 1..=want {
        let pod_cidr = layout::pod_cidr(rec.cluster_ip_range, i - 1).ok_or_else(|| {
            ProviderError::Invalid {
                input: "CLUSTER_IP_RANGE".into(),
                value: rec.cluster_ip_range.to_string(),
                expected: format!("has no /24 for node {i}; use a wider range"),
            }
        })?;
        let pod_cidr6 = match rec.cluster_ip_range_v6 {
            None => None,
            Some(r6) => {
                Some(
                    layout::pod_cidr6(r6, i - 1).ok_or_else(|| ProviderError::Invalid {
                        input: "CLUSTER_IP_RANGE".into(),
                        value: layout::dual(rec.cluster_ip_range, Some(r6)),
                        expected: format!("an IPv6 range with a /64 for node {i}; use a wider one"),
                    })?,
                )
            }
        };
        rec.nodes.push(NodeRecord {
            name: node_name(&s.name, l, want, i),
            netns: layout::netns_name(&s.name, i as usize),
            host_veth: layout::host_veth_name(&s.name, i as usize),
            ip: layout::nth_host(rec.node_network, i + 1),
            pod_cidr,
            ip6: rec.node_network_v6().map(|n| layout::nth_host6(n, i + 1)),
            pod_cidr6,
        });
    }
    // 0700 from creation on (and tightened when an older `up` made them wider).
    for dir in layout.dirs(&rec.nodes) {
        layout::private_dir(&dir).map_err(|e| err(&dir.display().to_string(), e))?;
    }
    layout
        .save(&rec)
        .map_err(|e| err("failed to save the cluster record", e))?;
    Ok(rec)
}

/// The settings the cluster was made with (`prepare` records them; `s`'s for an older record).
fn recorded(rec: &ClusterRecord, s: &rktup_config::ClusterSettings) -> layout::RecordedSettings {
    rec.settings
        .clone()
        .unwrap_or_else(|| layout::RecordedSettings::of(s))
}

/// The cluster file's layout this `up` runs with. A cluster keeps the one it was made with: `up`
/// without `--config` (or with a file that has no nodes, registries or port mappings) uses the
/// record's; a file that differs from it is refused, naming the keys (kind and k3d do not
/// change an existing cluster either: its agents and port mappings run with the old one). A
/// record from before layouts were kept takes the one given.
fn settled_layout(
    rec: &ClusterRecord,
    given: &ClusterLayout,
) -> Result<ClusterLayout, ProviderError> {
    match &rec.layout {
        None => Ok(given.clone()),
        Some(was) if given.is_empty() => Ok(was.clone()),
        Some(was) => {
            let keys = layout::layout_differences(was, given);
            if keys.is_empty() {
                Ok(was.clone())
            } else {
                Err(ProviderError::ClusterFileChanged {
                    provider: "local",
                    cluster: rec.name.clone(),
                    keys,
                })
            }
        }
    }
}

/// API_PORT if free; when it was not set and is taken (another cluster), the next free port.
fn choose_port(host: Ipv4Addr, port: u16, is_default: bool) -> Result<u16, ProviderError> {
    let free = |p: u16| TcpListener::bind((host, p)).is_ok();
    if free(port) {
        return Ok(port);
    }
    if is_default {
        if let Some(p) = (port.saturating_add(1)..port.saturating_add(200)).find(|&p| free(p)) {
            return Ok(p);
        }
    }
    Err(ProviderError::Invalid {
        input: "API_PORT".into(),
        value: port.to_string(),
        expected: format!("in use on {host}; set API_PORT (or --api-port) to a free port"),
    })
}

/// Node networks recorded by other local clusters under the same state root.
fn other_clusters_networks(state_dir: &Path) -> Vec<ipnet::Ipv4Net> {
    let Some(root) = state_dir.parent() else {
        return vec![];
    };
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path() != state_dir)
                .filter_map(|e| Layout::new(e.path()).load())
                .flat_map(|r| [r.node_network, r.cluster_ip_range])
                .collect()
        })
        .unwrap_or_default()
}

/// The control plane's PKI (made here first, so the nodes' CA is known before it runs). Nodes
/// get no certificate from here: they join with a bootstrap token (`bootstrap_kubeconfigs`).
fn certificates(layout: &Layout, rec: &ClusterRecord) -> Result<Pki, ProviderError> {
    let ips = [rec.api_host.into(), rec.gateway().into()];
    Pki::load_or_create(&layout.controlplane_dir(), &ips).map_err(|e| err("certificates", e))
}

/// How long a node's bootstrap token is valid: it only has to last until the node's agent has
/// its client certificate (seconds); each `up` makes a new one for nodes still without one.
const BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `n` random characters of a bootstrap token's alphabet (`[a-z0-9]`).
fn token_chars(n: usize) -> Result<String, ProviderError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 32];
        // SAFETY: getrandom writes at most b.len() bytes into b.
        let got = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if got < 0 {
            return Err(err("bootstrap token", std::io::Error::last_os_error()));
        }
        // 252 = 7 * 36: bytes above it are dropped so every character is equally likely.
        for &x in &b[..got as usize] {
            if x < 252 && out.len() < n {
                out.push(ALPHABET[(x % 36) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// A bootstrap token (`<id>.<secret>`) created as kubeadm's `token create` does: a
/// `bootstrap.kubernetes.io/token` Secret in kube-system, for authentication only, expiring.
async fn create_bootstrap_token(admin_kubeconfig: &Path) -> Result<String, ProviderError> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    let client = ready::client(admin_kubeconfig)
        .await
        .map_err(|e| err("bootstrap token", e))?;
    let (id, secret) = (token_chars(6)?, token_chars(16)?);
    let expiration = rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + BOOTSTRAP_TOKEN_TTL.as_secs(),
    );
    let data = [
        ("token-id", id.as_str()),
        ("token-secret", secret.as_str()),
        ("expiration", expiration.as_str()),
        ("usage-bootstrap-authentication", "true"),
        ("description", "rktup local up: node TLS bootstrap"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let obj = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data),
        ..Default::default()
    };
    let api: kube::Api<Secret> = kube::Api::namespaced(client, "kube-system");
    // The control plane may still be starting its API: retry briefly.
    let mut delay = Duration::from_millis(20);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match api.create(&Default::default(), &obj).await {
            Ok(_) => return Ok(format!("{id}.{secret}")),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(err("bootstrap token", e)),
        }
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-12-04T23:00:00Z`), the token's `expiration` format.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// For each node whose agent is not running and that has no kubeconfig yet (its agent writes
/// one once its certificate is issued), a bootstrap kubeconfig: the API server, the cluster CA
/// and one new bootstrap token shared by those nodes. No private key leaves this machine's
/// control plane for a node: each agent makes its own.
async fn bootstrap_kubeconfigs(
    layout: &Layout,
    rec: &ClusterRecord,
    pki: &Pki,
) -> Result<(), ProviderError> {
    let need: Vec<&NodeRecord> = rec
        .nodes
        .iter()
        .filter(|n| {
            process::running(&layout.pidfile(&n.name)).is_none()
                && !layout.node_kubeconfig(&n.name).exists()
        })
        .collect();
    if need.is_empty() {
        return Ok(());
    }
    let token = create_bootstrap_token(&layout.admin_kubeconfig()).await?;
    for n in need {
        let text = pki::kubeconfig(
            &rec.node_api_url(),
            &pki.ca.cert_pem,
            "kubelet-bootstrap",
            &Credential::Token(token.clone()),
        );
        write_private(&bootstrap_kubeconfig(layout, &n.name), &text)?;
    }
    Ok(())
}

fn bootstrap_kubeconfig(layout: &Layout, node: &str) -> PathBuf {
    layout.node_dir(node).join("bootstrap-kubeconfig")
}

fn write_private(path: &Path, text: &str) -> Result<(), ProviderError> {
    layout::write_private(path, text.as_bytes()).map_err(|e| err(&path.display().to_string(), e))
}

fn start_controlplane(
    local: &Local,
    layout: &Layout,
    rec: &ClusterRecord,
    exe: &Path,
) -> Result<(), ProviderError> {
    let pidfile = layout.pidfile("controlplane");
    if process::running(&pidfile).is_none() {
        // The control plane writes admin.kubeconfig only once it listens: its appearance, not a
        // connect (which another cluster on the same port would answer), says it is up.
        let _ = std::fs::remove_file(layout.admin_kubeconfig());
        let spec = Spec {
            exe: exe.to_path_buf(),
            args: vec![
                "controlplane".into(),
                "--data-dir".into(),
                layout.controlplane_dir().display().to_string(),
                "--bind-address".into(),
                rec.api_host.to_string(),
                "--secure-port".into(),
                rec.api_port.to_string(),
                "--also-bind".into(),
                format!("{}:{}", rec.gateway(), rec.api_port),
                "--service-cluster-ip-range".into(),
                recorded(rec, &local.settings).service_ranges(),
                // Kubelet calls (logs, exec, port-forward) go only to a kubelet serving the
                // certificate the CSR signer issued to that node.
                "--verify-kubelet-serving-certs".into(),
                // The cluster's LOG_LEVEL (flag > env > file), as the agents get it.
                "--v".into(),
                local.settings.log_level.to_string(),
                // LoadBalancer Services get host-reachable addresses (routed through the nodes).
                "--load-balancer-ip-range".into(),
                rec.load_balancer_ranges(),
                "--cluster-dns-ip".into(),
                recorded(rec, &local.settings).dns_server_ip.to_string(),
            ],
            log: layout.log("controlplane"),
            pidfile: pidfile.clone(),
            netns: None,
        };
        process::start_supervised(&spec)
            .map_err(|e| err("failed to start the control plane", e))?;
    }
    // Agents retry, but start them once the API port answers so they register at once.
    let addr = SocketAddr::from((rec.api_host, rec.api_port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if layout.admin_kubeconfig().exists()
            && process::running(&pidfile).is_some()
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Ok(());
        }
        if process::running(&pidfile).is_none() || Instant::now() > deadline {
            return Err(ProviderError::NotStarted {
                component: "the control plane".into(),
                what: format!("come up on {addr}"),
                log: layout.log("controlplane"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn agent_args(
    local: &Local,
    layout: &Layout,
    rec: &ClusterRecord,
    node: &NodeRecord,
) -> Vec<String> {
    let s = &local.settings;
    let l = local.local();
    let file = rec.layout.clone().unwrap_or_default();
    let kept = recorded(rec, s);
    let cfg = AgentConfig {
        root_dir: layout.node_root(&node.name),
        pod_manifest_path: layout.node_manifests(&node.name),
        kubeconfig: Some(layout.node_kubeconfig(&node.name)),
        // TLS bootstrap as kubelet: the agent makes its key and asks for its client and serving
        // certificates, renews them, and checks kubelet port callers with the API server.
        bootstrap_kubeconfig: Some(bootstrap_kubeconfig(layout, &node.name)),
        rotate_certificates: true,
        rotate_server_certificates: true,
        authorization_mode: "Webhook".into(),
        // Service account tokens on the kubelet port: metrics-server scrapes with its own.
        authentication_token_webhook: true,
        hostname_override: Some(node.name.clone()),
        // A dual-stack node: both addresses, IPv4 first (kubelet's --node-ip=v4,v6).
        node_ip: Some(layout::dual(node.ip, node.ip6)),
        network_plugin: kept.network,
        pod_cidr: Some(layout::dual(node.pod_cidr, node.pod_cidr6)),
        rkt_stage1_image: Some(kept.stage1),
        cluster_dns: Some(kept.dns_server_ip.to_string()),
        cluster_domain: Some(kept.dns_domain.clone()),
        cluster_cidr: Some(layout::dual(rec.cluster_ip_range, rec.cluster_ip_range_v6)),
        verbosity: s.log_level,
        allow_privileged: s.allow_privileged,
        // The read-only loopback listener (RKT_API_ENDPOINT, default localhost:15441) inside the
        // node's own network namespace, so `ip netns exec <node netns> rktup rkt list` works as
        // the seed's `rkt list` did; the unix socket <root>/api.sock serves everything, to root.
        rkt_api_endpoint: Some(s.rkt_api_endpoint.clone()),
        network_plugin_dir: l.net_plugin_dir.clone(),
        rkt_path: l.rkt_path.clone(),
        insecure_registry: insecure_registries(rec, &file),
        // The cluster file's mirrors (docker.io → a local registry, say) and this node's labels
        // and taints (`nodes[i]`, in node order).
        registry_mirror: file.registries.mirrors.clone(),
        registry_mirror_exclusive: file.registries.exclusive.clone(),
        node_labels: node_spec(rec, node)
            .map(|n| n.labels.clone())
            .unwrap_or_default(),
        register_with_taints: node_spec(rec, node)
            .map(|n| n.taints.clone())
            .unwrap_or_default(),
        // kind's extraMounts: a local node shares this machine's filesystem, so it is the
        // node's hostPath volumes under containerPath that are served from hostPath.
        host_path_mount: node_spec(rec, node)
            .map(|n| {
                n.extra_mounts
                    .iter()
                    .filter_map(|m| {
                        rktup_node_contract::HostPathMount::new(
                            &m.host_path.display().to_string(),
                            &m.container_path.display().to_string(),
                            m.read_only,
                        )
                        .ok()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        image_pull_netns: Some(network::netns_path(&layout::host_netns_name(&rec.name))),
        ..AgentConfig::default()
    };
    std::iter::once("agent".to_string())
        .chain(cfg.to_args())
        .collect()
}

/// The recorded cluster file's entry for `node` (`nodes[i]` is the i+1-th node), if it lists
/// nodes.
fn node_spec<'a>(rec: &'a ClusterRecord, node: &NodeRecord) -> Option<&'a rktup_config::NodeSpec> {
    let i = rec.nodes.iter().position(|n| n.name == node.name)?;
    rec.layout.as_ref()?.nodes.get(i)
}

/// `--insecure-registry` of `up` (kept in the record) and the cluster file's `insecure:`.
fn insecure_registries(rec: &ClusterRecord, layout: &rktup_config::ClusterLayout) -> Vec<String> {
    let mut all = rec.insecure_registries.clone();
    for r in &layout.registries.insecure {
        if !all.contains(r) {
            all.push(r.clone());
        }
    }
    all
}

/// The cluster file's port mappings: a proxy on this machine (`portmap.rs`) under its own
/// supervisor, started once; returns what it forwards.
fn start_port_mappings(
    layout: &Layout,
    rec: &ClusterRecord,
    exe: &Path,
) -> Result<Vec<portmap::Forward>, ProviderError> {
    let mappings = rec
        .layout
        .as_ref()
        .map(|l| l.port_mappings.as_slice())
        .unwrap_or_default();
    let forwards = portmap::forwards(mappings, |i| rec.nodes.get(i).map(|n| n.ip));
    let pidfile = layout.pidfile("portmap");
    if forwards.is_empty() || process::running(&pidfile).is_some() {
        return Ok(forwards);
    }
    portmap::check_free(&forwards).map_err(|e| err("portMappings of the cluster file", e))?;
    let mut args = vec!["portmap".to_string()];
    args.extend(forwards.iter().map(|f| f.to_string()));
    let spec = Spec {
        exe: exe.to_path_buf(),
        args,
        log: layout.log("portmap"),
        pidfile: pidfile.clone(),
        netns: None,
    };
    process::start_supervised(&spec).map_err(|e| err("failed to start the port mappings", e))?;
    // Listening before `up` returns: a client may connect at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    for f in forwards.iter().filter(|f| f.proto == portmap::Proto::Tcp) {
        let ip = if f.listen.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST
        } else {
            *f.listen.ip()
        };
        let addr = SocketAddr::from((ip, f.listen.port()));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if process::running(&pidfile).is_none() || Instant::now() > deadline {
                return Err(ProviderError::NotStarted {
                    component: format!("the port mapping {f}"),
                    what: "listen".into(),
                    log: layout.log("portmap"),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(forwards)
}

fn start_agents(
    local: &Local,
    layout: &Layout,
    rec: &ClusterRecord,
    exe: &Path,
) -> Result<(), ProviderError> {
    // All supervisors first, then wait for each agent: their start-ups overlap.
    let mut starting = vec![];
    for node in &rec.nodes {
        let pidfile = layout.pidfile(&node.name);
        if process::running(&pidfile).is_some() {
            continue;
        }
        let spec = Spec {
            exe: exe.to_path_buf(),
            args: agent_args(local, layout, rec, node),
            log: layout.log(&node.name),
            pidfile,
            netns: Some(network::netns_path(&node.netns)),
        };
        let s = process::begin_supervised(&spec)
            .map_err(|e| err(&format!("failed to start the agent of {}", node.name), e))?;
        starting.push((node, s));
    }
    for (node, s) in starting {
        s.wait()
            .map_err(|e| err(&format!("failed to start the agent of {}", node.name), e))?;
    }
    Ok(())
}

fn summary(
    local: &Local,
    layout: &Layout,
    rec: &ClusterRecord,
    context: &str,
    kubeconfig: &Path,
    took: Duration,
) {
    let name = &local.settings.name;
    match local.output {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "name": name,
                "context": context,
                "server": rec.api_url(),
                "kubeconfig": kubeconfig,
                "stateDir": layout.root,
                "logs": layout.logs_dir(),
                "nodes": rec.nodes,
                "seconds": took.as_secs_f64(),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        OutputFormat::Text => {
            println!(
                "Cluster \"{name}\" is up: {} node(s), API {} ({:.2}s).\n\n\
                 Use it with:\n  kubectl cluster-info --context {context}\n  \
                 kubectl --context {context} get nodes\n\n\
                 State and logs: {} (rktup local status --name {name})\n\
                 Tear it down:   rktup local down --name {name}",
                rec.nodes.len(),
                rec.api_url(),
                took.as_secs_f64(),
                layout.root.display(),
            );
            if kubeconfig_is_not_default(kubeconfig) {
                println!("Kubeconfig:     {}", kubeconfig.display());
            }
        }
    }
}

fn kubeconfig_is_not_default(path: &Path) -> bool {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config") != path)
        .unwrap_or(true)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `--foreground`: block until Ctrl-C or SIGTERM, as local-up-cluster.sh did.
fn wait_for_signal() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    eprintln!("Running in the foreground; press Ctrl-C to tear the cluster down.");
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod token_tests {
    #[test]
    fn rfc3339_and_token_alphabet() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_511_264), "2026-12-05T22:54:24Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let t = super::token_chars(16).expect("token");
        assert_eq!(t.len(), 16);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
