//! progress: what the operator sees while a run goes on; the reporter of [`HostEvent`]s. On a
//! terminal, indicatif bars: one for the fleet and one line per active host with its phase.
//! Otherwise plain lines on stderr, one per host as it finishes, so logs of cron jobs stay
//! readable. Never on stdout: reports go there. What it prints passes
//! [`crate::untrusted::escape_controls`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::{EventSink, HostEvent};
use crate::summary::HostStatus;

/// The run's progress; clones share it (every host's task reports to the same bars).
#[derive(Clone)]
pub struct Progress(Arc<Inner>);

struct Inner {
    bars: Option<(MultiProgress, ProgressBar)>,
    plain: bool,
    /// Each active host's line.
    lines: Mutex<HashMap<String, HostLine>>,
}

/// One host's line.
struct HostLine {
    name: String,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `quiet`: nothing at all.
    pub fn new(total: usize, quiet: bool) -> Progress {
        let (bars, plain) = if quiet {
            (None, false)
        } else if !std::io::stderr().is_terminal() {
            (None, true)
        } else {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let fleet = multi.add(ProgressBar::new(total as u64));
            fleet.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} hosts  {elapsed}  {msg}")
                    .expect("valid template"),
            );
            (Some((multi, fleet)), false)
        };
        Progress(Arc::new(Inner {
            bars,
            plain,
            lines: Mutex::new(HashMap::new()),
        }))
    }

    fn line(&self, name: &str) -> HostLine {
        let bar = self.0.bars.as_ref().map(|(multi, _)| {
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

    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostLine>> {
        self.0.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host's line, made when it has none.
    fn take(&self, name: &str) -> HostLine {
        self.lines().remove(name).unwrap_or_else(|| self.line(name))
    }

    fn phase(&self, name: &str, phase: &str) {
        if let Some(HostLine { bar: Some(bar), .. }) = self.lines().get(name) {
            bar.set_message(crate::untrusted::escape_controls(phase).into_owned());
        }
    }

    fn done(&self, line: HostLine, outcome: &str) {
        if let Some(bar) = line.bar {
            bar.finish_and_clear();
        }
        if let Some((_, fleet)) = &self.0.bars {
            fleet.inc(1);
        } else if self.0.plain {
            eprintln!(
                "rampart: {}: {}",
                crate::untrusted::escape_controls(&line.name),
                crate::untrusted::escape_controls(outcome)
            );
        }
    }

    /// The host waits for the next phase: its line goes, the fleet count stays.
    fn pause(&self, line: HostLine) {
        if let Some(bar) = line.bar {
            bar.finish_and_clear();
        }
    }
}

impl EventSink for Progress {
    fn event(&self, host: &str, event: HostEvent) {
        match event {
            HostEvent::Started => {
                let line = self.line(host);
                self.lines().insert(host.to_string(), line);
            }
            HostEvent::Connecting => self.phase(host, "connecting"),
            HostEvent::Probing => self.phase(host, "probing"),
            HostEvent::OutsideProbe => self.phase(host, "outside probe"),
            HostEvent::Probed { status, applies } => {
                let line = self.take(host);
                if applies {
                    // Counted when its apply ends.
                    self.pause(line);
                } else {
                    self.done(line, status_word(status));
                }
            }
            HostEvent::Applying => {
                let line = self.line(host);
                self.lines().insert(host.to_string(), line);
                self.phase(host, "applying");
            }
            HostEvent::Finished { status } => {
                let line = self.take(host);
                self.done(line, &format!("{status:?}").to_lowercase());
            }
            HostEvent::StepApplied { .. }
            | HostEvent::Confirmed { .. }
            | HostEvent::ConfirmationLost { .. }
            | HostEvent::RolledBack { .. }
            | HostEvent::Verified { .. } => {}
        }
    }

    fn pass_finished(&self) {
        if let Some((_, fleet)) = &self.0.bars {
            fleet.finish_and_clear();
        }
    }
}

/// A host's fate in a progress line.
fn status_word(status: HostStatus) -> &'static str {
    match status {
        HostStatus::InLine => "in line",
        HostStatus::Differs => "differs",
        HostStatus::Changed => "changed",
        HostStatus::Failed => "failed",
        HostStatus::Unreachable => "unreachable",
    }
}
