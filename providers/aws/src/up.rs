//! `up`'s actions: find what the cluster already has by its tags, create what is missing. The
//! order is the graph's (`graph.rs`).

use crate::cloud::{
    cluster_filters, filter, sdk_error, tag_spec, tags, Clients, Error, CLUSTER_TAG, KUBE_TAG,
    NOT_FOUND_YET, ROLE_TAG,
};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, DomainType, EbsBlockDevice, HttpTokensState,
    IamInstanceProfileSpecification, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceType, IpPermission, IpRange, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateTagSpecificationRequest, NewDhcpConfiguration, RequestLaunchTemplateData,
    ResourceType, UserIdGroupPair, VolumeType,
};
use base64::Engine;
use rktup_config::{AwsSettings, ClusterSettings};
use std::future::Future;
use std::path::Path;

/// Flatcar's AWS account, whose public `Flatcar-stable-*` images are looked up.
pub const FLATCAR_OWNER: &str = "075585003325";

/// What `up` found or made, by role.
#[derive(Debug, Clone, Default)]
pub struct Made {
    pub vpc: String,
    pub vpc_ours: bool,
    pub subnet: String,
    pub route_table: Option<String>,
    pub igw: Option<String>,
    pub sg_master: String,
    pub sg_node: String,
    pub key_name: String,
    pub eip_alloc: String,
    pub eip: String,
    pub master_image: String,
    pub node_image: String,
    pub master: String,
    /// The instance profiles of the master and of the nodes (`iam.rs`).
    pub master_profile: String,
    pub node_profile: String,
}

/// EC2 refuses a new instance profile for a few seconds after IAM made it (IAM is eventually
/// consistent): "Value (...) for parameter iamInstanceProfile.name is invalid".
const PROFILE_NOT_YET: &[&str] = &[
    "InvalidParameterValue",
    "InvalidInstanceID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidSubnetID.NotFound",
];

pub struct Cluster<'a> {
    pub aws: &'a crate::Aws,
    pub c: Clients,
    pub s: &'a ClusterSettings,
    pub a: &'a AwsSettings,
}

