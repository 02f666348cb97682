//! `up`, `status` and `down` against a real moto server through the real SDK.

use rktup_aws::cloud::Clients;
use rktup_aws::down::Found;
use rktup_provider::{ClusterProvider, UpOptions};
use rktup_testkit::aws::*;
use std::collections::BTreeMap;
use std::io::Read;

fn no_wait() -> UpOptions {
    UpOptions {
        no_wait: true,
        ..Default::default()
    }
}

/// Everything in the account, tagged or not, by kind: what `down` must bring back.
fn counts(rt: &tokio::runtime::Runtime, c: &Clients) -> BTreeMap<&'static str, usize> {
    rt.block_on(async {
        let ec2 = &c.ec2;
        let mut m = BTreeMap::new();
        m.insert(
            "vpc",
            ec2.describe_vpcs().send().await.unwrap().vpcs().len(),
        );
        m.insert(
            "subnet",
            ec2.describe_subnets().send().await.unwrap().subnets().len(),
        );
        m.insert(
            "internet-gateway",
            ec2.describe_internet_gateways()
                .send()
                .await
                .unwrap()
                .internet_gateways()
                .len(),
        );
        m.insert(
            "route-table",
            ec2.describe_route_tables()
                .send()
                .await
                .unwrap()
                .route_tables()
                .len(),
        );
        m.insert(
            "dhcp-options",
            ec2.describe_dhcp_options()
                .send()
                .await
                .unwrap()
                .dhcp_options()
                .len(),
        );
        m.insert(
            "security-group",
            ec2.describe_security_groups()
                .send()
                .await
                .unwrap()
                .security_groups()
                .len(),
        );
        m.insert(
            "key-pair",
            ec2.describe_key_pairs()
                .send()
                .await
                .unwrap()
                .key_pairs()
                .len(),
        );
        m.insert(
            "elastic-ip",
            ec2.describe_addresses()
                .send()
                .await
                .unwrap()
                .addresses()
                .len(),
        );
        m.insert(
            "launch-template",
            ec2.describe_launch_templates()
                .send()
                .await
                .unwrap()
                .launch_templates()
                .len(),
        );
        let instances = ec2.describe_instances().send().await.unwrap();
        m.insert(
            "instance",
            instances
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter(|i| {
                    i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated")
                })
                .count(),
        );
        m.insert(
            "volume",
            ec2.describe_volumes().send().await.unwrap().volumes().len(),
        );
        m.insert(
            "auto-scaling-group",
            c.asg
                .describe_auto_scaling_groups()
                .send()
                .await
                .unwrap()
                .auto_scaling_groups()
                .len(),
        );
        m.insert(
            "s3-bucket",
            c.s3.list_buckets().send().await.unwrap().buckets().len(),
        );
        m.insert(
            "load-balancer",
            c.elb
                .describe_load_balancers()
                .send()
                .await
                .unwrap()
                .load_balancer_descriptions()
                .len(),
        );
        m
    })
}

fn kinds(all: &[Found]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for f in all {
        *m.entry(f.kind).or_default() += 1;
    }
    m
}

fn inventory(rt: &tokio::runtime::Runtime, sb: &Sandbox, moto: &Moto) -> Vec<Found> {
    rt.block_on(sb.aws(moto).inventory()).expect("inventory")
}

fn decode(b64: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 user-data");
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .expect("gzip user-data");
        s
    } else {
        String::from_utf8(bytes).expect("utf-8 user-data")
    }
}

/// What `rktup render aws --role <role>` prints: the same calls the CLI makes.
fn rendered(sb: &Sandbox, role: rktup_render::Role) -> String {
    let aws = rktup_aws::Aws::new(sb.settings());
    let templates = rktup_render::Templates::embedded().expect("templates");
    let (pki, origin) = rktup_provider::boot::pki_for_rendering(&aws).expect("pki");
    assert_eq!(origin, rktup_provider::boot::PkiOrigin::Saved);
    rktup_provider::boot::render_boot(&aws, &templates, role, &pki, origin)
        .expect("render")
        .config
        .cloud_config
}

