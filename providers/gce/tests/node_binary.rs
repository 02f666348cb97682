//! `up` stages RKTUP_NODE_BINARY (e.g. the node build, README "A node build") for the machines
//! instead of the running binary, and refuses a path that is not a file before any call.

mod support;

use rktup_gce::up::object_name;
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::{ClusterProvider, StateDir};
use rktup_render::{Role, Templates};
use sha2::{Digest, Sha256};
use support::{env, no_wait, rt};

#[test]
fn up_stages_the_node_binary_and_nodes_check_its_sha256() {
    let e = env();
    // Any file stands for the node build here: what matters is which bytes are staged.
    let node_binary = e.dir.path().join("rktup-node");
    let bytes = b"#!/bin/sh\necho a node build of rktup\n".repeat(1000);
    std::fs::write(&node_binary, &bytes).unwrap();
    let path = node_binary.to_str().unwrap();
    let gce = e.gce("nb1", &[("RKTUP_NODE_BINARY", path)]);
    rt().block_on(gce.up_async(&no_wait())).expect("up");

    let sha = format!("{:x}", Sha256::digest(&bytes));
    let recorded = StateDir::for_cluster(gce.settings())
        .load_recorded()
        .unwrap();
    assert_eq!(recorded.binary_sha256.as_deref(), Some(sha.as_str()));
    let staged = e
        .fake
        .object(&gce.staging_bucket(), &object_name(&sha))
        .expect("the node binary is staged under its sha256's name");
    assert!(
        staged == bytes,
        "staged object differs from RKTUP_NODE_BINARY"
    );
    let running = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(staged != running, "the running binary was staged");

    // What a node boots with checks that file's sha256 and downloads that object.
    let pki = StateDir::for_cluster(gce.settings())
        .load_pki()
        .unwrap()
        .expect("pki saved");
    let templates = Templates::embedded().unwrap();
    let node = render_boot(&gce, &templates, Role::Node, &pki, PkiOrigin::Saved).unwrap();
    let cloud_config = &node.config.cloud_config;
    assert!(cloud_config.contains(&sha), "{cloud_config}");
    assert!(cloud_config.contains(&object_name(&sha)), "{cloud_config}");

    rt().block_on(gce.down_async()).expect("down");
}

#[test]
fn a_node_binary_that_is_not_a_file_is_refused_before_any_call() {
    let e = env();
    let missing = e.dir.path().join("no-such-rktup");
    let gce = e.gce("nb2", &[("RKTUP_NODE_BINARY", missing.to_str().unwrap())]);
    let err = rt()
        .block_on(gce.up_async(&no_wait()))
        .expect_err("up with a missing node binary");
    let message = err.to_string();
    assert!(message.contains("RKTUP_NODE_BINARY"), "{message}");
    assert!(message.contains("no-such-rktup"), "{message}");
    assert!(e.fake.resources().is_empty(), "{:#?}", e.fake.resources());
}