impl Cluster<'_> {
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.s.name)
    }
    fn cluster(&self) -> &str {
        &self.s.name
    }

    pub async fn vpc(&self) -> Result<(String, bool), Error> {
        let ec2 = &self.c.ec2;
        if let Some(id) = &self.a.vpc_id {
            let out = ec2
                .describe_vpcs()
                .vpc_ids(id)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("find VPC_ID {id}"), e))?;
            if out.vpcs().is_empty() {
                return Err(Error::new(format!("VPC_ID {id} does not exist")));
            }
            return Ok((id.clone(), false));
        }
        let out = ec2
            .describe_vpcs()
            .set_filters(Some(cluster_filters(self.cluster(), Some("vpc"))))
            .send()
            .await
            .map_err(|e| sdk_error("look up the VPC", e))?;
        let id = match out.vpcs().first().and_then(|v| v.vpc_id()) {
            Some(id) => id.to_string(),
            None => ec2
                .create_vpc()
                .cidr_block(self.a.vpc_cidr.to_string())
                .tag_specifications(tag_spec(
                    ResourceType::Vpc,
                    self.cluster(),
                    "vpc",
                    &self.name("vpc"),
                ))
                .send()
                .await
                .map_err(|e| sdk_error("create the VPC", e))?
                .vpc()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| Error::new("CreateVpc returned no VPC id"))?
                .to_string(),
        };
        Ok((id, true))
    }

    /// DNS support and DNS hostnames in our VPC: one attribute per call (the API's rule), both
    /// at once.
    pub async fn vpc_dns(&self, vpc: &str) -> Result<(), Error> {
        let ec2 = &self.c.ec2;
        let turn_on = |support: bool| {
            self.c
                .retry_on("turn on DNS in the VPC", NOT_FOUND_YET, move || {
                    let yes = AttributeBooleanValue::builder().value(true).build();
                    let r = ec2.modify_vpc_attribute().vpc_id(vpc);
                    let r = if support {
                        r.enable_dns_support(yes)
                    } else {
                        r.enable_dns_hostnames(yes)
                    };
                    r.send()
                })
        };
        tokio::try_join!(turn_on(true), turn_on(false))?;
        Ok(())
    }

    pub async fn key_pair(&self) -> Result<String, Error> {
        let name = self.name("key");
        let pub_path = {
            let mut p = self.a.ssh_key.clone().into_os_string();
            p.push(".pub");
            std::path::PathBuf::from(p)
        };
        let material = std::fs::read(&pub_path).map_err(|e| {
            Error::new(format!(
                "AWS_SSH_KEY: cannot read the public key {}: {e}; make one with `ssh-keygen -t rsa -N '' -f {}`",
                pub_path.display(),
                self.a.ssh_key.display()
            ))
        })?;
        let ec2 = &self.c.ec2;
        let found = ec2
            .describe_key_pairs()
            .filters(filter("key-name", &name))
            .send()
            .await
            .map_err(|e| sdk_error("look up the key pair", e))?;
        if !found.key_pairs().is_empty() {
            return Ok(name);
        }
        match ec2
            .import_key_pair()
            .key_name(&name)
            .public_key_material(aws_smithy_types::Blob::new(material))
            .tag_specifications(tag_spec(
                ResourceType::KeyPair,
                self.cluster(),
                "key",
                &name,
            ))
            .send()
            .await
        {
            Ok(_) => Ok(name),
            Err(e) if e.code() == Some("InvalidKeyPair.Duplicate") => Ok(name),
            Err(e) => Err(sdk_error("import the key pair", e)),
        }
    }

    pub async fn elastic_ip(&self) -> Result<(String, String), Error> {
        let ec2 = &self.c.ec2;
        let out = ec2
            .describe_addresses()
            .set_filters(Some(cluster_filters(self.cluster(), Some("master-ip"))))
            .send()
            .await
            .map_err(|e| sdk_error("look up the elastic IP", e))?;
        if let Some(a) = out.addresses().first() {
            if let (Some(id), Some(ip)) = (a.allocation_id(), a.public_ip()) {
                return Ok((id.to_string(), ip.to_string()));
            }
        }
        let a = ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tag_spec(
                ResourceType::ElasticIp,
                self.cluster(),
                "master-ip",
                &self.name("master-ip"),
            ))
            .send()
            .await
            .map_err(|e| sdk_error("allocate the elastic IP", e))?;
        match (a.allocation_id(), a.public_ip()) {
            (Some(id), Some(ip)) => Ok((id.to_string(), ip.to_string())),
            _ => Err(Error::new("AllocateAddress returned no allocation id")),
        }
    }

    pub async fn image(&self, given: &Option<String>) -> Result<String, Error> {
        if let Some(id) = given {
            return Ok(id.clone());
        }
        let out = self
            .c
            .ec2
            .describe_images()
            .owners(FLATCAR_OWNER)
            .filters(filter("name", "Flatcar-stable-*"))
            .filters(filter("architecture", "x86_64"))
            .filters(filter("state", "available"))
            .send()
            .await
            .map_err(|e| sdk_error("look up the Flatcar stable AMI", e))?;
        out.images()
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
            .and_then(|i| i.image_id())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::new(format!(
                    "no Flatcar stable AMI found in {} (owner {FLATCAR_OWNER}, name Flatcar-stable-*, x86_64); set KUBE_MASTER_IMAGE and KUBE_NODE_IMAGE to AMI ids",
                    self.c.region
                ))
            })
    }

    pub async fn subnet(&self, vpc: &str) -> Result<String, Error> {
        let ec2 = &self.c.ec2;
        if let Some(id) = &self.a.subnet_id {
            let out = ec2
                .describe_subnets()
                .subnet_ids(id)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("find SUBNET_ID {id}"), e))?;
            match out.subnets().first().and_then(|s| s.vpc_id()) {
                Some(v) if v == vpc => return Ok(id.clone()),
                Some(v) => {
                    return Err(Error::new(format!(
                        "SUBNET_ID {id} is in {v}, not in VPC_ID {vpc}"
                    )))
                }
                None => return Err(Error::new(format!("SUBNET_ID {id} does not exist"))),
            }
        }
        let out = ec2
            .describe_subnets()
            .set_filters(Some(cluster_filters(self.cluster(), Some("subnet"))))
            .send()
            .await
            .map_err(|e| sdk_error("look up the subnet", e))?;
        let id = match out.subnets().first().and_then(|s| s.subnet_id()) {
            Some(id) => id.to_string(),
            None => self
                .c
                .retry_on("create the subnet", NOT_FOUND_YET, || {
                    ec2.create_subnet()
                        .vpc_id(vpc)
                        .cidr_block(self.a.subnet_cidr.to_string())
                        .availability_zone(&self.a.zone)
                        .tag_specifications(tag_spec(
                            ResourceType::Subnet,
                            self.cluster(),
                            "subnet",
                            &self.name("subnet"),
                        ))
                        .send()
                })
                .await?
                .subnet()
                .and_then(|s| s.subnet_id())
                .ok_or_else(|| Error::new("CreateSubnet returned no subnet id"))?
                .to_string(),
        };
        self.c
            .retry_on("give the subnet public addresses", NOT_FOUND_YET, || {
                ec2.modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                    .send()
            })
            .await?;
        Ok(id)
    }

    pub async fn dhcp_options(&self, vpc: &str) -> Result<String, Error> {
        let ec2 = &self.c.ec2;
        // Matched here, not by a filter: moto ignores tag filters on DHCP options.
        let out = ec2
            .describe_dhcp_options()
            .send()
            .await
            .map_err(|e| sdk_error("look up the DHCP options", e))?;
        let mine = out.dhcp_options().iter().find(|d| {
            crate::cloud::tag_value(d.tags(), CLUSTER_TAG) == Some(self.cluster())
                && crate::cloud::tag_value(d.tags(), ROLE_TAG) == Some("dhcp-options")
        });
        let id = match mine.and_then(|d| d.dhcp_options_id()) {
            Some(id) => id.to_string(),
            None => {
                let domain = if self.c.region == "us-east-1" {
                    "ec2.internal".to_string()
                } else {
                    format!("{}.compute.internal", self.c.region)
                };
                ec2.create_dhcp_options()
                    .dhcp_configurations(
                        NewDhcpConfiguration::builder()
                            .key("domain-name")
                            .values(domain)
                            .build(),
                    )
                    .dhcp_configurations(
                        NewDhcpConfiguration::builder()
                            .key("domain-name-servers")
                            .values("AmazonProvidedDNS")
                            .build(),
                    )
                    .tag_specifications(tag_spec(
                        ResourceType::DhcpOptions,
                        self.cluster(),
                        "dhcp-options",
                        &self.name("dhcp-options"),
                    ))
                    .send()
                    .await
                    .map_err(|e| sdk_error("create the DHCP options", e))?
                    .dhcp_options()
                    .and_then(|d| d.dhcp_options_id())
                    .ok_or_else(|| Error::new("CreateDhcpOptions returned no id"))?
                    .to_string()
            }
        };
        // Tagged again explicitly: moto drops CreateDhcpOptions' TagSpecifications. The
        // association does not need the tags, so both at once.
        tokio::try_join!(
            self.c.retry_on("tag the DHCP options", NOT_FOUND_YET, || {
                ec2.create_tags()
                    .resources(&id)
                    .set_tags(Some(tags(
                        self.cluster(),
                        "dhcp-options",
                        &self.name("dhcp-options"),
                    )))
                    .send()
            }),
            self.c
                .retry_on("associate the DHCP options", NOT_FOUND_YET, || {
                    ec2.associate_dhcp_options()
                        .dhcp_options_id(&id)
                        .vpc_id(vpc)
                        .send()
                }),
        )?;
        Ok(id)
    }

    pub async fn internet_gateway(&self, vpc: &str) -> Result<String, Error> {
        let ec2 = &self.c.ec2;
        let out = ec2
            .describe_internet_gateways()
            .set_filters(Some(cluster_filters(self.cluster(), Some("igw"))))
            .send()
            .await
            .map_err(|e| sdk_error("look up the internet gateway", e))?;
        let (id, attached) = match out.internet_gateways().first() {
            Some(g) => (
                g.internet_gateway_id().unwrap_or_default().to_string(),
                g.attachments().iter().any(|a| a.vpc_id() == Some(vpc)),
            ),
            None => (
                ec2.create_internet_gateway()
                    .tag_specifications(tag_spec(
                        ResourceType::InternetGateway,
                        self.cluster(),
                        "igw",
                        &self.name("igw"),
                    ))
                    .send()
                    .await
                    .map_err(|e| sdk_error("create the internet gateway", e))?
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| Error::new("CreateInternetGateway returned no id"))?
                    .to_string(),
                false,
            ),
        };
        if !attached {
            let r = self
                .c
                .retry_on("attach the internet gateway", NOT_FOUND_YET, || {
                    ec2.attach_internet_gateway()
                        .internet_gateway_id(&id)
                        .vpc_id(vpc)
                        .send()
                })
                .await;
            if let Err(e) = r {
                if !e.is("Resource.AlreadyAssociated") {
                    return Err(e);
                }
            }
        }
        Ok(id)
    }

    pub async fn route_table(&self, vpc: &str) -> Result<String, Error> {
        let ec2 = &self.c.ec2;
        let out = ec2
            .describe_route_tables()
            .set_filters(Some(cluster_filters(self.cluster(), Some("route-table"))))
            .send()
            .await
            .map_err(|e| sdk_error("look up the route table", e))?;
        if let Some(id) = out.route_tables().first().and_then(|r| r.route_table_id()) {
            return Ok(id.to_string());
        }
        Ok(self
            .c
            .retry_on("create the route table", NOT_FOUND_YET, || {
                ec2.create_route_table()
                    .vpc_id(vpc)
                    .tag_specifications(tag_spec(
                        ResourceType::RouteTable,
                        self.cluster(),
                        "route-table",
                        &self.name("route-table"),
                    ))
                    .send()
            })
            .await?
            .route_table()
            .and_then(|r| r.route_table_id())
            .ok_or_else(|| Error::new("CreateRouteTable returned no id"))?
            .to_string())
    }

    pub async fn security_group(&self, vpc: &str, role: &str, name: &str) -> Result<String, Error> {
        let ec2 = &self.c.ec2;
        let out = ec2
            .describe_security_groups()
            .set_filters(Some(cluster_filters(self.cluster(), Some(role))))
            .send()
            .await
            .map_err(|e| sdk_error("look up the security groups", e))?;
        if let Some(id) = out.security_groups().first().and_then(|g| g.group_id()) {
            return Ok(id.to_string());
        }
        let r = self
            .c
            .retry_on("create a security group", NOT_FOUND_YET, || {
                ec2.create_security_group()
                    .group_name(name)
                    .description(format!("rktup cluster {}", self.cluster()))
                    .vpc_id(vpc)
                    .tag_specifications(tag_spec(
                        ResourceType::SecurityGroup,
                        self.cluster(),
                        role,
                        name,
                    ))
                    .send()
            })
            .await?;
        r.group_id()
            .map(str::to_string)
            .ok_or_else(|| Error::new("CreateSecurityGroup returned no id"))
    }

    /// All traffic between the cluster's groups, 22 from SSH_CIDR, 443 (master) from
    /// HTTP_API_CIDR.
    pub async fn security_rules(&self, m: &Made) -> Result<usize, Error> {
        let from_group = |g: &str| {
            IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build())
                .build()
        };
        let tcp = |port: i32, cidr: String| {
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(port)
                .to_port(port)
                .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
                .build()
        };
        let ssh = self.a.ssh_cidr.to_string();
        let rules = [
            (&m.sg_master, from_group(&m.sg_master)),
            (&m.sg_master, from_group(&m.sg_node)),
            (&m.sg_master, tcp(22, ssh.clone())),
            (&m.sg_master, tcp(443, self.a.http_api_cidr.to_string())),
            (&m.sg_node, from_group(&m.sg_node)),
            (&m.sg_node, from_group(&m.sg_master)),
            (&m.sg_node, tcp(22, ssh)),
        ];
        let ec2 = &self.c.ec2;
        let mut added = 0;
        // One call per rule, all at once: a rule that is there already fails alone.
        let calls = rules.iter().map(|(group, perm)| async move {
            let r = self
                .c
                .retry_on("open a security group rule", NOT_FOUND_YET, || {
                    ec2.authorize_security_group_ingress()
                        .group_id(group.as_str())
                        .ip_permissions(perm.clone())
                        .send()
                })
                .await;
            match r {
                Ok(_) => Ok(true),
                Err(e) if e.is("InvalidPermission.Duplicate") => Ok(false),
                Err(e) => Err(e),
            }
        });
        for r in futures_join_all(calls).await {
            if r? {
                added += 1;
            }
        }
        Ok(added)
    }

    pub async fn default_route(&self, rt: &str, igw: &str, subnet: &str) -> Result<(), Error> {
        let ec2 = &self.c.ec2;
        let out = ec2
            .describe_route_tables()
            .route_table_ids(rt)
            .send()
            .await
            .map_err(|e| sdk_error("read the route table", e))?;
        let table = out.route_tables().first();
        let has_route = table.is_some_and(|t| {
            t.routes()
                .iter()
                .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
        });
        let associated = table.is_some_and(|t| {
            t.associations()
                .iter()
                .any(|a| a.subnet_id() == Some(subnet))
        });
        // The route and the subnet's association are independent: both at once.
        let route = async {
            if has_route {
                return Ok(());
            }
            let r = self
                .c
                .retry_on("add the default route", NOT_FOUND_YET, || {
                    ec2.create_route()
                        .route_table_id(rt)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(igw)
                        .send()
                })
                .await;
            match r {
                Err(e) if !e.is("RouteAlreadyExists") => Err(e),
                _ => Ok(()),
            }
        };
        let association = async {
            if associated {
                return Ok(());
            }
            self.c
                .retry_on("associate the route table", NOT_FOUND_YET, || {
                    ec2.associate_route_table()
                        .route_table_id(rt)
                        .subnet_id(subnet)
                        .send()
                })
                .await
                .map(drop)
        };
        tokio::try_join!(route, association)?;
        Ok(())
    }

    /// The live instance with `role`, if any.
    pub async fn find_instance(&self, role: &str) -> Result<Option<String>, Error> {
        let out = self
            .c
            .ec2
            .describe_instances()
            .set_filters(Some(cluster_filters(self.cluster(), Some(role))))
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("look up instances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id())
            .map(str::to_string)
            .next())
    }

    pub async fn master(&self, m: &Made, user_data: &[u8]) -> Result<(String, bool), Error> {
        if let Some(id) = self.find_instance("master").await? {
            return Ok((id, false));
        }
        let ec2 = &self.c.ec2;
        let token = {
            use sha2::Digest;
            let h = sha2::Sha256::digest(format!(
                "{}/{}/{}/{}",
                self.cluster(),
                m.subnet,
                m.sg_master,
                m.eip_alloc
            ));
            format!("rktup-master-{:x}", h)[..40].to_string()
        };
        let out = self
            .c
            .retry_on("start the master", PROFILE_NOT_YET, || {
                ec2.run_instances()
                    .image_id(&m.master_image)
                    .instance_type(InstanceType::from(self.a.master_size.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .key_name(&m.key_name)
                    .subnet_id(&m.subnet)
                    .private_ip_address(crate::master_ip(self.a).to_string())
                    .security_group_ids(&m.sg_master)
                    .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
                    .metadata_options(imds_v2_instance())
                    .iam_instance_profile(
                        IamInstanceProfileSpecification::builder()
                            .name(&m.master_profile)
                            .build(),
                    )
                    .client_token(&token)
                    .block_device_mappings(
                        BlockDeviceMapping::builder()
                            .device_name("/dev/xvda")
                            .ebs(
                                EbsBlockDevice::builder()
                                    .volume_size(self.a.master_root_disk_size as i32)
                                    .volume_type(VolumeType::from(
                                        self.a.master_root_disk_type.as_str(),
                                    ))
                                    .delete_on_termination(true)
                                    .build(),
                            )
                            .build(),
                    )
                    .tag_specifications(tag_spec(
                        ResourceType::Instance,
                        self.cluster(),
                        "master",
                        &self.name("master"),
                    ))
                    .tag_specifications(tag_spec(
                        ResourceType::Volume,
                        self.cluster(),
                        "master",
                        &self.name("master"),
                    ))
                    .send()
            })
            .await?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| Error::new("RunInstances returned no instance"))?
            .to_string();
        // EC2 is eventually consistent: the id may be unknown to the next call for a while.
        self.c
            .retry_on("see the new master", NOT_FOUND_YET, || {
                ec2.describe_instances().instance_ids(&id).send()
            })
            .await?;
        Ok((id, true))
    }

    pub async fn launch_template(&self, m: &Made, user_data: &[u8]) -> Result<String, Error> {
        let ec2 = &self.c.ec2;
        let name = self.name("minion-template");
        match ec2
            .describe_launch_templates()
            .launch_template_names(&name)
            .send()
            .await
        {
            Ok(out) if !out.launch_templates().is_empty() => return Ok(name),
            Ok(_) => {}
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.NotFoundException") => {}
            Err(e) => return Err(sdk_error("look up the launch template", e)),
        }
        let lt_tags = |kind| {
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(kind)
                .set_tags(Some(tags(self.cluster(), "node", &self.name("minion"))))
                .build()
        };
        let data = RequestLaunchTemplateData::builder()
            .image_id(&m.node_image)
            .instance_type(InstanceType::from(self.a.node_size.as_str()))
            .key_name(&m.key_name)
            .security_group_ids(&m.sg_node)
            .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
            .metadata_options(imds_v2_template())
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(&m.node_profile)
                    .build(),
            )
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(self.a.node_root_disk_size as i32)
                            .volume_type(VolumeType::from(self.a.node_root_disk_type.as_str()))
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(lt_tags(ResourceType::Instance))
            .tag_specifications(lt_tags(ResourceType::Volume))
            .build();
        match ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(data)
            .tag_specifications(tag_spec(
                ResourceType::LaunchTemplate,
                self.cluster(),
                "minion-template",
                &name,
            ))
            .send()
            .await
        {
            Ok(_) => Ok(name),
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.AlreadyExistsException") => {
                Ok(name)
            }
            Err(e) => Err(sdk_error("create the launch template", e)),
        }
    }

    pub async fn associate_eip(&self, m: &Made) -> Result<(), Error> {
        let ec2 = &self.c.ec2;
        self.c
            .retry_on("associate the elastic IP", NOT_FOUND_YET, || {
                ec2.associate_address()
                    .allocation_id(&m.eip_alloc)
                    .instance_id(&m.master)
                    .allow_reassociation(true)
                    .send()
            })
            .await?;
        Ok(())
    }

    pub async fn auto_scaling_group(&self, m: &Made, template: &str) -> Result<String, Error> {
        use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
        let asg = &self.c.asg;
        let name = self.name("minion-group");
        let n = self.s.num_nodes as i32;
        let out = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&name)
            .send()
            .await
            .map_err(|e| sdk_error("look up the auto scaling group", e))?;
        if let Some(g) = out.auto_scaling_groups().first() {
            if g.desired_capacity() != Some(n) {
                asg.update_auto_scaling_group()
                    .auto_scaling_group_name(&name)
                    .min_size(n)
                    .max_size(n)
                    .desired_capacity(n)
                    .send()
                    .await
                    .map_err(|e| sdk_error("resize the auto scaling group", e))?;
                return Ok(format!("resized to {n}"));
            }
            return Ok(format!("exists, {n} nodes"));
        }
        let tag = |k: &str, v: &str| {
            Tag::builder()
                .resource_id(&name)
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(true)
                .build()
        };
        let r = asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(template)
                    .version("$Latest")
                    .build(),
            )
            .min_size(n)
            .max_size(n)
            .desired_capacity(n)
            .vpc_zone_identifier(&m.subnet)
            .tags(tag(KUBE_TAG, self.cluster()))
            .tags(tag(CLUSTER_TAG, self.cluster()))
            .tags(tag(ROLE_TAG, "node"))
            .tags(tag("Name", &self.name("minion")))
            .send()
            .await;
        match r {
            Ok(_) => Ok(format!("created, {n} nodes")),
            Err(e) if e.code() == Some("AlreadyExists") => Ok(format!("exists, {n} nodes")),
            Err(e) => Err(sdk_error("create the auto scaling group", e)),
        }
    }

    /// kubenet: node i gets the i-th /24 of CLUSTER_IP_RANGE, routed to it in the cluster's
    /// route table (the job kube-up left to the in-tree cloud provider's route controller).
    /// The nodes and the table are read at once, then every node's route is made at once.
    pub async fn pod_routes(&self, rt: &str) -> Result<usize, Error> {
        let (nodes, existing) = tokio::try_join!(self.live_nodes(), self.instance_routes(rt))?;
        let cidrs = self
            .s
            .cluster_ip_range
            .subnets(24)
            .map_err(|e| Error::new(format!("CLUSTER_IP_RANGE: {e}")))?;
        let missing: Vec<(String, String, bool)> = nodes
            .into_iter()
            .zip(cidrs)
            .map(|(node, cidr)| (node, cidr.to_string()))
            .filter(|(node, cidr)| !existing.iter().any(|(c, i)| c == cidr && i == node))
            .map(|(node, cidr)| {
                let stale = existing.iter().any(|(c, _)| *c == cidr);
                (node, cidr, stale)
            })
            .collect();
        let made = missing.len();
        let routes = missing
            .iter()
            .map(|(node, cidr, stale)| self.pod_route(rt, node, cidr, *stale));
        for r in futures_join_all(routes).await {
            r?;
        }
        Ok(made)
    }

    /// The cluster's pending or running nodes, sorted by id (node i gets the i-th pod CIDR).
    async fn live_nodes(&self) -> Result<Vec<String>, Error> {
        let out = self
            .c
            .ec2
            .describe_instances()
            .set_filters(Some(cluster_filters(self.cluster(), Some("node"))))
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("list the nodes", e))?;
        let mut nodes: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id())
            .map(str::to_string)
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// The (destination, instance) routes of the route table.
    async fn instance_routes(&self, rt: &str) -> Result<Vec<(String, String)>, Error> {
        let table = self
            .c
            .ec2
            .describe_route_tables()
            .route_table_ids(rt)
            .send()
            .await
            .map_err(|e| sdk_error("read the route table", e))?;
        Ok(table
            .route_tables()
            .iter()
            .flat_map(|t| t.routes())
            .filter_map(|r| {
                Some((
                    r.destination_cidr_block()?.to_string(),
                    r.instance_id()?.to_string(),
                ))
            })
            .collect())
    }

    /// One node's pod route. In order: a stale route for the CIDR must go before the new one
    /// can be created, and the source/dest check goes off before the route exists, so an
    /// existing route always means a node that can forward pod traffic.
    async fn pod_route(&self, rt: &str, node: &str, cidr: &str, stale: bool) -> Result<(), Error> {
        let ec2 = &self.c.ec2;
        if stale {
            ec2.delete_route()
                .route_table_id(rt)
                .destination_cidr_block(cidr)
                .send()
                .await
                .map_err(|e| sdk_error("replace a stale pod route", e))?;
        }
        self.c
            .retry_on(
                "disable the node's source/dest check",
                NOT_FOUND_YET,
                || {
                    ec2.modify_instance_attribute()
                        .instance_id(node)
                        .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                        .send()
                },
            )
            .await?;
        self.c
            .retry_on("route a pod CIDR", NOT_FOUND_YET, || {
                ec2.create_route()
                    .route_table_id(rt)
                    .destination_cidr_block(cidr)
                    .instance_id(node)
                    .send()
            })
            .await?;
        Ok(())
    }

    /// Creates the staging bucket if missing.
    pub async fn bucket(&self, bucket: &str) -> Result<bool, Error> {
        use aws_sdk_s3::types::{
            BucketLocationConstraint, CreateBucketConfiguration, Tag, Tagging,
        };
        let s3 = &self.c.s3;
        if s3.head_bucket().bucket(bucket).send().await.is_ok() {
            return Ok(false);
        }
        let mut req = s3.create_bucket().bucket(bucket);
        if self.c.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.c.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) => return Err(sdk_error(&format!("create bucket {bucket}"), e)),
        }
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let tagging = Tagging::builder()
            .tag_set(tag(KUBE_TAG, self.cluster()).map_err(|e| Error::new(e.to_string()))?)
            .tag_set(tag(CLUSTER_TAG, self.cluster()).map_err(|e| Error::new(e.to_string()))?)
            .build()
            .map_err(|e| Error::new(e.to_string()))?;
        s3.put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| sdk_error("tag the staging bucket", e))?;
        Ok(true)
    }

    /// Uploads `binary` as `key` unless there. Machines get it with their instance profile's
    /// credentials (`rktup-fetch`, SigV4): no pre-signed URL, which lasts at most 7 days and
    /// would be baked into the launch template that Auto Scaling reuses for ever.
    pub async fn stage(&self, bucket: &str, key: &str, binary: &Path) -> Result<(), Error> {
        let s3 = &self.c.s3;
        if s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .is_err()
        {
            let body = aws_sdk_s3::primitives::ByteStream::from_path(binary)
                .await
                .map_err(|e| Error::new(format!("read {}: {e}", binary.display())))?;
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error("upload the rktup binary", e))?;
        }
        Ok(())
    }

    /// Uploads the master's private keys (`pki-<file>`), which its instance profile alone may
    /// get; the master checks each against the sha256 in its user-data. Put every time: the
    /// objects are the state directory's PKI.
    pub async fn stage_master_pki(
        &self,
        bucket: &str,
        pki: &rktup_render::Pki,
    ) -> Result<usize, Error> {
        let s3 = &self.c.s3;
        let objects = rktup_render::master_staged_objects(pki);
        let puts = objects.iter().map(|(key, content)| async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(
                    content.as_bytes().to_vec(),
                ))
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("upload the master's {key}"), e))
        });
        for r in futures_join_all(puts).await {
            r?;
        }
        Ok(objects.len())
    }
}

/// Runs futures concurrently and collects their results in order.
pub async fn futures_join_all<F: Future>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    // tokio::join! needs a fixed count; poll them together through a JoinSet-free select loop.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

/// IMDSv2 only, with a hop limit of 1: a session token must be PUT first and its answer does
/// not survive one more hop, so a pod behind the node's bridge/NAT cannot read the instance's
/// credentials or user-data through 169.254.169.254 (issue 16; kops' default since 1.22).
pub fn imds_v2_instance() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .build()
}

/// The launch template's form of `imds_v2_instance` (the Auto Scaling group's nodes).
pub fn imds_v2_template() -> LaunchTemplateInstanceMetadataOptionsRequest {
    LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .http_tokens(LaunchTemplateHttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
        .build()
}
