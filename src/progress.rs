//! progress: what the operator sees while a run goes on. On a terminal, indicatif bars: one
//! for the fleet and one line per active host with its phase. Otherwise plain lines on
//! stderr, one per host as it finishes, so logs of cron jobs stay readable. Never on stdout:
//! reports go there. What it prints passes [`crate::untrusted::escape_controls`].

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    plain: bool,
}

/// One host's line.
pub struct HostLine {
    name: String,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `quiet`: nothing at all.
    pub fn new(total: usize, quiet: bool) -> Progress {
        if quiet {
            return Progress {
                bars: None,
                plain: false,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Progress {
                bars: None,
                plain: true,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let fleet = multi.add(ProgressBar::new(total as u64));
        fleet.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} hosts  {elapsed}  {msg}")
                .expect("valid template"),
        );
        Progress {
            bars: Some((multi, fleet)),
            plain: false,
        }
    }

    pub fn host(&self, name: &str) -> HostLine {
        let bar = self.bars.as_ref().map(|(multi, _)| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix}: {msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(crate::untrusted::escape_controls(name).into_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        HostLine {
            name: name.to_string(),
            bar,
        }
    }

    pub fn phase(&self, line: &HostLine, phase: &str) {
        if let Some(bar) = &line.bar {
            bar.set_message(crate::untrusted::escape_controls(phase).into_owned());
        }
    }

    pub fn done(&self, line: HostLine, outcome: &str) {
        if let Some(bar) = line.bar {
            bar.finish_and_clear();
        }
        if let Some((_, fleet)) = &self.bars {
            fleet.inc(1);
        } else if self.plain {
            eprintln!(
                "rampart: {}: {}",
                crate::untrusted::escape_controls(&line.name),
                crate::untrusted::escape_controls(outcome)
            );
        }
    }

    /// The host waits for the next phase: its line goes, the fleet count stays.
    pub fn pause(&self, line: HostLine) {
        if let Some(bar) = line.bar {
            bar.finish_and_clear();
        }
    }

    pub fn finish(&self) {
        if let Some((_, fleet)) = &self.bars {
            fleet.finish_and_clear();
        }
    }
}