/// up → status → up again (no-op) → user-data as rendered → down → the account as it was.
fn round_trip(sb: &mut Sandbox, moto: &Moto, rt: &tokio::runtime::Runtime, nodes: u32) {
    let c = moto.clients(rt);
    sb.set("NUM_NODES", &nodes.to_string());
    let before = counts(rt, &c);
    let aws = sb.aws(moto);
    aws.up(&no_wait()).expect("up");

    let found = inventory(rt, sb, moto);
    let k = kinds(&found);
    let fresh = sb.settings().aws.unwrap().vpc_id.is_none();
    let mut expected: BTreeMap<&str, usize> = [
        ("security-group", 2),
        ("key-pair", 1),
        ("elastic-ip", 1),
        ("launch-template", 1),
        ("auto-scaling-group", 1),
        ("s3-bucket", 1),
        ("iam-instance-profile", 2),
        ("instance", 1 + nodes as usize),
    ]
    .into_iter()
    .collect();
    if fresh {
        for kind in [
            "vpc",
            "subnet",
            "internet-gateway",
            "route-table",
            "dhcp-options",
        ] {
            expected.insert(kind, 1);
        }
    }
    for (kind, n) in &expected {
        assert_eq!(k.get(kind), Some(n), "{kind} in {found:#?}");
    }
    // The master has its fixed private address and the elastic IP.
    let master = found
        .iter()
        .find(|f| f.kind == "instance" && f.name.ends_with("-master"))
        .expect("the master");
    assert!(master.state.contains("172.20.0.9"), "{master:?}");
    let eip = found.iter().find(|f| f.kind == "elastic-ip").unwrap();
    assert!(eip.state.contains(&master.id), "{eip:?}");

    // The kubeconfig context points at the elastic IP.
    let kc = std::fs::read_to_string(sb.kubeconfig()).expect("kubeconfig written");
    let name = sb.settings().name;
    assert!(kc.contains(&format!("rktup-aws-{name}")), "{kc}");
    let ip = eip.state.split(' ').next().unwrap();
    assert!(kc.contains(&format!("https://{ip}")), "{kc}");

    // A second up is a no-op.
    let first: Vec<(&str, String)> = found.iter().map(|f| (f.kind, f.id.clone())).collect();
    aws.up(&no_wait()).expect("second up");
    let again = inventory(rt, sb, moto);
    let second: Vec<(&str, String)> = again.iter().map(|f| (f.kind, f.id.clone())).collect();
    assert_eq!(first, second, "a second up changed the resources");

    // User-data read back equals the rendering.
    rt.block_on(async {
        let attr = c
            .ec2
            .describe_instance_attribute()
            .instance_id(&master.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .expect("master user-data");
        let got = decode(attr.user_data().and_then(|u| u.value()).expect("set"));
        assert_eq!(got, rendered(sb, rktup_render::Role::Master));
        let lt = c
            .ec2
            .describe_launch_template_versions()
            .launch_template_name(format!("{name}-minion-template"))
            .send()
            .await
            .expect("launch template");
        let data = lt.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.user_data())
            .expect("node user-data");
        assert_eq!(decode(data), rendered(sb, rktup_render::Role::Node));

        // IMDSv2 only, hop limit 1, on the master and in the nodes' launch template.
        let inst = c
            .ec2
            .describe_instances()
            .instance_ids(&master.id)
            .send()
            .await
            .expect("describe the master");
        let mo = inst.reservations()[0].instances()[0]
            .metadata_options()
            .expect("the master's MetadataOptions");
        assert_eq!(
            mo.http_tokens(),
            Some(&aws_sdk_ec2::types::HttpTokensState::Required),
            "{mo:?}"
        );
        assert_eq!(mo.http_put_response_hop_limit(), Some(1), "{mo:?}");
        assert_eq!(
            mo.http_endpoint(),
            Some(&aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled),
            "{mo:?}"
        );
        let lmo = lt.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.metadata_options())
            .expect("the launch template's MetadataOptions");
        assert_eq!(
            lmo.http_tokens(),
            Some(&aws_sdk_ec2::types::LaunchTemplateHttpTokensState::Required),
            "{lmo:?}"
        );
        assert_eq!(lmo.http_put_response_hop_limit(), Some(1), "{lmo:?}");
        assert_eq!(
            lmo.http_endpoint(),
            Some(&aws_sdk_ec2::types::LaunchTemplateInstanceMetadataEndpointState::Enabled),
            "{lmo:?}"
        );
    });

    identities_and_master_keys(sb, moto, rt, &c, &master.id);

    let state = sb.state_dir();
    assert!(state.join("pki/ca.key").is_file(), "{}", state.display());
    aws.down().expect("down");
    // No credentials of the deleted cluster are left behind.
    assert!(!state.exists(), "{} left behind", state.display());
    assert_eq!(inventory(rt, sb, moto), vec![], "tagged resources left");
    assert_eq!(counts(rt, &c), before, "the account differs from before up");
    let kc = std::fs::read_to_string(sb.kubeconfig()).unwrap_or_default();
    assert!(!kc.contains(&format!("name: rktup-aws-{name}")), "{kc}");
}

