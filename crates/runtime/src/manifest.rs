//! From a Kubernetes `Pod` (static manifest) to the `PodPlan` the stage1 supervisor runs:
//! images resolved and unpacked, commands/env/user resolved against the image config, volumes,
//! limits, the stage1 flavour and its privilege rule, and the pod's network.

use crate::cgroups::Limits;
use crate::image::{ensure_image, ImageStore, PullPolicy, Puller};
use crate::pod::*;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod dns;

pub const STAGE1_ANNOTATION: &str = "rkt.alpha.kubernetes.io/stage1-name-override";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("failed to parse pod manifest {file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("pod is invalid: {0}")]
    Invalid(String),
    #[error("stage1 {name:?} refused: {why}")]
    Stage1Refused { name: String, why: String },
    #[error("privileged container {0:?} refused: the agent runs without --allow-privileged")]
    PrivilegedNotAllowed(String),
    #[error("volume {name:?}: {why}")]
    Volume { name: String, why: String },
    #[error("container {container:?}: failed to get image {image}: {msg}")]
    Image {
        container: String,
        image: String,
        msg: String,
    },
    #[error("network: {0}")]
    Network(String),
    #[error("container {container:?}: seccompProfile type {kind:?} is not supported (valid: RuntimeDefault, Unconfined)")]
    Seccomp { container: String, kind: String },
    /// What kubelet reports as `FailedCreatePodSandBox`: the pod's hostname or DNS cannot be
    /// set up (an invalid hostname, an FQDN over 64 characters, an unreadable --resolv-conf).
    #[error("Failed to create pod sandbox: {0}")]
    Sandbox(String),
}

/// Parse a static manifest (YAML or JSON; YAML is a superset).
pub fn parse_pod(file: &str, text: &str) -> Result<Pod, PlanError> {
    serde_yaml_ng::from_str::<Pod>(text).map_err(|e| PlanError::Parse {
        file: file.into(),
        msg: e.to_string(),
    })
}

/// Where the kubelet half materialises a volume whose contents come from the API server
/// (configMap, secret, downwardAPI, projected) before it runs the pod: `<root dir>/api-volumes/
/// <pod uid>/<volume name>` (kubelet keeps them under /var/lib/kubelet/pods/<uid>/volumes/).
/// `plan_pod` bind-mounts that directory, read-only (`VolumeSource::Prepared`).
pub fn api_volume_dir(root_dir: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    root_dir.join("api-volumes").join(pod_uid).join(volume)
}

/// The kind of an API-backed volume (its contents are prepared by the kubelet half), if it is one.
pub fn api_volume_kind(v: &Volume) -> Option<&'static str> {
    if v.config_map.is_some() {
        Some("configMap")
    } else if v.secret.is_some() {
        Some("secret")
    } else if v.downward_api.is_some() {
        Some("downwardAPI")
    } else if v.projected.is_some() {
        Some("projected")
    } else {
        None
    }
}

/// Resolves the pod network for the given hostPort mappings.
pub type NetworkResolver<'a> =
    dyn Fn(&[PortMapping]) -> Result<Option<NetworkPlan>, PlanError> + 'a;

/// Node-level inputs to planning.
pub struct PlanContext<'a> {
    pub store: &'a ImageStore,
    pub puller: &'a Puller,
    pub node_stage1: Stage1Flavor,
    pub allow_privileged: bool,
    pub node_name: &'a str,
    pub host_ip: Option<String>,
    pub pod_dir: &'a Path,
    /// Resolves the pod network (None for hostNetwork / fly).
    pub network: &'a NetworkResolver<'a>,
    /// The node's --cluster-dns, --cluster-domain and --resolv-conf.
    pub dns: &'a dns::NodeDns,
}

/// Bytes from a Kubernetes quantity ("64Mi", "1G", "128974848", "1e3").
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suf) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suf {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        s if s.starts_with('e') => 10f64.powi(s[1..].parse().ok()?),
        "m" => 1e-3,
        _ => return None,
    };
    Some((n * mult).ceil() as u64)
}

/// Millicores from a CPU quantity ("500m", "1", "0.25").
pub fn parse_cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    let v: f64 = q.parse().ok()?;
    Some((v * 1000.0).ceil() as u64)
}

