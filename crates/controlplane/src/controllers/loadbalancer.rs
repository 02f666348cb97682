//! LoadBalancer Services. With an address pool (local clusters, as
//! cloud-provider-kind or k3s' ServiceLB give one): one pool address per
//! LoadBalancer Service (`spec.loadBalancerIP` when it is free and in the
//! pool), written to `status.loadBalancer.ingress` as `{ip, ipMode: VIP}`,
//! with the service controller's `EnsuringLoadBalancer` /
//! `EnsuredLoadBalancer` events; released (status cleared,
//! `DeletingLoadBalancer` / `DeletedLoadBalancer`) when the type changes or
//! the Service goes. Without a pool (cloud clusters without a cloud
//! controller manager) the address stays `<pending>` and the Service gets
//! one Warning event saying why, so `kubectl describe svc` tells the user.
//!
//! What is allocated is what the Services' statuses hold, so nothing is
//! kept beside the store. Services with a `spec.loadBalancerClass` belong
//! to another controller and are left alone, as upstream's.

use super::{deleting, list, rd, record_event, uid, Settings};
use crate::api::objects::{meta_str, Core, WriteCtx};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

const COMPONENT: &str = "service-controller";
pub const REASON_NO_CONTROLLER: &str = "NoLoadBalancerController";

/// The addresses handed to LoadBalancer Services (`--load-balancer-ip-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadBalancerPool {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid load balancer address range {0:?}: want an IPv4 CIDR (172.18.255.0/24) or FIRST-LAST"
)]
pub struct PoolParseError(pub String);

impl LoadBalancerPool {
    /// `172.18.255.0/24` (without its network and broadcast addresses, for
    /// prefixes up to /30) or `172.18.255.10-172.18.255.20` (inclusive).
    pub fn parse(s: &str) -> Result<Self, PoolParseError> {
        let err = || PoolParseError(s.to_string());
        if let Some((a, b)) = s.split_once('-') {
            let first: Ipv4Addr = a.trim().parse().map_err(|_| err())?;
            let last: Ipv4Addr = b.trim().parse().map_err(|_| err())?;
            if u32::from(first) > u32::from(last) {
                return Err(err());
            }
            return Ok(LoadBalancerPool { first, last });
        }
        let (ip, prefix) = s.split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = ip.trim().parse().map_err(|_| err())?;
        let prefix: u32 = prefix.trim().parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let net = u32::from(ip) & mask;
        let bcast = net | !mask;
        let (first, last) = if prefix <= 30 {
            (net + 1, bcast - 1)
        } else {
            (net, bcast)
        };
        Ok(LoadBalancerPool {
            first: first.into(),
            last: last.into(),
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }

    fn first_free(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last))
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }
}

impl std::fmt::Display for LoadBalancerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

fn ingress_ips(svc: &Value) -> Vec<Ipv4Addr> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str()?.parse().ok())
        .collect()
}

fn is_ours(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc
            .pointer("/spec/loadBalancerClass")
            .is_none_or(Value::is_null)
        && !deleting(svc)
}

fn write_ingress(core: &Core, svc: &Value, ingress: Value) {
    let mut ctx = WriteCtx::controller(COMPONENT);
    let r = rd("", "services");
    let _ = core.modify(
        r,
        Some(meta_str(svc, "namespace")),
        meta_str(svc, "name"),
        Some("status"),
        &mut ctx,
        |cur| {
            let mut cur = cur.clone();
            if ingress.as_array().is_some_and(|a| a.is_empty()) {
                cur["status"]["loadBalancer"] = json!({});
            } else {
                cur["status"]["loadBalancer"] = json!({"ingress": ingress});
            }
            Ok(cur)
        },
    );
}

