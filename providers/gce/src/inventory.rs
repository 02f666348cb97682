//! What exists of a cluster, found by kube-up's names and rktup's description/labels alone (no
//! state directory): one round of parallel list calls shared by `up`, `down` and `status`.

use crate::client::{Client, GceError};
use crate::names::Names;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Found {
    pub kind: &'static str,
    pub name: String,
    /// RUNNING, READY, RESERVED, IN_USE, ... or "exists" when the API gives no state.
    pub status: String,
    #[serde(skip)]
    pub url: String,
}

#[derive(Debug, Default, Clone)]
pub struct Inventory {
    pub items: Vec<Found>,
    /// The reserved master address, when it exists.
    pub master_ip: Option<String>,
    pub bucket_objects: Vec<String>,
}

impl Inventory {
    pub fn has(&self, kind: &str, name: &str) -> bool {
        self.items.iter().any(|f| f.kind == kind && f.name == name)
    }

    pub fn of(&self, kind: &str) -> impl Iterator<Item = &Found> + '_ {
        let kind = kind.to_string();
        self.items.iter().filter(move |f| f.kind == kind)
    }
}

fn status_of(v: &Value) -> String {
    v.get("status")
        .and_then(Value::as_str)
        .unwrap_or("exists")
        .to_string()
}

fn name_of(v: &Value) -> String {
    v.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn self_link(v: &Value) -> String {
    v.get("selfLink")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Lists every kind in parallel and keeps what belongs to the cluster.
pub async fn discover(client: &Client, names: &Names) -> Result<Inventory, GceError> {
    let zone = &names.zone;
    let region = &names.region;
    let c = client;
    let u_net = c.compute(&format!("global/networks/{}", names.network));
    let u_fw = c.compute("global/firewalls");
    let u_addr = c.compute(&format!("regions/{region}/addresses"));
    let u_inst = c.compute(&format!("zones/{zone}/instances"));
    let u_tmpl = c.compute("global/instanceTemplates");
    let u_mig = c.compute(&format!("zones/{zone}/instanceGroupManagers"));
    let u_route = c.compute("global/routes");
    let u_disk = c.compute(&format!("zones/{zone}/disks"));
    let u_rule = c.compute(&format!("regions/{region}/forwardingRules"));
    let u_bucket = c.storage(&format!("b/{}", names.bucket));
    let u_account = c.iam(&format!(
        "serviceAccounts/{}",
        names.master_service_account()
    ));
    let (
        (networks, firewalls, addresses, instances, templates, migs, routes, disks, rules, bucket),
        account,
    ) = tokio::try_join!(
        async {
            tokio::try_join!(
                c.get(&u_net, "look up the network"),
                c.list(&u_fw, "list firewalls"),
                c.list(&u_addr, "list addresses"),
                c.list(&u_inst, "list instances"),
                c.list(&u_tmpl, "list instance templates"),
                c.list(&u_mig, "list instance group managers"),
                c.list(&u_route, "list routes"),
                c.list(&u_disk, "list disks"),
                c.list(&u_rule, "list forwarding rules"),
                c.get(&u_bucket, "look up the staging bucket"),
            )
        },
        c.get(&u_account, "look up the master's service account"),
    )?;
    let mut inv = Inventory::default();
    if let Some(n) = networks {
        inv.items.push(Found {
            kind: "network",
            name: name_of(&n),
            status: "exists".into(),
            url: self_link(&n),
        });
    }
    let mut push = |kind: &'static str, items: &[Value], keep: &dyn Fn(&Value) -> bool| {
        for v in items.iter().filter(|v| keep(v)) {
            inv.items.push(Found {
                kind,
                name: name_of(v),
                status: status_of(v),
                url: self_link(v),
            });
        }
    };
    let ours = |v: &Value| names.owns(&name_of(v));
    let shared_fw = names.shared_firewalls();
    push("firewall", &firewalls, &|v: &Value| {
        ours(v) || (shared_fw.contains(&name_of(v)) && names.described(v))
    });
    push("address", &addresses, &ours);
    push("instance", &instances, &ours);
    push("instanceTemplate", &templates, &ours);
    push("instanceGroupManager", &migs, &ours);
    push("route", &routes, &|v: &Value| ours(v) && names.described(v));
    // Boot disks go with their instances; these are the leftovers (kubernetes#16164).
    push("disk", &disks, &|v: &Value| {
        ours(v)
            && v.get("users")
                .and_then(Value::as_array)
                .is_none_or(|u| u.is_empty())
    });
    push("forwardingRule", &rules, &ours);
    inv.master_ip = addresses
        .iter()
        .find(|a| name_of(a) == names.master_ip)
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .map(str::to_string);
    if account.is_some() {
        inv.items.push(Found {
            kind: "serviceAccount",
            name: names.master_service_account(),
            status: "exists".into(),
            url: u_account.clone(),
        });
    }
    if let Some(b) = bucket {
        inv.items.push(Found {
            kind: "bucket",
            name: name_of(&b),
            status: "exists".into(),
            url: String::new(),
        });
        let objects = client
            .list(
                &client.storage(&format!("b/{}/o", names.bucket)),
                "list staged objects",
            )
            .await?;
        for o in objects {
            let n = name_of(&o);
            inv.items.push(Found {
                kind: "object",
                name: format!("{}/{n}", names.bucket),
                status: "exists".into(),
                url: String::new(),
            });
            inv.bucket_objects.push(n);
        }
    }
    Ok(inv)
}