fn is_privileged(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

/// The stage1 rule: an override (annotation, or a fly/kvm node default) is honoured only when
/// every container of the pod is privileged; unknown names are refused.
pub fn choose_stage1(pod: &Pod, node: Stage1Flavor) -> Result<Stage1Flavor, PlanError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PlanError::Invalid("no spec".into()))?;
    let all_privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(is_privileged);
    let ann = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STAGE1_ANNOTATION));
    let (name, flavour, source) = match ann {
        Some(n) => {
            let f = Stage1Flavor::parse(n).ok_or_else(|| PlanError::Stage1Refused {
                name: n.clone(),
                why: "unknown stage1 (known: coreos.com/rkt/stage1-coreos, stage1-fly, stage1-kvm; also spelled coreos/rkt/stage1-X)".into(),
            })?;
            (
                n.clone(),
                f,
                "the annotation ".to_string() + STAGE1_ANNOTATION,
            )
        }
        None => (
            node.image_name().to_string(),
            node,
            "the node's --rkt-stage1-image".into(),
        ),
    };
    let overrides = ann.is_some() || flavour != Stage1Flavor::Coreos;
    if overrides && !all_privileged {
        return Err(PlanError::Stage1Refused {
            name,
            why: format!(
                "{source} may give root privileges, so every container needs securityContext.privileged: true"
            ),
        });
    }
    Ok(flavour)
}

/// `uid[:gid]` or a user name looked up in the image's /etc/passwd.
fn image_user(user: &str, layers: &[PathBuf]) -> Option<(u32, Option<u32>)> {
    let (u, g) = user
        .split_once(':')
        .map(|(a, b)| (a, Some(b)))
        .unwrap_or((user, None));
    let lookup = |file: &str, name: &str, field: usize| -> Option<u32> {
        for l in layers.iter().rev() {
            if let Ok(t) = std::fs::read_to_string(l.join(file)) {
                for line in t.lines() {
                    let f: Vec<&str> = line.split(':').collect();
                    if f.first() == Some(&name) {
                        return f.get(field)?.parse().ok();
                    }
                }
            }
        }
        None
    };
    let uid = u.parse().ok().or_else(|| lookup("etc/passwd", u, 2))?;
    let gid = match g {
        Some(g) => g.parse().ok().or_else(|| lookup("etc/group", g, 2)),
        None if u.parse::<u32>().is_err() => lookup("etc/passwd", u, 3),
        None => None,
    };
    Some((uid, gid))
}

