//! The order of `up`: every resource starts as soon as the resources it needs exist, not when
//! a whole step of the plan is done.
//!
//! Each resource is a memoised async getter over a [`OnceCell`]: the first resource that needs
//! it starts it, the others wait for the same result, so it runs (and prints its progress line)
//! once. What a resource waits for is written in its getter, with the reason where it is not
//! just "its id goes into the call". The plan's steps (what `up --dry-run` prints) remain the
//! grouping: dependencies only point to earlier steps, and `stop_after_step(n)` runs the
//! resources of steps 1..=n to completion, then stops.

use crate::cloud::Error;
use crate::up::{Cluster, Made};
use crate::Aws;
use rktup_config::NetworkProvider;
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::state::apiserver_names;
use rktup_provider::StateDir;
use rktup_render::{Pki, Role, Templates};
use std::future::Future;
use std::path::PathBuf;
use tokio::sync::OnceCell;

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

pub struct Graph<'a> {
    pub aws: &'a Aws,
    pub cl: Cluster<'a>,
    pub state: StateDir,
    pub binary: Binary,
    vpc: OnceCell<(String, bool)>,
    vpc_dns: OnceCell<()>,
    bucket: OnceCell<()>,
    key_pair: OnceCell<String>,
    eip: OnceCell<(String, String)>,
    master_image: OnceCell<String>,
    node_image: OnceCell<String>,
    subnet: OnceCell<String>,
    dhcp_options: OnceCell<Option<String>>,
    igw: OnceCell<Option<String>>,
    route_table: OnceCell<Option<String>>,
    sg_master: OnceCell<String>,
    sg_node: OnceCell<String>,
    binary_url: OnceCell<String>,
    rules: OnceCell<()>,
    default_route: OnceCell<()>,
    boot: OnceCell<Boot>,
    master: OnceCell<String>,
    template: OnceCell<String>,
    eip_association: OnceCell<()>,
    auto_scaling_group: OnceCell<()>,
    pod_routes: OnceCell<()>,
}

fn err(e: &dyn std::fmt::Display) -> Error {
    Error::new(e.to_string())
}

/// Runs `f` if `on` (its step is within the run), else nothing.
async fn when<T>(on: bool, f: impl Future<Output = Result<T, Error>>) -> Result<(), Error> {
    if on {
        f.await?;
    }
    Ok(())
}

