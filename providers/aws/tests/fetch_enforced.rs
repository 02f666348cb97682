//! The machines' bucket rights with moto enforcing IAM (`INITIAL_NO_AUTH_ACTION_COUNT`): moto
//! checks every request's SigV4 signature against the credentials it issued and evaluates the
//! policies. `iam::identity` makes the master's and the nodes' roles as `up` does; the test then
//! acts as each role (AssumeRole, as EC2 does for an instance profile) and runs the rendered
//! `rktup-fetch` with those credentials: the master's role gets the binary and its keys, the
//! nodes' role the binary only (403 on a key), a wrong secret nothing.

use rktup_aws::cloud::Clients;
use rktup_testkit::aws::*;
use std::process::Command;
use std::time::Duration;

struct MotoEnforcing {
    url: String,
    child: std::process::Child,
}

impl Drop for MotoEnforcing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests moto lets through unauthenticated before it enforces IAM: the test's IAM user, its
/// key and its policy (3), both identities as `iam::identity` makes them (6 each), and each
/// role's trust in the test's user (2). (moto miscomputes the signature of some IAM form
/// bodies, so the setup goes first; what is checked after is S3 and STS, signed.)
const FREE_REQUESTS: &str = "17";

/// A moto server that enforces IAM after the first `FREE_REQUESTS` requests.
fn moto_enforcing() -> MotoEnforcing {
    let bin = moto_binary();
    let (child, port) =
        rktup_testkit::spawn_listening("moto_server", Duration::from_secs(60), |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("INITIAL_NO_AUTH_ACTION_COUNT", FREE_REQUESTS)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            cmd
        });
    MotoEnforcing {
        url: format!("http://127.0.0.1:{port}"),
        child,
    }
}

async fn config(url: &str, id: &str, secret: &str, token: Option<&str>) -> aws_config::SdkConfig {
    let creds =
        aws_sdk_sts::config::Credentials::new(id, secret, token.map(String::from), None, "test");
    // The same HTTP client as `Clients::connect` (the SDK crates have no default one here).
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(creds)
        .load()
        .await
}

fn clients(conf: &aws_config::SdkConfig, url: &str) -> Clients {
    let s3conf = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(true)
        .build();
    Clients {
        ec2: aws_sdk_ec2::Client::new(conf),
        asg: aws_sdk_autoscaling::Client::new(conf),
        s3: aws_sdk_s3::Client::from_conf(s3conf),
        elb: aws_sdk_elasticloadbalancing::Client::new(conf),
        iam: aws_sdk_iam::Client::new(conf),
        retry: fast_retry(),
        region: REGION.into(),
        endpoint: Some(url.into()),
    }
}

