//! One status line per step, as kind's `status.go`: a spinner on a TTY, plain lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub struct Progress {
    multi: Option<MultiProgress>,
}

pub struct Step {
    bar: Option<ProgressBar>,
    label: String,
}

impl Progress {
    pub fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            multi: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn start(&self, label: impl Into<String>) -> Step {
        let label = label.into();
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template(" {spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(label.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Step { bar, label }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Step {
    /// Ends the line: ✓ label (detail) or ✗ label: error.
    pub fn end<T, E: std::fmt::Display>(self, result: &Result<T, E>, detail: &str) {
        let line = match result {
            Ok(_) if detail.is_empty() => format!(" ✓ {}", self.label),
            Ok(_) => format!(" ✓ {} ({detail})", self.label),
            Err(e) => format!(" ✗ {}: {e}", self.label),
        };
        match self.bar {
            Some(b) => {
                b.set_style(
                    ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.finish_with_message(line);
            }
            None => eprintln!("{line}"),
        }
    }
}
