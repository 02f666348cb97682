//! `up`, `status` and `down` against the fake Compute Engine, which checks every request
//! against Google's discovery document.

mod support;

use rktup_gce::up::object_name;
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::{ClusterProvider, StateDir};
use rktup_render::{Role, Templates};
use support::{env, no_wait, rt};

const P: &str = "projects/rktup-test";

fn names(fake: &rktup_gce::fake::Fake) -> Vec<String> {
    fake.resources()
}

#[test]
fn up_status_down_leaves_nothing() {
    let e = env();
    let gce = e.gce("c1", &[("KUBE_DELETE_NETWORK", "true")]);
    let rt = rt();
    let report = rt.block_on(gce.up_async(&no_wait())).expect("up");
    let have = names(&e.fake);
    for want in [
        "networks c1-net",
        "firewalls c1-net-default-internal",
        "firewalls c1-net-default-ssh",
        "firewalls c1-master-https",
        "firewalls c1-minion-all",
        "addresses c1-master-ip",
        "instances c1-master",
        "instanceTemplates c1-minion-template",
        "instanceGroupManagers c1-minion-group",
    ] {
        assert!(
            have.iter().any(|h| h == want),
            "missing {want} in {have:#?}"
        );
    }
    let nodes: Vec<_> = have
        .iter()
        .filter(|h| h.starts_with("instances c1-minion-"))
        .collect();
    assert_eq!(nodes.len(), 2, "{have:#?}");
    let routes: Vec<_> = have
        .iter()
        .filter(|h| h.starts_with("routes c1-minion-"))
        .collect();
    assert_eq!(routes.len(), 2, "kubenet routes: {have:#?}");

    // The staged binary is this test executable, byte for byte, under its sha256's name.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let recorded = StateDir::for_cluster(gce.settings())
        .load_recorded()
        .unwrap();
    let sha = recorded.binary_sha256.clone().expect("sha recorded");
    let staged = e
        .fake
        .object(&gce.staging_bucket(), &object_name(&sha))
        .expect("object staged");
    assert!(staged == exe, "staged object differs from the binary");

    // The master's user-data is what `rktup render gce --role master` renders.
    let master = e
        .fake
        .get(&format!("{P}/zones/us-central1-b/instances"), "c1-master")
        .unwrap();
    let ud = master["metadata"]["items"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let pki = StateDir::for_cluster(gce.settings())
        .load_pki()
        .unwrap()
        .expect("pki saved");
    let boot = render_boot(
        &gce,
        &Templates::embedded().unwrap(),
        Role::Master,
        &pki,
        PkiOrigin::Saved,
    )
    .unwrap();
    assert_eq!(ud, boot.config.cloud_config);
    assert_eq!(
        master["networkInterfaces"][0]["accessConfigs"][0]["natIP"].as_str(),
        Some(report.master_ip.as_str())
    );

    // The master's private keys: objects only the master's own service account may read
    // (ACL read back as storage's objectAccessControls), named in its user-data by hash; the
    // master runs as that account, the nodes as the project's default one.
    let sa = gce.master_service_account();
    assert_eq!(sa, "rktup-c1-master@rktup-test.iam.gserviceaccount.com");
    assert!(e.fake.state().service_accounts.contains_key(&sa), "no {sa}");
    assert_eq!(
        master["serviceAccounts"][0]["email"].as_str(),
        Some(sa.as_str()),
        "{master}"
    );
    let template = e
        .fake
        .get(
            &format!("{P}/global/instanceTemplates"),
            "c1-minion-template",
        )
        .unwrap();
    assert_eq!(
        template["properties"]["serviceAccounts"][0]["email"].as_str(),
        Some("default")
    );
    assert!(
        !ud.contains("PRIVATE KEY"),
        "a key in the master's user-data"
    );
    let acl_of = |object: &str| -> Vec<(String, String)> {
        let url = format!(
            "{}b/{}/o/{object}/acl",
            e.fake.storage_endpoint(),
            gce.staging_bucket()
        );
        let body: serde_json::Value = rt
            .block_on(async {
                reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(rktup_gce::fake::TOKEN)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await
            })
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let mut entries: Vec<(String, String)> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|a| {
                assert_eq!(a["kind"], "storage#objectAccessControl", "{a}");
                (
                    a["entity"].as_str().unwrap().to_string(),
                    a["role"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        entries.sort();
        entries
    };
    let reader = (format!("user-{sa}"), "READER".to_string());
    let owner = (
        "user-rktup-test@rktup-test.iam.gserviceaccount.com".to_string(),
        "OWNER".to_string(),
    );
    for file in rktup_render::MASTER_STAGED_KEYS {
        let object = rktup_render::master_pki_object(file);
        let content = e
            .fake
            .object(&gce.staging_bucket(), &object)
            .unwrap_or_else(|| panic!("{object} staged"));
        assert_eq!(content, pki.get(file).as_bytes(), "{object}");
        let mut want = vec![owner.clone(), reader.clone()];
        want.sort();
        assert_eq!(
            acl_of(&object),
            want,
            "{object}: the uploader and the master's account, no project-* entry"
        );
        let line = format!(
            "ExecStart=/opt/bin/rktup-fetch gce https://storage.googleapis.com/{}/{object} /etc/kubernetes/pki/{file} {} 0600",
            gce.staging_bucket(),
            rktup_render::sha256_hex(pki.get(file))
        );
        assert!(ud.contains(&line), "no `{line}` in the master's user-data");
    }
    // The binary: the project's members (the nodes' default account) and the master's.
    let binary_acl = acl_of(&object_name(&sha));
    assert!(
        binary_acl.contains(&reader)
            && binary_acl.contains(&("project-viewers-rktup-test".into(), "READER".into())),
        "{binary_acl:?}"
    );

    // Kubeconfig context.
    let kc = std::fs::read_to_string(e.dir.path().join("kubeconfig")).unwrap();
    assert!(
        kc.contains("rktup-gce-c1") && kc.contains(&format!("https://{}", report.master_ip)),
        "{kc}"
    );

    let status = rt.block_on(gce.status_async()).expect("status");
    assert!(status
        .iter()
        .any(|f| f.kind == "instance" && f.name == "c1-master" && f.status == "RUNNING"));
    assert!(status.iter().any(|f| f.kind == "bucket"));

    let down = rt.block_on(gce.down_async()).expect("down");
    assert!(down.failed.is_empty(), "{:#?}", down.failed);
    assert_eq!(names(&e.fake), Vec::<String>::new());
    assert!(
        e.fake.state().service_accounts.is_empty(),
        "down left the master's service account"
    );
    assert!(rt.block_on(gce.status_async()).unwrap().is_empty());
    let kc = std::fs::read_to_string(e.dir.path().join("kubeconfig")).unwrap();
    assert!(!kc.contains("rktup-gce-c1"), "{kc}");
}

#[test]
fn down_keeps_the_network_unless_asked_and_leaves_other_clusters_alone() {
    let e = env();
    let rt = rt();
    let a = e.gce("aa", &[("KUBE_GCE_NETWORK", "shared")]);
    let b = e.gce(
        "aab",
        &[
            ("KUBE_GCE_NETWORK", "shared"),
            ("RKTUP_STATE_DIR", "/nonexistent/x"),
        ],
    );
    rt.block_on(a.up_async(&no_wait())).expect("up a");
    rt.block_on(b.up_async(&no_wait())).expect("up b");
    let down = rt.block_on(a.down_async()).expect("down a");
    assert!(down.failed.is_empty(), "{:#?}", down.failed);
    let left = names(&e.fake);
    assert!(left.iter().all(|r| !r.contains(" aa-")), "{left:#?}");
    assert!(
        left.iter().any(|r| r == "instances aab-master"),
        "{left:#?}"
    );
    assert!(left.iter().any(|r| r == "networks shared"));
    assert!(left.iter().any(|r| r == "firewalls shared-default-ssh"));
}

#[test]
fn double_up_is_a_no_op() {
    let e = env();
    let gce = e.gce("twice", &[]);
    let rt = rt();
    rt.block_on(gce.up_async(&no_wait())).expect("first up");
    let before = names(&e.fake);
    e.fake.clear_requests();
    rt.block_on(gce.up_async(&no_wait())).expect("second up");
    assert_eq!(
        e.fake
            .mutations()
            .iter()
            .map(|r| r.method_id.clone())
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
    assert_eq!(names(&e.fake), before);
}

#[test]
fn an_operation_error_is_shown_in_gce_words_and_the_next_up_converges() {
    let e = env();
    let gce = e.gce("quota", &[]);
    let rt = rt();
    e.fake.fail_operation("compute.instances.insert");
    let err = rt
        .block_on(gce.up_async(&no_wait()))
        .expect_err("up fails")
        .to_string();
    assert!(
        err.contains("Quota 'CPUS' exceeded") && err.contains("QUOTA_EXCEEDED"),
        "{err}"
    );
    assert!(!names(&e.fake).iter().any(|r| r == "instances quota-master"));
    rt.block_on(gce.up_async(&no_wait()))
        .expect("second up converges");
    let have = names(&e.fake);
    assert!(
        have.iter().any(|r| r == "instances quota-master"),
        "{have:#?}"
    );
    assert_eq!(
        have.iter()
            .filter(|r| r.starts_with("routes quota-"))
            .count(),
        2
    );
}

#[test]
fn server_errors_and_rate_limits_are_retried() {
    let e = env();
    let gce = e.gce("flaky", &[]);
    e.fake.fail_next("compute.firewalls.insert", 503, 2);
    e.fake.fail_next("compute.instances.list", 429, 1);
    e.fake.fail_next("storage.buckets.insert", 500, 1);
    rt().block_on(gce.up_async(&no_wait()))
        .expect("up despite faults");
    assert!(names(&e.fake)
        .iter()
        .any(|r| r == "firewalls flaky-master-https"));
}

#[test]
fn a_persistent_error_names_the_call_and_gce_message() {
    let e = env();
    let gce = e.gce("broken", &[]);
    e.fake.fail_next("compute.addresses.insert", 503, 10);
    let err = rt()
        .block_on(gce.up_async(&no_wait()))
        .expect_err("fails")
        .to_string();
    assert!(
        err.contains("reserve the master's address") && err.contains("503"),
        "{err}"
    );
}

#[test]
fn down_without_the_state_directory_finds_everything_by_name() {
    let e = env();
    let gce = e.gce("nostate", &[("KUBE_DELETE_NETWORK", "true")]);
    let rt = rt();
    rt.block_on(gce.up_async(&no_wait())).expect("up");
    std::fs::remove_dir_all(&gce.settings().state_dir).unwrap();
    // A disk the cluster left behind (kubernetes#16164) and a forwarding rule go too.
    e.fake.seed(&format!("{P}/zones/us-central1-b/disks"), serde_json::json!({
        "name": "nostate-master-pd", "selfLink": format!("{}projects/rktup-test/zones/us-central1-b/disks/nostate-master-pd", e.fake.compute_endpoint())}));
    e.fake.seed(&format!("{P}/regions/us-central1/forwardingRules"), serde_json::json!({
        "name": "nostate-lb", "selfLink": format!("{}projects/rktup-test/regions/us-central1/forwardingRules/nostate-lb", e.fake.compute_endpoint())}));
    let down = rt.block_on(gce.down_async()).expect("down");
    assert!(down.failed.is_empty(), "{:#?}", down.failed);
    assert_eq!(names(&e.fake), Vec::<String>::new());
}

#[test]
fn down_lists_what_it_could_not_delete() {
    let e = env();
    let gce = e.gce("stuck", &[]);
    let rt = rt();
    rt.block_on(gce.up_async(&no_wait())).expect("up");
    e.fake
        .fail_next("compute.instanceTemplates.delete", 503, 12);
    let down = rt.block_on(gce.down_async()).expect("down ran");
    assert_eq!(down.failed.len(), 1, "{:#?}", down.failed);
    assert!(down.failed[0].contains("instanceTemplate stuck-minion-template"));
    // The trait's down turns that into an error listing it, and keeps the keys (something of
    // the cluster still exists) saying so.
    let state = gce.settings().state_dir.clone();
    let err = gce.down().expect_err("down reports failure").to_string();
    assert!(err.contains("stuck-minion-template"), "{err}");
    assert!(
        err.contains(&format!("the state directory {} ", state.display()))
            && err.contains("is kept"),
        "{err}"
    );
    assert!(
        state.join("pki/ca.key").is_file(),
        "a failed down removed the keys"
    );
    // Once the template goes too, the next down removes them.
    gce.down().expect("down once the fault is over");
    assert!(!state.exists(), "{} left behind", state.display());
}

/// A deleted cluster leaves no credentials behind: its state directory (pki/ with the CA key
/// and the admin key) goes with the last cloud resource, unless `--keep-state` (issue 16).
#[test]
fn down_removes_the_state_directory_unless_kept() {
    let e = env();
    let rt = rt();
    let gone = e.gce("creds", &[("KUBE_DELETE_NETWORK", "true")]);
    let kept = e.gce(
        "kept",
        &[
            ("KUBE_DELETE_NETWORK", "true"),
            ("RKTUP_KEEP_STATE", "true"),
        ],
    );
    rt.block_on(gone.up_async(&no_wait())).expect("up creds");
    rt.block_on(kept.up_async(&no_wait())).expect("up kept");
    let (gone_dir, kept_dir) = (
        gone.settings().state_dir.clone(),
        kept.settings().state_dir.clone(),
    );
    assert_ne!(gone_dir, kept_dir);
    for d in [&gone_dir, &kept_dir] {
        for key in ["ca.key", "admin.key"] {
            assert!(
                d.join("pki").join(key).is_file(),
                "{}/pki/{key}",
                d.display()
            );
        }
    }
    gone.down().expect("down");
    assert!(!gone_dir.exists(), "{} left behind", gone_dir.display());
    kept.down().expect("down --keep-state");
    assert!(
        kept_dir.join("pki/ca.key").is_file(),
        "--keep-state removed {}",
        kept_dir.display()
    );
    let left: Vec<String> = names(&e.fake)
        .into_iter()
        .filter(|r| r.contains(" creds-") || r.contains(" kept-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

/// GKE's `disable-legacy-endpoints=true` on the master, the node template and the group's
/// instances: the metadata server's v1beta1/0.1 paths (no `Metadata-Flavor` header needed)
/// are closed.
#[test]
fn instances_disable_the_legacy_metadata_endpoints() {
    let e = env();
    let gce = e.gce("legacy", &[]);
    let rt = rt();
    rt.block_on(gce.up_async(&no_wait())).expect("up");
    let item = |metadata: &serde_json::Value| -> Option<String> {
        metadata["items"]
            .as_array()?
            .iter()
            .find(|i| i["key"] == "disable-legacy-endpoints")
            .and_then(|i| i["value"].as_str().map(str::to_string))
    };
    let zone = format!("{P}/zones/us-central1-b/instances");
    let master = e.fake.get(&zone, "legacy-master").expect("master");
    assert_eq!(
        item(&master["metadata"]).as_deref(),
        Some("true"),
        "{master}"
    );
    let tmpl = e
        .fake
        .get(
            &format!("{P}/global/instanceTemplates"),
            "legacy-minion-template",
        )
        .expect("template");
    assert_eq!(
        item(&tmpl["properties"]["metadata"]).as_deref(),
        Some("true"),
        "{tmpl}"
    );
    let nodes: Vec<String> = names(&e.fake)
        .into_iter()
        .filter_map(|r| {
            r.strip_prefix("instances legacy-minion-")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(nodes.len(), 2);
    for n in nodes {
        let inst = e
            .fake
            .get(&zone, &format!("legacy-minion-{n}"))
            .expect("node");
        assert_eq!(item(&inst["metadata"]).as_deref(), Some("true"), "{inst}");
    }
    rt.block_on(gce.down_async()).expect("down");
}

#[test]
fn the_fake_rejects_what_google_would() {
    let e = env();
    let rt = rt();
    let client = rt
        .block_on(rktup_gce::client::Client::new(
            rktup_gce::client::Endpoints::new(
                Some(&e.fake.compute_endpoint()),
                Some(&e.fake.storage_endpoint()),
            ),
            "rktup-test",
            Some(&e.sa),
        ))
        .expect("client");
    let url = client.compute("global/firewalls");
    let try_body = |body: serde_json::Value| {
        rt.block_on(client.insert(&url, &body, "create a firewall"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let unknown = try_body(serde_json::json!({"name": "x", "sourceRange": ["0.0.0.0/0"]}));
    assert!(
        unknown.contains("400") && unknown.contains("Unknown name \"sourceRange\""),
        "{unknown}"
    );
    let wrong =
        try_body(serde_json::json!({"name": "x", "allowed": [{"IPProtocol": "tcp", "ports": 22}]}));
    assert!(
        wrong.contains("400") && wrong.contains("resource.allowed[0].ports"),
        "{wrong}"
    );
    let bad_enum = try_body(serde_json::json!({"name": "x", "direction": "SIDEWAYS"}));
    assert!(
        bad_enum.contains("400") && bad_enum.contains("direction"),
        "{bad_enum}"
    );
    let q = rt
        .block_on(client.get(
            &format!("{}?maxResult=3", client.compute("global/routes")),
            "list routes",
        ))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(q.contains("400") && q.contains("maxResult"), "{q}");
    let required = rt
        .block_on(client.call(
            reqwest::Method::POST,
            &client.storage("b"),
            Some(rktup_gce::client::Body::Json(
                &serde_json::json!({"name": "b"}),
            )),
            "create a bucket",
        ))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        required.contains("Required parameter: project"),
        "{required}"
    );
}

#[test]
fn user_data_over_256_kib_is_refused_before_any_call() {
    let e = env();
    // A cluster CIDR can't grow the user-data; an oversized template directory would, which
    // `up` doesn't take, so the size check is exercised through render_boot's own limit via
    // a huge binary URL recorded in settings.
    let big = format!("https://example.invalid/{}", "a".repeat(300 * 1024));
    let gce = e.gce("big", &[("RKTUP_BINARY_URL", big.as_str())]);
    let err = rt()
        .block_on(gce.up_async(&no_wait()))
        .expect_err("too large")
        .to_string();
    assert!(err.contains("limit is 262144 bytes"), "{err}");
    assert_eq!(e.fake.request_count(), 0, "a call was made");
}
