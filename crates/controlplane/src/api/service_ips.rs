//! Service cluster IPs: the ranges of `--service-cluster-ip-range` (one, or one per IP family
//! for a dual-stack cluster) and kube-apiserver's rules tying `ipFamilyPolicy`, `ipFamilies`,
//! `clusterIP` and `clusterIPs` together (its service storage's `initIPFamilyFields` and
//! `ValidateServiceClusterIPsRelatedFields`), with upstream's field paths and messages.
//!
//! Addresses are not kept in a bitmap of their own: what the stored Services hold is what is
//! allocated, so a Service's write is its allocation and its deletion the release.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::error::{cause, Cause};

/// An IP family, as `ipFamilies` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }
    fn other(self) -> Self {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

/// One service cluster IP range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    pub base: IpAddr,
    pub prefix: u8,
}

/// The most addresses an IPv6 range hands out (upstream's allocator caps its bitmap there).
const V6_MAX_ADDRESSES: u32 = 65536;

impl ServiceCidr {
    /// `10.96.0.0/12` or `fd00:10:96::/112`. The range may hold at most 2^20 addresses, as
    /// kube-apiserver requires of `--service-cluster-ip-range` (a mask of /12 or longer for
    /// IPv4, /108 or longer for IPv6), and at least two usable ones.
    pub fn parse(s: &str) -> Option<Self> {
        let (ip, p) = s.trim().split_once('/')?;
        let ip: IpAddr = ip.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > bits - 2 || bits - prefix > 20 {
            return None;
        }
        let mask = u128::MAX << (bits - prefix);
        Some(ServiceCidr {
            base: from_u128(ip.is_ipv4(), to_u128(ip) & mask),
            prefix,
        })
    }
    pub fn family(&self) -> Family {
        Family::of(self.base)
    }
    fn bits(&self) -> u8 {
        if self.base.is_ipv4() {
            32
        } else {
            128
        }
    }
    fn size(&self) -> u32 {
        1u32 << (self.bits() - self.prefix)
    }
    fn nth(&self, n: u32) -> IpAddr {
        from_u128(self.base.is_ipv4(), to_u128(self.base) + u128::from(n))
    }
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.base.is_ipv4() {
            return false;
        }
        let mask = u128::MAX << (self.bits() - self.prefix);
        to_u128(ip) & mask == to_u128(self.base) & mask
    }
    /// The first usable address: the `kubernetes` service's.
    pub fn first(&self) -> IpAddr {
        self.nth(1)
    }
    /// Addresses that may be handed out: not the network address, nor IPv4's broadcast.
    fn usable(&self) -> u32 {
        match self.family() {
            Family::V4 => self.size() - 2,
            Family::V6 => self.size().min(V6_MAX_ADDRESSES) - 1,
        }
    }
    /// Whether `ip` is one this range hands out.
    fn allocatable(&self, ip: IpAddr) -> bool {
        let n = to_u128(ip).wrapping_sub(to_u128(self.base));
        self.contains(ip) && n >= 1 && n <= u128::from(self.usable())
    }

    /// A free address, picked as kube-apiserver's allocator does: at random from the upper
    /// part of the range first, so the lower band (16 to 256 addresses) stays for addresses
    /// asked for by value, such as the cluster DNS service's `.10`.
    pub fn pick_free(&self, used: &HashSet<IpAddr>) -> Option<IpAddr> {
        let usable = self.usable();
        let offset = (usable / 16).clamp(16, 256).min(usable);
        let free = |n: u32| {
            let ip = self.nth(n);
            (!used.contains(&ip)).then_some(ip)
        };
        super::objects::pick_in_bands(1, usable, offset, free)
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// An address as a number (IPv4 in the low 32 bits), for range arithmetic.
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of family IPv4 (`v4`) or IPv6 whose number is `n`.
pub(crate) fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(n))
    }
}