#[test]
fn each_role_gets_only_its_objects_with_a_verified_signature() {
    test_credentials();
    let moto = moto_enforcing();
    let rt = runtime();
    let sb = Sandbox::new("enforced", "ami-12c6146b");
    let aws = rktup_aws::Aws::new(sb.settings());
    let bucket = aws.staging_bucket();
    let cluster = sb.settings().name;

    // The rendered fetcher, as every machine gets it.
    let templates = rktup_render::Templates::embedded().expect("templates");
    let (pki, origin) = rktup_provider::boot::pki_for_rendering(&aws).expect("pki");
    let master = rktup_provider::boot::render_boot(
        &aws,
        &templates,
        rktup_render::Role::Master,
        &pki,
        origin,
    )
    .expect("render")
    .config;
    let script = master
        .files
        .iter()
        .find(|f| f.path == rktup_render::FETCH_SCRIPT)
        .expect("the fetch script")
        .content
        .clone();
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("rktup-fetch");
    std::fs::write(&path, script).expect("write the script");

    let roles = rt.block_on(async {
        // An administrator, made in the three unauthenticated requests.
        let anon = config(&moto.url, "AKIAIOSFODNN7EXAMPLE", "anything", None).await;
        let iam = aws_sdk_iam::Client::new(&anon);
        iam.create_user().user_name("admin").send().await.expect("create user");
        let key = iam
            .create_access_key()
            .user_name("admin")
            .send()
            .await
            .expect("access key")
            .access_key
            .expect("the key");
        iam.put_user_policy()
            .user_name("admin")
            .policy_name("all")
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            )
            .send()
            .await
            .expect("admin policy");
        // Both identities, as `up` makes them, and each role's trust in the admin: EC2 assumes
        // the role for an instance, here the admin does (the role's policy, the thing under
        // test, is untouched).
        let setup = clients(&anon, &moto.url);
        let mut names = Vec::new();
        for role in ["master", "node"] {
            let name = rktup_aws::iam::identity(&setup, &cluster, role, &bucket)
                .await
                .expect("identity");
            names.push((role, name));
        }
        for (_, name) in &names {
            let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:user/admin"},
                "Action": "sts:AssumeRole"}]});
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(trust.to_string())
                .send()
                .await
                .expect("trust the admin");
        }

        // From here on moto checks signatures and policies.
        let admin = config(&moto.url, key.access_key_id(), key.secret_access_key(), None).await;
        let c = clients(&admin, &moto.url);

        // The bucket, the binary and the master's keys, and both identities, as `up` makes them.
        c.s3.create_bucket()
            .bucket(&bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
                    .build(),
            )
            .send()
            .await
            .expect("bucket");
        c.s3.put_object()
            .bucket(&bucket)
            .key("rktup-0123456789ab")
            .body(b"the binary\n".to_vec().into())
            .send()
            .await
            .expect("binary");
        for (key, content) in rktup_render::master_staged_objects(&pki) {
            c.s3.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(content.into_bytes().into())
                .send()
                .await
                .expect("key object");
        }
        let mut roles = Vec::new();
        for (role, name) in names {
            let sts = aws_sdk_sts::Client::new(&admin);
            let creds = sts
                .assume_role()
                .role_arn(format!("arn:aws:iam::123456789012:role/{name}"))
                .role_session_name("instance")
                .send()
                .await
                .expect("assume the role")
                .credentials
                .expect("credentials");
            roles.push((
                role,
                creds.access_key_id().to_string(),
                creds.secret_access_key().to_string(),
                creds.session_token().to_string(),
            ));
        }
        roles
    });

    let sha = |text: &str| rktup_render::sha256_hex(text);
    let fetch = |creds: &(&str, String, String, String), key: &str, want: &str| {
        let dest = dir.path().join(format!("{}-{key}", creds.0));
        let out = Command::new("sh")
            .arg(&path)
            .arg(format!("aws:{REGION}"))
            .arg(format!("{}/{bucket}/{key}", moto.url))
            .arg(&dest)
            .arg(sha(want))
            .arg("0600")
            .env("AWS_ACCESS_KEY_ID", &creds.1)
            .env("AWS_SECRET_ACCESS_KEY", &creds.2)
            .env("AWS_SESSION_TOKEN", &creds.3)
            .env("RKTUP_FETCH_ATTEMPTS", "1")
            .output()
            .expect("run rktup-fetch");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (
            out.status.success() && std::fs::read_to_string(&dest).ok().as_deref() == Some(want),
            stderr,
        )
    };
    let (master_creds, node_creds) = (&roles[0], &roles[1]);
    for (creds, key, want, allowed) in [
        (master_creds, "rktup-0123456789ab", "the binary\n", true),
        (master_creds, "pki-ca.key", pki.get("ca.key"), true),
        (master_creds, "pki-sa.key", pki.get("sa.key"), true),
        (node_creds, "rktup-0123456789ab", "the binary\n", true),
        (node_creds, "pki-ca.key", pki.get("ca.key"), false),
        (node_creds, "pki-admin.key", pki.get("admin.key"), false),
    ] {
        let (got, stderr) = fetch(creds, key, want);
        assert_eq!(got, allowed, "{} role, {key}: {stderr}", creds.0);
        if !allowed {
            assert!(stderr.contains("403"), "{} role, {key}: {stderr}", creds.0);
        }
    }
    // A wrong secret: the signature does not verify.
    let forged = (
        "forged",
        master_creds.1.clone(),
        format!("{}x", master_creds.2),
        master_creds.3.clone(),
    );
    let (got, stderr) = fetch(&forged, "rktup-0123456789ab", "the binary\n");
    assert!(!got, "a wrong secret fetched the binary: {stderr}");
}
