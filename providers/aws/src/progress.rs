//! One status line per resource, kind's way: a spinner on a terminal, plain lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub struct Progress {
    multi: Option<MultiProgress>,
}

pub struct Line {
    bar: Option<ProgressBar>,
    label: String,
}

impl Progress {
    pub fn new() -> Progress {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
    }

    pub fn start(&self, kind: &str, name: &str) -> Line {
        let label = format!("{kind:<22} {name}");
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Line { bar, label }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Line {
    pub fn done(self, detail: &str) {
        let msg = format!("✓ {}  {detail}", self.label);
        match self.bar {
            Some(bar) => {
                bar.set_style(ProgressStyle::default_spinner());
                bar.finish_with_message(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    pub fn fail(self, err: &str) {
        let msg = format!("✗ {}  {err}", self.label);
        match self.bar {
            Some(bar) => bar.abandon_with_message(msg),
            None => eprintln!("{msg}"),
        }
    }
}
