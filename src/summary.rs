//! summary: what a run found and did, host by host, as every report format renders it.
//!
//! The engine fills one [`HostReport`] per host; the fleet puts them in a [`FleetSummary`];
//! `report/` renders that summary (text, JSON, JUnit, Prometheus, HTML) and depends on this
//! module only, not on how the run was made.

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::inventory::Host;
use crate::resource::Change;
use crate::secrets::Secrets;
use crate::transport::StatsSnapshot;

/// How a step ended on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum StepStatus {
    InLine,
    /// `plan`: would change.
    Differs,
    /// `apply`: changed, and the verify probe shows it in line.
    Changed,
    Skipped(String),
    Failed(String),
    /// Not run: an earlier step failed.
    NotRun,
}

/// A step's outcome, for reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub name: String,
    /// The resource's identity, `file /etc/motd`.
    pub resource: Option<String>,
    pub location: String,
    #[serde(flatten)]
    pub status: StepStatus,
    /// `create`, `modify`, `remove` or `in line`.
    pub action: Option<String>,
    pub changes: Vec<ChangeReport>,
    /// For a step in line: what the probe found, e.g. "audit unavailable here: rules written,
    /// not loaded".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeReport {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl From<&Change> for ChangeReport {
    fn from(c: &Change) -> ChangeReport {
        ChangeReport {
            field: c.field.clone(),
            before: c.before.clone(),
            after: c.after.clone(),
        }
    }
}

/// A host's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Every step in line (plan), or nothing needed changing (apply).
    InLine,
    /// `plan`: something would change.
    Differs,
    /// `apply`: changes made and verified.
    Changed,
    /// A step failed, or the host's input was bad.
    Failed,
    /// No connection.
    Unreachable,
}

/// One host's outcome, for reports. The JSON wire format is documented in README.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostReport {
    pub name: String,
    pub address: String,
    pub status: HostStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub steps: Vec<StepReport>,
    pub handlers: Vec<StepReport>,
    /// `drift` and `audit`: unmanaged drift the scan found (empty otherwise).
    pub findings: Vec<crate::inspect::Finding>,
    /// `audit`: the checklist (empty otherwise).
    pub checks: Vec<crate::inspect::Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    pub stats: StatsSnapshot,
    pub seconds: f64,
}

impl HostReport {
    pub fn new(host: &Host) -> HostReport {
        HostReport {
            name: host.name.clone(),
            address: format!("{}:{}", host.address, host.port),
            status: HostStatus::InLine,
            error: None,
            hint: None,
            login: None,
            note: None,
            steps: Vec::new(),
            handlers: Vec::new(),
            findings: Vec::new(),
            checks: Vec::new(),
            facts: None,
            stats: StatsSnapshot::default(),
            seconds: 0.0,
        }
    }

    pub fn fail(&mut self, status: HostStatus, error: String, hint: Option<String>) {
        self.status = status;
        self.error = Some(error);
        self.hint = hint;
    }
}

/// The most text one error keeps in a report (bytes); see [`FleetSummary::bound_errors`].
pub const ERROR_REPORT_LIMIT: usize = 16 * 1024;

/// The version of the JSON reports' schema (README.md).
pub const SCHEMA_VERSION: u32 = 1;

/// The fleet's record of a run: every host's report, in inventory order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSummary {
    /// The JSON schema's version (README.md, "JSON reports"); bumped on any breaking change.
    pub schema_version: u32,
    pub run_id: String,
    /// `plan`, `apply`, `drift` or `audit`.
    #[serde(deserialize_with = "mode_of")]
    pub mode: Mode,
    /// When the run started, seconds since the Unix epoch.
    pub started: u64,
    /// How long the run took.
    pub seconds: f64,
    pub hosts: Vec<HostReport>,
    /// Set when bad input stopped the run before anything was applied anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

/// A run's mode. An alias, not `&'static str` written out: serde borrows a field it sees as
/// `&str` from its input, which would tie a summary read back to `'static` input.
pub type Mode = &'static str;

/// A report's `mode`, read back (`rampart report merge`): one of the four a run writes.
fn mode_of<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let text = String::deserialize(d)?;
    ["plan", "apply", "drift", "audit"]
        .into_iter()
        .find(|m| *m == text)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "mode {text:?} is none of plan, apply, drift, audit"
            ))
        })
}

