//! rktup's log lines, through `tracing`. The libraries only call `tracing`'s macros; the binary
//! installs one subscriber per process with [`init`] (the agent, each pod's stage1 supervisor,
//! the control plane, the cluster commands).
//!
//! The verbosity is kubelet's glog scale (`--v`, `LOG_LEVEL`), mapped onto tracing's levels:
//!
//! | `--v`   | shows                                   | tracing level  |
//! |---------|-----------------------------------------|----------------|
//! | 0, 1, 2 | errors, warnings, what happened (the default is 2) | `INFO`  |
//! | 3       | the agent's request detail (kubelet port exec/logs, TLS) | `DEBUG` |
//! | 4 and up| every rkt runtime step (stage1: CNI, containers, signals) | `TRACE` |
//!
//! glog has no level below 2 that hides plain info lines (its V(0) lines are always printed), so
//! 0 and 1 show what 2 shows. Other crates' events (hyper, rustls, the cloud SDKs) are shown from
//! `WARN` up whatever `--v` says. `RUST_LOG`, when set, replaces the mapping with its own
//! `target=level` directives (tracing-subscriber's `Targets` syntax, e.g.
//! `rktup_agent=debug,kube_client=debug`).
//!
//! One line per event: `<RFC 3339 UTC time, ns> <LEVEL> <component>: <message> [key=value ...]`.

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// The `--v` from which every rkt runtime step is logged (the seed: "4 or more shows rkt detail").
pub const RKT_DETAIL: u8 = 4;

/// Which process writes the lines (the name after the level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `rktup agent` (the kubelet and the rkt api-service).
    Agent,
    /// `rktup stage1 <pod dir>`, one per pod; its lines carry its pid (`stage1[1234]`), as
    /// several supervisors' logs are often read side by side.
    Stage1,
    /// `rktup controlplane`.
    ControlPlane,
    /// The cluster commands (`rktup local up`, `rktup aws down`, ...).
    Cli,
}

impl Component {
    fn write_name(self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match self {
            Component::Agent => out.write_str("agent"),
            Component::Stage1 => write!(out, "stage1[{}]", std::process::id()),
            Component::ControlPlane => out.write_str("controlplane"),
            Component::Cli => out.write_str("rktup"),
        }
    }
}

/// The most detailed level rktup's own events are shown at for `--v verbosity`.
pub fn max_level(verbosity: u8) -> LevelFilter {
    match verbosity {
        0..=2 => LevelFilter::INFO,
        3 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// What is shown: `RUST_LOG`'s directives when given (an error if they do not parse), else
/// rktup's crates (every target starting with `rktup`) at [`max_level`] and the rest from `WARN`.
pub fn filter(verbosity: u8, rust_log: Option<&str>) -> Result<Targets, ParseError> {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(directives) => directives.parse(),
        None => Ok(Targets::new()
            .with_default(LevelFilter::WARN)
            .with_target("rktup", max_level(verbosity))),
    }
}

/// The subscriber [`init`] installs, writing to `writer` (tests hand in a buffer).
pub fn subscriber<W>(component: Component, filter: Targets, writer: W) -> impl Subscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .event_format(Line { component })
        .with_writer(writer);
    tracing_subscriber::registry().with(fmt).with(filter)
}

/// Installs the process's subscriber (stderr), once; a second call changes nothing. A `RUST_LOG`
/// that does not parse is reported as a warning and the `--v` mapping is used instead.
pub fn init(component: Component, verbosity: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (f, bad) = match filter(verbosity, rust_log.as_deref()) {
        Ok(f) => (f, None),
        Err(e) => (
            filter(verbosity, None).unwrap_or_else(|_| Targets::new()),
            Some(e),
        ),
    };
    if tracing::subscriber::set_global_default(subscriber(component, f, std::io::stderr)).is_ok() {
        if let Some(e) = bad {
            tracing::warn!("ignoring RUST_LOG {:?}: {e}", rust_log.unwrap_or_default());
        }
    }
}