fn plan_container(
    c: &Container,
    pod: &Pod,
    ctx: &PlanContext,
    ports: &mut Vec<PortMapping>,
) -> Result<ContainerPlan, PlanError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PlanError::Invalid("no spec".into()))?;
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| PlanError::Invalid(format!("container {:?} has no image", c.name)))?;
    let policy = PullPolicy::from_k8s(c.image_pull_policy.as_deref(), &image);
    let img_err = |msg: String| PlanError::Image {
        container: c.name.clone(),
        image: image.clone(),
        msg,
    };
    let rec =
        ensure_image(ctx.store, ctx.puller, &image, policy).map_err(|e| img_err(e.to_string()))?;
    ctx.store.touch(&rec.id);
    let cfg = ctx.store.config(&rec).map_err(|e| img_err(e.to_string()))?;
    let layers = ctx
        .store
        .layer_dirs(&rec)
        .map_err(|e| img_err(e.to_string()))?;
    // kubelet: command replaces Entrypoint (and drops Cmd), args replaces Cmd.
    let argv: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => cmd.iter().chain(args).cloned().collect(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => cfg
            .entrypoint
            .iter()
            .flatten()
            .chain(args)
            .cloned()
            .collect(),
        (None, None) => cfg
            .entrypoint
            .iter()
            .flatten()
            .chain(cfg.cmd.iter().flatten())
            .cloned()
            .collect(),
    };
    if argv.is_empty() {
        return Err(PlanError::Invalid(format!(
            "container {:?}: no command and the image has no Entrypoint/Cmd",
            c.name
        )));
    }
    let mut env: Vec<EnvVar> = Vec::new();
    for kv in cfg.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        env.push(EnvVar {
            name: k.into(),
            value: v.into(),
            field_ref: None,
        });
    }
    for e in c.env.iter().flatten() {
        let (value, field_ref) = match &e.value_from {
            None => (e.value.clone().unwrap_or_default(), None),
            Some(src) => match &src.field_ref {
                Some(f) => (String::new(), Some(f.field_path.clone())),
                None => {
                    return Err(PlanError::Invalid(format!(
                        "container {:?} env {:?}: only value and fieldRef sources are supported without the API server",
                        c.name, e.name
                    )))
                }
            },
        };
        env.retain(|x| x.name != e.name);
        env.push(EnvVar {
            name: e.name.clone(),
            value,
            field_ref,
        });
    }
    let psc = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    if privileged && !ctx.allow_privileged {
        return Err(PlanError::PrivilegedNotAllowed(c.name.clone()));
    }
    let img_user = cfg
        .user
        .as_deref()
        .filter(|u| !u.is_empty())
        .and_then(|u| image_user(u, &layers));
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
        .map(|u| u as u32)
        .or(img_user.map(|u| u.0))
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group))
        .map(|g| g as u32)
        .or(img_user.and_then(|u| u.1))
        .unwrap_or(0);
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        return Err(PlanError::Invalid(format!(
            "container {:?}: runAsNonRoot is set but the container would run as uid 0",
            c.name
        )));
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let mut limits = Limits::default();
    if let Some(l) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(q) = l.get("memory") {
            limits.memory_bytes = Some(
                parse_bytes(&q.0)
                    .ok_or_else(|| PlanError::Invalid(format!("bad memory limit {:?}", q.0)))?,
            );
        }
        if let Some(q) = l.get("cpu") {
            limits.cpu_millis = Some(
                parse_cpu_millis(&q.0)
                    .ok_or_else(|| PlanError::Invalid(format!("bad cpu limit {:?}", q.0)))?,
            );
        }
        if let Some(q) = l.get("pids") {
            limits.pids = parse_bytes(&q.0);
        }
    }
    for p in c.ports.iter().flatten() {
        if let Some(hp) = p.host_port.filter(|h| *h > 0) {
            ports.push(PortMapping {
                host_port: hp as u16,
                container_port: p.container_port as u16,
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_lowercase(),
            });
        }
    }
    let vols: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    // kubelet mounts API-backed volumes read-only whatever the mount says.
    let api_vols: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| api_volume_kind(v).is_some())
        .map(|v| v.name.as_str())
        .collect();
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if !vols.contains(&m.name) {
            return Err(PlanError::Volume {
                name: m.name.clone(),
                why: format!("mounted by container {:?} but not declared", c.name),
            });
        }
        if !m.mount_path.starts_with('/') {
            return Err(PlanError::Invalid(format!(
                "mountPath {:?} is not absolute",
                m.mount_path
            )));
        }
        if m.sub_path
            .as_deref()
            .is_some_and(|s| s.split('/').any(|p| p == ".."))
        {
            return Err(PlanError::Invalid("subPath must not contain \"..\"".into()));
        }
        let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
        let sub_path_expr = m.sub_path_expr.clone().filter(|s| !s.is_empty());
        if sub_path.is_some() && sub_path_expr.is_some() {
            return Err(PlanError::Invalid(
                "subPathExpr and subPath are mutually exclusive".into(),
            ));
        }
        if sub_path.as_deref().is_some_and(|s| s.starts_with('/')) {
            return Err(PlanError::Invalid(format!(
                "subPath {:?} must be a relative path",
                sub_path.as_deref().unwrap_or_default()
            )));
        }
        mounts.push(MountPlan {
            volume: m.name.clone(),
            path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || api_vols.contains(&m.name.as_str()),
            sub_path,
            sub_path_expr,
        });
    }
    Ok(ContainerPlan {
        name: c.name.clone(),
        image: rec.names.first().cloned().unwrap_or(image.clone()),
        image_id: rec.id.clone(),
        layers,
        argv,
        env,
        working_dir: c
            .working_dir
            .clone()
            .or(cfg.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        uid,
        gid,
        privileged,
        read_only_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        allow_privilege_escalation: sc
            .and_then(|s| s.allow_privilege_escalation)
            .unwrap_or(false),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp: seccomp_of(c, psc, privileged)?,
        mounts,
        limits,
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
    })
}

