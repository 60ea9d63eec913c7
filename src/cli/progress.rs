//! The numbered steps of a long command (`[1/3] Packaging…`): a spinner per
//! step when stdout is a terminal, one plain line per step when it is not
//! (a log, a pipe, CI), nothing at all under `--json`.
//!
//! Owns: how a step is shown. May call: indicatif. Must never decide
//! anything: the command says when a step starts and how it ended.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a spinner turns.
const TICK: Duration = Duration::from_millis(100);
/// The spinner's frames; the last is what a finished step shows.
const FRAMES: &[&str] = &["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "✔"];

enum Mode {
    Terminal,
    Plain,
    Quiet,
}

pub struct Steps {
    mode: Mode,
    total: usize,
    current: Option<(ProgressBar, String)>,
}

impl Steps {
    /// Steps on stdout; `quiet` (for `--json`) shows none.
    pub fn new(total: usize, quiet: bool) -> Steps {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Steps {
            mode,
            total,
            current: None,
        }
    }

    /// Starts step `n` (1-based), ending the one before it as done.
    pub fn start(&mut self, n: usize, what: &str) {
        self.finish(None);
        let text = format!("[{n}/{}] {what}…", self.total);
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => super::out(&format!("{text}\n")),
            Mode::Terminal => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
                bar.set_style(spinner_style("{spinner} {msg}"));
                bar.set_message(text.clone());
                bar.enable_steady_tick(TICK);
                self.current = Some((bar, text));
            }
        }
    }

    /// Ends the current step as done, with what it did (`3 files, 2 KiB`).
    pub fn finish(&mut self, detail: Option<&str>) {
        if let Some((bar, text)) = self.current.take() {
            let message = match detail {
                Some(detail) => format!("{text} {detail}"),
                None => text,
            };
            bar.finish_with_message(message);
        }
    }

    /// Ends the current step as failed; the error is printed after it.
    pub fn fail(&mut self) {
        if let Some((bar, text)) = self.current.take() {
            bar.set_style(spinner_style("✘ {msg}"));
            bar.abandon_with_message(format!("{text} failed"));
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        // A step still turning when the command returns early failed.
        self.fail();
    }
}

fn spinner_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_strings(FRAMES)
}