/// The master's private keys are objects of the staging bucket that only the master's role may
/// get, each named in its user-data by URL and sha256; the nodes' role may get the binary
/// alone. Read back from moto: the instance profiles on the master and the launch template,
/// the roles' policies, the objects; then the rendered `rktup-fetch` gets a key from moto's
/// S3 as a booting master would (IMDSv2 token → role credentials → SigV4 GET → sha256).
fn identities_and_master_keys(
    sb: &Sandbox,
    moto: &Moto,
    rt: &tokio::runtime::Runtime,
    c: &Clients,
    master_id: &str,
) {
    let settings = sb.settings();
    let aws = rktup_aws::Aws::new(settings.clone());
    let (name, bucket) = (settings.name.clone(), aws.staging_bucket());
    let profile = |role| rktup_aws::iam::identity_name(REGION, &name, role);
    let master_text = rendered(sb, rktup_render::Role::Master);
    let node_text = rendered(sb, rktup_render::Role::Node);
    for (role, text) in [("master", &master_text), ("node", &node_text)] {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{role} user-data holds a key"
        );
        assert!(
            !text.contains("X-Amz-"),
            "{role} user-data holds a signed URL"
        );
    }
    rt.block_on(async {
        // Who the machines are.
        let inst = c
            .ec2
            .describe_instances()
            .instance_ids(master_id)
            .send()
            .await
            .expect("describe the master");
        let arn = inst.reservations()[0].instances()[0]
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .expect("the master's instance profile")
            .to_string();
        assert!(arn.ends_with(&format!("/{}", profile("master"))), "{arn}");
        let lt = c
            .ec2
            .describe_launch_template_versions()
            .launch_template_name(format!("{name}-minion-template"))
            .send()
            .await
            .expect("launch template");
        let lt_profile = lt.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.iam_instance_profile())
            .and_then(|p| p.name())
            .expect("the nodes' instance profile");
        assert_eq!(lt_profile, profile("node"));

        // What each may get: the role in its profile, the role's policy.
        let mut allowed = BTreeMap::new();
        for role in ["master", "node"] {
            let p = c
                .iam
                .get_instance_profile()
                .instance_profile_name(profile(role))
                .send()
                .await
                .expect("the instance profile");
            let roles: Vec<String> = p
                .instance_profile()
                .map(|p| p.roles().iter().map(|r| r.role_name().to_string()).collect())
                .unwrap_or_default();
            assert_eq!(roles, vec![profile(role)], "{role}'s profile holds its role");
            let policies = c
                .iam
                .list_role_policies()
                .role_name(profile(role))
                .send()
                .await
                .expect("list the role's policies");
            assert_eq!(policies.policy_names(), [rktup_aws::iam::POLICY_NAME]);
            let doc = c
                .iam
                .get_role_policy()
                .role_name(profile(role))
                .policy_name(rktup_aws::iam::POLICY_NAME)
                .send()
                .await
                .expect("the role's policy");
            let text = doc.policy_document().to_string();
            // IAM hands documents back URL-encoded.
            let text = percent_decode(&text);
            let doc: serde_json::Value = serde_json::from_str(&text).expect("policy JSON");
            let statements = doc["Statement"].as_array().expect("statements").clone();
            assert_eq!(statements.len(), 1, "{doc}");
            let st = &statements[0];
            assert_eq!(st["Effect"], "Allow", "{doc}");
            assert_eq!(st["Action"], serde_json::json!(["s3:GetObject"]), "{doc}");
            let mut resources: Vec<String> = st["Resource"]
                .as_array()
                .expect("resources")
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            resources.sort();
            allowed.insert(role, resources);
        }
        let arn = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
        assert_eq!(allowed["master"], vec![arn("pki-*"), arn("rktup-*")]);
        assert_eq!(allowed["node"], vec![arn("rktup-*")], "nodes get the binary only");

        // The keys in the bucket are the PKI's, and the master's user-data names each by hash.
        let pki = rktup_render::Pki::load(&sb.state_dir().join("pki")).expect("the PKI");
        for file in rktup_render::MASTER_STAGED_KEYS {
            let key = format!("pki-{file}");
            let got = c
                .s3
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"))
                .body
                .collect()
                .await
                .expect("the object's body")
                .into_bytes();
            assert_eq!(got.as_ref(), pki.get(file).as_bytes(), "{key}");
            let line = format!(
                "https://{bucket}.s3.{REGION}.amazonaws.com/{key} /etc/kubernetes/pki/{file} {} 0600",
                rktup_render::sha256_hex(pki.get(file))
            );
            assert!(master_text.contains(&line), "no `{line}` in the master's user-data");
            assert!(!node_text.contains(&key), "the node's user-data names {key}");
        }
    });

    // The rendered fetcher, as the master runs it, against moto: moto serves the instance
    // metadata (IMDSv2 token, the instance's role credentials) at its root.
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&master_text).expect("cloud-config");
    let script = doc["write_files"]
        .as_sequence()
        .expect("write_files")
        .iter()
        .find(|f| f["path"].as_str() == Some("/opt/bin/rktup-fetch"))
        .and_then(|f| f["content"].as_str())
        .expect("/opt/bin/rktup-fetch in the master's user-data")
        .to_string();
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("rktup-fetch");
    std::fs::write(&path, script).expect("write the script");
    let pki = rktup_render::Pki::load(&sb.state_dir().join("pki")).expect("the PKI");
    let fetch = |key: &str, sha: &str, dest: &std::path::Path| {
        std::process::Command::new("sh")
            .arg(&path)
            .arg(format!("aws:{REGION}"))
            // Path-style on moto, as the SDK's force_path_style; on AWS the virtual host.
            .arg(format!("{}/{bucket}/{key}", moto.url))
            .arg(dest)
            .arg(sha)
            .arg("0600")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &moto.url)
            .env("RKTUP_FETCH_ATTEMPTS", "1")
            .output()
            .expect("run rktup-fetch")
    };
    let dest = dir.path().join("etc/kubernetes/pki/ca.key");
    let sha = rktup_render::sha256_hex(pki.get("ca.key"));
    let out = fetch("pki-ca.key", &sha, &dest);
    assert!(
        out.status.success(),
        "rktup-fetch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&dest).expect("the fetched key"),
        pki.get("ca.key")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A wrong hash never becomes the file.
    let bad = dir.path().join("bad.key");
    let out = fetch("pki-ca.key", &"0".repeat(64), &bad);
    assert!(!out.status.success());
    assert!(!bad.exists() && !dir.path().join("bad.key.download").exists());
}

