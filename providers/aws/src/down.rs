//! What the cluster has, found by its tags alone (`status`), and deleting it in reverse order
//! (`down`).

use crate::cloud::{filter, sdk_error, tag_value, Clients, Error, CLUSTER_TAG, KUBE_TAG};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One resource of the cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Found {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub state: String,
}

fn found(kind: &'static str, id: &str, name: Option<&str>, state: &str) -> Found {
    Found {
        kind,
        id: id.to_string(),
        name: name.unwrap_or("").to_string(),
        state: state.to_string(),
    }
}

/// Filters for anything tagged with the cluster: rktup's tag, kube-up's, or the one
/// Kubernetes itself puts on load balancers, their security groups and volumes.
fn tag_queries(cluster: &str) -> Vec<Vec<Filter>> {
    vec![
        vec![filter(&format!("tag:{CLUSTER_TAG}"), cluster)],
        vec![filter(&format!("tag:{KUBE_TAG}"), cluster)],
        vec![filter(
            "tag-key",
            &format!("kubernetes.io/cluster/{cluster}"),
        )],
    ]
}

fn dedup(mut v: Vec<Found>) -> Vec<Found> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|f| seen.insert((f.kind, f.id.clone())));
    v
}

pub struct Inventory<'a> {
    pub c: &'a Clients,
    pub cluster: &'a str,
    pub bucket: String,
    /// The user's VPC_ID / SUBNET_ID: never listed for deletion.
    pub protected: Vec<String>,
}

