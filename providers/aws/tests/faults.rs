//! Throttling, 5xx and eventual consistency, which moto never produces: scripted responses
//! from a small HTTP server on 127.0.0.1.

use rktup_aws::cloud::{Clients, RetryPolicy, NOT_FOUND_YET};
use rktup_testkit::aws::{runtime, test_credentials};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Scripted {
    url: String,
    served: Arc<AtomicUsize>,
}

fn ec2_error(code: &str) -> (u16, String) {
    let status = if code == "RequestLimitExceeded" {
        503
    } else {
        400
    };
    (
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>scripted {code}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
        ),
    )
}

fn ok(action: &str, inner: &str) -> (u16, String) {
    (
        200,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r-2</requestId>{inner}</{action}Response>"
        ),
    )
}

/// Serves `script` in order, one response per connection, then 500s.
fn serve(script: Vec<(u16, String)>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let n = count.fetch_add(1, Ordering::SeqCst);
            let (status, text) = script
                .get(n)
                .cloned()
                .unwrap_or_else(|| (500, "script exhausted".into()));
            let reason = if status == 200 { "OK" } else { "Error" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    Scripted { url, served }
}

fn clients(rt: &tokio::runtime::Runtime, url: &str, attempts: u32) -> Clients {
    test_credentials();
    rt.block_on(Clients::connect(
        "us-west-2",
        Some(url),
        RetryPolicy {
            max_attempts: attempts,
            base: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
    ))
}

#[test]
fn throttling_and_5xx_are_retried() {
    let s = serve(vec![
        (503, String::new()),
        ec2_error("RequestLimitExceeded"),
        (500, "<Response/>".into()),
        ok(
            "DescribeVpcs",
            "<vpcSet><item><vpcId>vpc-0abc</vpcId></item></vpcSet>",
        ),
    ]);
    let rt = runtime();
    let c = clients(&rt, &s.url, 6);
    let out = rt
        .block_on(c.ec2.describe_vpcs().send())
        .expect("succeeds after retries");
    assert_eq!(out.vpcs()[0].vpc_id(), Some("vpc-0abc"));
    assert_eq!(s.served.load(Ordering::SeqCst), 4);
}

#[test]
fn retries_give_up_after_max_attempts() {
    let s = serve(vec![ec2_error("RequestLimitExceeded"); 10]);
    let rt = runtime();
    let c = clients(&rt, &s.url, 3);
    let e = rt
        .block_on(c.ec2.describe_vpcs().send())
        .expect_err("throttled throughout");
    let e = rktup_aws::cloud::sdk_error("list VPCs", e);
    assert!(e.is("RequestLimitExceeded"), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("RequestLimitExceeded"), "{msg}");
    assert_eq!(s.served.load(Ordering::SeqCst), 3);
}

#[test]
fn instance_not_found_right_after_create_is_retried() {
    let s = serve(vec![
        ec2_error("InvalidInstanceID.NotFound"),
        ec2_error("InvalidInstanceID.NotFound"),
        ok(
            "DescribeInstances",
            "<reservationSet><item><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-0123</instanceId></item></instancesSet></item></reservationSet>",
        ),
    ]);
    let rt = runtime();
    let c = clients(&rt, &s.url, 6);
    let out = rt
        .block_on(c.retry_on("see the new master", NOT_FOUND_YET, || {
            c.ec2.describe_instances().instance_ids("i-0123").send()
        }))
        .expect("visible on the third call");
    assert_eq!(
        out.reservations()[0].instances()[0].instance_id(),
        Some("i-0123")
    );
    assert_eq!(s.served.load(Ordering::SeqCst), 3);
}

#[test]
fn other_errors_are_not_retried() {
    let s = serve(vec![
        ec2_error("UnauthorizedOperation"),
        ok("DescribeInstances", "<reservationSet/>"),
    ]);
    let rt = runtime();
    let c = clients(&rt, &s.url, 6);
    let e = rt
        .block_on(c.retry_on("see the new master", NOT_FOUND_YET, || {
            c.ec2.describe_instances().send()
        }))
        .expect_err("not retried");
    let msg = e.to_string();
    assert!(
        msg.contains("see the new master") && msg.contains("UnauthorizedOperation"),
        "{msg}"
    );
    assert!(e.is("UnauthorizedOperation"), "{e:?}");
    assert_eq!(s.served.load(Ordering::SeqCst), 1);
}

#[test]
fn dependency_violation_is_retried_until_it_clears() {
    let s = serve(vec![
        ec2_error("DependencyViolation"),
        ec2_error("DependencyViolation"),
        ok("DeleteSecurityGroup", "<return>true</return>"),
    ]);
    let rt = runtime();
    let c = clients(&rt, &s.url, 6);
    rt.block_on(c.retry_on(
        "delete the security group",
        &["DependencyViolation"],
        || c.ec2.delete_security_group().group_id("sg-1").send(),
    ))
    .expect("deleted on the third call");
    assert_eq!(s.served.load(Ordering::SeqCst), 3);
}
