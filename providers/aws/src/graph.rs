//! `up` as the shared engine's graph (`rktup_provider::engine`): every resource starts as soon
//! as the resources it needs exist, not when a whole step of the plan is done, and
//! `up --dry-run` prints this same graph. What a resource waits for is the list of nodes it
//! is added with, with the reason where it is not just "its id goes into the call".
//! `stop_after_step(n)` runs the nodes of the printed plan's steps 1..=n, then stops.

use crate::cloud::Error;
use crate::up::{Cluster, Made};
use crate::Aws;
use rktup_config::NetworkProvider;
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::engine::{Dep, Done, Graph, Inputs, Key, Outputs};
use rktup_provider::plan::resource;
use rktup_provider::state::apiserver_names;
use rktup_provider::{StateDir, UpOptions};
use rktup_render::{Pki, Role, Templates};
use std::path::PathBuf;
use std::time::Duration;

/// The PKI (for the kubeconfig) and both roles' user-data.
pub struct Boot {
    pub pki: Pki,
    pub master: Vec<u8>,
    pub node: Vec<u8>,
}

/// The rktup binary to stage: its sha256, path and object key.
pub struct Binary {
    pub sha: String,
    pub path: PathBuf,
    pub key: String,
}

/// What the nodes run against.
pub struct Ctx<'a> {
    pub cl: Cluster<'a>,
    pub state: StateDir,
    pub binary: Binary,
}

/// The nodes whose outputs are recorded in `state.json`.
#[derive(Clone, Copy)]
pub struct Keys {
    vpc: Key<String>,
    subnet: Key<String>,
    route_table: Option<Key<String>>,
    igw: Option<Key<String>>,
    sg_master: Key<String>,
    sg_node: Key<String>,
    key_pair: Key<String>,
    eip: Key<(String, String)>,
    master_image: Key<String>,
    node_image: Key<String>,
    master: Key<String>,
    master_profile: Key<String>,
    node_profile: Key<String>,
}

/// Reads a node's output from a node's inputs or from a finished run.
trait Read {
    fn read<T: Clone + Default + 'static>(&self, key: Key<T>) -> T;
}

impl Read for Inputs {
    fn read<T: Clone + Default + 'static>(&self, key: Key<T>) -> T {
        self.get(key).clone()
    }
}

impl Read for Outputs {
    fn read<T: Clone + Default + 'static>(&self, key: Key<T>) -> T {
        self.get(key).cloned().unwrap_or_default()
    }
}

/// A node inside the VPC whose action is `Cluster::$action(vpc id)`, its output the new id.
macro_rules! in_vpc {
    ($g:ident, $resource:expr, $vpc:ident, $action:ident) => {
        $g.add($resource, &[$vpc.into()], move |cx, i| {
            Box::pin(async move { Ok(Done::shown(cx.cl.$action(i.get($vpc).as_str()).await?)) })
        })
    };
}

fn err(e: &dyn std::fmt::Display) -> Error {
    Error::new(e.to_string())
}

impl Keys {
    /// What exists so far, by role (empty where not made yet).
    pub fn made(&self, aws: &Aws, o: &Outputs) -> Made {
        let (eip_alloc, eip) = o.read(self.eip);
        Made {
            vpc: o.read(self.vpc),
            vpc_ours: aws.aws().vpc_id.is_none(),
            subnet: o.read(self.subnet),
            route_table: self.route_table.and_then(|k| o.get(k).cloned()),
            igw: self.igw.and_then(|k| o.get(k).cloned()),
            sg_master: o.read(self.sg_master),
            sg_node: o.read(self.sg_node),
            key_name: o.read(self.key_pair),
            eip_alloc,
            eip,
            master_image: o.read(self.master_image),
            node_image: o.read(self.node_image),
            master: o.read(self.master),
            master_profile: o.read(self.master_profile),
            node_profile: o.read(self.node_profile),
        }
    }
}

/// Records `made` in `state.json` (the binary's URL is set by the s3-object node).
pub fn record(aws: &Aws, state: &StateDir, made: &Made) -> Result<(), Error> {
    let mut recorded = state.load_recorded().map_err(|e| err(&e))?;
    aws.record(&mut recorded, made);
    state.save_recorded(&recorded).map_err(|e| err(&e))
}