impl Inventory<'_> {
    pub async fn list(&self) -> Result<Vec<Found>, Error> {
        let (a, b, c, d) = tokio::try_join!(
            self.network(),
            self.compute(),
            self.auto_scaling(),
            self.elsewhere()
        )?;
        let mut all: Vec<Found> = [a, b, c, d].into_iter().flatten().collect();
        all.retain(|f| !self.protected.contains(&f.id));
        Ok(dedup(all))
    }

    async fn network(&self) -> Result<Vec<Found>, Error> {
        let ec2 = &self.c.ec2;
        let mut out = Vec::new();
        for fs in tag_queries(self.cluster) {
            let r = ec2
                .describe_vpcs()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list VPCs", e))?;
            for v in r.vpcs() {
                let state = v.state().map(|s| s.as_str()).unwrap_or("");
                out.push(found(
                    "vpc",
                    v.vpc_id().unwrap_or_default(),
                    tag_value(v.tags(), "Name"),
                    state,
                ));
            }
            let r = ec2
                .describe_subnets()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list subnets", e))?;
            for s in r.subnets() {
                let state = s.state().map(|s| s.as_str()).unwrap_or("");
                out.push(found(
                    "subnet",
                    s.subnet_id().unwrap_or_default(),
                    tag_value(s.tags(), "Name"),
                    state,
                ));
            }
            let r = ec2
                .describe_internet_gateways()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list internet gateways", e))?;
            for g in r.internet_gateways() {
                let attached = if g.attachments().is_empty() {
                    "detached"
                } else {
                    "attached"
                };
                out.push(found(
                    "internet-gateway",
                    g.internet_gateway_id().unwrap_or_default(),
                    tag_value(g.tags(), "Name"),
                    attached,
                ));
            }
            let r = ec2
                .describe_route_tables()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list route tables", e))?;
            for t in r.route_tables() {
                out.push(found(
                    "route-table",
                    t.route_table_id().unwrap_or_default(),
                    tag_value(t.tags(), "Name"),
                    &format!("{} routes", t.routes().len()),
                ));
            }
            // Matched here: moto ignores tag filters on DHCP options.
            let r = ec2
                .describe_dhcp_options()
                .send()
                .await
                .map_err(|e| sdk_error("list DHCP options", e))?;
            for d in r.dhcp_options().iter().filter(|d| {
                tag_value(d.tags(), CLUSTER_TAG) == Some(self.cluster)
                    || tag_value(d.tags(), KUBE_TAG) == Some(self.cluster)
            }) {
                out.push(found(
                    "dhcp-options",
                    d.dhcp_options_id().unwrap_or_default(),
                    tag_value(d.tags(), "Name"),
                    "",
                ));
            }
            let r = ec2
                .describe_security_groups()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list security groups", e))?;
            for g in r.security_groups() {
                out.push(found(
                    "security-group",
                    g.group_id().unwrap_or_default(),
                    g.group_name(),
                    "",
                ));
            }
        }
        Ok(out)
    }

    async fn compute(&self) -> Result<Vec<Found>, Error> {
        let ec2 = &self.c.ec2;
        let mut out = Vec::new();
        for fs in tag_queries(self.cluster) {
            let r = ec2
                .describe_instances()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list instances", e))?;
            for i in r.reservations().iter().flat_map(|r| r.instances()) {
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|s| s.as_str())
                    .unwrap_or("");
                if state == "terminated" {
                    continue;
                }
                let ips = [i.private_ip_address(), i.public_ip_address()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(found(
                    "instance",
                    i.instance_id().unwrap_or_default(),
                    tag_value(i.tags(), "Name"),
                    format!("{state} {ips}").trim(),
                ));
            }
            let r = ec2
                .describe_volumes()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list volumes", e))?;
            for v in r.volumes() {
                let state = v.state().map(|s| s.as_str()).unwrap_or("");
                if state == "deleted" {
                    continue;
                }
                out.push(found(
                    "volume",
                    v.volume_id().unwrap_or_default(),
                    tag_value(v.tags(), "Name"),
                    state,
                ));
            }
            let r = ec2
                .describe_addresses()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list elastic IPs", e))?;
            for a in r.addresses() {
                let state = match (a.public_ip(), a.instance_id()) {
                    (Some(ip), Some(i)) => format!("{ip} -> {i}"),
                    (Some(ip), None) => ip.to_string(),
                    _ => String::new(),
                };
                out.push(found(
                    "elastic-ip",
                    a.allocation_id().unwrap_or_default(),
                    tag_value(a.tags(), "Name"),
                    &state,
                ));
            }
            let r = ec2
                .describe_key_pairs()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list key pairs", e))?;
            for k in r.key_pairs() {
                out.push(found(
                    "key-pair",
                    k.key_name().unwrap_or_default(),
                    k.key_name(),
                    "",
                ));
            }
            let r = ec2
                .describe_launch_templates()
                .set_filters(Some(fs.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("list launch templates", e))?;
            for t in r.launch_templates() {
                out.push(found(
                    "launch-template",
                    t.launch_template_id().unwrap_or_default(),
                    t.launch_template_name(),
                    &format!("v{}", t.latest_version_number().unwrap_or(0)),
                ));
            }
        }
        Ok(out)
    }

    async fn auto_scaling(&self) -> Result<Vec<Found>, Error> {
        let mut out = Vec::new();
        let mut pages = self
            .c
            .asg
            .describe_auto_scaling_groups()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("list auto scaling groups", e))?;
            for g in page.auto_scaling_groups() {
                let ours = g.tags().iter().any(|t| {
                    matches!(t.key(), Some(k) if k == CLUSTER_TAG || k == KUBE_TAG)
                        && t.value() == Some(self.cluster)
                });
                if ours {
                    out.push(found(
                        "auto-scaling-group",
                        g.auto_scaling_group_name().unwrap_or_default(),
                        g.auto_scaling_group_name(),
                        &format!(
                            "{}/{} instances",
                            g.instances().len(),
                            g.desired_capacity().unwrap_or(0)
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Classic load balancers Services made (kubernetes#25503), the staging bucket and the
    /// machines' IAM identities.
    async fn elsewhere(&self) -> Result<Vec<Found>, Error> {
        let mut out = Vec::new();
        let elb = &self.c.elb;
        let r = elb
            .describe_load_balancers()
            .send()
            .await
            .map_err(|e| sdk_error("list load balancers", e))?;
        let names: Vec<String> = r
            .load_balancer_descriptions()
            .iter()
            .filter_map(|d| d.load_balancer_name().map(str::to_string))
            .collect();
        for chunk in names.chunks(20) {
            let tags = elb
                .describe_tags()
                .set_load_balancer_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("read load balancer tags", e))?;
            for d in tags.tag_descriptions() {
                let ours = d.tags().iter().any(|t| {
                    (matches!(t.key(), k if k == CLUSTER_TAG || k == KUBE_TAG)
                        && t.value() == Some(self.cluster))
                        || t.key() == format!("kubernetes.io/cluster/{}", self.cluster)
                });
                if let (true, Some(n)) = (ours, d.load_balancer_name()) {
                    out.push(found("load-balancer", n, Some(n), ""));
                }
            }
        }
        if self
            .c
            .s3
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            let tagged = self
                .c
                .s3
                .get_bucket_tagging()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|t| {
                    t.tag_set()
                        .iter()
                        .any(|t| t.key() == CLUSTER_TAG && t.value() == self.cluster)
                })
                .unwrap_or(false);
            if tagged {
                out.push(found("s3-bucket", &self.bucket, Some(&self.bucket), ""));
            }
        }
        // The machines' IAM roles and instance profiles, by their names (iam.rs).
        for id in crate::iam::find(self.c, self.cluster).await? {
            out.push(found("iam-instance-profile", &id.name, Some(id.role), ""));
        }
        Ok(out)
    }
}

/// The order `down` deletes kinds in: the reverse of `up`, load balancers first.
pub const DELETE_ORDER: &[&str] = &[
    "load-balancer",
    "auto-scaling-group",
    "instance",
    "elastic-ip",
    "launch-template",
    // Once no instance runs with it.
    "iam-instance-profile",
    "key-pair",
    "volume",
    "security-group",
    "subnet",
    "route-table",
    "internet-gateway",
    "vpc",
    "dhcp-options",
    "s3-bucket",
];

const DEPENDENCY: &[&str] = &[
    "DependencyViolation",
    "InvalidDependencyViolation",
    "ResourceInUse",
    "VolumeInUse",
    "ScalingActivityInProgress",
    "ResourceInUseFault",
];

pub struct Deleter<'a> {
    pub c: &'a Clients,
    pub cluster: &'a str,
    /// How long to wait for instances and groups to go.
    pub timeout: Duration,
}

impl Deleter<'_> {
    /// Deletes `all` in DELETE_ORDER; returns what was deleted and what could not be.
    pub async fn delete(&self, all: &[Found]) -> (Vec<Found>, Vec<(Found, String)>) {
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for kind in DELETE_ORDER {
            let of_kind: Vec<&Found> = all.iter().filter(|f| f.kind == *kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            if *kind == "security-group" {
                // Groups refer to each other: drop the rules first so no group holds another.
                for f in &of_kind {
                    let _ = self.revoke_group_rules(&f.id).await;
                }
            }
            let results =
                crate::up::futures_join_all(of_kind.iter().map(|f| self.delete_one(f))).await;
            for (f, r) in of_kind.into_iter().zip(results) {
                match r {
                    Ok(()) => {
                        eprintln!("deleted {:<20} {} {}", f.kind, f.id, f.name);
                        deleted.push(f.clone());
                    }
                    Err(e) => failed.push((f.clone(), e.to_string())),
                }
            }
            if *kind == "auto-scaling-group" || *kind == "instance" {
                if let Err(e) = self.wait_instances_gone().await {
                    failed.push((found(kind, "-", None, ""), e.to_string()));
                }
            }
        }
        (deleted, failed)
    }

    async fn wait_instances_gone(&self) -> Result<(), Error> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let r = self
                .c
                .ec2
                .describe_instances()
                .filters(filter(&format!("tag:{CLUSTER_TAG}"), self.cluster))
                .filters(
                    Filter::builder()
                        .name("instance-state-name")
                        .values("pending")
                        .values("running")
                        .values("stopping")
                        .values("stopped")
                        .values("shutting-down")
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("wait for instances to terminate", e))?;
            let live: Vec<String> = r
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter(|i| {
                    i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("shutting-down")
                })
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect();
            let shutting = r.reservations().iter().flat_map(|r| r.instances()).count();
            if shutting == 0 {
                return Ok(());
            }
            if !live.is_empty() {
                // Started by the group after we looked: terminate them too.
                let _ = self
                    .c
                    .ec2
                    .terminate_instances()
                    .set_instance_ids(Some(live))
                    .send()
                    .await;
            }
            if start.elapsed() > self.timeout {
                return Err(Error::new(format!(
                    "{shutting} instances still not terminated after {:?}",
                    self.timeout
                )));
            }
            attempt += 1;
            tokio::time::sleep(self.c.retry.delay(attempt.min(4))).await;
        }
    }

    async fn revoke_group_rules(&self, id: &str) -> Result<(), Error> {
        let ec2 = &self.c.ec2;
        let r = ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error("read a security group", e))?;
        for g in r.security_groups() {
            let refs: Vec<_> = g
                .ip_permissions()
                .iter()
                .filter(|p| !p.user_id_group_pairs().is_empty())
                .cloned()
                .collect();
            if !refs.is_empty() {
                ec2.revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(refs))
                    .send()
                    .await
                    .map_err(|e| sdk_error("revoke security group rules", e))?;
            }
        }
        Ok(())
    }

    async fn delete_one(&self, f: &Found) -> Result<(), Error> {
        let ec2 = &self.c.ec2;
        let id = f.id.as_str();
        let gone = |e: &Error| {
            e.code
                .as_deref()
                .is_some_and(|c| c.contains("NotFound") || c == "NoSuchBucket")
                || e.message.contains("NotFound")
        };
        let r = match f.kind {
            "load-balancer" => self
                .c
                .elb
                .delete_load_balancer()
                .load_balancer_name(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error("delete the load balancer", e)),
            "auto-scaling-group" => self
                .c
                .retry_on("delete the auto scaling group", DEPENDENCY, || {
                    self.c
                        .asg
                        .delete_auto_scaling_group()
                        .auto_scaling_group_name(id)
                        .force_delete(true)
                        .send()
                })
                .await
                .map(|_| ()),
            "instance" => ec2
                .terminate_instances()
                .instance_ids(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error("terminate the instance", e)),
            "elastic-ip" => {
                let r = ec2
                    .describe_addresses()
                    .allocation_ids(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("read the elastic IP", e))?;
                for a in r.addresses() {
                    if let Some(assoc) = a.association_id() {
                        let _ = ec2
                            .disassociate_address()
                            .association_id(assoc)
                            .send()
                            .await;
                    }
                }
                self.c
                    .retry_on("release the elastic IP", DEPENDENCY, || {
                        ec2.release_address().allocation_id(id).send()
                    })
                    .await
                    .map(|_| ())
            }
            "launch-template" => ec2
                .delete_launch_template()
                .launch_template_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error("delete the launch template", e)),
            "key-pair" => ec2
                .delete_key_pair()
                .key_name(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error("delete the key pair", e)),
            "volume" => self
                .c
                .retry_on("delete the volume", DEPENDENCY, || {
                    ec2.delete_volume().volume_id(id).send()
                })
                .await
                .map(|_| ()),
            "security-group" => self
                .c
                .retry_on("delete the security group", DEPENDENCY, || {
                    ec2.delete_security_group().group_id(id).send()
                })
                .await
                .map(|_| ()),
            "subnet" => self
                .c
                .retry_on("delete the subnet", DEPENDENCY, || {
                    ec2.delete_subnet().subnet_id(id).send()
                })
                .await
                .map(|_| ()),
            "route-table" => {
                let r = ec2
                    .describe_route_tables()
                    .route_table_ids(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("read the route table", e))?;
                for a in r.route_tables().iter().flat_map(|t| t.associations()) {
                    if let (Some(assoc), false) =
                        (a.route_table_association_id(), a.main().unwrap_or(false))
                    {
                        let _ = ec2
                            .disassociate_route_table()
                            .association_id(assoc)
                            .send()
                            .await;
                    }
                }
                self.c
                    .retry_on("delete the route table", DEPENDENCY, || {
                        ec2.delete_route_table().route_table_id(id).send()
                    })
                    .await
                    .map(|_| ())
            }
            "internet-gateway" => {
                let r = ec2
                    .describe_internet_gateways()
                    .internet_gateway_ids(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("read the internet gateway", e))?;
                for a in r.internet_gateways().iter().flat_map(|g| g.attachments()) {
                    if let Some(vpc) = a.vpc_id() {
                        self.c
                            .retry_on("detach the internet gateway", DEPENDENCY, || {
                                ec2.detach_internet_gateway()
                                    .internet_gateway_id(id)
                                    .vpc_id(vpc)
                                    .send()
                            })
                            .await?;
                    }
                }
                ec2.delete_internet_gateway()
                    .internet_gateway_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| sdk_error("delete the internet gateway", e))
            }
            "vpc" => self
                .c
                .retry_on("delete the VPC", DEPENDENCY, || {
                    ec2.delete_vpc().vpc_id(id).send()
                })
                .await
                .map(|_| ()),
            "dhcp-options" => self
                .c
                .retry_on("delete the DHCP options", DEPENDENCY, || {
                    ec2.delete_dhcp_options().dhcp_options_id(id).send()
                })
                .await
                .map(|_| ()),
            "s3-bucket" => self.empty_and_delete_bucket(id).await,
            "iam-instance-profile" => {
                let role = if f.name == "master" { "master" } else { "node" };
                let identity = crate::iam::FoundIdentity {
                    name: id.to_string(),
                    role,
                };
                crate::iam::delete(self.c, &identity).await
            }
            other => Err(Error::new(format!("no way to delete a {other}"))),
        };
        match r {
            Err(e) if gone(&e) => Ok(()),
            r => r,
        }
    }

    async fn empty_and_delete_bucket(&self, bucket: &str) -> Result<(), Error> {
        let s3 = &self.c.s3;
        let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("list the staging bucket", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    s3.delete_object()
                        .bucket(bucket)
                        .key(k)
                        .send()
                        .await
                        .map_err(|e| sdk_error("delete a staged object", e))?;
                }
            }
        }
        s3.delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.code() == Some("NoSuchBucket") {
                    Error::action("delete the staging bucket", "").with_code("NoSuchBucket")
                } else {
                    sdk_error("delete the staging bucket", e)
                }
            })
    }
}
