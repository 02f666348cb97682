//! `up` as a graph of small actions (kind's create/actions) run by the shared engine
//! (`rktup_provider::engine`): each resource starts as soon as what it needs exists, where
//! kube-up ran them one by one (kubernetes#18699); `up --dry-run` prints the same graph.

use crate::client::{Body, Client, GceError};
use crate::inventory::{discover, Inventory};
use crate::names::{Names, CLUSTER_LABEL};
use crate::Gce;
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::engine::{Dep, Done, Graph, Key};
use rktup_provider::plan::resource;
use rktup_provider::progress::Progress;
use rktup_provider::state::apiserver_names;
use rktup_provider::{CloudError, ClusterProvider, StateDir, UpError, UpOptions};
use rktup_render::{Pki, Role, Templates};
use serde_json::{json, Value};
use std::time::Duration;

/// What `up` did, for tests and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct UpReport {
    pub created: Vec<String>,
    pub master_ip: String,
}

fn labels(names: &Names, role: &str) -> Value {
    json!({ CLUSTER_LABEL: names.cluster, "rktup-role": role })
}

/// gcloud's scope aliases, as kube-up's NODE_SCOPES used them.
pub fn scope_url(s: &str) -> String {
    let full = match s {
        "monitoring" => "monitoring",
        "logging-write" => "logging.write",
        "storage-ro" => "devstorage.read_only",
        "storage-rw" => "devstorage.read_write",
        "storage-full" => "devstorage.full_control",
        "compute-ro" => "compute.readonly",
        "compute-rw" => "compute",
        "cloud-platform" => "cloud-platform",
        other if other.starts_with("https://") => return other.to_string(),
        other => other,
    };
    format!("https://www.googleapis.com/auth/{full}")
}

fn gigabytes(size: &str) -> String {
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        "10".into()
    } else {
        digits
    }
}

/// `family/NAME` selects an image family, as in KUBE_GCE_*_IMAGE.
fn source_image(project: &str, image: &str) -> String {
    match image.strip_prefix("family/") {
        Some(f) => format!("projects/{project}/global/images/family/{f}"),
        None => format!("projects/{project}/global/images/{image}"),
    }
}

pub struct Up<'a> {
    pub gce: &'a Gce,
    pub client: &'a Client,
    pub names: Names,
}