/// The line format (see the module doc). Spans are not shown: rktup's events carry what they need
/// as fields.
struct Line {
    component: Component,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(
            w,
            "{:.9} {:<5} ",
            jiff::Timestamp::now(),
            event.metadata().level()
        )?;
        self.component.write_name(&mut w)?;
        w.write_str(": ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned()
        }
    }

    /// Emits one event per level, from an rktup target and from a foreign one, under `--v`.
    fn run(component: Component, f: Targets) -> String {
        let buf = Buf::default();
        tracing::subscriber::with_default(subscriber(component, f, buf.clone()), || {
            tracing::error!(target: "rktup_runtime::stage1", "e-line");
            tracing::warn!(target: "rktup_agent::sync", "w-line");
            tracing::info!(target: "rktup_agent::sync", pod = "k8s_1", "i-line");
            tracing::debug!(target: "rktup_agent::kubelet", "d-line");
            tracing::trace!(target: "rktup_runtime::stage1", "t-line");
            tracing::warn!(target: "hyper::proto", "foreign-warn");
            tracing::info!(target: "hyper::proto", "foreign-info");
        });
        buf.text()
    }

    fn shown(out: &str) -> Vec<&str> {
        [
            "e-line",
            "w-line",
            "i-line",
            "d-line",
            "t-line",
            "foreign-warn",
            "foreign-info",
        ]
        .into_iter()
        .filter(|m| out.contains(&format!(": {m}")))
        .collect()
    }

    #[test]
    fn the_glog_scale_maps_onto_levels() {
        let base = ["e-line", "w-line", "i-line"];
        for v in [0, 1, 2] {
            let out = run(Component::Agent, filter(v, None).expect("filter"));
            assert_eq!(
                shown(&out),
                [&base[..], &["foreign-warn"]].concat(),
                "{out}"
            );
        }
        let out = run(Component::Agent, filter(3, None).expect("filter"));
        assert_eq!(
            shown(&out),
            ["e-line", "w-line", "i-line", "d-line", "foreign-warn"],
            "{out}"
        );
        for v in [RKT_DETAIL, 5, 10, 255] {
            let out = run(Component::Agent, filter(v, None).expect("filter"));
            assert_eq!(
                shown(&out),
                [
                    "e-line",
                    "w-line",
                    "i-line",
                    "d-line",
                    "t-line",
                    "foreign-warn"
                ],
                "{out}"
            );
        }
    }

    #[test]
    fn rust_log_replaces_the_mapping() {
        let f = filter(2, Some("hyper=info,rktup_runtime=trace")).expect("parses");
        let out = run(Component::Agent, f);
        assert_eq!(
            shown(&out),
            ["e-line", "t-line", "foreign-warn", "foreign-info"],
            "{out}"
        );
        // Blank is as if unset.
        let out = run(Component::Agent, filter(2, Some("  ")).expect("blank"));
        assert!(
            out.contains(": i-line") && !out.contains(": d-line"),
            "{out}"
        );
        assert!(filter(2, Some("rktup=loud")).is_err());
    }

    #[test]
    fn one_line_per_event_with_time_level_component_and_fields() {
        let out = run(Component::Agent, filter(2, None).expect("filter"));
        let line = out
            .lines()
            .find(|l| l.contains("i-line"))
            .expect("info line");
        let (time, rest) = line.split_once(' ').expect("time");
        let t: jiff::Timestamp = time.parse().expect("RFC 3339 time");
        assert!(time.ends_with('Z') && time.len() == "2026-01-01T00:00:00.000000000Z".len());
        assert!(t.as_second() > 0);
        assert_eq!(rest, "INFO  agent: i-line pod=\"k8s_1\"");
        assert!(out.contains(" ERROR agent: e-line\n"), "{out}");
        assert!(out.contains(" WARN  agent: w-line\n"), "{out}");

        let out = run(Component::Stage1, filter(4, None).expect("filter"));
        let want = format!(" TRACE stage1[{}]: t-line\n", std::process::id());
        assert!(out.contains(&want), "{out}");
        let out = run(Component::ControlPlane, filter(2, None).expect("filter"));
        assert!(out.contains(" INFO  controlplane: i-line"), "{out}");
        let out = run(Component::Cli, filter(2, None).expect("filter"));
        assert!(out.contains(" INFO  rktup: i-line"), "{out}");
    }
}