impl FleetSummary {
    /// Cuts every error text (a host's, a step's failure) to [`ERROR_REPORT_LIMIT`]: each
    /// block of host output in an error is already cut where it is made; this bounds what
    /// any path, present or future, puts into a report.
    pub fn bound_errors(&mut self) {
        let cut = |s: &mut String| {
            if s.len() > ERROR_REPORT_LIMIT {
                *s = crate::untrusted::truncate(s, ERROR_REPORT_LIMIT).into_owned();
            }
        };
        for h in &mut self.hosts {
            if let Some(e) = &mut h.error {
                cut(e);
            }
            for step in h.steps.iter_mut().chain(h.handlers.iter_mut()) {
                if let StepStatus::Skipped(t) | StepStatus::Failed(t) = &mut step.status {
                    cut(t);
                }
            }
        }
    }

    /// Masks every secret in every text of the summary, so that no format (JUnit, HTML, ...)
    /// can show one, whatever escaping it applies.
    pub fn mask(&mut self, secrets: &Secrets) {
        if secrets.is_empty() {
            return;
        }
        let m = |s: &mut String| *s = secrets.mask(s);
        let mo = |s: &mut Option<String>| {
            if let Some(t) = s {
                *t = secrets.mask(t);
            }
        };
        if let Some(a) = &mut self.aborted {
            m(a);
        }
        for h in &mut self.hosts {
            mo(&mut h.error);
            mo(&mut h.hint);
            mo(&mut h.note);
            for step in h.steps.iter_mut().chain(h.handlers.iter_mut()) {
                m(&mut step.name);
                mo(&mut step.resource);
                mo(&mut step.note);
                if let StepStatus::Skipped(t) | StepStatus::Failed(t) = &mut step.status {
                    m(t);
                }
                for c in &mut step.changes {
                    m(&mut c.field);
                    mo(&mut c.before);
                    mo(&mut c.after);
                }
            }
            for f in &mut h.findings {
                m(&mut f.subject);
                f.evidence.iter_mut().for_each(m);
            }
            for c in &mut h.checks {
                c.evidence.iter_mut().for_each(m);
            }
        }
    }

    pub fn outcome(&self) -> crate::exit::Outcome {
        use crate::exit::Outcome;
        if self.aborted.is_some()
            || self
                .hosts
                .iter()
                .any(|h| matches!(h.status, HostStatus::Failed | HostStatus::Unreachable))
        {
            Outcome::Failed
        } else if self.hosts.iter().any(|h| {
            h.status == HostStatus::Differs
                || !h.findings.is_empty()
                || h.checks
                    .iter()
                    .any(|c| c.status == crate::inspect::CheckStatus::Fail)
        }) {
            Outcome::Differs
        } else {
            Outcome::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Outcome;

    fn host(name: &str, status: HostStatus) -> HostReport {
        let mut h = HostReport::new(&crate::testkit::host(name));
        h.status = status;
        h
    }

    fn summary(hosts: Vec<HostReport>) -> FleetSummary {
        FleetSummary {
            schema_version: SCHEMA_VERSION,
            run_id: "r".into(),
            mode: "apply",
            started: 0,
            seconds: 0.0,
            hosts,
            aborted: None,
        }
    }

    #[test]
    fn the_outcome_is_the_worst_host_fate() {
        use HostStatus::*;
        let of = |statuses: &[HostStatus]| {
            summary(
                statuses
                    .iter()
                    .enumerate()
                    .map(|(i, s)| host(&format!("h{i}"), *s))
                    .collect(),
            )
            .outcome()
        };
        assert_eq!(of(&[]), Outcome::Ok);
        assert_eq!(of(&[InLine, Changed]), Outcome::Ok);
        assert_eq!(of(&[InLine, Differs, Changed]), Outcome::Differs);
        assert_eq!(of(&[Differs, Failed]), Outcome::Failed);
        assert_eq!(of(&[InLine, Unreachable]), Outcome::Failed);
    }

    #[test]
    fn an_aborted_run_failed_even_where_every_host_is_in_line() {
        let mut s = summary(vec![host("a", HostStatus::InLine)]);
        assert_eq!(s.outcome(), Outcome::Ok);
        s.aborted = Some("bad input for b: nothing was applied on any host".into());
        assert_eq!(s.outcome(), Outcome::Failed);
    }
}