impl Up<'_> {
    fn network_url(&self) -> String {
        format!(
            "projects/{}/global/networks/{}",
            self.names.project, self.names.network
        )
    }

    /// Creates what `f` creates unless it `exists`; the progress line's word.
    async fn create<F>(&self, exists: bool, f: F) -> Result<&'static str, GceError>
    where
        F: std::future::Future<Output = Result<bool, GceError>>,
    {
        if exists {
            return Ok("exists");
        }
        Ok(if f.await? { "created" } else { "exists" })
    }

    async fn network(&self, inv: &Inventory) -> Result<&'static str, GceError> {
        let n = &self.names;
        let body = json!({
            "name": n.network,
            "description": n.description,
            "autoCreateSubnetworks": true,
        });
        let url = self.client.compute("global/networks");
        self.create(
            inv.has("network", &n.network),
            self.client.insert(&url, &body, "create the network"),
        )
        .await
    }

    async fn address(&self, inv: &Inventory) -> Result<String, GceError> {
        let n = &self.names;
        let url = self
            .client
            .compute(&format!("regions/{}/addresses", n.region));
        let body = json!({
            "name": n.master_ip,
            "description": n.description,
            "labels": labels(n, "master"),
        });
        self.create(
            inv.master_ip.is_some(),
            self.client
                .insert(&url, &body, "reserve the master's address"),
        )
        .await?;
        if let Some(ip) = &inv.master_ip {
            return Ok(ip.clone());
        }
        let got = self
            .client
            .get(
                &format!("{url}/{}", n.master_ip),
                "look up the master's address",
            )
            .await?;
        got.and_then(|a| a.get("address").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| GceError::other("reserve the master's address", "no address in answer"))
    }

    /// The staging bucket (kube-up staged its tars the same way).
    async fn bucket(&self, inv: &Inventory) -> Result<&'static str, GceError> {
        let n = &self.names;
        let bucket_url = self.client.storage(&format!("b?project={}", n.project));
        let body = json!({
            "name": n.bucket,
            "labels": { CLUSTER_LABEL: n.cluster },
        });
        self.create(inv.has("bucket", &n.bucket), async {
            match self
                .client
                .call(
                    reqwest::Method::POST,
                    &bucket_url,
                    Some(Body::Json(&body)),
                    "create the staging bucket",
                )
                .await?
            {
                crate::client::Answer::Conflict => Ok(false),
                _ => Ok(true),
            }
        })
        .await
    }

    /// The rktup binary in the bucket; nodes fetch it with their storage-ro token and check
    /// the sha256 `up` records.
    async fn object(
        &self,
        inv: &Inventory,
        object: &str,
        exe: &std::path::Path,
    ) -> Result<&'static str, GceError> {
        let n = &self.names;
        self.create(inv.bucket_objects.iter().any(|o| o == object), async {
            let bytes = tokio::fs::read(&exe)
                .await
                .map_err(|e| GceError::other(format!("read {}", exe.display()), e.to_string()))?;
            let url = format!(
                "{}b/{}/o?uploadType=media&name={object}",
                self.client.endpoints.upload(),
                n.bucket
            );
            self.client
                .call(
                    reqwest::Method::POST,
                    &url,
                    Some(Body::Bytes(&bytes)),
                    "upload the rktup binary",
                )
                .await?;
            Ok(true)
        })
        .await
    }

    /// The master's own service account (`Gce::master_service_account`), made if missing.
    async fn master_service_account(&self, inv: &Inventory) -> Result<&'static str, GceError> {
        let email = self.gce.master_service_account();
        if inv.has("serviceAccount", &email) {
            return Ok("exists");
        }
        let id = email.split('@').next().unwrap_or_default();
        let body = json!({
            "accountId": id,
            "serviceAccount": {
                "displayName": format!("rktup {} master", self.names.cluster),
                "description": self.names.description,
            },
        });
        let made = self
            .client
            .insert(
                &self.client.iam("serviceAccounts"),
                &body,
                "create the master's service account",
            )
            .await?;
        Ok(if made { "created" } else { "exists" })
    }

    /// Lets the master's service account read `object` (an object ACL entry, `READER`).
    async fn grant_master(&self, object: &str) -> Result<(), GceError> {
        let url = self
            .client
            .storage(&format!("b/{}/o/{object}/acl", self.names.bucket));
        let body = json!({
            "entity": format!("user-{}", self.gce.master_service_account()),
            "role": "READER",
        });
        self.client
            .call(
                reqwest::Method::POST,
                &url,
                Some(Body::Json(&body)),
                &format!("let the master's service account read {object}"),
            )
            .await?;
        Ok(())
    }

    /// The master's private keys (`pki-<file>`), uploaded `private` (the owner alone: no
    /// project-viewers entry, so not the nodes' default service account) with one more ACL
    /// entry: the master's service account. The master checks each by the sha256 in its
    /// user-data.
    async fn master_keys(&self, inv: &Inventory, pki: &Pki) -> Result<String, GceError> {
        let objects = rktup_render::master_staged_objects(pki);
        // They are the state directory's PKI, which `up` keeps: once there, they stay.
        if objects
            .iter()
            .all(|(name, _)| inv.bucket_objects.contains(name))
        {
            return Ok("exist".into());
        }
        // Each key's upload and grant are one chain; the chains run side by side (one after
        // another they put 16 round trips on the master's critical path).
        futures::future::try_join_all(objects.iter().map(|(name, content)| async move {
            let url = format!(
                "{}b/{}/o?uploadType=media&name={name}&predefinedAcl=private",
                self.client.endpoints.upload(),
                self.names.bucket
            );
            self.client
                .call(
                    reqwest::Method::POST,
                    &url,
                    Some(Body::Bytes(content.as_bytes())),
                    &format!("upload the master's {name}"),
                )
                .await?;
            self.grant_master(name).await
        }))
        .await?;
        Ok(format!(
            "{} keys, readable by the master alone",
            objects.len()
        ))
    }

    async fn firewall(&self, inv: &Inventory, f: Firewall) -> Result<&'static str, GceError> {
        let Firewall {
            name,
            ranges,
            allowed,
            target,
        } = f;
        let mut body = json!({
            "name": name,
            "description": self.names.description,
            "network": self.network_url(),
            "sourceRanges": ranges,
            "allowed": allowed,
        });
        if let Some(t) = target {
            body["targetTags"] = json!([t]);
        }
        let url = self.client.compute("global/firewalls");
        self.create(
            inv.has("firewall", &name),
            self.client
                .insert(&url, &body, &format!("create firewall {name}")),
        )
        .await
    }

    fn scopes(&self) -> Vec<String> {
        self.gce
            .gce()
            .node_scopes
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| scope_url(s))
            .collect()
    }

    async fn master(
        &self,
        inv: &Inventory,
        ip: &str,
        user_data: &str,
    ) -> Result<&'static str, GceError> {
        let n = &self.names;
        let g = self.gce.gce();
        let body = json!({
            "name": n.master,
            "description": n.description,
            "machineType": format!("zones/{}/machineTypes/{}", n.zone, g.master_size),
            "labels": labels(n, "master"),
            "tags": {"items": [n.master]},
            "canIpForward": true,
            "disks": [{
                "boot": true,
                "autoDelete": true,
                "type": "PERSISTENT",
                "initializeParams": {
                    "sourceImage": source_image(&g.master_project, &g.master_image),
                    "diskSizeGb": gigabytes(&g.master_disk_size),
                    "diskType": format!("zones/{}/diskTypes/{}", n.zone, g.master_disk_type),
                    "labels": labels(n, "master"),
                }
            }],
            "networkInterfaces": [{
                "network": self.network_url(),
                "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT", "natIP": ip}]
            }],
            "metadata": {"items": metadata_items(user_data)},
            // Its own account: the one its private keys in the bucket are readable by.
            "serviceAccounts": [{
                "email": self.gce.master_service_account(),
                "scopes": self.scopes(),
            }],
        });
        let url = self.client.compute(&format!("zones/{}/instances", n.zone));
        self.create(
            inv.has("instance", &n.master),
            self.client.insert(&url, &body, "create the master"),
        )
        .await
    }

    async fn template(&self, inv: &Inventory, user_data: &str) -> Result<&'static str, GceError> {
        let n = &self.names;
        let g = self.gce.gce();
        let body = json!({
            "name": n.template,
            "description": n.description,
            "properties": {
                "machineType": g.node_size,
                "description": n.description,
                "labels": labels(n, "node"),
                "tags": {"items": [n.node_base]},
                "canIpForward": true,
                "disks": [{
                    "boot": true,
                    "autoDelete": true,
                    "type": "PERSISTENT",
                    "initializeParams": {
                        "sourceImage": source_image(&g.node_project, &g.node_image),
                        "diskSizeGb": gigabytes(&g.node_disk_size),
                        "diskType": g.node_disk_type,
                    }
                }],
                "networkInterfaces": [{
                    "network": self.network_url(),
                    "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]
                }],
                "metadata": {"items": metadata_items(user_data)},
                "serviceAccounts": [{"email": "default", "scopes": self.scopes()}],
                "scheduling": {
                    "preemptible": g.preemptible_node,
                    "automaticRestart": !g.preemptible_node,
                    "onHostMaintenance": if g.preemptible_node { "TERMINATE" } else { "MIGRATE" },
                },
            }
        });
        let url = self.client.compute("global/instanceTemplates");
        self.create(
            inv.has("instanceTemplate", &n.template),
            self.client
                .insert(&url, &body, "create the instance template"),
        )
        .await
    }

    async fn group(&self, inv: &Inventory) -> Result<&'static str, GceError> {
        let n = &self.names;
        let size = self.gce.settings().num_nodes;
        let body = json!({
            "name": n.group,
            "description": n.description,
            "baseInstanceName": n.node_base,
            "instanceTemplate": format!("projects/{}/global/instanceTemplates/{}", n.project, n.template),
            "targetSize": size,
        });
        let url = self
            .client
            .compute(&format!("zones/{}/instanceGroupManagers", n.zone));
        self.create(
            inv.has("instanceGroupManager", &n.group),
            self.client.insert(&url, &body, "create the node group"),
        )
        .await
    }

    /// kubenet: one route per node for its pod CIDR, the /24s of CLUSTER_IP_RANGE in node-name
    /// order, as the GCE cloud provider's route controller made them for kube-up.
    async fn routes(&self, inv: &Inventory) -> Result<String, GceError> {
        let n = &self.names;
        let want = self.gce.settings().num_nodes as usize;
        let nodes = self.wait_for_nodes(want).await?;
        let range = self.gce.settings().cluster_ip_range;
        let subnets: Vec<String> = range
            .subnets(24.max(range.prefix_len()))
            .map(|s| s.map(|x| x.to_string()).collect())
            .unwrap_or_default();
        let url = self.client.compute("global/routes");
        let jobs = nodes.iter().enumerate().map(|(i, node)| {
            let name = format!("{node}-pods");
            let cidr = subnets.get(i + 1).cloned().unwrap_or_default();
            let body = json!({
                "name": name,
                "description": n.description,
                "network": self.network_url(),
                "destRange": cidr,
                "nextHopInstance": format!("projects/{}/zones/{}/instances/{node}", n.project, n.zone),
                "priority": 1000,
                "tags": [],
            });
            let url = url.clone();
            async move {
                self.create(inv.has("route", &name), async {
                    self.client.insert(&url, &body, "create a pod route").await
                })
                .await
            }
        });
        let done = futures::future::try_join_all(jobs).await?;
        let made = done.iter().filter(|d| **d == "created").count();
        Ok(format!("{} nodes, {made} added", done.len()))
    }

    async fn wait_for_nodes(&self, want: usize) -> Result<Vec<String>, GceError> {
        let n = &self.names;
        let url = self.client.compute(&format!("zones/{}/instances", n.zone));
        let prefix = format!("{}-", n.node_base);
        let mut delay = self.client.backoff.first;
        for _ in 0..60 {
            let mut nodes: Vec<String> = self
                .client
                .list(&url, "list nodes")
                .await?
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .filter(|name| name.starts_with(&prefix))
                .map(str::to_string)
                .collect();
            nodes.sort();
            if nodes.len() >= want {
                return Ok(nodes);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        Err(GceError::other(
            "wait for the node group's instances",
            format!("fewer than {want} instances named {prefix}*"),
        ))
    }
}

pub fn object_name(sha256: &str) -> String {
    format!("rktup-{}", &sha256[..sha256.len().min(12)])
}

/// One firewall `up` makes.
pub struct Firewall {
    name: String,
    ranges: Vec<String>,
    allowed: Value,
    target: Option<String>,
}

/// kube-up's four: the network's internal and ssh rules, the master's https, the nodes' pods.
fn firewalls(gce: &Gce, n: &Names) -> Vec<Firewall> {
    let s = gce.settings();
    let all = json!([
        {"IPProtocol": "tcp", "ports": ["1-65535"]},
        {"IPProtocol": "udp", "ports": ["1-65535"]},
        {"IPProtocol": "icmp"}
    ]);
    let [internal, ssh] = n.shared_firewalls();
    let fw = |name: String, range: String, allowed: Value, target: Option<&String>| Firewall {
        name,
        ranges: vec![range],
        allowed,
        target: target.cloned(),
    };
    vec![
        fw(internal, "10.0.0.0/8".into(), all, None),
        fw(
            ssh,
            "0.0.0.0/0".into(),
            json!([{"IPProtocol": "tcp", "ports": ["22"]}]),
            None,
        ),
        fw(
            n.master_https.clone(),
            "0.0.0.0/0".into(),
            json!([{"IPProtocol": "tcp", "ports": ["443"]}]),
            Some(&n.master),
        ),
        fw(
            n.minion_all.clone(),
            s.cluster_ip_range.to_string(),
            json!([
                {"IPProtocol": "tcp"}, {"IPProtocol": "udp"}, {"IPProtocol": "icmp"},
                {"IPProtocol": "esp"}, {"IPProtocol": "ah"}, {"IPProtocol": "sctp"}
            ]),
            Some(&n.node_base),
        ),
    ]
}

/// What `up` runs against: the client and what it rendered before any call.
pub struct Ctx<'a> {
    pub up: Up<'a>,
    pub templates: Templates,
    /// The rktup file uploaded for the machines (RKTUP_NODE_BINARY, else the running binary).
    pub binary: std::path::PathBuf,
    pub sha256: String,
}