/// The container's seccompProfile, else the pod's; privileged containers are unconfined (as
/// containerd and CRI-O run them). Localhost profiles (files on the node) are not supported.
fn seccomp_of(
    c: &Container,
    psc: Option<&k8s_openapi::api::core::v1::PodSecurityContext>,
    privileged: bool,
) -> Result<Seccomp, PlanError> {
    let profile = c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(psc.and_then(|s| s.seccomp_profile.as_ref()));
    match profile.map(|p| p.type_.as_str()) {
        None | Some("Unconfined") => Ok(Seccomp::Unconfined),
        Some("RuntimeDefault") if privileged => Ok(Seccomp::Unconfined),
        Some("RuntimeDefault") => Ok(Seccomp::RuntimeDefault),
        Some(other) => Err(PlanError::Seccomp {
            container: c.name.clone(),
            kind: other.to_string(),
        }),
    }
}

/// Everything about the pod except the runtime knobs (filled by the caller).
/// A hostPath volume's path after its `type` check, creating it for the `...OrCreate` types
/// as kubelet does.
fn prepare_host_path(
    volume: &str,
    h: &k8s_openapi::api::core::v1::HostPathVolumeSource,
) -> Result<PathBuf, PlanError> {
    let p = PathBuf::from(&h.path);
    let refuse = |why: String| PlanError::Volume {
        name: volume.to_string(),
        why,
    };
    match h.type_.as_deref().unwrap_or("") {
        "DirectoryOrCreate" => std::fs::create_dir_all(&p)
            .map_err(|e| refuse(format!("failed to create {}: {e}", p.display())))?,
        "Directory" if !p.is_dir() => {
            return Err(refuse(format!(
                "hostPath {} is not a directory",
                p.display()
            )))
        }
        "File" if !p.is_file() => {
            return Err(refuse(format!("hostPath {} is not a file", p.display())))
        }
        "FileOrCreate" if !p.exists() => {
            // Never truncate: another pod may have created and written it meanwhile.
            let created = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&p);
            created
                .map(drop)
                .map_err(|e| refuse(format!("failed to create {}: {e}", p.display())))?
        }
        _ => {}
    }
    Ok(p)
}

pub fn plan_pod(pod: &Pod, ctx: &PlanContext, uuid: &str) -> Result<PodPlan, PlanError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PlanError::Invalid("no spec".into()))?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PlanError::Invalid("metadata.name is empty".into()))?;
    if spec.containers.is_empty() {
        return Err(PlanError::Invalid("no containers".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        if !seen.insert(c.name.clone()) || c.name.is_empty() || c.name.contains('/') {
            return Err(PlanError::Invalid(format!(
                "bad or duplicate container name {:?}",
                c.name
            )));
        }
    }
    let stage1 = choose_stage1(pod, ctx.node_stage1)?;
    let mut volumes = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let source = if let Some(e) = &v.empty_dir {
            VolumeSource::EmptyDir {
                memory: e.medium.as_deref() == Some("Memory"),
                size_limit: e.size_limit.as_ref().and_then(|q| parse_bytes(&q.0)),
            }
        } else if let Some(h) = &v.host_path {
            VolumeSource::HostPath {
                path: prepare_host_path(&v.name, h)?,
            }
        } else if let Some(kind) = api_volume_kind(v) {
            // `<root>/pods/<uuid>` → `<root>`.
            let root = ctx.pod_dir.parent().and_then(Path::parent);
            let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty());
            match root.zip(uid).map(|(r, u)| api_volume_dir(r, u, &v.name)) {
                Some(dir) if dir.is_dir() => VolumeSource::Prepared { path: dir },
                _ => {
                    return Err(PlanError::Volume {
                        name: v.name.clone(),
                        why: format!("{kind} volumes come from the API server: the kubelet half (agent with --kubeconfig) prepares them for API pods, and none was prepared for this pod"),
                    })
                }
            }
        } else {
            return Err(PlanError::Volume {
                name: v.name.clone(),
                why: "unsupported volume type (supported: emptyDir, hostPath, and for API pods configMap, secret, downwardAPI, projected, persistentVolumeClaim, ephemeral)".into(),
            });
        };
        volumes.push(VolumePlan {
            name: v.name.clone(),
            source,
        });
    }
    let mut ports = Vec::new();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| plan_container(c, pod, ctx, &mut ports))
        .collect::<Result<Vec<_>, _>>()?;
    let containers = spec
        .containers
        .iter()
        .map(|c| plan_container(c, pod, ctx, &mut ports))
        .collect::<Result<Vec<_>, _>>()?;
    let host_network = spec.host_network.unwrap_or(false);
    if stage1 == Stage1Flavor::Kvm && host_network {
        return Err(PlanError::Stage1Refused {
            name: stage1.image_name().into(),
            why: "stage1-kvm supports the contained network only (hostNetwork: true given)".into(),
        });
    }
    let network = if host_network || stage1 == Stage1Flavor::Fly {
        None
    } else {
        (ctx.network)(&ports)?
    };
    let restart_policy = match spec.restart_policy.as_deref() {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    };
    let (hostname, etc) = plan_etc(pod, ctx.dns, host_network || stage1 == Stage1Flavor::Fly)?;
    Ok(PodPlan {
        uuid: uuid.into(),
        name,
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        uid: pod.metadata.uid.clone().unwrap_or_else(|| uuid.into()),
        node_name: ctx.node_name.into(),
        host_ip: ctx.host_ip.clone(),
        source: None,
        source_hash: String::new(),
        stage1,
        host_network,
        hostname,
        restart_policy,
        grace_seconds: spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64,
        init_containers: init,
        containers,
        volumes,
        network,
        cgroup_parent: "rktup".into(),
        backoff_base_ms: 10_000,
        backoff_max_ms: 300_000,
        log_max_size: 10 << 20,
        log_max_files: 5,
        verbosity: 2,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        created_at: crate::util::now_secs(),
        kvm: None,
        etc: Some(etc),
    })
}