impl<'a> Graph<'a> {
    pub fn new(aws: &'a Aws, cl: Cluster<'a>, state: StateDir, binary: Binary) -> Graph<'a> {
        Graph {
            aws,
            cl,
            state,
            binary,
            vpc: OnceCell::new(),
            vpc_dns: OnceCell::new(),
            bucket: OnceCell::new(),
            key_pair: OnceCell::new(),
            eip: OnceCell::new(),
            master_image: OnceCell::new(),
            node_image: OnceCell::new(),
            subnet: OnceCell::new(),
            dhcp_options: OnceCell::new(),
            igw: OnceCell::new(),
            route_table: OnceCell::new(),
            sg_master: OnceCell::new(),
            sg_node: OnceCell::new(),
            binary_url: OnceCell::new(),
            rules: OnceCell::new(),
            default_route: OnceCell::new(),
            boot: OnceCell::new(),
            master: OnceCell::new(),
            template: OnceCell::new(),
            eip_association: OnceCell::new(),
            auto_scaling_group: OnceCell::new(),
            pod_routes: OnceCell::new(),
        }
    }

    /// Every resource of the plan's steps 1..=`through`, each as soon as its inputs exist.
    pub async fn run(&self, through: usize) -> Result<(), Error> {
        let step = |n: usize| n <= through;
        tokio::try_join!(
            // 1
            when(step(1), self.vpc_dns()),
            when(step(1), self.bucket()),
            when(step(1), self.key_pair()),
            when(step(1), self.eip()),
            when(step(1), self.master_image()),
            when(step(1), self.node_image()),
            // 2
            when(step(2), self.subnet()),
            when(step(2), self.dhcp_options()),
            when(step(2), self.igw()),
            when(step(2), self.route_table()),
            when(step(2), self.sg_master()),
            when(step(2), self.sg_node()),
            when(step(2), self.binary_url()),
            // 3
            when(step(3), self.rules()),
            when(step(3), self.default_route()),
            // 4
            when(step(4), self.master()),
            when(step(4), self.template()),
            // 5
            when(step(5), self.eip_association()),
            when(step(5), self.auto_scaling_group()),
            // 6
            when(step(6), self.pod_routes()),
        )?;
        Ok(())
    }

    /// What exists so far, by role (empty where not made yet).
    pub fn made(&self) -> Made {
        let s = |c: &OnceCell<String>| c.get().cloned().unwrap_or_default();
        let o = |c: &OnceCell<Option<String>>| c.get().cloned().flatten();
        let (vpc, vpc_ours) = self.vpc.get().cloned().unwrap_or_default();
        let (eip_alloc, eip) = self.eip.get().cloned().unwrap_or_default();
        Made {
            vpc,
            vpc_ours,
            subnet: s(&self.subnet),
            route_table: o(&self.route_table),
            igw: o(&self.igw),
            sg_master: s(&self.sg_master),
            sg_node: s(&self.sg_node),
            key_name: s(&self.key_pair),
            eip_alloc,
            eip,
            master_image: s(&self.master_image),
            node_image: s(&self.node_image),
            master: s(&self.master),
        }
    }

    /// Records `made` in `state.json` (the binary's URL is set by `binary_url`).
    pub fn record(&self, made: &Made) -> Result<(), Error> {
        let mut recorded = self.state.load_recorded().map_err(|e| err(&e))?;
        self.aws.record(&mut recorded, made);
        self.state.save_recorded(&recorded).map_err(|e| err(&e))
    }

    pub fn boot_rendered(&self) -> Option<&Boot> {
        self.boot.get()
    }

    fn name(&self, suffix: &str) -> String {
        self.aws.name(suffix)
    }

    // Step 1: what needs nothing else.

    pub async fn vpc(&self) -> Result<(String, bool), Error> {
        let v = self.vpc.get_or_try_init(|| {
            Box::pin(self.cl.line("vpc", self.name("vpc"), async {
                let (id, ours) = self.cl.vpc().await?;
                let how = if ours { "" } else { " (VPC_ID, kept by down)" };
                Ok(((id.clone(), ours), format!("{id}{how}")))
            }))
        });
        Ok(v.await?.clone())
    }

    /// DNS support and hostnames in our VPC (never in VPC_ID's). Only instances care, so only
    /// they wait for it; what else goes into the VPC needs just its id.
    pub async fn vpc_dns(&self) -> Result<(), Error> {
        let (vpc, ours) = self.vpc().await?;
        if !ours {
            return Ok(());
        }
        self.vpc_dns
            .get_or_try_init(|| {
                Box::pin(self.cl.line("vpc-dns", self.name("vpc"), async {
                    self.cl.vpc_dns(&vpc).await?;
                    Ok(((), "support + hostnames".to_string()))
                }))
            })
            .await?;
        Ok(())
    }

    pub async fn bucket(&self) -> Result<(), Error> {
        let bucket = self.aws.staging_bucket();
        self.bucket
            .get_or_try_init(|| {
                Box::pin(self.cl.line("s3-bucket", &bucket, async {
                    let made = self.cl.bucket(&bucket).await?;
                    Ok(((), if made { "created" } else { "exists" }.to_string()))
                }))
            })
            .await?;
        Ok(())
    }

    pub async fn key_pair(&self) -> Result<String, Error> {
        let k = self.key_pair.get_or_try_init(|| {
            Box::pin(self.cl.line("key-pair", self.name("key"), async {
                let k = self.cl.key_pair().await?;
                Ok((k.clone(), k))
            }))
        });
        Ok(k.await?.clone())
    }

    /// (allocation id, public IP).
    pub async fn eip(&self) -> Result<(String, String), Error> {
        let e = self.eip.get_or_try_init(|| {
            Box::pin(self.cl.line("elastic-ip", self.name("master-ip"), async {
                let (id, ip) = self.cl.elastic_ip().await?;
                Ok(((id.clone(), ip.clone()), format!("{ip} ({id})")))
            }))
        });
        Ok(e.await?.clone())
    }

    pub async fn master_image(&self) -> Result<String, Error> {
        let given = &self.cl.a.master_image;
        let i = self
            .master_image
            .get_or_try_init(|| Box::pin(self.image_line("master", given)));
        Ok(i.await?.clone())
    }

    pub async fn node_image(&self) -> Result<String, Error> {
        let given = &self.cl.a.node_image;
        let i = self
            .node_image
            .get_or_try_init(|| Box::pin(self.image_line("node", given)));
        Ok(i.await?.clone())
    }

    async fn image_line(&self, role: &str, given: &Option<String>) -> Result<String, Error> {
        self.cl
            .line("image", role, async {
                let i = self.cl.image(given).await?;
                Ok((i.clone(), i))
            })
            .await
    }

    // Step 2: inside the VPC, and the binary in the bucket.

    pub async fn subnet(&self) -> Result<String, Error> {
        let s = self.subnet.get_or_try_init(|| {
            Box::pin(async {
                let (vpc, _) = self.vpc().await?;
                self.cl
                    .line("subnet", self.name("subnet"), async {
                        let id = self.cl.subnet(&vpc).await?;
                        Ok((id.clone(), id))
                    })
                    .await
            })
        });
        Ok(s.await?.clone())
    }

    /// Only in our own VPC (as the internet gateway and route table).
    pub async fn dhcp_options(&self) -> Result<Option<String>, Error> {
        let d = self.dhcp_options.get_or_try_init(|| {
            Box::pin(async {
                let (vpc, ours) = self.vpc().await?;
                if !ours {
                    return Ok(None);
                }
                self.cl
                    .line("dhcp-options", self.name("dhcp-options"), async {
                        let id = self.cl.dhcp_options(&vpc).await?;
                        Ok((Some(id.clone()), id))
                    })
                    .await
            })
        });
        Ok(d.await?.clone())
    }

    /// Created and attached to our VPC.
    pub async fn igw(&self) -> Result<Option<String>, Error> {
        let g = self.igw.get_or_try_init(|| {
            Box::pin(async {
                let (vpc, ours) = self.vpc().await?;
                if !ours {
                    return Ok(None);
                }
                self.cl
                    .line("internet-gateway", self.name("igw"), async {
                        let id = self.cl.internet_gateway(&vpc).await?;
                        Ok((Some(id.clone()), id))
                    })
                    .await
            })
        });
        Ok(g.await?.clone())
    }

    pub async fn route_table(&self) -> Result<Option<String>, Error> {
        let t = self.route_table.get_or_try_init(|| {
            Box::pin(async {
                let (vpc, ours) = self.vpc().await?;
                if !ours {
                    return Ok(None);
                }
                self.cl
                    .line("route-table", self.name("route-table"), async {
                        let id = self.cl.route_table(&vpc).await?;
                        Ok((Some(id.clone()), id))
                    })
                    .await
            })
        });
        Ok(t.await?.clone())
    }

    pub async fn sg_master(&self) -> Result<String, Error> {
        let g = self
            .sg_master
            .get_or_try_init(|| Box::pin(self.security_group("sg-master", "kubernetes-master")));
        Ok(g.await?.clone())
    }

    pub async fn sg_node(&self) -> Result<String, Error> {
        let g = self
            .sg_node
            .get_or_try_init(|| Box::pin(self.security_group("sg-node", "kubernetes-minion")));
        Ok(g.await?.clone())
    }

    async fn security_group(&self, role: &str, prefix: &str) -> Result<String, Error> {
        let (vpc, _) = self.vpc().await?;
        let name = format!("{prefix}-{}", self.cl.s.name);
        self.cl
            .line("security-group", &name, async {
                let id = self.cl.security_group(&vpc, role, &name).await?;
                Ok((id.clone(), id))
            })
            .await
    }

    /// The binary's pre-signed URL, recorded in `state.json` before anything is rendered:
    /// `render_boot` reads it from there, as `rktup render aws` does.
    pub async fn binary_url(&self) -> Result<String, Error> {
        let u = self.binary_url.get_or_try_init(|| {
            Box::pin(async {
                self.bucket().await?;
                let (bucket, b) = (self.aws.staging_bucket(), &self.binary);
                let url = self
                    .cl
                    .line("s3-object", format!("{bucket}/{}", b.key), async {
                        let recorded = self.state.load_recorded().map_err(|e| err(&e))?;
                        if let (Some(url), Some(rsha)) =
                            (&recorded.binary_url, &recorded.binary_sha256)
                        {
                            if *rsha == b.sha {
                                return Ok((url.clone(), "staged before".to_string()));
                            }
                        }
                        let url = self.cl.stage(&bucket, &b.key, &b.path).await?;
                        Ok((url, format!("sha256 {}", &b.sha[..12])))
                    })
                    .await?;
                let mut recorded = self.state.load_recorded().map_err(|e| err(&e))?;
                recorded.binary_url = Some(url.clone());
                recorded.binary_sha256 = Some(b.sha.clone());
                self.aws.record(&mut recorded, &self.made());
                self.state.save_recorded(&recorded).map_err(|e| err(&e))?;
                Ok::<_, Error>(url)
            })
        });
        Ok(u.await?.clone())
    }

    // Step 3: rules and routes between what step 2 made.

    pub async fn rules(&self) -> Result<(), Error> {
        self.rules
            .get_or_try_init(|| {
                Box::pin(async {
                    tokio::try_join!(self.sg_master(), self.sg_node())?;
                    self.cl
                        .line("security-group-rules", self.name("rules"), async {
                            let n = self.cl.security_rules(&self.made()).await?;
                            Ok(((), format!("{n} added")))
                        })
                        .await
                })
            })
            .await?;
        Ok(())
    }

    /// 0.0.0.0/0 via the internet gateway once it is attached (EC2 refuses a route to a
    /// detached gateway), and the table associated with the subnet.
    pub async fn default_route(&self) -> Result<(), Error> {
        self.default_route
            .get_or_try_init(|| {
                Box::pin(async {
                    let (rt, igw, subnet) =
                        tokio::try_join!(self.route_table(), self.igw(), self.subnet())?;
                    let (Some(rt), Some(igw)) = (rt, igw) else {
                        return Ok(());
                    };
                    self.cl
                        .line("route", self.name("default-route"), async {
                            self.cl.default_route(&rt, &igw, &subnet).await?;
                            Ok(((), format!("0.0.0.0/0 via {igw}")))
                        })
                        .await
                })
            })
            .await?;
        Ok(())
    }

    /// What an instance needs around it before it boots, as when steps 1–3 ran before any
    /// instance: the subnet with public addresses, the VPC's DNS and DHCP options (its
    /// hostname), the default route and the rules (the way out and in).
    async fn network(&self) -> Result<(), Error> {
        tokio::try_join!(
            self.vpc_dns(),
            self.subnet(),
            self.dhcp_options(),
            self.default_route(),
            self.rules(),
        )?;
        Ok(())
    }

    // Step 4: the master and the nodes' template.

    /// The PKI names the master's private and public addresses, so it waits for the elastic
    /// IP; the user-data names the binary's URL, so it waits for the upload. Rendered as
    /// `rktup render aws` does.
    pub async fn boot(&self) -> Result<&Boot, Error> {
        self.boot
            .get_or_try_init(|| {
                Box::pin(async {
                    let ((_, eip), _) = tokio::try_join!(self.eip(), self.binary_url())?;
                    let aws = self.aws;
                    let s = self.cl.s;
                    let ips: Vec<std::net::IpAddr> = [aws.master_internal_ip().to_string(), eip]
                        .iter()
                        .filter_map(|ip| ip.parse().ok())
                        .collect();
                    let names = apiserver_names(s, &aws.name("master"), &ips);
                    let pki = self
                        .state
                        .ensure_pki(&s.name, &names)
                        .map_err(|e| err(&e))?;
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
                })
            })
            .await
    }

    pub async fn master(&self) -> Result<String, Error> {
        let m = self.master.get_or_try_init(|| {
            Box::pin(async {
                tokio::try_join!(
                    self.network(),
                    self.sg_master(),
                    self.key_pair(),
                    self.master_image(),
                    self.boot(),
                )?;
                let boot = self.boot().await?;
                let id = self
                    .cl
                    .line("instance", self.name("master"), async {
                        let (id, made) = self.cl.master(&self.made(), &boot.master).await?;
                        let how = if made { "started" } else { "exists" };
                        Ok((id.clone(), format!("{id} {how}")))
                    })
                    .await?;
                // Recorded at once, as when step 4 ended.
                let mut made = self.made();
                made.master = id.clone();
                self.record(&made)?;
                Ok::<_, Error>(id)
            })
        });
        Ok(m.await?.clone())
    }

    /// Needs no network: a template launches nothing by itself.
    pub async fn template(&self) -> Result<String, Error> {
        let t = self.template.get_or_try_init(|| {
            Box::pin(async {
                tokio::try_join!(
                    self.sg_node(),
                    self.key_pair(),
                    self.node_image(),
                    self.boot()
                )?;
                let boot = self.boot().await?;
                self.cl
                    .line("launch-template", self.name("minion-template"), async {
                        let name = self.cl.launch_template(&self.made(), &boot.node).await?;
                        Ok((name.clone(), name))
                    })
                    .await
            })
        });
        Ok(t.await?.clone())
    }

    // Step 5: the master's public address and the nodes.

    pub async fn eip_association(&self) -> Result<(), Error> {
        self.eip_association
            .get_or_try_init(|| {
                Box::pin(async {
                    tokio::try_join!(self.master(), self.eip())?;
                    let m = self.made();
                    self.cl
                        .line("elastic-ip-association", self.name("master-ip"), async {
                            self.cl.associate_eip(&m).await?;
                            Ok(((), format!("{} -> {}", m.eip, m.master)))
                        })
                        .await
                })
            })
            .await?;
        Ok(())
    }

    /// Right after the template: nodes find the master at its fixed private address, so the
    /// group does not wait for the master instance or its elastic IP.
    pub async fn auto_scaling_group(&self) -> Result<(), Error> {
        self.auto_scaling_group
            .get_or_try_init(|| {
                Box::pin(async {
                    let (template, _) = tokio::try_join!(self.template(), self.network())?;
                    self.cl
                        .line("auto-scaling-group", self.name("minion-group"), async {
                            let d = self.cl.auto_scaling_group(&self.made(), &template).await?;
                            Ok(((), d))
                        })
                        .await
                })
            })
            .await?;
        Ok(())
    }

    // Step 6: pod routes (kubenet).

    /// One route per node, once the group has started them.
    pub async fn pod_routes(&self) -> Result<(), Error> {
        if self.cl.s.network != NetworkProvider::Kubenet {
            return Ok(());
        }
        self.pod_routes
            .get_or_try_init(|| {
                Box::pin(async {
                    let (_, rt) = tokio::try_join!(self.auto_scaling_group(), self.route_table())?;
                    let Some(rt) = rt else {
                        return Ok(());
                    };
                    self.cl
                        .line("route", self.name("<node>-<pod-cidr>"), async {
                            let n = self.cl.pod_routes(&rt).await?;
                            Ok(((), format!("{n} added")))
                        })
                        .await
                })
            })
            .await?;
        Ok(())
    }
}