/// The PKI (for the kubeconfig) and both roles' user-data.
pub struct Rendered {
    pub pki: Pki,
    pub master: String,
    pub node: String,
}

/// Every resource of `up` as the engine's graph (`up --dry-run` prints it): `object` is the
/// staged binary's name, and the key is the master's address.
pub fn graph<'a>(
    gce: &'a Gce,
    options: &'a UpOptions,
    object: String,
) -> (Graph<'a, Ctx<'a>>, Key<String>) {
    let s = gce.settings();
    let g = gce.gce();
    let n = gce.names();
    let mut graph: Graph<'a, Ctx<'a>> = Graph::new();
    let inv = graph.add(
        resource("inventory", &s.name)
            .with_detail("what of the cluster exists: one round of lists"),
        &[],
        |cx: &'a Ctx<'a>, _| {
            Box::pin(async move {
                let inv = discover(cx.up.client, &cx.up.names).await?;
                let found = format!("{} found", inv.items.len());
                Ok(Done::new(inv, found))
            })
        },
    );
    let network = graph.add(
        resource("network", &n.network).with_detail("created if missing"),
        &[inv.into()],
        move |cx, i| {
            Box::pin(async move {
                let word = cx.up.network(i.get(inv)).await?;
                Ok(Done::new((), word))
            })
        },
    );
    let address = graph.add(
        resource("address", &n.master_ip).with_detail(&g.region),
        &[inv.into()],
        move |cx, i| {
            Box::pin(async move {
                let ip = cx.up.address(i.get(inv)).await?;
                Ok(Done::new(ip.clone(), ip))
            })
        },
    );
    let bucket = graph.add(
        resource("bucket", &n.bucket),
        &[inv.into()],
        move |cx, i| Box::pin(async move { Ok(Done::new((), cx.up.bucket(i.get(inv)).await?)) }),
    );
    let account = graph.add(
        resource("serviceAccount", gce.master_service_account())
            .with_detail("the master's identity: its keys in the bucket are readable by it alone"),
        &[inv.into()],
        move |cx: &'a Ctx<'a>, i| {
            Box::pin(async move {
                Ok(Done::new(
                    (),
                    cx.up.master_service_account(i.get(inv)).await?,
                ))
            })
        },
    );
    let staged = graph.add(
        resource("object", format!("{}/{object}", n.bucket))
            .with_detail("the rktup binary, sha256-checked by nodes"),
        &[inv.into(), bucket.into(), account.into()],
        move |cx, i| {
            Box::pin(async move {
                let word = cx.up.object(i.get(inv), &object, &cx.binary).await?;
                if word == "created" {
                    // Nodes read it as project viewers (the default ACL); the master by name.
                    cx.up.grant_master(&object).await?;
                }
                Ok(Done::new((), word))
            })
        },
    );
    let rendered = graph.add(
        resource("user-data", "master, node")
            .with_detail("the PKI names the master's address; as `rktup render gce`"),
        &[address.into(), staged.into()],
        move |cx, i| {
            Box::pin(async move { render(cx, i.get(address).as_str()).map(|r| Done::new(r, "")) })
        },
    );
    let mut rules: Vec<Dep> = Vec::new();
    for f in firewalls(gce, &n) {
        let k = graph.add(
            resource("firewall", &f.name),
            &[inv.into(), network.into()],
            move |cx, i| {
                Box::pin(async move { Ok(Done::new((), cx.up.firewall(i.get(inv), f).await?)) })
            },
        );
        rules.push(k.into());
    }
    // The master's private keys, where its user-data says (by hash) to get them.
    let keys = graph.add(
        resource(
            "objects",
            format!("{}/{}*", n.bucket, rktup_render::MASTER_PKI_PREFIX),
        )
        .with_detail("the master's private keys, object ACL: its service account alone"),
        &[inv.into(), bucket.into(), account.into(), rendered.into()],
        move |cx, i| {
            Box::pin(async move {
                let word = cx.up.master_keys(i.get(inv), &i.get(rendered).pki).await?;
                Ok(Done::new((), word))
            })
        },
    );
    graph.add(
        resource("instance", &n.master).with_detail(format!(
            "{} {}, {}/{}",
            g.zone, g.master_size, g.master_project, g.master_image
        )),
        &[
            inv.into(),
            network.into(),
            address.into(),
            rendered.into(),
            account.into(),
            keys.into(),
        ],
        move |cx, i| {
            Box::pin(async move {
                let (ip, r) = (i.get(address), i.get(rendered));
                Ok(Done::new(
                    (),
                    cx.up.master(i.get(inv), ip, &r.master).await?,
                ))
            })
        },
    );
    let template = graph.add(
        resource("instanceTemplate", &n.template).with_detail(format!(
            "{}, {}/{}",
            g.node_size, g.node_project, g.node_image
        )),
        &[inv.into(), network.into(), rendered.into()],
        move |cx, i| {
            Box::pin(async move {
                let word = cx.up.template(i.get(inv), &i.get(rendered).node).await?;
                Ok(Done::new((), word))
            })
        },
    );
    // Nodes start once the firewalls let them talk; they reach the master by name, so the
    // group does not wait for the master instance.
    let mut needs = vec![inv.into(), template.into()];
    needs.extend(rules);
    let mut last: Dep = graph
        .add(
            resource("instanceGroupManager", &n.group)
                .with_detail(format!("{} nodes in {}", s.num_nodes, g.zone)),
            &needs,
            move |cx, i| Box::pin(async move { Ok(Done::new((), cx.up.group(i.get(inv)).await?)) }),
        )
        .into();
    if s.network == rktup_config::NetworkProvider::Kubenet {
        last = graph
            .add(
                resource("route", format!("{}-<node>-<pod-cidr>", s.name)).with_detail(format!(
                    "one per node, pod CIDRs from {}",
                    s.cluster_ip_range
                )),
                &[inv.into(), last],
                move |cx, i| {
                    Box::pin(async move { Ok(Done::new((), cx.up.routes(i.get(inv)).await?)) })
                },
            )
            .into();
    }
    let context = graph.add(
        resource("kubeconfig-context", format!("rktup-gce-{}", s.name)),
        &[address.into(), rendered.into(), last],
        move |cx, i| {
            Box::pin(async move {
                let path = options.kubeconfig.as_deref();
                crate::kubeconfig::write(
                    cx.up.gce,
                    &i.get(rendered).pki,
                    i.get(address).as_str(),
                    path,
                )?;
                Ok(Done::new((), ""))
            })
        },
    );
    if !options.no_wait {
        graph.add(
            resource("api-server", &n.master)
                .with_detail("https://<address>/healthz answers; --no-wait skips"),
            &[address.into(), rendered.into(), context.into()],
            move |_, i| {
                Box::pin(async move {
                    let wait = options.wait.unwrap_or(Duration::from_secs(600));
                    let ip = i.get(address);
                    wait_for_apiserver(&i.get(rendered).pki, ip, wait).await?;
                    Ok(Done::new((), format!("https://{ip}")))
                })
            },
        );
    }
    (graph, address)
}