/// The pod's kernel hostname and /etc files, as kubelet and containerd decide them (see
/// `dns`). Pods in the node's UTS namespace (hostNetwork, stage1-fly) keep the node's hostname
/// and get the node's hosts file.
fn plan_etc(
    pod: &Pod,
    node: &dns::NodeDns,
    host_uts: bool,
) -> Result<(String, EtcPlan), PlanError> {
    let spec = pod.spec.as_ref();
    let (short, domain) =
        dns::pod_hostname_and_domain(pod, &node.cluster_domain).map_err(PlanError::Sandbox)?;
    let (resolv_conf, _warnings) = dns::pod_resolv_conf(pod, node).map_err(|e| {
        let path = node.resolv_conf.as_deref().unwrap_or(Path::new(""));
        PlanError::Sandbox(format!("open {}: {e}", path.display()))
    })?;
    let host_aliases = spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
        .map(|a| HostAlias {
            ip: a.ip.clone(),
            hostnames: a.hostnames.clone().unwrap_or_default(),
        })
        .collect();
    let (hostname, hosts) = if host_uts {
        let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        (node_hostname, HostsPlan::Node)
    } else {
        let fqdn = spec.and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false);
        let kernel =
            dns::kernel_hostname(&short, domain.as_deref(), fqdn).map_err(PlanError::Sandbox)?;
        (
            kernel,
            HostsPlan::Managed {
                hostname: short,
                domain,
            },
        )
    };
    Ok((
        hostname,
        EtcPlan {
            resolv_conf,
            hosts,
            host_aliases,
        },
    ))
}

/// Downward-API fields the supervisor can resolve: `pod_ips` are the pod's addresses, primary
/// first (`status.podIPs` is all of them, comma-separated, as kubelet gives it).
pub fn field_value(plan: &PodPlan, pod_ips: &[String], path: &str) -> Option<String> {
    Some(match path {
        "metadata.name" => plan.name.clone(),
        "metadata.namespace" => plan.namespace.clone(),
        "metadata.uid" => plan.uid.clone(),
        "spec.nodeName" => plan.node_name.clone(),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        "status.hostIP" | "status.hostIPs" => plan.host_ip.clone().unwrap_or_default(),
        p => {
            let key = p
                .strip_prefix("metadata.labels['")
                .map(|k| (k, &plan.labels))
                .or_else(|| {
                    p.strip_prefix("metadata.annotations['")
                        .map(|k| (k, &plan.annotations))
                })?;
            let (k, map): (&str, &BTreeMap<String, String>) = key;
            map.get(k.strip_suffix("']")?)?.clone()
        }
    })
}