/// `--service-cluster-ip-range`: one range, or two of different families (a dual-stack
/// cluster); the first is the primary, whose family single-stack Services get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidrs {
    primary: ServiceCidr,
    secondary: Option<ServiceCidr>,
}

impl ServiceCidrs {
    /// `10.96.0.0/12` or `10.96.0.0/12,fd00:10:96::/112`; the error says what was wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() > 2 {
            return Err(format!(
                "{s:?}: at most two ranges, one IPv4 and one IPv6 (dual-stack)"
            ));
        }
        let mut ranges = Vec::new();
        for p in &parts {
            ranges.push(ServiceCidr::parse(p).ok_or_else(|| {
                format!(
                    "{p:?}: a CIDR of 4 to 2^20 addresses, such as 10.96.0.0/12 (mask /12 to /30) \
                     or fd00:10:96::/112 (mask /108 to /126)"
                )
            })?);
        }
        let primary = ranges[0];
        let secondary = ranges.get(1).copied();
        if secondary.is_some_and(|b| b.family() == primary.family()) {
            return Err(format!(
                "{s:?}: the two ranges of a dual-stack cluster must be of different IP families"
            ));
        }
        Ok(ServiceCidrs { primary, secondary })
    }
    pub fn single(primary: ServiceCidr) -> Self {
        ServiceCidrs {
            primary,
            secondary: None,
        }
    }
    pub fn primary(&self) -> &ServiceCidr {
        &self.primary
    }
    pub fn get(&self, family: Family) -> Option<&ServiceCidr> {
        std::iter::once(&self.primary)
            .chain(self.secondary.as_ref())
            .find(|c| c.family() == family)
    }
    pub fn is_dual(&self) -> bool {
        self.secondary.is_some()
    }
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.get(Family::of(ip)).is_some_and(|c| c.contains(ip))
    }
}

impl std::fmt::Display for ServiceCidrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.primary)?;
        if let Some(s) = &self.secondary {
            write!(f, ",{s}")?;
        }
        Ok(())
    }
}