/// Records where nodes fetch the binary, then renders: render_boot reads it back.
fn render(cx: &Ctx, ip: &str) -> Result<Rendered, CloudError> {
    let (gce, sha256) = (cx.up.gce, &cx.sha256);
    let settings = gce.settings();
    let state = StateDir::for_cluster(settings);
    let mut recorded = state
        .load_recorded()
        .map_err(|e| GceError::other("read the state directory", e.to_string()))?;
    let planned = gce.planned_binary(sha256);
    recorded.binary_url = Some(settings.binary_url.clone().unwrap_or(planned.url));
    recorded.binary_sha256 = Some(settings.binary_sha256.clone().unwrap_or(sha256.clone()));
    recorded
        .resources
        .insert("master_ip".into(), Value::String(ip.to_string()));
    state
        .save_recorded(&recorded)
        .map_err(|e| GceError::other("record the staged binary", e.to_string()))?;
    let pki = ensure_pki(gce, ip)?;
    let master = user_data(gce, &cx.templates, Role::Master, &pki)?;
    let node = user_data(gce, &cx.templates, Role::Node, &pki)?;
    Ok(Rendered { pki, master, node })
}

/// The whole of `up`.
pub async fn run(gce: &Gce, client: &Client, options: &UpOptions) -> Result<UpReport, UpError> {
    let templates = match &gce.templates {
        Some(dir) => Templates::with_overrides(dir),
        None => Templates::embedded(),
    }
    .map_err(|e| GceError::other("load templates", e.to_string()))?;
    // RKTUP_NODE_BINARY (e.g. the node build) when set, else the running binary.
    let (binary, sha256) = rktup_provider::boot::node_binary(gce.settings())
        .map_err(|e| GceError::other("find the rktup binary for the nodes", e.to_string()))?;

    // The 256 KiB metadata limit is checked before any call (render_boot refuses larger).
    check_sizes(gce, &templates)?;

    let cx = Ctx {
        up: Up {
            gce,
            client,
            names: gce.names(),
        },
        templates,
        binary,
        sha256,
    };
    let (graph, address) = graph(gce, options, object_name(&cx.sha256));
    let ran = graph.run(&cx, &Progress::new(), None).await;
    ran.result?;
    Ok(UpReport {
        created: Vec::new(),
        master_ip: ran.outputs.get(address).cloned().unwrap_or_default(),
    })
}