/// IAM's policy documents come back percent-encoded (RFC 3986).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 policy")
}

fn setup(name: &str) -> (Moto, tokio::runtime::Runtime, Sandbox) {
    let moto = Moto::start();
    let rt = runtime();
    let image = some_image(&rt, &moto.clients(&rt));
    let sb = Sandbox::new(name, &image);
    (moto, rt, sb)
}

#[test]
fn fresh_vpc_round_trip_leaves_nothing() {
    let (moto, rt, mut sb) = setup("fresh");
    round_trip(&mut sb, &moto, &rt, 2);
}

#[test]
fn no_nodes_round_trip() {
    let (moto, rt, mut sb) = setup("zero");
    round_trip(&mut sb, &moto, &rt, 0);
}

#[test]
fn five_nodes_round_trip_with_pod_routes() {
    let (moto, rt, mut sb) = setup("five");
    let c = moto.clients(&rt);
    sb.set("NUM_NODES", "5");
    sb.aws(&moto).up(&no_wait()).expect("up");
    // kubenet: one route per node in the cluster's route table.
    let routes = rt.block_on(async {
        let t = c
            .ec2
            .describe_route_tables()
            .filters(rktup_aws::cloud::filter("tag:rktup.io/cluster", "five"))
            .send()
            .await
            .unwrap();
        t.route_tables()[0]
            .routes()
            .iter()
            .filter(|r| r.instance_id().is_some())
            .filter_map(|r| r.destination_cidr_block().map(str::to_string))
            .collect::<Vec<_>>()
    });
    assert_eq!(routes.len(), 5, "{routes:?}");
    sb.aws(&moto).down().expect("down");
    round_trip(&mut sb, &moto, &rt, 5);
}