/// Kubernetes `$(VAR)` expansion; `$$` escapes; unknown references stay as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some((_, v)) = env.iter().rev().find(|(k, _)| k == name) {
                        out.push_str(v);
                        i += end + 3;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_types_checked_and_created_without_truncating() {
        use k8s_openapi::api::core::v1::HostPathVolumeSource;
        let d = tempfile::tempdir().unwrap();
        let hp = |path: &Path, t: &str| HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some(t.to_string()),
        };
        let file = d.path().join("state");
        assert_eq!(
            prepare_host_path("st", &hp(&file, "FileOrCreate")).unwrap(),
            file
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"");
        std::fs::write(&file, "kept").unwrap();
        prepare_host_path("st", &hp(&file, "FileOrCreate")).unwrap();
        prepare_host_path("st", &hp(&file, "File")).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
        let dir = d.path().join("a/b");
        prepare_host_path("dir", &hp(&dir, "DirectoryOrCreate")).unwrap();
        assert!(dir.is_dir());
        let err = prepare_host_path("st", &hp(&file, "Directory")).unwrap_err();
        assert!(
            err.to_string().contains("st") && err.to_string().contains("is not a directory"),
            "{err}"
        );
        let err = prepare_host_path("dir", &hp(&dir, "File")).unwrap_err();
        assert!(err.to_string().contains("is not a file"), "{err}");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1e3"), Some(1000));
        assert_eq!(parse_bytes("12x"), None);
        assert_eq!(parse_cpu_millis("500m"), Some(500));
        assert_eq!(parse_cpu_millis("1.5"), Some(1500));
    }

    #[test]
    fn dollar_expansion() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }

    fn pod(yaml: &str) -> Pod {
        parse_pod("t", yaml).unwrap()
    }

    #[test]
    fn seccomp_profile_from_container_then_pod_privileged_unconfined_localhost_refused() {
        let p = pod("metadata: {name: s}\nspec:\n  securityContext: {seccompProfile: {type: RuntimeDefault}}\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox, securityContext: {seccompProfile: {type: Unconfined}}}\n  - {name: c, image: busybox, securityContext: {privileged: true}}\n  - {name: d, image: busybox, securityContext: {seccompProfile: {type: Localhost, localhostProfile: x.json}}}\n");
        let spec = p.spec.as_ref().unwrap();
        let psc = spec.security_context.as_ref();
        let cs = &spec.containers;
        assert_eq!(
            seccomp_of(&cs[0], psc, false).unwrap(),
            Seccomp::RuntimeDefault
        );
        assert_eq!(seccomp_of(&cs[1], psc, false).unwrap(), Seccomp::Unconfined);
        assert_eq!(seccomp_of(&cs[2], psc, true).unwrap(), Seccomp::Unconfined);
        let e = seccomp_of(&cs[3], psc, false).unwrap_err().to_string();
        assert!(
            e.contains("\"d\"")
                && e.contains("\"Localhost\"")
                && e.contains("RuntimeDefault, Unconfined"),
            "{e}"
        );
        assert_eq!(
            seccomp_of(&cs[0], None, false).unwrap(),
            Seccomp::Unconfined
        );
    }

    #[test]
    fn stage1_override_needs_privileged() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: k\n  annotations:\n    rkt.alpha.kubernetes.io/stage1-name-override: coreos.com/rkt/stage1-fly\nspec:\n  containers:\n  - name: a\n    image: busybox\n",
        );
        let e = choose_stage1(&p, Stage1Flavor::Coreos).unwrap_err();
        assert!(e.to_string().contains("privileged: true"), "{e}");
        let p = pod(
            "metadata:\n  name: k\n  annotations:\n    rkt.alpha.kubernetes.io/stage1-name-override: coreos/rkt/stage1-fly\nspec:\n  containers:\n  - name: a\n    image: busybox\n    securityContext:\n      privileged: true\n",
        );
        assert_eq!(
            choose_stage1(&p, Stage1Flavor::Coreos).unwrap(),
            Stage1Flavor::Fly
        );
        let p = pod(
            "metadata:\n  name: k\n  annotations:\n    rkt.alpha.kubernetes.io/stage1-name-override: coreos.com/rkt/stage1-magic\nspec:\n  containers:\n  - name: a\n    image: busybox\n    securityContext:\n      privileged: true\n",
        );
        assert!(choose_stage1(&p, Stage1Flavor::Coreos)
            .unwrap_err()
            .to_string()
            .contains("unknown stage1"));
        let p =
            pod("metadata:\n  name: k\nspec:\n  containers:\n  - name: a\n    image: busybox\n");
        assert!(choose_stage1(&p, Stage1Flavor::Fly).is_err());
        assert_eq!(
            choose_stage1(&p, Stage1Flavor::Coreos).unwrap(),
            Stage1Flavor::Coreos
        );
    }
}