fn check_sizes(gce: &Gce, templates: &Templates) -> Result<(), GceError> {
    let (pki, origin) = rktup_provider::boot::pki_for_rendering(gce)
        .map_err(|e| GceError::other("render user-data", e.to_string()))?;
    for role in [Role::Master, Role::Node] {
        render_boot(gce, templates, role, &pki, origin)
            .map_err(|e| GceError::other("render user-data", e.to_string()))?;
    }
    Ok(())
}

fn ensure_pki(gce: &Gce, ip: &str) -> Result<Pki, GceError> {
    let settings = gce.settings();
    let ips: Vec<std::net::IpAddr> = ip.parse().ok().into_iter().collect();
    let names = apiserver_names(settings, &gce.names().master, &ips);
    StateDir::for_cluster(settings)
        .ensure_pki(&settings.name, &names)
        .map_err(|e| GceError::other("make the cluster's PKI", e.to_string()))
}

/// Through the one code path `rktup render gce` uses, so the two can never disagree.
fn user_data(gce: &Gce, templates: &Templates, role: Role, pki: &Pki) -> Result<String, GceError> {
    let boot = render_boot(gce, templates, role, pki, PkiOrigin::Saved).map_err(|e| {
        GceError::other(
            format!("render the {} user-data", role.as_str()),
            e.to_string(),
        )
    })?;
    String::from_utf8(boot.user_data.bytes)
        .map_err(|e| GceError::other("encode user-data", e.to_string()))
}

async fn wait_for_apiserver(pki: &Pki, ip: &str, wait: Duration) -> Result<(), GceError> {
    let action = "wait for the API server";
    let ca = reqwest::Certificate::from_pem(pki.get("ca.crt").as_bytes())
        .map_err(|e| GceError::other(action, e.to_string()))?;
    let identity = reqwest::Identity::from_pem(
        format!("{}\n{}", pki.get("admin.crt"), pki.get("admin.key")).as_bytes(),
    )
    .map_err(|e| GceError::other(action, e.to_string()))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(identity)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| GceError::other(action, e.to_string()))?;
    let url = format!("https://{ip}/healthz");
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Err(GceError::other(
        action,
        format!("{url} did not answer within {wait:?} (last: {last}); `rktup gce up --no-wait` skips this"),
    ))
}

/// Instance metadata: the user-data, and `disable-legacy-endpoints=true` as GKE sets it, so the
/// metadata server answers only requests carrying `Metadata-Flavor: Google` on the v1 paths
/// (the v1beta1/0.1 endpoints served anything to any pod, header or not).
fn metadata_items(user_data: &str) -> Value {
    json!([
        {"key": "user-data", "value": user_data},
        {"key": "disable-legacy-endpoints", "value": "true"},
    ])
}
