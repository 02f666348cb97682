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
use crate::api::service_ips::{from_u128 as addr, to_u128 as num};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::IpAddr;

const COMPONENT: &str = "service-controller";
pub const REASON_NO_CONTROLLER: &str = "NoLoadBalancerController";

/// The addresses of one family handed to LoadBalancer Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadBalancerPool {
    first: IpAddr,
    last: IpAddr,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid load balancer address range {0:?}: want a CIDR (172.18.255.0/24) or FIRST-LAST, \
     or one of each family, comma-separated (172.18.255.0/24,fd00:18::/112)"
)]
pub struct PoolParseError(pub String);

impl LoadBalancerPool {
    /// `172.18.255.0/24` (without its network and broadcast addresses, for prefixes up to /30;
    /// an IPv6 CIDR without its network address) or `172.18.255.10-172.18.255.20` (inclusive).
    pub fn parse(s: &str) -> Result<Self, PoolParseError> {
        let err = || PoolParseError(s.to_string());
        if let Some((a, b)) = s.split_once('-') {
            let first: IpAddr = a.trim().parse().map_err(|_| err())?;
            let last: IpAddr = b.trim().parse().map_err(|_| err())?;
            if first.is_ipv4() != last.is_ipv4() || num(first) > num(last) {
                return Err(err());
            }
            return Ok(LoadBalancerPool { first, last });
        }
        let (ip, prefix) = s.split_once('/').ok_or_else(err)?;
        let ip: IpAddr = ip.trim().parse().map_err(|_| err())?;
        let prefix: u32 = prefix.trim().parse().map_err(|_| err())?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(err());
        }
        let host_mask = if prefix == 0 {
            u128::MAX >> (128 - bits)
        } else {
            (1u128 << (bits - prefix)) - 1
        };
        let net = num(ip) & !host_mask;
        let top = net | host_mask;
        let (first, last) = match (ip.is_ipv4(), prefix) {
            (true, p) if p <= 30 => (net + 1, top - 1),
            (false, p) if p <= 126 => (net + 1, top),
            _ => (net, top),
        };
        Ok(LoadBalancerPool {
            first: addr(ip.is_ipv4(), first),
            last: addr(ip.is_ipv4(), last),
        })
    }

    pub fn is_ipv6(&self) -> bool {
        self.first.is_ipv6()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.is_ipv6() && (num(self.first)..=num(self.last)).contains(&num(ip))
    }

    fn first_free(&self, used: &HashSet<IpAddr>) -> Option<IpAddr> {
        // At most used.len() + 1 steps, however large the range.
        (num(self.first)..=num(self.last))
            .map(|n| addr(!self.is_ipv6(), n))
            .find(|ip| !used.contains(ip))
    }
}

impl std::fmt::Display for LoadBalancerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `--load-balancer-ip-range`: a pool, or one per family (a dual-stack cluster's); a
/// dual-stack Service gets an address of each of its families, in `ipFamilies` order, as
/// cloud-provider-kind gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerPools(Vec<LoadBalancerPool>);

impl LoadBalancerPools {
    pub fn parse(s: &str) -> Result<Self, PoolParseError> {
        let pools = s
            .split(',')
            .map(|p| LoadBalancerPool::parse(p.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let v6 = pools.iter().filter(|p| p.is_ipv6()).count();
        if pools.len() > 2 || v6 > 1 || pools.len() - v6 > 1 {
            return Err(PoolParseError(s.to_string()));
        }
        Ok(LoadBalancerPools(pools))
    }
    fn of(&self, ipv6: bool) -> Option<&LoadBalancerPool> {
        self.0.iter().find(|p| p.is_ipv6() == ipv6)
    }
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|p| p.contains(ip))
    }
}

impl std::fmt::Display for LoadBalancerPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join(","))
    }
}

fn ingress_ips(svc: &Value) -> Vec<IpAddr> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str()?.parse().ok())
        .collect()
}

/// The pools a Service draws from: one per family it lists (IPv4 when it lists none), in its
/// order; Err names a family without a pool.
fn pools_of<'a>(
    pools: &'a LoadBalancerPools,
    svc: &Value,
) -> Result<Vec<&'a LoadBalancerPool>, String> {
    let families: Vec<&str> = svc
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .filter(|v: &Vec<&str>| !v.is_empty())
        .unwrap_or_else(|| vec!["IPv4"]);
    let mut out = vec![];
    for f in families {
        match pools.of(f == "IPv6") {
            Some(p) => out.push(p),
            // A dual-stack Service on a pool of one family gets that family's address.
            None if families_len(svc) > 1 => {}
            None => return Err(format!("no {f} load balancer address range")),
        }
    }
    if out.is_empty() {
        return Err("no load balancer address range of the Service's IP families".into());
    }
    Ok(out)
}

