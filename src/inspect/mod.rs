//! inspect: what `drift` and `audit` look at beyond the playbook's steps.
//!
//! The same round trip that probes the steps runs a read-only scan of the host (`scan`):
//! listening sockets, uid-0 accounts, sudo members, authorized keys, secret-looking strings in
//! the agent's folders, modes of secrets files, skills, the agent's config, sshd's effective
//! settings, the firewall. From what it saw, `findings` names unmanaged drift (each with an id,
//! a severity and evidence) and `checks` scores the guide's security checklist plus the
//! baseline's key controls (pass, fail or unknown, with evidence). `outside` probes the agent
//! port from the controller.

use serde::Serialize;

/// Which read-only inspection a run adds to the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unmanaged drift: findings.
    Drift,
    /// Findings, the checklist and the outside probe.
    Audit,
}

/// How bad a finding is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Something on a host that no step manages and that looks wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Finding {
    /// Stable, dotted: `listener.unexpected`, `user.uid0`, `secret.plaintext`, ...
    pub id: String,
    pub severity: Severity,
    /// What it is about, unique with the id on one host: `tcp 0.0.0.0:18789`, `user toor`.
    pub subject: String,
    /// One sentence for people.
    pub title: String,
    /// What the scan saw, one line each. Never a secret's value.
    pub evidence: Vec<String>,
}

/// A checklist item's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// The scan could not tell (a tool missing, audit unavailable in a container, ...).
    Unknown,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
            CheckStatus::Unknown => "unknown",
        }
    }
}

/// One checklist item on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Check {
    /// Stable: `auth_token`, `loopback_bind`, `outside_probe`, `ssh_root_login`, ...
    pub id: String,
    /// Where it comes from: `guide §2`, `guide checklist`, `baseline`.
    pub source: String,
    /// The checklist's words.
    pub title: String,
    pub status: CheckStatus,
    pub evidence: Vec<String>,
}
pub mod checks;
pub mod findings;
pub mod scan;
