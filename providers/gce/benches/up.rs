//! `cargo bench -p rktup-gce --bench up`: round trips on `up`'s critical path and its wall time
//! against the fake. Figures go to BENCHMARKS.md by hand; nothing here asserts a time.

#[path = "../tests/support/mod.rs"]
mod support;

use rktup_gce::client::Backoff;
use std::time::{Duration, Instant};

fn main() {
    let nodes = "3";
    // 1. Critical path: every answer costs 50 ms, operations finish on their 2nd poll, polls
    //    back off 1 ms: wall time / 50 ms ≈ round trips that had to wait for each other.
    let latency = Duration::from_millis(50);
    let rt = support::rt();
    // Run with and without the added latency: the difference divided by it counts the round
    // trips that waited for each other, free of local costs (uploading the binary, rendering).
    let mut walls = Vec::new();
    let mut total = 0;
    for l in [Duration::ZERO, latency] {
        let e = support::env();
        e.fake.set_latency(l);
        e.fake.set_page_size(500);
        let gce = e
            .gce("bench", &[("NUM_NODES", nodes)])
            .with_backoff(Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(1),
            });
        let t = Instant::now();
        rt.block_on(gce.up_async(&support::no_wait())).expect("up");
        walls.push(t.elapsed());
        total = e.fake.request_count();
    }
    let sequential = (walls[1].as_secs_f64() - walls[0].as_secs_f64()) / latency.as_secs_f64();
    println!(
        "critical path: {total} requests in all (a serial up makes every one wait for the last), \
         {sequential:.1} sequential round trips ({:.2?} without, {:.2?} with {latency:?} per answer); ratio {:.1}x",
        walls[0],
        walls[1],
        total as f64 / sequential
    );

    // 2. Wall time with 200 ms per operation, the default back-off and no added latency.
    let e = support::env();
    e.fake.set_op_delay(Duration::from_millis(200));
    e.fake.set_page_size(500);
    let gce = e
        .gce("bench", &[("NUM_NODES", nodes)])
        .with_backoff(Backoff::default());
    let t = Instant::now();
    rt.block_on(gce.up_async(&support::no_wait())).expect("up");
    let ops = e.fake.mutations().len();
    println!(
        "up wall time, 200 ms per operation: {:.2?} ({ops} operations, {} requests)",
        t.elapsed(),
        e.fake.request_count()
    );
    // The same operations one after another take at least ops × 200 ms.
    println!(
        "serial lower bound for the same operations: {:.1?}",
        Duration::from_millis(200) * ops as u32
    );
}