#[test]
fn given_vpc_and_subnet_are_used_and_kept() {
    let (moto, rt, mut sb) = setup("byo");
    let c = moto.clients(&rt);
    let (vpc, subnet) = rt.block_on(async {
        let v = c
            .ec2
            .create_vpc()
            .cidr_block("172.20.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc = v.vpc().unwrap().vpc_id().unwrap().to_string();
        let s = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("172.20.0.0/24")
            .availability_zone("us-west-2a")
            .send()
            .await
            .unwrap();
        (vpc, s.subnet().unwrap().subnet_id().unwrap().to_string())
    });
    sb.set("VPC_ID", &vpc).set("SUBNET_ID", &subnet);
    round_trip(&mut sb, &moto, &rt, 1);
    rt.block_on(async {
        let v = c.ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
        assert_eq!(v.vpcs().len(), 1, "the user's VPC was deleted");
        let s = c
            .ec2
            .describe_subnets()
            .subnet_ids(&subnet)
            .send()
            .await
            .unwrap();
        assert_eq!(s.subnets().len(), 1, "the user's subnet was deleted");
    });
}

#[test]
fn interrupted_up_converges_without_duplicates() {
    let (moto, rt, sb) = setup("cut");
    let c = moto.clients(&rt);
    let before = counts(&rt, &c);
    for step in 1..=5 {
        let e = sb
            .aws(&moto)
            .stop_after_step(step)
            .up(&no_wait())
            .expect_err("stopped");
        assert!(e.to_string().contains("stopped after step"), "{e}");
    }
    sb.aws(&moto)
        .up(&no_wait())
        .expect("up after interruptions");
    let k = kinds(&inventory(&rt, &sb, &moto));
    for kind in [
        "vpc",
        "subnet",
        "internet-gateway",
        "route-table",
        "dhcp-options",
        "key-pair",
        "elastic-ip",
        "launch-template",
        "auto-scaling-group",
        "s3-bucket",
    ] {
        assert_eq!(k.get(kind), Some(&1), "{kind}: {k:?}");
    }
    assert_eq!(k.get("security-group"), Some(&2), "{k:?}");
    assert_eq!(k.get("instance"), Some(&3), "{k:?}");
    sb.aws(&moto).down().expect("down");
    assert_eq!(counts(&rt, &c), before);
}

#[test]
fn down_works_from_tags_alone() {
    let (moto, rt, sb) = setup("stateless");
    let c = moto.clients(&rt);
    let before = counts(&rt, &c);
    sb.aws(&moto).up(&no_wait()).expect("up");
    remove(&sb.state_dir());
    assert!(!sb.state_dir().exists());
    sb.aws(&moto).down().expect("down without a state dir");
    assert_eq!(inventory(&rt, &sb, &moto), vec![]);
    assert_eq!(counts(&rt, &c), before);
}

#[test]
fn status_lists_resources_and_down_of_nothing_succeeds() {
    let (moto, rt, sb) = setup("empty");
    let c = moto.clients(&rt);
    let before = counts(&rt, &c);
    sb.aws(&moto).status().expect("status of nothing");
    sb.aws(&moto).down().expect("down of nothing");
    assert_eq!(counts(&rt, &c), before);
}

#[test]
fn missing_public_key_and_failed_image_lookup_are_clear_errors() {
    let (moto, rt, mut sb) = setup("bad");
    let c = moto.clients(&rt);
    std::fs::remove_file(sb.dir.path().join("id.pub")).unwrap();
    let e = sb
        .aws(&moto)
        .up(&no_wait())
        .expect_err("no key")
        .to_string();
    assert!(e.contains("AWS_SSH_KEY") && e.contains("id.pub"), "{e}");
    std::fs::write(sb.dir.path().join("id.pub"), PUBLIC_KEY).unwrap();
    sb.unset("KUBE_MASTER_IMAGE").unset("KUBE_NODE_IMAGE");
    let e = sb
        .aws(&moto)
        .up(&no_wait())
        .expect_err("no Flatcar in moto")
        .to_string();
    assert!(
        e.contains("no Flatcar stable AMI") && e.contains("KUBE_MASTER_IMAGE"),
        "{e}"
    );
    sb.aws(&moto).down().expect("down");
    assert_eq!(inventory(&rt, &sb, &moto), vec![]);
    let _ = c;
}

#[test]
fn load_balancers_left_by_services_are_deleted() {
    let (moto, rt, sb) = setup("elb");
    let c = moto.clients(&rt);
    sb.aws(&moto).up(&no_wait()).expect("up");
    // What the service controller makes for a LoadBalancer Service (kubernetes#25503).
    rt.block_on(async {
        use aws_sdk_elasticloadbalancing::types::{Listener, Tag};
        c.elb
            .create_load_balancer()
            .load_balancer_name("a1b2c3")
            .listeners(
                Listener::builder()
                    .protocol("TCP")
                    .load_balancer_port(80)
                    .instance_port(30080)
                    .build()
                    .unwrap(),
            )
            .availability_zones("us-west-2a")
            .tags(
                Tag::builder()
                    .key("kubernetes.io/cluster/elb")
                    .value("owned")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("an ELB");
    });
    let k = kinds(&inventory(&rt, &sb, &moto));
    assert_eq!(k.get("load-balancer"), Some(&1), "{k:?}");
    sb.aws(&moto).down().expect("down");
    assert_eq!(inventory(&rt, &sb, &moto), vec![]);
}

/// Run by `sigkilled_up_converges` in a child process, which it kills mid-way.
#[test]
#[ignore = "helper: run as a child by sigkilled_up_converges"]
fn child_up() {
    let Ok(url) = std::env::var("RKTUP_TEST_MOTO_URL") else {
        return;
    };
    let env = |k: &str| std::env::var(k).ok();
    let settings = rktup_config::load(
        rktup_config::Provider::Aws,
        &rktup_config::GlobalArgs::default(),
        &BTreeMap::new(),
        &env,
    )
    .expect("settings");
    let kubeconfig = std::env::var("RKTUP_TEST_KUBECONFIG").expect("kubeconfig");
    rktup_aws::Aws::new(settings)
        .endpoint(url)
        .retry(fast_retry())
        .kubeconfig(kubeconfig)
        .up(&no_wait())
        .expect("child up");
}

#[test]
fn sigkilled_up_converges() {
    let (moto, rt, sb) = setup("killed");
    let c = moto.clients(&rt);
    let before = counts(&rt, &c);
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = std::process::Command::new(exe)
        .args(["child_up", "--exact", "--ignored", "--nocapture"])
        .envs(&sb.env)
        .env("RKTUP_TEST_MOTO_URL", &moto.url)
        .env("RKTUP_TEST_KUBECONFIG", sb.kubeconfig())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child up");
    // Kill it once the security groups exist: after step 2, before the instances.
    let start = std::time::Instant::now();
    loop {
        let k = kinds(&inventory(&rt, &sb, &moto));
        if k.get("security-group") == Some(&2) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(180),
            "the child never got to step 2: {k:?}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended before it was killed: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let partial = kinds(&inventory(&rt, &sb, &moto));
    sb.aws(&moto).up(&no_wait()).expect("up after SIGKILL");
    let k = kinds(&inventory(&rt, &sb, &moto));
    for kind in [
        "vpc",
        "subnet",
        "internet-gateway",
        "route-table",
        "dhcp-options",
        "key-pair",
        "elastic-ip",
        "launch-template",
        "auto-scaling-group",
        "s3-bucket",
    ] {
        assert_eq!(
            k.get(kind),
            Some(&1),
            "{kind}: {k:?} (killed at {partial:?})"
        );
    }
    assert_eq!(k.get("security-group"), Some(&2), "{k:?}");
    assert_eq!(k.get("instance"), Some(&3), "{k:?}");
    sb.aws(&moto).down().expect("down");
    assert_eq!(counts(&rt, &c), before);
}

/// `--keep-state` keeps the state directory (CA and admin keys) after a complete down; a down
/// that fails keeps it too and says so.
#[test]
fn keep_state_and_a_failed_down_keep_the_keys() {
    let (moto, _rt, mut sb) = setup("keepst");
    sb.set("NUM_NODES", "0");
    sb.aws(&moto).up(&no_wait()).expect("up");
    let state = sb.state_dir();
    assert!(state.join("pki/ca.key").is_file());
    sb.set("RKTUP_KEEP_STATE", "true");
    sb.aws(&moto).down().expect("down --keep-state");
    assert!(
        state.join("pki/admin.key").is_file(),
        "--keep-state removed the keys"
    );

    // A cloud that cannot be reached: nothing is known deleted, so the keys stay.
    let (moto2, _rt2, mut sb2) = setup("failst");
    sb2.set("NUM_NODES", "0");
    sb2.aws(&moto2).up(&no_wait()).expect("up");
    let aws = sb2.aws(&moto2);
    drop(moto2);
    let err = aws
        .down()
        .expect_err("down without a cloud fails")
        .to_string();
    let state2 = sb2.state_dir();
    assert!(
        err.contains(&format!("the state directory {} ", state2.display()))
            && err.contains("is kept"),
        "{err}"
    );
    assert!(
        state2.join("pki/ca.key").is_file(),
        "a failed down removed the keys"
    );
}