/// Every resource of `up`; `object` is the staged binary's key (generic in the plan).
pub fn graph<'a>(aws: &'a Aws, options: &'a UpOptions, object: &str) -> (Graph<'a, Ctx<'a>>, Keys) {
    let s = &aws.settings;
    let a = aws.aws();
    let name = |suffix: &str| aws.name(suffix);
    let ours = a.vpc_id.is_none();
    let mut g: Graph<'a, Ctx<'a>> = Graph::new();

    // What needs nothing else.
    let vpc_node = match &a.vpc_id {
        Some(id) => resource("vpc", id.as_str()).with_detail("exists: VPC_ID, never deleted"),
        None => resource("vpc", name("vpc")).with_detail(a.vpc_cidr.to_string()),
    };
    let vpc = g.add(vpc_node, &[], |cx: &'a Ctx<'a>, _| {
        Box::pin(async move {
            let (id, ours) = cx.cl.vpc().await?;
            let how = if ours { "" } else { " (VPC_ID, kept by down)" };
            Ok(Done::new(id.clone(), format!("{id}{how}")))
        })
    });
    let bucket = g.add(resource("s3-bucket", aws.staging_bucket()), &[], |cx, _| {
        Box::pin(async move {
            let made = cx.cl.bucket(&cx.cl.aws.staging_bucket()).await?;
            Ok(Done::new((), if made { "created" } else { "exists" }))
        })
    });
    let key_pair = g.add(
        resource("key-pair", name("key")).with_detail(format!("{}.pub", a.ssh_key.display())),
        &[],
        |cx, _| Box::pin(async move { Ok(Done::shown(cx.cl.key_pair().await?)) }),
    );
    let eip = g.add(
        resource("elastic-ip", name("master-ip"))
            .with_detail("allocated first: the API server's certificate names it"),
        &[],
        |cx, _| {
            Box::pin(async move {
                let (id, ip) = cx.cl.elastic_ip().await?;
                let detail = format!("{ip} ({id})");
                Ok(Done::new((id, ip), detail))
            })
        },
    );
    let mut image = |role: &'static str, given: &'a Option<String>| {
        let detail = given
            .clone()
            .unwrap_or_else(|| "Flatcar stable (looked up)".into());
        g.add(
            resource("image", role).with_detail(detail),
            &[],
            move |cx: &'a Ctx<'a>, _| {
                Box::pin(async move { Ok(Done::shown(cx.cl.image(given).await?)) })
            },
        )
    };
    let master_image = image("master", &a.master_image);
    let node_image = image("node", &a.node_image);
    // Who the machines are to the staging bucket (iam.rs): a role and instance profile each.
    let mut identity = |role: &'static str, detail: &'static str| {
        g.add(
            resource(
                "iam-instance-profile",
                crate::iam::identity_name(&a.region, &s.name, role),
            )
            .with_detail(detail),
            &[],
            move |cx: &'a Ctx<'a>, _| {
                Box::pin(async move {
                    let bucket = cx.cl.aws.staging_bucket();
                    Ok(Done::shown(
                        crate::iam::identity(&cx.cl.c, &s.name, role, &bucket).await?,
                    ))
                })
            },
        )
    };
    let master_profile = identity(
        "master",
        "role + profile: s3:GetObject on the binaries and pki-*",
    );
    let node_profile = identity("node", "role + profile: s3:GetObject on the binaries");

    // Inside the VPC, and the binary in the bucket.
    let mut network: Vec<Dep> = Vec::new();
    if ours {
        // Only instances care about DNS, so only they wait for it.
        let dns = g.add(
            resource("vpc-dns", name("vpc")).with_detail("support + hostnames"),
            &[vpc.into()],
            move |cx, i| {
                Box::pin(async move {
                    cx.cl.vpc_dns(i.get(vpc).as_str()).await?;
                    Ok(Done::new((), "support + hostnames"))
                })
            },
        );
        network.push(dns.into());
    }
    let subnet_node = match &a.subnet_id {
        Some(id) => resource("subnet", id.as_str()).with_detail("exists: SUBNET_ID, never deleted"),
        None => resource("subnet", name("subnet"))
            .with_detail(format!("{} in {}", a.subnet_cidr, a.zone)),
    };
    let subnet = in_vpc!(g, subnet_node, vpc, subnet);
    network.push(subnet.into());
    // The DHCP options, internet gateway and route table only in our own VPC.
    let (mut igw, mut route_table) = (None, None);
    if ours {
        let dhcp = in_vpc!(
            g,
            resource("dhcp-options", name("dhcp-options")),
            vpc,
            dhcp_options
        );
        network.push(dhcp.into());
        let gw = resource("internet-gateway", name("igw")).with_detail("attached to the VPC");
        let gw = in_vpc!(g, gw, vpc, internet_gateway);
        let rt = in_vpc!(
            g,
            resource("route-table", name("route-table")),
            vpc,
            route_table
        );
        (igw, route_table) = (Some(gw), Some(rt));
    }
    let mut security_group = |role: &'static str, prefix: &str| {
        let group = format!("{prefix}-{}", s.name);
        g.add(
            resource("security-group", &group),
            &[vpc.into()],
            move |cx: &'a Ctx<'a>, i: Inputs| {
                Box::pin(async move {
                    Ok(Done::shown(
                        cx.cl
                            .security_group(i.get(vpc).as_str(), role, &group)
                            .await?,
                    ))
                })
            },
        )
    };
    let sg_master = security_group("sg-master", "kubernetes-master");
    let sg_node = security_group("sg-node", "kubernetes-minion");
    // The binary's URL, recorded in `state.json` before anything is rendered: `render_boot`
    // reads it from there, as `rktup render aws` does.
    let binary_url = g.add(
        resource("s3-object", format!("{}/{object}", aws.staging_bucket()))
            .with_detail("the rktup binary, sha256-checked by nodes"),
        &[bucket.into()],
        |cx, _| Box::pin(stage(cx)),
    );

    // Rules and routes between what the VPC holds.
    let rules = g.add(
        resource("security-group-rules", name("rules")).with_detail(format!(
            "cluster-internal, 22 from {}, 443 from {}",
            a.ssh_cidr, a.http_api_cidr
        )),
        &[sg_master.into(), sg_node.into()],
        move |cx, i| {
            Box::pin(async move {
                let m = Made {
                    sg_master: i.read(sg_master),
                    sg_node: i.read(sg_node),
                    ..Made::default()
                };
                let n = cx.cl.security_rules(&m).await?;
                Ok(Done::new((), format!("{n} added")))
            })
        },
    );
    network.push(rules.into());
    if let (Some(rt), Some(gw)) = (route_table, igw) {
        // Once the gateway is attached (EC2 refuses a route to a detached gateway); and the
        // table's association with the subnet.
        let route = g.add(
            resource("route", name("default-route"))
                .with_detail("0.0.0.0/0 via the internet gateway"),
            &[rt.into(), gw.into(), subnet.into()],
            move |cx, i| {
                Box::pin(async move {
                    let gw = i.get(gw);
                    cx.cl
                        .default_route(i.get(rt).as_str(), gw, i.get(subnet).as_str())
                        .await?;
                    Ok(Done::new((), format!("0.0.0.0/0 via {gw}")))
                })
            },
        );
        network.push(route.into());
    }

    // The PKI names the master's private and public addresses, so it waits for the elastic
    // IP; the user-data names the binary's URL, so it waits for the upload.
    let boot = g.add(
        resource("user-data", "master, node")
            .with_detail("the PKI names the elastic IP; as `rktup render aws`"),
        &[eip.into(), binary_url.into()],
        move |cx, i| Box::pin(async move { render(cx, &i.get(eip).1).map(|b| Done::new(b, "")) }),
    );

    // The master's private keys in the bucket, where its user-data says (by hash) to get them.
    let pki_objects = g.add(
        resource(
            "s3-objects",
            format!(
                "{}/{}*",
                aws.staging_bucket(),
                rktup_render::MASTER_PKI_PREFIX
            ),
        )
        .with_detail("the master's private keys, for its instance profile alone"),
        &[bucket.into(), boot.into()],
        move |cx, i| {
            Box::pin(async move {
                let n = cx
                    .cl
                    .stage_master_pki(&cx.cl.aws.staging_bucket(), &i.get(boot).pki)
                    .await?;
                Ok(Done::new((), format!("{n} keys")))
            })
        },
    );

    // The master once everything around it exists (the subnet with public addresses, the
    // VPC's DNS and DHCP options, the default route and the rules: the way out and in), its
    // identity and its keys.
    let mut needs = network.clone();
    needs.extend::<[Dep; 8]>([
        vpc.into(),
        sg_master.into(),
        key_pair.into(),
        master_image.into(),
        eip.into(),
        boot.into(),
        master_profile.into(),
        pki_objects.into(),
    ]);
    let master = g.add(
        resource("instance", name("master")).with_detail(format!(
            "{} {}, {}, {}",
            a.zone,
            a.master_size,
            a.master_image
                .as_deref()
                .unwrap_or("Flatcar stable (looked up)"),
            aws.master_internal_ip()
        )),
        &needs,
        move |cx, i| {
            Box::pin(async move {
                let (eip_alloc, eip) = i.read(eip);
                let mut m = Made {
                    vpc: i.read(vpc),
                    vpc_ours: ours,
                    subnet: i.read(subnet),
                    sg_master: i.read(sg_master),
                    key_name: i.read(key_pair),
                    master_image: i.read(master_image),
                    master_profile: i.read(master_profile),
                    eip_alloc,
                    eip,
                    ..Made::default()
                };
                let (id, made) = cx.cl.master(&m, &i.get(boot).master).await?;
                // Recorded at once: a killed run leaves the master in state.json.
                m.master = id.clone();
                record(cx.cl.aws, &cx.state, &m)?;
                let how = if made { "started" } else { "exists" };
                Ok(Done::new(id.clone(), format!("{id} {how}")))
            })
        },
    );
    // Needs no network: a template launches nothing by itself.
    let template = g.add(
        resource("launch-template", name("minion-template")).with_detail(format!(
            "{}, {}",
            a.node_size,
            a.node_image
                .as_deref()
                .unwrap_or("Flatcar stable (looked up)")
        )),
        &[
            sg_node.into(),
            key_pair.into(),
            node_image.into(),
            boot.into(),
            node_profile.into(),
        ],
        move |cx, i| {
            Box::pin(async move {
                let m = Made {
                    sg_node: i.read(sg_node),
                    key_name: i.read(key_pair),
                    node_image: i.read(node_image),
                    node_profile: i.read(node_profile),
                    ..Made::default()
                };
                Ok(Done::shown(
                    cx.cl.launch_template(&m, &i.get(boot).node).await?,
                ))
            })
        },
    );

    // The master's public address, and the nodes right after the template: they find the
    // master at its fixed private address, so the group waits neither for the master
    // instance nor for its elastic IP.
    let association = g.add(
        resource("elastic-ip-association", name("master-ip")),
        &[master.into(), eip.into()],
        move |cx, i| {
            Box::pin(async move {
                let (eip_alloc, eip) = i.read(eip);
                let m = Made {
                    eip_alloc,
                    eip,
                    master: i.read(master),
                    ..Made::default()
                };
                cx.cl.associate_eip(&m).await?;
                Ok(Done::new((), format!("{} -> {}", m.eip, m.master)))
            })
        },
    );
    let mut needs = network;
    needs.push(template.into());
    let group = g.add(
        resource("auto-scaling-group", name("minion-group"))
            .with_detail(format!("{} nodes", s.num_nodes)),
        &needs,
        move |cx, i| {
            Box::pin(async move {
                let m = Made {
                    subnet: i.read(subnet),
                    ..Made::default()
                };
                let d = cx
                    .cl
                    .auto_scaling_group(&m, i.get(template).as_str())
                    .await?;
                Ok(Done::new((), d))
            })
        },
    );
    let mut last: Vec<Dep> = vec![association.into(), group.into()];

    // kubenet: one route per node, once the group has started them.
    if let (NetworkProvider::Kubenet, Some(rt)) = (s.network, route_table) {
        let routes = g.add(
            resource("route", name("<node>-<pod-cidr>")).with_detail(format!(
                "one per node, pod CIDRs from {}",
                s.cluster_ip_range
            )),
            &[group.into(), rt.into()],
            move |cx, i| {
                Box::pin(async move {
                    let n = cx.cl.pod_routes(i.get(rt).as_str()).await?;
                    Ok(Done::new((), format!("{n} added")))
                })
            },
        );
        last = vec![association.into(), routes.into()];
    }

    // The kubeconfig context once everything exists, then the wait for the API server.
    last.extend::<[Dep; 2]>([eip.into(), boot.into()]);
    let context = g.add(
        resource("kubeconfig-context", aws.context_name())
            .with_detail("https://<elastic IP>, the admin certificate"),
        &last,
        move |cx, i| {
            Box::pin(async move {
                let server = format!("https://{}", i.get(eip).1);
                let explicit = options
                    .kubeconfig
                    .clone()
                    .or_else(|| cx.cl.aws.kubeconfig.clone());
                let Ok(path) = rktup_provider::kubeconfig::kubeconfig_path(explicit.as_deref())
                else {
                    return Ok(Done::new((), "no kubeconfig path: skipped"));
                };
                let pki = &i.get(boot).pki;
                rktup_provider::kubeconfig::merge_context(
                    Some(&path),
                    &cx.cl.aws.context_name(),
                    &server,
                    pki.get("ca.crt"),
                    pki.get("admin.crt"),
                    pki.get("admin.key"),
                )
                .map_err(|e| err(&e))?;
                Ok(Done::new((), format!("{server} in {}", path.display())))
            })
        },
    );
    if !options.no_wait {
        g.add(
            resource("api-server", name("master")).with_detail("port 443 answers; --no-wait skips"),
            &[context.into(), eip.into()],
            move |cx, i| {
                Box::pin(async move {
                    let wait = options.wait.unwrap_or(Duration::from_secs(600));
                    let ip = &i.get(eip).1;
                    cx.cl.aws.wait_api(ip, wait).await?;
                    Ok(Done::new((), format!("https://{ip} answers on 443")))
                })
            },
        );
    }
    let keys = Keys {
        vpc,
        subnet,
        route_table,
        igw,
        sg_master,
        sg_node,
        key_pair,
        eip,
        master_image,
        node_image,
        master,
        master_profile,
        node_profile,
    };
    (g, keys)
}