fn families_len(svc: &Value) -> usize {
    svc.pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .map_or(1, Vec::len)
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
    let Some(pools) = &s.load_balancer_pool else {
        warn_pending(core, &services);
        return;
    };
    // Addresses held by Services that keep them.
    let mut used: HashSet<IpAddr> = HashSet::new();
    let mut keep: HashSet<String> = HashSet::new();
    for svc in services.iter().filter(|s| is_ours(s)) {
        let (ips, Ok(want)) = (ingress_ips(svc), pools_of(pools, svc)) else {
            continue;
        };
        let fits = ips.len() == want.len()
            && ips
                .iter()
                .zip(&want)
                .all(|(ip, p)| p.contains(*ip) && !used.contains(ip) && wants(svc, *ip));
        if fits {
            used.extend(ips);
            keep.insert(uid(svc).to_string());
        }
    }
    for svc in &services {
        let has_status = !ingress_ips(svc).is_empty();
        if !is_ours(svc) {
            // Released with the type (or the Service): clear what we wrote.
            let managed_by_us = ingress_ips(svc).iter().any(|ip| pools.contains(*ip));
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
        if keep.contains(uid(svc)) {
            continue;
        }
        let requested = svc
            .pointer("/spec/loadBalancerIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let picked = pools_of(pools, svc).and_then(|want| {
            let mut ips = vec![];
            for pool in want {
                let asked = requested.and_then(|r| {
                    let ip = r.parse::<IpAddr>();
                    // An address of the other family asks nothing of this pool.
                    match ip {
                        Ok(ip) if ip.is_ipv6() != pool.is_ipv6() => None,
                        _ => Some((r, ip)),
                    }
                });
                let ip = match asked {
                    Some((_, Ok(ip))) if pool.contains(ip) && !used.contains(&ip) => ip,
                    Some((_, Ok(ip))) if pool.contains(ip) => {
                        return Err(format!("requested loadBalancerIP {ip} is already in use"))
                    }
                    Some((req, _)) => {
                        return Err(format!("requested loadBalancerIP {req} is not in the load balancer address range {pools}"))
                    }
                    None => pool.first_free(&used).ok_or_else(|| {
                        format!("no free address left in the load balancer address range {pool}")
                    })?,
                };
                ips.push(ip);
            }
            Ok(ips)
        });
        match picked {
            Ok(ips) => {
                used.extend(ips.iter().copied());
                record_event(
                    core,
                    svc,
                    "Service",
                    "Normal",
                    "EnsuringLoadBalancer",
                    "Ensuring load balancer",
                    COMPONENT,
                );
                let ingress: Vec<Value> = ips
                    .iter()
                    .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                    .collect();
                write_ingress(core, svc, json!(ingress));
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
fn wants(svc: &Value, ip: IpAddr) -> bool {
    match svc.pointer("/spec/loadBalancerIP").and_then(Value::as_str) {
        Some(req) if !req.is_empty() => match req.parse::<IpAddr>() {
            Ok(r) if r.is_ipv6() == ip.is_ipv6() => r == ip,
            // asks nothing of the other family
            Ok(_) => true,
            Err(_) => false,
        },
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
        // IPv6, and one pool per family.
        let v6 = LoadBalancerPool::parse("fd00:18::/112").expect("v6 cidr");
        assert_eq!(v6.to_string(), "fd00:18::1-fd00:18::ffff");
        let both = LoadBalancerPools::parse("172.18.255.0/24, fd00:18::/112").expect("pools");
        assert!(both.of(true).is_some() && both.of(false).is_some());
        assert_eq!(
            both.to_string(),
            "172.18.255.1-172.18.255.254,fd00:18::1-fd00:18::ffff"
        );
        for bad in [
            "10.0.0.0/24,10.1.0.0/24",
            "fd00::/112,fd01::/112",
            "10.0.0.1-fd00::1",
        ] {
            assert!(LoadBalancerPools::parse(bad).is_err(), "{bad}");
        }
        let svc = json!({"spec": {"ipFamilies": ["IPv6", "IPv4"]}});
        let order: Vec<bool> = pools_of(&both, &svc)
            .expect("pools")
            .iter()
            .map(|p| p.is_ipv6())
            .collect();
        assert_eq!(order, vec![true, false]);
        let v4_only = LoadBalancerPools::parse("10.0.0.0/24").expect("pool");
        assert!(pools_of(&v4_only, &json!({"spec": {"ipFamilies": ["IPv6"]}})).is_err());
        assert_eq!(
            pools_of(&v4_only, &svc).expect("dual on a v4 pool").len(),
            1
        );
    }
}
