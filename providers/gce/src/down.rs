//! `down`: from names and labels alone, in the reverse of `up`'s order, including what kube-down
//! leaked (routes, leftover disks, addresses, forwarding rules: kubernetes#20537, #16164).
//! Every failure is collected and listed; one failure doesn't stop the rest.

use crate::client::{Client, GceError};
use crate::inventory::{discover, Found, Inventory};
use crate::names::Names;
use crate::Gce;
use futures::future::join_all;
use rktup_provider::progress::Progress;

#[derive(Debug, Default)]
pub struct DownReport {
    pub deleted: Vec<String>,
    pub failed: Vec<String>,
}

struct Down<'a> {
    client: &'a Client,
    progress: &'a Progress,
    names: &'a Names,
}

impl Down<'_> {
    fn url(&self, f: &Found) -> String {
        match f.kind {
            "bucket" => self.client.storage(&format!("b/{}", f.name)),
            "serviceAccount" => self.client.iam(&format!("serviceAccounts/{}", f.name)),
            "object" => {
                let obj = f.name.split_once('/').map(|(_, o)| o).unwrap_or(&f.name);
                self.client
                    .storage(&format!("b/{}/o/{obj}", self.names.bucket))
            }
            // selfLinks name the host GCE thinks it is; deletes go where the endpoint override says.
            _ if !f.url.is_empty() => self.client.rebase(&f.url),
            "network" => self.client.compute(&format!("global/networks/{}", f.name)),
            _ => String::new(),
        }
    }

    async fn delete_all(&self, items: Vec<&Found>, report: &mut DownReport) {
        let jobs = items.into_iter().map(|f| async move {
            let label = format!("delete {} {}", f.kind, f.name);
            let step = self.progress.start(label.clone());
            let url = self.url(f);
            let r = if url.is_empty() {
                Err(GceError::other(&label, "no URL to delete it by"))
            } else {
                self.client.delete(&url, &label).await
            };
            step.end(
                &r,
                match r {
                    Ok(true) => "deleted",
                    Ok(false) => "already gone",
                    Err(_) => "",
                },
            );
            (format!("{} {}", f.kind, f.name), r)
        });
        for (what, r) in join_all(jobs).await {
            match r {
                Ok(_) => report.deleted.push(what),
                Err(e) => report.failed.push(format!("{what}: {e}")),
            }
        }
    }
}

pub async fn run(gce: &Gce, client: &Client) -> Result<DownReport, GceError> {
    let names = gce.names();
    let progress = Progress::new();
    let d = Down {
        client,
        progress: &progress,
        names: &names,
    };
    let delete_network = gce.setting_bool("KUBE_DELETE_NETWORK");
    let mut report = DownReport::default();

    let step = progress.start("look up the cluster's resources");
    let inv = discover(client, &names).await;
    step.end(&inv, "");
    let inv: Inventory = inv?;
    let kinds = |ks: &[&str]| -> Vec<&Found> {
        inv.items.iter().filter(|f| ks.contains(&f.kind)).collect()
    };

    // 1. The node group (it deletes its own instances).
    d.delete_all(kinds(&["instanceGroupManager"]), &mut report)
        .await;
    // 2. Instances (the master, strays), routes, forwarding rules.
    d.delete_all(kinds(&["instance", "route", "forwardingRule"]), &mut report)
        .await;
    // 3. What instances used: template, firewalls, addresses, leftover disks, staged objects.
    let shared = names.shared_firewalls();
    let mut third: Vec<&Found> = kinds(&["instanceTemplate", "address", "disk", "object"]);
    third.extend(
        inv.of("firewall")
            .filter(|f| delete_network || !shared.contains(&f.name)),
    );
    d.delete_all(third, &mut report).await;
    // Disks that were still attached at the first look (non-boot disks of deleted instances).
    match discover(client, &names).await {
        Ok(again) => {
            let disks: Vec<&Found> = again.of("disk").collect();
            d.delete_all(disks, &mut report).await;
        }
        Err(e) => report.failed.push(format!("second look for disks: {e}")),
    }
    // 4. The bucket once empty and the master's service account, then the network when asked
    // (KUBE_DELETE_NETWORK, as kube-down).
    let mut last: Vec<&Found> = kinds(&["bucket", "serviceAccount"]);
    if delete_network {
        last.extend(inv.of("network"));
    }
    d.delete_all(last, &mut report).await;

    let step = progress.start(format!(
        "kubeconfig context {}",
        crate::kubeconfig::context_name(gce)
    ));
    let r = crate::kubeconfig::remove(gce);
    step.end(&r, "removed");
    if let Err(e) = r {
        report.failed.push(e.to_string());
    }
    Ok(report)
}
