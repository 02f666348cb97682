//! The environment the agent reads: KUBE_RKT_STAGE1_IMAGE and LOG_LEVEL (clap), then the
//! seed's RKT_STAGE1_IMAGE. One test in its own binary: it sets process-wide variables.

use clap::Parser;
use rktup_node_contract::{AgentConfig, Stage1};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    agent: AgentConfig,
}

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<AgentConfig, String> {
    for v in ["KUBE_RKT_STAGE1_IMAGE", "LOG_LEVEL", "RKT_STAGE1_IMAGE"] {
        std::env::remove_var(v);
    }
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let c = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?
        .agent;
    c.with_env_fallbacks(|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())
}

#[test]
fn environment_precedence() {
    let stage1 = |args: &[&str], env: &[(&str, &str)]| parse(args, env).unwrap().stage1();
    assert_eq!(stage1(&[], &[]), Stage1::Coreos);
    let kvm = "coreos.com/rkt/stage1-kvm";
    let fly = "coreos/rkt/stage1-fly";
    assert_eq!(stage1(&[], &[("KUBE_RKT_STAGE1_IMAGE", fly)]), Stage1::Fly);
    assert_eq!(stage1(&[], &[("RKT_STAGE1_IMAGE", kvm)]), Stage1::Kvm);
    assert_eq!(
        stage1(
            &[],
            &[("KUBE_RKT_STAGE1_IMAGE", fly), ("RKT_STAGE1_IMAGE", kvm)]
        ),
        Stage1::Fly
    );
    // An empty KUBE_RKT_STAGE1_IMAGE is given (clap reads it) and means the default, as
    // `--rkt-stage1-image=` does; an empty RKT_STAGE1_IMAGE counts as unset.
    assert_eq!(
        stage1(
            &[],
            &[("KUBE_RKT_STAGE1_IMAGE", ""), ("RKT_STAGE1_IMAGE", kvm)]
        ),
        Stage1::Coreos
    );
    assert_eq!(stage1(&[], &[("RKT_STAGE1_IMAGE", "")]), Stage1::Coreos);
    // The flag wins over both.
    assert_eq!(
        stage1(
            &["--rkt-stage1-image", fly],
            &[("KUBE_RKT_STAGE1_IMAGE", kvm), ("RKT_STAGE1_IMAGE", kvm)]
        ),
        Stage1::Fly
    );
    let e = parse(&[], &[("RKT_STAGE1_IMAGE", "stage1-lkvm")]).unwrap_err();
    assert_eq!(
        e,
        "unknown --rkt-stage1-image \"stage1-lkvm\" (known: coreos.com/rkt/stage1-coreos, stage1-fly, stage1-kvm)"
    );
    assert!(parse(&[], &[("KUBE_RKT_STAGE1_IMAGE", "stage1-lkvm")]).is_err());

    assert_eq!(parse(&[], &[("LOG_LEVEL", "4")]).unwrap().verbosity, 4);
    assert_eq!(
        parse(&["--v=3"], &[("LOG_LEVEL", "4")]).unwrap().verbosity,
        3
    );
    // A rendered command line says --v, so LOG_LEVEL on the node cannot change it.
    let c = parse(&[], &[]).unwrap();
    let args: Vec<String> = c.to_args();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(parse(&argv, &[("LOG_LEVEL", "9")]).unwrap().verbosity, 2);
}
