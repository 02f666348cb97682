//! Micro-benchmark of what a custom resource's create costs here (issue 17): prune, default and
//! validate (schema, pattern, bounds, CEL) of the CronTab the control plane's
//! `bench_custom_resources_vs_configmaps` creates, with the metadata the create path has set by
//! then. Prints ns per operation for each step and for the three together; no timed assertions
//! (figures go in crates/controlplane/BENCHMARKS.md).
//!
//!     cargo test --release -p rktup-apiextensions --test bench_write_path -- --ignored --nocapture

use std::hint::black_box;
use std::time::Instant;

use rktup_apiextensions::Structural;
use serde_json::{json, Value};

/// The schema of the control plane benchmark's CronTab v1 (the test kit's `crontab_crd` with the
/// CEL rule crates/controlplane/tests/crds.rs adds on `spec`).
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "cronSpec": {
                        "type": "string",
                        "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$",
                    },
                    "image": {"type": "string"},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                },
                "x-kubernetes-validations": [
                    {"rule": "!has(self.image) || self.image != 'forbidden'",
                     "message": "image must not be forbidden"}
                ],
            },
            "status": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer"},
                    "labelSelector": {"type": "string"},
                },
            },
        },
    })
}

/// The object as the create path hands it to pruning (metadata already ObjectMeta's).
fn object() -> Value {
    json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "o12345", "namespace": "default",
                     "uid": "6f1c2a5e-0c8e-4d7b-9a53-2f6f0a1b9c11",
                     "creationTimestamp": "2026-12-05T09:00:00Z", "generation": 1},
        "spec": {"cronSpec": "* * * * */5", "image": "img", "replicas": 2}
    })
}

/// ns per call of `f` on fresh copies of `obj`, made outside the timed loops (in batches of
/// 1,000, so the copies' cost is not counted).
fn per_op(n: u32, obj: &Value, mut f: impl FnMut(&mut Value)) -> f64 {
    let mut timed = std::time::Duration::ZERO;
    let mut done = 0;
    while done < n {
        let batch = 1_000.min(n - done);
        let mut copies: Vec<Value> = (0..batch).map(|_| obj.clone()).collect();
        let t = Instant::now();
        for o in copies.iter_mut() {
            f(o);
        }
        timed += t.elapsed();
        done += batch;
        // Dropped outside the timed loop too.
        drop(black_box(copies));
    }
    timed.as_nanos() as f64 / n as f64
}

#[test]
#[ignore]
fn bench_prune_default_validate() {
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let s = Structural::from_schema(&schema()).expect("structural");
    let obj = object();
    // The steps are checked once, so the loops measure the work a valid create does.
    let mut check = obj.clone();
    assert!(s.prune(&mut check).is_empty());
    s.apply_defaults(&mut check);
    assert!(s.validate(&check, None).is_empty());

    let prune = per_op(n, &obj, |o| {
        black_box(s.prune(o));
    });
    let defaults = per_op(n, &obj, |o| s.apply_defaults(o));
    let validate = per_op(n, &check, |o| {
        black_box(s.validate(o, None));
    });
    let total = per_op(n, &obj, |o| {
        black_box(s.prune(o));
        s.apply_defaults(o);
        black_box(s.validate(o, None));
    });
    println!(
        "write-path-bench n={n} prune_ns={prune:.0} defaults_ns={defaults:.0} validate_ns={validate:.0} total_ns={total:.0}"
    );
}