/// Go's `%#v` of a `[]string`, as field errors print such values.
fn go_strings(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// The IP fields of a Service's spec.
#[derive(Debug, Clone, Default, PartialEq)]
struct IpFields {
    cluster_ip: String,
    cluster_ips: Vec<String>,
    families: Vec<String>,
    policy: Option<String>,
}

impl IpFields {
    fn read(svc: &Value) -> Self {
        let strs = |p: &str| -> Vec<String> {
            svc.pointer(p)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        IpFields {
            cluster_ip: svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            cluster_ips: strs("/spec/clusterIPs"),
            families: strs("/spec/ipFamilies"),
            policy: svc
                .pointer("/spec/ipFamilyPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
    fn write(&self, svc: &mut Value) {
        if !svc.get("spec").is_some_and(Value::is_object) {
            svc["spec"] = json!({});
        }
        let spec = &mut svc["spec"];
        spec["clusterIP"] = json!(self.cluster_ip);
        spec["clusterIPs"] = json!(self.cluster_ips);
        spec["ipFamilies"] = json!(self.families);
        spec["ipFamilyPolicy"] = json!(self.policy);
    }
    fn headless(&self) -> bool {
        self.cluster_ips.len() == 1 && self.cluster_ips[0] == "None"
    }
    fn policy(&self) -> &str {
        self.policy.as_deref().unwrap_or("SingleStack")
    }
}

fn has_selector(svc: &Value) -> bool {
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
}

/// The clusterIP/clusterIPs of an update as upstream's `NormalizeClusterIPs` and
/// `patchAllocatedValues` read them: fields a client left out keep their stored values
/// (an old client only knows `clusterIP`), a changed `clusterIP` with untouched `clusterIPs`
/// speaks for both.
pub fn normalize_update(old: &Value, new: &mut Value) {
    let o = IpFields::read(old);
    let mut n = IpFields::read(new);
    if n.cluster_ip.is_empty() && !o.cluster_ip.is_empty() {
        n.cluster_ip = o.cluster_ip.clone();
    }
    if n.cluster_ips.is_empty() && !o.cluster_ips.is_empty() && n.cluster_ip == o.cluster_ip {
        n.cluster_ips = o.cluster_ips.clone();
    }
    if n.cluster_ip != o.cluster_ip && n.cluster_ips == o.cluster_ips && !n.cluster_ip.is_empty() {
        n.cluster_ips = vec![n.cluster_ip.clone()];
    }
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    new["spec"]["clusterIP"] = json!(n.cluster_ip);
    if n.cluster_ips.is_empty() {
        if let Some(s) = new["spec"].as_object_mut() {
            s.remove("clusterIPs");
        }
    } else {
        new["spec"]["clusterIPs"] = json!(n.cluster_ips);
    }
}

/// Sets a (non-ExternalName) Service's `ipFamilyPolicy`, `ipFamilies`, `clusterIP` and
/// `clusterIPs` on create (`old` None) or update, allocating addresses from `cidrs` that no
/// address in `used` (every other Service's) holds. Errors are the causes of a 422, with
/// upstream's paths and messages; `Err(None)` is a full range (a 500 upstream).
pub fn assign(
    svc: &mut Value,
    old: Option<&Value>,
    cidrs: &ServiceCidrs,
    used: &HashSet<IpAddr>,
) -> Result<(), Option<Vec<Cause>>> {
    let mut f = IpFields::read(svc);
    let old_fields = old
        .filter(|o| o.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName"))
        .map(IpFields::read);
    // A create from an old client names only clusterIP.
    if old_fields.is_none() && !f.cluster_ip.is_empty() && f.cluster_ips.is_empty() {
        f.cluster_ips = vec![f.cluster_ip.clone()];
    }
    let selectorless_headless = f.cluster_ip == "None" && !has_selector(svc);

    // A PreferDualStack Service is neither upgraded nor downgraded when the cluster changes
    // dual-stackness under it: only a change of its policy or fields does that.
    if let Some(o) = &old_fields {
        if o.policy.as_deref() == Some("PreferDualStack")
            && f.policy.as_deref().is_none_or(|p| p == "PreferDualStack")
            && f.cluster_ips == o.cluster_ips
            && (f.families.is_empty() || f.families == o.families)
        {
            f.policy = o.policy.clone();
            f.families = o.families.clone();
            f.write(svc);
            return Ok(());
        }
    }

    if f.policy.is_none() {
        f.policy = Some(match &old_fields {
            Some(o) if o.policy.is_some() => o.policy.clone().unwrap_or_default(),
            _ if selectorless_headless => "RequireDualStack".into(),
            _ => "SingleStack".into(),
        });
    }

    let mut errs = related_field_errors(&f);
    if !errs.is_empty() {
        return Err(Some(errs));
    }

    if let Some(o) = &old_fields {
        // Upstream's update validation, which runs before the allocator.
        let head = o.headless() || f.headless();
        if !head {
            errs.extend(upgrade_downgrade_errors(o, &f));
            if !errs.is_empty() {
                return Err(Some(errs));
            }
        }
        if f.policy() == "SingleStack" {
            // Keeping the fields and asking for one stack releases the secondary.
            if f.cluster_ips == o.cluster_ips && f.cluster_ips.len() > 1 {
                f.cluster_ips.truncate(1);
            }
            if f.families == o.families && f.families.len() > 1 {
                f.families.truncate(1);
            }
        } else if !head {
            if f.cluster_ips.len() < o.cluster_ips.len() {
                errs.push(policy_error(
                    &f,
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if f.families.len() < o.families.len() && !f.families.is_empty() {
                errs.push(policy_error(
                    &f,
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }

    if f.policy() == "SingleStack" {
        if f.cluster_ips.len() == 2 {
            errs.push(policy_error(
                &f,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if f.families.len() == 2 {
            errs.push(policy_error(
                &f,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }

    // Families follow the addresses asked for.
    for (i, ip) in f.cluster_ips.clone().iter().enumerate() {
        if ip == "None" {
            break;
        }
        let Ok(addr) = ip.parse::<IpAddr>() else {
            continue;
        };
        let fam = Family::of(addr);
        if i >= f.families.len() {
            if cidrs.get(fam).is_none() {
                errs.push(cause(
                    "FieldValueInvalid",
                    &format!("spec.clusterIPs[{i}]"),
                    format!(
                        "Invalid value: {}: {} is not configured on this cluster",
                        go_strings(&f.cluster_ips),
                        fam.name()
                    ),
                ));
            } else {
                f.families.push(fam.name().into());
            }
        }
    }
    if !errs.is_empty() {
        return Err(Some(errs));
    }

    let primary = cidrs.primary().family();
    if selectorless_headless {
        // Headless without a selector may carry families the cluster lacks (its endpoints
        // are the user's).
        if f.families.is_empty() {
            f.families.push(primary.name().into());
        }
        if f.families.len() < 2 && f.policy() != "SingleStack" {
            if let Some(fam) = Family::parse(&f.families[0]) {
                f.families.push(fam.other().name().into());
            }
        }
        f.cluster_ips = vec!["None".into()];
        f.write(svc);
        return Ok(());
    }

    if f.policy() == "RequireDualStack" && !cidrs.is_dual() {
        errs.push(policy_error(
            &f,
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, fam) in f.families.iter().enumerate() {
        if Family::parse(fam).and_then(|x| cidrs.get(x)).is_none() {
            errs.push(cause(
                "FieldValueInvalid",
                &format!("spec.ipFamilies[{i}]"),
                format!("Invalid value: {fam:?}: not configured on this cluster"),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(Some(errs));
    }
    if f.families.is_empty() {
        f.families.push(primary.name().into());
    }
    if f.policy() != "SingleStack" && f.families.len() == 1 && cidrs.is_dual() {
        if let Some(fam) = Family::parse(&f.families[0]) {
            f.families.push(fam.other().name().into());
        }
    }

    if f.headless() {
        f.write(svc);
        return Ok(());
    }
    // One address per family: kept, checked (asked for), or picked.
    let kept: Vec<String> = old_fields.map(|o| o.cluster_ips).unwrap_or_default();
    let mut ips = Vec::with_capacity(f.families.len());
    for (i, fam) in f.families.iter().enumerate() {
        let Some(range) = Family::parse(fam).and_then(|x| cidrs.get(x)) else {
            return Err(None);
        };
        let asked = f.cluster_ips.get(i).filter(|s| !s.is_empty());
        match asked {
            Some(ip) if kept.contains(ip) => ips.push(ip.clone()),
            Some(ip) => {
                let addr: IpAddr = ip.parse().map_err(|_| None)?;
                let fail = |why: String| {
                    Some(vec![cause(
                        "FieldValueInvalid",
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: {}: failed to allocate IP {ip}: {why}",
                            go_strings(&f.cluster_ips)
                        ),
                    )])
                };
                if !range.allocatable(addr) {
                    return Err(fail(format!(
                        "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                    )));
                }
                if used.contains(&addr) {
                    return Err(fail("provided IP is already allocated".into()));
                }
                ips.push(addr.to_string());
            }
            // The other entries of `ips` are of other families: nothing here to avoid but `used`.
            None => ips.push(range.pick_free(used).ok_or(None)?.to_string()),
        }
    }
    f.cluster_ip = ips.first().cloned().unwrap_or_default();
    f.cluster_ips = ips;
    f.write(svc);
    Ok(())
}

fn policy_error(f: &IpFields, msg: &str) -> Cause {
    cause(
        "FieldValueInvalid",
        "spec.ipFamilyPolicy",
        format!("Invalid value: {:?}: {msg}", f.policy()),
    )
}

/// `ValidateServiceClusterIPsRelatedFields`: the fields on their own and against each other.
fn related_field_errors(f: &IpFields) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ips = go_strings(&f.cluster_ips);
    if !f.cluster_ip.is_empty() {
        if f.cluster_ips.is_empty() {
            errs.push(cause(
                "FieldValueRequired",
                "spec.clusterIPs",
                "Required value",
            ));
        } else if f.cluster_ips[0] != f.cluster_ip {
            errs.push(cause(
                "FieldValueInvalid",
                "spec.clusterIPs",
                format!("Invalid value: {ips}: first value must match `clusterIP`"),
            ));
        }
    } else if !f.cluster_ips.is_empty() {
        errs.push(cause(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!("Invalid value: {ips}: must be empty when `clusterIP` is not specified"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, fam) in f.families.iter().enumerate() {
        let path = format!("spec.ipFamilies[{i}]");
        if Family::parse(fam).is_none() {
            errs.push(cause(
                "FieldValueNotSupported",
                &path,
                format!("Unsupported value: {fam:?}: supported values: \"IPv4\", \"IPv6\""),
            ));
        }
        if !seen.insert(fam.as_str()) {
            errs.push(cause(
                "FieldValueDuplicate",
                &path,
                format!("Duplicate value: {fam:?}"),
            ));
        }
    }
    if let Some(p) = &f.policy {
        if !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&p.as_str()) {
            errs.push(cause(
                "FieldValueNotSupported",
                "spec.ipFamilyPolicy",
                format!(
                    "Unsupported value: {p:?}: supported values: \"PreferDualStack\", \
                     \"RequireDualStack\", \"SingleStack\""
                ),
            ));
        }
    }
    let mut bad_ip = false;
    for (i, ip) in f.cluster_ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if f.cluster_ips.len() > 1 {
                bad_ip = true;
                errs.push(cause(
                    "FieldValueInvalid",
                    "spec.clusterIPs",
                    format!("Invalid value: {ips}: 'None' must be the first and only value"),
                ));
            }
            continue;
        }
        if ip.parse::<IpAddr>().is_err() {
            bad_ip = true;
            errs.push(cause(
                "FieldValueInvalid",
                &format!("spec.clusterIPs[{i}]"),
                format!(
                    "Invalid value: {ip:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                ),
            ));
        }
    }
    if f.cluster_ips.len() > 2 {
        errs.push(cause(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!("Invalid value: {ips}: may only hold up to 2 values"),
        ));
    }
    if bad_ip {
        return errs;
    }
    let addrs: Vec<IpAddr> = f
        .cluster_ips
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if addrs.len() == 2 && Family::of(addrs[0]) == Family::of(addrs[1]) {
        errs.push(cause(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!("Invalid value: {ips}: may specify no more than one IP for each IP family"),
        ));
    }
    if !f.headless() {
        for (i, ip) in f.cluster_ips.iter().enumerate() {
            let (Some(fam), Ok(addr)) = (f.families.get(i), ip.parse::<IpAddr>()) else {
                continue;
            };
            let want = match fam.as_str() {
                "IPv4" if addr.is_ipv6() => "IPv4",
                "IPv6" if addr.is_ipv4() => "IPv6",
                _ => continue,
            };
            errs.push(cause(
                "FieldValueInvalid",
                &format!("spec.clusterIPs[{i}]"),
                format!(
                    "Invalid value: {ip:?}: expected an {want} value as indicated by `ipFamilies[{i}]`"
                ),
            ));
        }
    }
    errs
}

/// `validateUpgradeDowngradeClusterIPs` and `...IPFamilies`: the primary never changes; the
/// secondary goes only with `SingleStack`.
fn upgrade_downgrade_errors(o: &IpFields, n: &IpFields) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ips = go_strings(&n.cluster_ips);
    let changed = |i: usize| format!("spec.clusterIPs[{i}]");
    use std::cmp::Ordering::*;
    match o.cluster_ips.len().cmp(&n.cluster_ips.len()) {
        Equal => {
            for (i, ip) in o.cluster_ips.iter().enumerate() {
                if *ip != n.cluster_ips[i] {
                    errs.push(cause(
                        "FieldValueInvalid",
                        &changed(i),
                        format!("Invalid value: {ips}: may not change once set"),
                    ));
                }
            }
        }
        Greater => {
            if n.cluster_ips.is_empty() {
                errs.push(cause(
                    "FieldValueInvalid",
                    &changed(0),
                    format!("Invalid value: {ips}: primary clusterIP can not be unset"),
                ));
            } else if n.cluster_ips[0] != o.cluster_ips[0] {
                errs.push(cause(
                    "FieldValueInvalid",
                    &changed(0),
                    format!("Invalid value: {ips}: may not change once set"),
                ));
            }
            if n.cluster_ips.len() == 1 && n.policy() != "SingleStack" {
                errs.push(policy_error(
                    n,
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        }
        Less => {
            if !o.cluster_ips.is_empty() && n.cluster_ips[0] != o.cluster_ips[0] {
                errs.push(cause(
                    "FieldValueInvalid",
                    &changed(0),
                    format!("Invalid value: {ips}: may not change once set"),
                ));
            }
        }
    }
    let fams = go_strings(&n.families);
    if !n.families.is_empty() && !o.families.is_empty() && n.families[0] != o.families[0] {
        errs.push(cause(
            "FieldValueInvalid",
            "spec.ipFamilies[0]",
            format!("Invalid value: {fams}: may not change once set"),
        ));
    }
    if n.families.len() == o.families.len()
        && n.families.len() == 2
        && n.families[1] != o.families[1]
    {
        errs.push(cause(
            "FieldValueInvalid",
            "spec.ipFamilies[0]",
            format!("Invalid value: {fams}: may not change once set"),
        ));
    }
    if n.families.len() == 1 && o.families.len() == 2 && n.policy() != "SingleStack" {
        errs.push(policy_error(
            n,
            "must be set to 'SingleStack' when releasing the secondary ipFamily",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(s: &str) -> ServiceCidrs {
        ServiceCidrs::parse(s).expect("cidrs")
    }
    fn create(spec: Value, c: &ServiceCidrs) -> Result<Value, Option<Vec<Cause>>> {
        let mut svc = json!({"spec": spec});
        assign(&mut svc, None, c, &HashSet::new()).map(|()| svc["spec"].clone())
    }
    fn messages(r: Result<Value, Option<Vec<Cause>>>) -> Vec<String> {
        match r {
            Err(Some(c)) => c
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect(),
            other => panic!("expected causes, got {other:?}"),
        }
    }

    #[test]
    fn ranges_parse_as_kube_apiserver_takes_them() {
        let c = cidrs("10.96.0.0/12,fd00:10:96::/112");
        assert!(c.is_dual());
        assert_eq!(c.primary().family(), Family::V4);
        assert_eq!(c.to_string(), "10.96.0.0/12,fd00:10:96::/112");
        assert_eq!(
            cidrs("fd00:10:96::5/112").primary().first().to_string(),
            "fd00:10:96::1"
        );
        for bad in [
            "10.0.0.0/8",
            "fd00::/64",
            "10.0.0.0/31",
            "10.0.0.0/24,10.1.0.0/24",
            "10.0.0.0/24,fd00::/112,fd01::/112",
            "nonsense",
        ] {
            assert!(ServiceCidrs::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn single_stack_cluster_defaults_and_refuses_dual_stack() {
        let c = cidrs("10.0.0.0/24");
        let s = create(json!({"selector": {"a": "b"}}), &c).expect("create");
        assert_eq!(s["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        assert_eq!(s["clusterIPs"], json!([s["clusterIP"]]));
        // PreferDualStack on a single-stack cluster is single-stack.
        let s = create(json!({"ipFamilyPolicy": "PreferDualStack"}), &c).expect("prefer");
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        assert_eq!(
            messages(create(json!({"ipFamilyPolicy": "RequireDualStack"}), &c)),
            vec!["spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"]
        );
        assert_eq!(
            messages(create(json!({"ipFamilies": ["IPv6"]}), &c)),
            vec!["spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"]
        );
        assert_eq!(
            messages(create(
                json!({"clusterIP": "fd00::5", "clusterIPs": ["fd00::5"]}),
                &c
            )),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"fd00::5\"}: IPv6 is not configured on this cluster"]
        );
    }

    #[test]
    fn dual_stack_cluster_allocates_one_address_per_family() {
        let c = cidrs("10.0.0.0/24,fd00:10:96::/112");
        let s = create(json!({"ipFamilyPolicy": "PreferDualStack"}), &c).expect("prefer");
        assert_eq!(s["ipFamilies"], json!(["IPv4", "IPv6"]));
        let ips: Vec<IpAddr> = serde_json::from_value(s["clusterIPs"].clone()).expect("ips");
        assert!(ips[0].is_ipv4() && ips[1].is_ipv6(), "{ips:?}");
        assert_eq!(s["clusterIP"], json!(ips[0].to_string()));
        // IPv6 first, by family or by address.
        let s = create(
            json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}),
            &c,
        )
        .expect("v6 first");
        assert_eq!(s["ipFamilies"], json!(["IPv6", "IPv4"]));
        let s = create(
            json!({"ipFamilyPolicy": "RequireDualStack", "clusterIP": "fd00:10:96::a", "clusterIPs": ["fd00:10:96::a"]}),
            &c,
        )
        .expect("v6 by address");
        assert_eq!(s["clusterIPs"][0], "fd00:10:96::a");
        assert_eq!(s["ipFamilies"], json!(["IPv6", "IPv4"]));
        // Single-stack is still the default.
        let s = create(json!({}), &c).expect("default");
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        assert_eq!(
            messages(create(
                json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]}),
                &c
            )),
            vec!["spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"]
        );
        assert_eq!(
            messages(create(
                json!({"ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5", "10.0.0.6"]}),
                &c
            )),
            vec!["spec.clusterIPs: Invalid value: []string{\"10.0.0.5\", \"10.0.0.6\"}: may specify no more than one IP for each IP family"]
        );
        assert_eq!(
            messages(create(
                json!({"ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}),
                &c
            )),
            vec!["spec.ipFamilies[1]: Duplicate value: \"IPv4\""]
        );
    }

    #[test]
    fn addresses_asked_for_are_checked_against_their_family_range() {
        let c = cidrs("10.0.0.0/24,fd00:10:96::/112");
        let mut used = HashSet::new();
        used.insert("fd00:10:96::7".parse().expect("ip"));
        let mut svc = json!({"spec": {"ipFamilyPolicy": "RequireDualStack",
            "clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7", "fd00:10:96:0::7"]}});
        let r = assign(&mut svc, None, &c, &used);
        let Err(Some(causes)) = r else {
            panic!("{r:?}")
        };
        assert!(
            causes[0]
                .message
                .ends_with("provided IP is already allocated"),
            "{causes:?}"
        );
        let mut svc = json!({"spec": {"ipFamilyPolicy": "RequireDualStack",
            "clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7", "fd00:99::7"]}});
        let Err(Some(causes)) = assign(&mut svc, None, &c, &used) else {
            panic!("out of range accepted")
        };
        assert!(
            causes[0]
                .message
                .ends_with("The range of valid IPs is fd00:10:96::/112"),
            "{causes:?}"
        );
    }

    #[test]
    fn headless_services() {
        let c = cidrs("10.0.0.0/24");
        // Selectorless headless defaults to RequireDualStack and may name both families
        // even on a single-stack cluster.
        let s = create(json!({"clusterIP": "None"}), &c).expect("selectorless");
        assert_eq!(s["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(s["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(s["clusterIPs"], json!(["None"]));
        let s = create(json!({"clusterIP": "None", "selector": {"a": "b"}}), &c).expect("sel");
        assert_eq!(s["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["ipFamilies"], json!(["IPv4"]));
        let dual = cidrs("10.0.0.0/24,fd00::/112");
        let s = create(
            json!({"clusterIP": "None", "selector": {"a": "b"}, "ipFamilyPolicy": "PreferDualStack"}),
            &dual,
        )
        .expect("dual headless");
        assert_eq!(s["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(s["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn updates_upgrade_and_downgrade_only_when_asked() {
        let c = cidrs("10.0.0.0/24,fd00:10:96::/112");
        let old = json!({"spec": create(json!({}), &c).expect("single")});
        let primary = old["spec"]["clusterIP"].clone();
        // Upgrade: the policy asks for the second family; the primary stays.
        let mut new = json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}});
        normalize_update(&old, &mut new);
        assign(&mut new, Some(&old), &c, &HashSet::new()).expect("upgrade");
        assert_eq!(new["spec"]["clusterIPs"][0], primary);
        assert_eq!(new["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        // Downgrade: only with SingleStack.
        let dual = new.clone();
        let mut new = json!({"spec": {"ipFamilyPolicy": "PreferDualStack",
            "clusterIPs": [primary.clone()], "ipFamilies": ["IPv4"]}});
        normalize_update(&dual, &mut new);
        let r = assign(&mut new, Some(&dual), &c, &HashSet::new());
        assert!(matches!(r, Err(Some(_))), "{r:?}");
        let mut new = json!({"spec": {"ipFamilyPolicy": "SingleStack"}});
        normalize_update(&dual, &mut new);
        assign(&mut new, Some(&dual), &c, &HashSet::new()).expect("downgrade");
        assert_eq!(new["spec"]["clusterIPs"], json!([primary.clone()]));
        assert_eq!(new["spec"]["ipFamilies"], json!(["IPv4"]));
        // The primary address never changes.
        let mut new = json!({"spec": {"clusterIP": "10.0.0.99",
            "clusterIPs": old["spec"]["clusterIPs"].clone()}});
        normalize_update(&old, &mut new);
        let got = messages(assign(&mut new, Some(&old), &c, &HashSet::new()).map(|()| Value::Null));
        assert_eq!(
            got,
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.99\"}: may not change once set"]
        );
    }

    #[test]
    fn prefer_dual_stack_is_not_upgraded_behind_its_back() {
        // Created on a single-stack cluster, updated after the cluster became dual-stack.
        let single = cidrs("10.0.0.0/24");
        let old = json!({"spec": create(json!({"ipFamilyPolicy": "PreferDualStack"}), &single).expect("c")});
        let dual = cidrs("10.0.0.0/24,fd00::/112");
        let mut new = json!({"spec": {"ports": [{"port": 80}]}});
        normalize_update(&old, &mut new);
        assign(&mut new, Some(&old), &dual, &HashSet::new()).expect("update");
        assert_eq!(new["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(new["spec"]["clusterIPs"], old["spec"]["clusterIPs"]);
    }

    #[test]
    fn v6_ranges_hand_out_at_most_65535_addresses() {
        let r = ServiceCidr::parse("fd00::/108").expect("range");
        assert_eq!(r.usable(), 65535);
        assert!(r.allocatable("fd00::ffff".parse().expect("ip")));
        assert!(!r.allocatable("fd00::1:0".parse().expect("ip")));
        assert!(!r.allocatable("fd00::".parse().expect("ip")));
        let v4 = ServiceCidr::parse("10.0.0.0/30").expect("range");
        let used: HashSet<IpAddr> = ["10.0.0.1".parse().expect("ip")].into();
        assert_eq!(v4.pick_free(&used), Some("10.0.0.2".parse().expect("ip")));
        let used: HashSet<IpAddr> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(v4.pick_free(&used), None);
    }
}
