//! event: what happens to a host while a run goes on, as the engine says it. The engine and
//! the fleet emit [`HostEvent`]s to an [`EventSink`] and never print; the reporter
//! (`progress`) turns them into the bars and lines the operator sees. What a run found in
//! the end is the [`crate::summary`], which the report formats render.

use crate::summary::{HostStatus, StepStatus};

/// One thing that happened to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// The host's work began (its playbook is rendered next).
    Started,
    Connecting,
    Probing,
    /// `audit`: the TCP probe of the host's forbidden ports from the controller.
    OutsideProbe,
    /// The probe ended. `applies`: the host differs and the run applies, so its apply follows
    /// (unless bad input elsewhere stops the run).
    Probed {
        status: HostStatus,
        applies: bool,
    },
    Applying,
    /// A step (or, with `handler`, a notified handler) of the apply script ended.
    StepApplied {
        index: usize,
        handler: bool,
        status: StepStatus,
    },
    /// A risky change was confirmed over a new connection (`step`: midway, after that step;
    /// `None`: after the apply script).
    Confirmed {
        step: Option<usize>,
    },
    /// The confirmation was lost: the host restores the previous state by itself.
    ConfirmationLost {
        error: String,
    },
    /// After a lost confirmation: whether access came back.
    RolledBack {
        note: String,
    },
    /// The verify probe ended; `in_line`: every changed step is now in line.
    Verified {
        in_line: bool,
    },
    /// The host's apply ended with this status.
    Finished {
        status: HostStatus,
    },
}

/// Where events go. Called from every host's task at once; must not block for long.
pub trait EventSink: Send + Sync {
    fn event(&self, host: &str, event: HostEvent);

    /// Every host of a pass is done (the fleet bar ends).
    fn pass_finished(&self) {}
}

/// A sink that drops every event.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _host: &str, _event: HostEvent) {}
}

/// A sink that keeps every event, in order, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct Recorded(pub std::sync::Mutex<Vec<(String, HostEvent)>>);

#[cfg(test)]
impl EventSink for Recorded {
    fn event(&self, host: &str, event: HostEvent) {
        self.0
            .lock()
            .expect("not poisoned")
            .push((host.to_string(), event));
    }
}

#[cfg(test)]
impl Recorded {
    /// The events of one host, in order.
    pub fn of(&self, host: &str) -> Vec<HostEvent> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, e)| e.clone())
            .collect()
    }
}