pub fn pass(core: &Core, s: &Settings) {
    let mut services = list(core, "", "services", None);
    // Older Services keep their address when two claim the same one.
    services.sort_by(|a, b| {
        meta_str(a, "creationTimestamp")
            .cmp(meta_str(b, "creationTimestamp"))
            .then_with(|| meta_str(a, "name").cmp(meta_str(b, "name")))
    });
    let Some(pool) = s.load_balancer_pool else {
        warn_pending(core, &services);
        return;
    };
    // Addresses held by Services that keep them.
    let mut used: HashSet<Ipv4Addr> = HashSet::new();
    let mut keep: HashMap<String, Ipv4Addr> = HashMap::new();
    for svc in services.iter().filter(|s| is_ours(s)) {
        if let [ip] = ingress_ips(svc)[..] {
            if pool.contains(ip) && !used.contains(&ip) && wants(svc, ip) {
                used.insert(ip);
                keep.insert(uid(svc).to_string(), ip);
            }
        }
    }
    for svc in &services {
        let has_status = !ingress_ips(svc).is_empty();
        if !is_ours(svc) {
            // Released with the type (or the Service): clear what we wrote.
            let managed_by_us = ingress_ips(svc).iter().any(|ip| pool.contains(*ip));
            let other_class = svc
                .pointer("/spec/loadBalancerClass")
                .is_some_and(|c| !c.is_null());
            if has_status && managed_by_us && !deleting(svc) && !other_class {
                record_event(
                    core,
                    svc,
                    "Service",
                    "Normal",
                    "DeletingLoadBalancer",
                    "Deleting load balancer",
                    COMPONENT,
                );
                write_ingress(core, svc, json!([]));
                record_event(
                    core,
                    svc,
                    "Service",
                    "Normal",
                    "DeletedLoadBalancer",
                    "Deleted load balancer",
                    COMPONENT,
                );
            }
            continue;
        }
        if keep.contains_key(uid(svc)) {
            continue;
        }
        let requested = svc
            .pointer("/spec/loadBalancerIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let ip = match requested {
            Some(req) => match req.parse::<Ipv4Addr>() {
                Ok(ip) if pool.contains(ip) && !used.contains(&ip) => Ok(ip),
                Ok(ip) if pool.contains(ip) => Err(format!("requested loadBalancerIP {ip} is already in use")),
                _ => Err(format!("requested loadBalancerIP {req} is not in the load balancer address range {pool}")),
            },
            None => pool
                .first_free(&used)
                .ok_or_else(|| format!("no free address left in the load balancer address range {pool}")),
        };
        match ip {
            Ok(ip) => {
                used.insert(ip);
                record_event(
                    core,
                    svc,
                    "Service",
                    "Normal",
                    "EnsuringLoadBalancer",
                    "Ensuring load balancer",
                    COMPONENT,
                );
                write_ingress(core, svc, json!([{"ip": ip.to_string(), "ipMode": "VIP"}]));
                record_event(
                    core,
                    svc,
                    "Service",
                    "Normal",
                    "EnsuredLoadBalancer",
                    "Ensured load balancer",
                    COMPONENT,
                );
            }
            Err(msg) => {
                if has_status {
                    write_ingress(core, svc, json!([]));
                }
                if !has_event(core, svc, "SyncLoadBalancerFailed") {
                    record_event(
                        core,
                        svc,
                        "Service",
                        "Warning",
                        "SyncLoadBalancerFailed",
                        &format!(
                            "Error syncing load balancer: failed to ensure load balancer: {msg}"
                        ),
                        COMPONENT,
                    );
                }
            }
        }
    }
}

/// Whether `svc` may keep `ip`: a `spec.loadBalancerIP` set since names the
/// address it wants.
fn wants(svc: &Value, ip: Ipv4Addr) -> bool {
    match svc.pointer("/spec/loadBalancerIP").and_then(Value::as_str) {
        Some(req) if !req.is_empty() => req.parse::<Ipv4Addr>().ok() == Some(ip),
        _ => true,
    }
}

/// Whether an event with `reason` about this very Service (uid) exists.
fn has_event(core: &Core, svc: &Value, reason: &str) -> bool {
    list(core, "", "events", Some(meta_str(svc, "namespace")))
        .iter()
        .any(|e| {
            e["reason"] == reason
                && e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid(svc))
        })
}

/// No pool: one Warning per LoadBalancer Service, so `kubectl describe`
/// says why EXTERNAL-IP stays `<pending>`.
fn warn_pending(core: &Core, services: &[std::sync::Arc<Value>]) {
    for svc in services.iter().filter(|s| is_ours(s)) {
        if !ingress_ips(svc).is_empty() || has_event(core, svc, REASON_NO_CONTROLLER) {
            continue;
        }
        record_event(
            core,
            svc,
            "Service",
            "Warning",
            REASON_NO_CONTROLLER,
            "No load balancer controller runs in this cluster (no cloud controller manager, no load balancer address range), so the external IP stays <pending>; the Service is still reachable on its node ports",
            COMPONENT,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse() {
        let p = LoadBalancerPool::parse("172.18.255.0/24").expect("cidr");
        assert_eq!(p.to_string(), "172.18.255.1-172.18.255.254");
        let r = LoadBalancerPool::parse("10.0.0.5-10.0.0.6").expect("range");
        assert!(r.contains("10.0.0.6".parse().expect("ip")));
        assert!(!r.contains("10.0.0.7".parse().expect("ip")));
        let one = LoadBalancerPool::parse("10.0.0.9/32").expect("host");
        assert_eq!(one.to_string(), "10.0.0.9-10.0.0.9");
        for bad in ["", "10.0.0.0", "10.0.0.9-10.0.0.1", "10.0.0.0/33", "x/24"] {
            assert!(LoadBalancerPool::parse(bad).is_err(), "{bad}");
        }
        let mut used = HashSet::new();
        used.insert("10.0.0.5".parse().expect("ip"));
        assert_eq!(r.first_free(&used), Some("10.0.0.6".parse().expect("ip")));
    }
}