/// Uploads the binary unless `state.json` says it is staged, then records its URL (the
/// object's own: machines sign their GET with their instance profile's credentials).
async fn stage(cx: &Ctx<'_>) -> Result<Done<String>, Error> {
    let (bucket, b) = (cx.cl.aws.staging_bucket(), &cx.binary);
    let url = cx.cl.aws.staging().url(&b.key);
    let recorded = cx.state.load_recorded().map_err(|e| err(&e))?;
    let detail = match (&recorded.binary_url, &recorded.binary_sha256) {
        (Some(u), Some(rsha)) if *rsha == b.sha && *u == url => "staged before".to_string(),
        _ => {
            cx.cl.stage(&bucket, &b.key, &b.path).await?;
            format!("sha256 {}", &b.sha[..12])
        }
    };
    let mut recorded = cx.state.load_recorded().map_err(|e| err(&e))?;
    recorded.binary_url = Some(url.clone());
    recorded.binary_sha256 = Some(b.sha.clone());
    cx.state.save_recorded(&recorded).map_err(|e| err(&e))?;
    Ok(Done::new(url, detail))
}

/// Both roles' user-data, rendered as `rktup render aws` does, with the PKI kept in the
/// state directory.
fn render(cx: &Ctx<'_>, eip: &str) -> Result<Boot, Error> {
    let aws = cx.cl.aws;
    let s = cx.cl.s;
    let ips: Vec<std::net::IpAddr> = [aws.master_internal_ip().to_string(), eip.to_string()]
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let names = apiserver_names(s, &aws.name("master"), &ips);
    let pki = cx.state.ensure_pki(&s.name, &names).map_err(|e| err(&e))?;
    let templates = match &aws.templates {
        Some(dir) => Templates::with_overrides(dir).map_err(|e| err(&e))?,
        None => Templates::embedded().map_err(|e| err(&e))?,
    };
    let render = |role| {
        render_boot(aws, &templates, role, &pki, PkiOrigin::Saved)
            .map(|b| b.user_data.bytes)
            .map_err(|e| err(&e))
    };
    let master = render(Role::Master)?;
    let node = render(Role::Node)?;
    Ok(Boot { pki, master, node })
}
