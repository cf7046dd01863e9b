//! report: turning a run's [`FleetSummary`](crate::summary::FleetSummary) into what people and
//! machines read. Each output writes into any `io::Write`, so tests write into a `Vec<u8>`.
//! JSON is serde's rendering of the summary (schema in README.md); `junit`, `prometheus` and
//! `html` are built from the same summary, after the cli has masked its secrets.

pub mod html;
pub mod junit;
pub mod prometheus;
pub mod text;

use crate::inspect::{Check, CheckStatus, Finding, Severity};
use crate::summary::FleetSummary;
use crate::summary::{ChangeReport, HostReport, HostStatus, StepReport, StepStatus};
use crate::transport::StatsSnapshot;

/// A drift or audit run over three hosts, for the tests of every format: `gw-1` drifted (a
/// step with a text diff, one with a mode change, one in line, one skipped), with two findings
/// and a checklist with every verdict; `gw-2` in line and clean; `gw-3` unreachable. Values
/// hold characters each format must escape (`<`, `&`, `"`, `'`, newlines, a `]]>`).
#[doc(hidden)]
pub fn sample_summary(mode: &'static str) -> FleetSummary {
    let host = |name: &str, status: HostStatus| HostReport {
        name: name.into(),
        address: format!("10.0.0.{}:22", name.len()),
        status,
        error: None,
        hint: None,
        login: Some("admin".into()),
        note: None,
        steps: vec![],
        handlers: vec![],
        findings: vec![],
        checks: vec![],
        facts: None,
        stats: StatsSnapshot {
            round_trips: 1,
            bytes_sent: 9000,
            bytes_received: 4000,
        },
        seconds: 0.25,
    };
    let step = |name: &str, resource: &str, status: StepStatus| StepReport {
        name: name.into(),
        resource: Some(resource.into()),
        location: "playbooks/site.yaml:12:5".into(),
        status,
        action: None,
        changes: vec![],
        note: None,
    };
    let check = |id: &str, title: &str, status: CheckStatus, evidence: &str| Check {
        id: id.into(),
        source: "guide checklist".into(),
        title: title.into(),
        status,
        evidence: vec![evidence.into()],
    };

    let mut gw1 = host("gw-1", HostStatus::Differs);
    let mut motd = step("login banner", "file /etc/motd", StepStatus::Differs);
    motd.action = Some("modify".into());
    motd.changes = vec![ChangeReport {
        field: "content".into(),
        before: Some("Welcome <admin> & \"friends\"\n]]> old line\n".into()),
        after: Some("Authorized use only.\n".into()),
    }];
    let mut env = step(
        "secrets env file (0600)",
        "file /etc/openclaw/agent.env",
        StepStatus::Differs,
    );
    env.action = Some("modify".into());
    env.changes = vec![ChangeReport {
        field: "mode".into(),
        before: Some("0644".into()),
        after: Some("0600".into()),
    }];
    gw1.steps = vec![
        motd,
        env,
        step("firewall", "nftables ruleset", StepStatus::InLine),
        step(
            "install the agent",
            "command `npm install -g openclaw@latest`",
            StepStatus::Skipped("`when` is false: agent_install".into()),
        ),
    ];
    gw1.findings = vec![
        Finding {
            id: "listener.unexpected".into(),
            severity: Severity::Critical,
            subject: "tcp 0.0.0.0:18789".into(),
            title: "the agent gateway listens on a public address".into(),
            evidence: vec!["LISTEN 0.0.0.0:18789 python3 (pid 812, user openclaw)".into()],
        },
        Finding {
            id: "secret.plaintext".into(),
            severity: Severity::High,
            subject: "/home/openclaw/.openclaw/workspace/notes.md".into(),
            title: "a secret-looking string outside the env file".into(),
            evidence: vec!["line 3: Anthropic API key (sk-ant-…)".into()],
        },
    ];
    if mode == "audit" {
        gw1.checks = vec![
            check(
                "auth_token",
                "Auth token set and strong (32+ chars)",
                CheckStatus::Pass,
                "AGENT_AUTH_TOKEN in /etc/openclaw/token.env: 64 characters",
            ),
            check(
                "loopback_bind",
                "Gateway bound to localhost only",
                CheckStatus::Fail,
                "gateway.bind is \"lan\" in /home/openclaw/.openclaw/openclaw.json",
            ),
            check(
                "monitoring",
                "Monitoring/alerting configured",
                CheckStatus::Unknown,
                "audit is unavailable here (a container): rules written, not loaded",
            ),
        ];
    }

    let mut gw2 = host("gw-2", HostStatus::InLine);
    gw2.steps = vec![step("firewall", "nftables ruleset", StepStatus::InLine)];
    if mode == "audit" {
        gw2.checks = vec![check(
            "auth_token",
            "Auth token set and strong (32+ chars)",
            CheckStatus::Pass,
            "AGENT_AUTH_TOKEN in /etc/openclaw/token.env: 64 characters",
        )];
    }

    let mut gw3 = host("gw-3", HostStatus::Unreachable);
    gw3.error = Some("cannot reach 10.0.0.4:22: connection refused".into());
    gw3.hint = Some("is the host up, and is sshd listening on that port?".into());
    gw3.stats = StatsSnapshot::default();

    FleetSummary {
        schema_version: crate::summary::SCHEMA_VERSION,
        run_id: "20261125T020000Z-a1b2c3".into(),
        mode,
        started: 1_795_572_000,
        seconds: 1.75,
        hosts: vec![gw1, gw2, gw3],
        aborted: None,
    }
}
