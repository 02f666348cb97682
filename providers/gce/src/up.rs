//! `up` as an ordered list of small actions (kind's create/actions), each with its own status
//! line; the actions inside one phase don't depend on each other and run in parallel, where
//! kube-up ran them one by one (kubernetes#18699).

use crate::client::{Body, Client, GceError};
use crate::inventory::{discover, Inventory};
use crate::names::{Names, CLUSTER_LABEL};
use crate::Gce;
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::progress::Progress;
use rktup_provider::state::{apiserver_names, sha256_file};
use rktup_provider::{ClusterProvider, StateDir, UpOptions};
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
    pub names: &'a Names,
    pub progress: &'a Progress,
}

impl Up<'_> {
    fn network_url(&self) -> String {
        format!(
            "projects/{}/global/networks/{}",
            self.names.project, self.names.network
        )
    }

    /// Runs one action with its status line; `Ok(None)` = it existed already.
    async fn action<F>(&self, label: String, exists: bool, f: F) -> Result<(), GceError>
    where
        F: std::future::Future<Output = Result<bool, GceError>>,
    {
        let step = self.progress.start(label);
        if exists {
            step.end::<(), GceError>(&Ok(()), "exists");
            return Ok(());
        }
        let r = f.await;
        let detail = match &r {
            Ok(true) => "created",
            Ok(false) => "exists",
            Err(_) => "",
        };
        step.end(&r, detail);
        r.map(|_| ())
    }

    async fn network(&self, inv: &Inventory) -> Result<(), GceError> {
        let n = self.names;
        let body = json!({
            "name": n.network,
            "description": n.description,
            "autoCreateSubnetworks": true,
        });
        let url = self.client.compute("global/networks");
        self.action(
            format!("network {}", n.network),
            inv.has("network", &n.network),
            self.client.insert(&url, &body, "create the network"),
        )
        .await
    }

    async fn address(&self, inv: &Inventory) -> Result<String, GceError> {
        let n = self.names;
        let url = self
            .client
            .compute(&format!("regions/{}/addresses", n.region));
        let body = json!({
            "name": n.master_ip,
            "description": n.description,
            "labels": labels(n, "master"),
        });
        self.action(
            format!("address {}", n.master_ip),
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

    /// The staging bucket and the rktup binary in it (kube-up staged its tars the same way);
    /// nodes fetch it with their storage-ro token and check the sha256 `up` records.
    async fn stage_binary(&self, inv: &Inventory, sha256: &str) -> Result<(), GceError> {
        let n = self.names;
        let exe = std::env::current_exe()
            .map_err(|e| GceError::other("find the running rktup binary", e.to_string()))?;
        let object = object_name(sha256);
        let bucket_url = self.client.storage(&format!("b?project={}", n.project));
        let body = json!({
            "name": n.bucket,
            "labels": { CLUSTER_LABEL: n.cluster },
        });
        let has_bucket = inv.has("bucket", &n.bucket);
        self.action(format!("bucket {}", n.bucket), has_bucket, async {
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
        .await?;
        let has_object = inv.bucket_objects.contains(&object);
        self.action(format!("object {}/{object}", n.bucket), has_object, async {
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

    async fn firewall(
        &self,
        inv: &Inventory,
        name: String,
        ranges: Vec<String>,
        allowed: Value,
        target: Option<String>,
    ) -> Result<(), GceError> {
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
        self.action(
            format!("firewall {name}"),
            inv.has("firewall", &name),
            self.client
                .insert(&url, &body, &format!("create firewall {name}")),
        )
        .await
    }

    async fn firewalls(&self, inv: &Inventory) -> Result<(), GceError> {
        let n = self.names;
        let s = self.gce.settings();
        let all = json!([
            {"IPProtocol": "tcp", "ports": ["1-65535"]},
            {"IPProtocol": "udp", "ports": ["1-65535"]},
            {"IPProtocol": "icmp"}
        ]);
        let [internal, ssh] = n.shared_firewalls();
        tokio::try_join!(
            self.firewall(inv, internal, vec!["10.0.0.0/8".into()], all, None),
            self.firewall(
                inv,
                ssh,
                vec!["0.0.0.0/0".into()],
                json!([{"IPProtocol": "tcp", "ports": ["22"]}]),
                None
            ),
            self.firewall(
                inv,
                n.master_https.clone(),
                vec!["0.0.0.0/0".into()],
                json!([{"IPProtocol": "tcp", "ports": ["443"]}]),
                Some(n.master.clone())
            ),
            self.firewall(
                inv,
                n.minion_all.clone(),
                vec![s.cluster_ip_range.to_string()],
                json!([
                    {"IPProtocol": "tcp"}, {"IPProtocol": "udp"}, {"IPProtocol": "icmp"},
                    {"IPProtocol": "esp"}, {"IPProtocol": "ah"}, {"IPProtocol": "sctp"}
                ]),
                Some(n.node_base.clone())
            ),
        )?;
        Ok(())
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

    async fn master(&self, inv: &Inventory, ip: &str, user_data: &str) -> Result<(), GceError> {
        let n = self.names;
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
            "metadata": {"items": [{"key": "user-data", "value": user_data}]},
            "serviceAccounts": [{"email": "default", "scopes": self.scopes()}],
        });
        let url = self.client.compute(&format!("zones/{}/instances", n.zone));
        self.action(
            format!("instance {}", n.master),
            inv.has("instance", &n.master),
            self.client.insert(&url, &body, "create the master"),
        )
        .await
    }

    async fn template(&self, inv: &Inventory, user_data: &str) -> Result<(), GceError> {
        let n = self.names;
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
                "metadata": {"items": [{"key": "user-data", "value": user_data}]},
                "serviceAccounts": [{"email": "default", "scopes": self.scopes()}],
                "scheduling": {
                    "preemptible": g.preemptible_node,
                    "automaticRestart": !g.preemptible_node,
                    "onHostMaintenance": if g.preemptible_node { "TERMINATE" } else { "MIGRATE" },
                },
            }
        });
        let url = self.client.compute("global/instanceTemplates");
        self.action(
            format!("instanceTemplate {}", n.template),
            inv.has("instanceTemplate", &n.template),
            self.client
                .insert(&url, &body, "create the instance template"),
        )
        .await
    }

    async fn group(&self, inv: &Inventory) -> Result<(), GceError> {
        let n = self.names;
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
        self.action(
            format!("instanceGroupManager {} ({size} nodes)", n.group),
            inv.has("instanceGroupManager", &n.group),
            self.client.insert(&url, &body, "create the node group"),
        )
        .await
    }

    /// kubenet: one route per node for its pod CIDR, the /24s of CLUSTER_IP_RANGE in node-name
    /// order, as the GCE cloud provider's route controller made them for kube-up.
    async fn routes(&self, inv: &Inventory) -> Result<(), GceError> {
        let n = self.names;
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
                self.action(
                    format!("route {name} ({cidr})"),
                    inv.has("route", &name),
                    async { self.client.insert(&url, &body, "create a pod route").await },
                )
                .await
            }
        });
        futures::future::try_join_all(jobs).await?;
        Ok(())
    }

    async fn wait_for_nodes(&self, want: usize) -> Result<Vec<String>, GceError> {
        let n = self.names;
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

/// The whole of `up`.
pub async fn run(gce: &Gce, client: &Client, options: &UpOptions) -> Result<UpReport, GceError> {
    let names = gce.names();
    let settings = gce.settings();
    let state = StateDir::for_cluster(settings);
    let templates = match &gce.templates {
        Some(dir) => Templates::with_overrides(dir),
        None => Templates::embedded(),
    }
    .map_err(|e| GceError::other("load templates", e.to_string()))?;
    let exe = std::env::current_exe()
        .map_err(|e| GceError::other("find the running rktup binary", e.to_string()))?;
    let sha256 = sha256_file(&exe)
        .map_err(|e| GceError::other(format!("hash {}", exe.display()), e.to_string()))?;
    let progress = Progress::new();
    let up = Up {
        gce,
        client,
        names: &names,
        progress: &progress,
    };

    // The 256 KiB metadata limit is checked before any call (render_boot refuses larger).
    check_sizes(gce, &templates)?;

    let step = progress.start("look up existing resources");
    let inv = discover(client, &names).await;
    step.end(&inv, "");
    let inv = inv?;

    // Phase 1: network, address and the staged binary are independent.
    let (_, ip, _) = tokio::try_join!(
        up.network(&inv),
        up.address(&inv),
        up.stage_binary(&inv, &sha256)
    )?;

    // Record where nodes fetch the binary before rendering: render_boot reads it back.
    let mut recorded = state
        .load_recorded()
        .map_err(|e| GceError::other("read the state directory", e.to_string()))?;
    let planned = gce.planned_binary(&sha256);
    recorded.binary_url = Some(settings.binary_url.clone().unwrap_or(planned.url));
    recorded.binary_sha256 = Some(settings.binary_sha256.clone().unwrap_or(sha256.clone()));
    recorded
        .resources
        .insert("master_ip".into(), Value::String(ip.clone()));
    state
        .save_recorded(&recorded)
        .map_err(|e| GceError::other("record the staged binary", e.to_string()))?;
    let pki = ensure_pki(gce, &ip)?;
    let master_ud = user_data(gce, &templates, Role::Master, &pki)?;
    let node_ud = user_data(gce, &templates, Role::Node, &pki)?;

    // Phase 2: firewalls, master and template only need the network.
    tokio::try_join!(
        up.firewalls(&inv),
        up.master(&inv, &ip, &master_ud),
        up.template(&inv, &node_ud)
    )?;
    // Phase 3 and 4: the group needs the template; routes need the group's instances.
    up.group(&inv).await?;
    if settings.network == rktup_config::NetworkProvider::Kubenet {
        up.routes(&inv).await?;
    }

    let step = progress.start(format!("kubeconfig context rktup-gce-{}", names.cluster));
    let r = crate::kubeconfig::write(gce, &pki, &ip, options.kubeconfig.as_deref());
    step.end(&r, "");
    r?;

    if !options.no_wait {
        let wait = options.wait.unwrap_or(Duration::from_secs(600));
        let step = progress.start(format!("API server at https://{ip}"));
        let r = wait_for_apiserver(&pki, &ip, wait).await;
        step.end(&r, "");
        r?;
    }
    Ok(UpReport {
        created: Vec::new(),
        master_ip: ip,
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
