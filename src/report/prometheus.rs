//! prometheus: the run as a Prometheus text exposition file (`--format prometheus`,
//! `--output FILE.prom`), for node_exporter's textfile collector.
//!
//! Every family has HELP and TYPE lines and is a gauge (a textfile holds the last run's state,
//! not counters); samples carry no timestamps (the collector refuses them). Every sample has a
//! `mode` label, so that a drift run and an audit run can write files side by side in the same
//! textfile directory without colliding. Per host, a host that could not be reached has only
//! `rampart_host_unreachable` and `rampart_host_failed`: its steps and findings are unknown,
//! not zero.
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `rampart_last_run_timestamp_seconds` | mode | when the run finished (Unix time) |
//! | `rampart_run_duration_seconds` | mode | how long it took |
//! | `rampart_run_aborted` | mode | 1 when bad input stopped the run before any host ran |
//! | `rampart_hosts` | mode, status | hosts per status (`in_line`, `differs`, `changed`, `failed`, `unreachable`) |
//! | `rampart_host_unreachable` | mode, host | 1 when the host could not be reached |
//! | `rampart_host_failed` | mode, host | 1 when the host failed (a step, bad input, lost access) |
//! | `rampart_host_drifted_steps` | mode, host | steps that differ from the playbook |
//! | `rampart_host_changed_steps` | mode, host | steps changed (`apply`) |
//! | `rampart_host_failed_steps` | mode, host | steps and handlers that failed |
//! | `rampart_host_findings` | mode, host, severity | findings per severity, zeros included |
//! | `rampart_audit_checks` | mode, host, status | `audit` only: checklist items per verdict |
//!
//! This module owns the names and the escaping; the cli chooses the file and writes it
//! atomically.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::inspect::{CheckStatus, Severity};
use crate::summary::FleetSummary;
use crate::summary::{HostReport, HostStatus, StepReport, StepStatus};

const SEVERITIES: [Severity; 4] = [
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];
const CHECK_STATUSES: [CheckStatus; 3] =
    [CheckStatus::Pass, CheckStatus::Fail, CheckStatus::Unknown];
const HOST_STATUSES: [(HostStatus, &str); 5] = [
    (HostStatus::InLine, "in_line"),
    (HostStatus::Differs, "differs"),
    (HostStatus::Changed, "changed"),
    (HostStatus::Failed, "failed"),
    (HostStatus::Unreachable, "unreachable"),
];

/// One metric family: its samples, as label sets and values.
struct Family<'a> {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, &'a str)>, f64)>,
}

impl<'a> Family<'a> {
    fn new(name: &'static str, help: &'static str) -> Family<'a> {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, &'a str)>, value: impl Into<f64>) {
        self.samples.push((labels, value.into()));
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}

pub fn write(out: &mut impl Write, summary: &FleetSummary) -> io::Result<()> {
    let mode = summary.mode;
    let mut families = Vec::new();

    let mut last = Family::new(
        "rampart_last_run_timestamp_seconds",
        "When the last rampart run finished, seconds since the Unix epoch.",
    );
    last.add(
        vec![("mode", mode)],
        summary.started as f64 + summary.seconds,
    );
    families.push(last);

    let mut duration = Family::new(
        "rampart_run_duration_seconds",
        "How long the last rampart run took.",
    );
    duration.add(vec![("mode", mode)], summary.seconds);
    families.push(duration);

    let mut aborted = Family::new(
        "rampart_run_aborted",
        "1 when bad input stopped the last run before any host ran.",
    );
    aborted.add(vec![("mode", mode)], u8::from(summary.aborted.is_some()));
    families.push(aborted);

    let mut hosts = Family::new("rampart_hosts", "Hosts of the last run, per outcome.");
    for (status, label) in HOST_STATUSES {
        let n = summary.hosts.iter().filter(|h| h.status == status).count();
        hosts.add(vec![("mode", mode), ("status", label)], n as f64);
    }
    families.push(hosts);

    let mut unreachable = Family::new(
        "rampart_host_unreachable",
        "1 when the host could not be reached.",
    );
    let mut failed = Family::new(
        "rampart_host_failed",
        "1 when the host failed: a step, bad input or lost access.",
    );
    let mut drifted = Family::new(
        "rampart_host_drifted_steps",
        "Steps that differ from the playbook.",
    );
    let mut changed = Family::new("rampart_host_changed_steps", "Steps changed by apply.");
    let mut failed_steps = Family::new(
        "rampart_host_failed_steps",
        "Steps and handlers that failed.",
    );
    let mut findings = Family::new(
        "rampart_host_findings",
        "Unmanaged drift found on the host, per severity.",
    );
    let mut checks = Family::new(
        "rampart_audit_checks",
        "Checklist items of the audit, per verdict.",
    );
    for host in &summary.hosts {
        let h = host.name.as_str();
        unreachable.add(
            vec![("mode", mode), ("host", h)],
            u8::from(host.status == HostStatus::Unreachable),
        );
        failed.add(
            vec![("mode", mode), ("host", h)],
            u8::from(host.status == HostStatus::Failed),
        );
        if host.status == HostStatus::Unreachable {
            continue;
        }
        let steps = |want: fn(&StepStatus) -> bool| count_steps(host, want);
        drifted.add(
            vec![("mode", mode), ("host", h)],
            steps(|s| *s == StepStatus::Differs),
        );
        changed.add(
            vec![("mode", mode), ("host", h)],
            steps(|s| *s == StepStatus::Changed),
        );
        failed_steps.add(
            vec![("mode", mode), ("host", h)],
            steps(|s| matches!(s, StepStatus::Failed(_))),
        );
        for severity in SEVERITIES {
            let n = host
                .findings
                .iter()
                .filter(|f| f.severity == severity)
                .count();
            findings.add(
                vec![("mode", mode), ("host", h), ("severity", severity.as_str())],
                n as f64,
            );
        }
        if mode == "audit" {
            for status in CHECK_STATUSES {
                let n = host.checks.iter().filter(|c| c.status == status).count();
                checks.add(
                    vec![("mode", mode), ("host", h), ("status", status.as_str())],
                    n as f64,
                );
            }
        }
    }
    families.extend([
        unreachable,
        failed,
        drifted,
        changed,
        failed_steps,
        findings,
    ]);
    if mode == "audit" {
        families.push(checks);
    }

    let mut text = String::new();
    for family in &families {
        family.render(&mut text);
    }
    out.write_all(text.as_bytes())
}

fn count_steps(host: &HostReport, want: fn(&StepStatus) -> bool) -> f64 {
    host.steps
        .iter()
        .chain(&host.handlers)
        .filter(|s: &&StepReport| want(&s.status))
        .count() as f64
}

/// A label value: backslash, double quote and line feed escaped, as the format requires;
/// other control characters (from a host) shown as visible escapes first.
fn escape_label(s: &str) -> String {
    crate::untrusted::escape_controls(s)
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// HELP text: backslash and line feed escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// A sample value in the exposition format's spelling (`+Inf`, `NaN`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample_summary;

    fn render(summary: &FleetSummary) -> String {
        let mut buf = Vec::new();
        write(&mut buf, summary).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn drift_metrics() {
        let text = render(&sample_summary("drift"));
        for line in [
            r#"rampart_last_run_timestamp_seconds{mode="drift"} 1795572001.75"#,
            r#"rampart_run_duration_seconds{mode="drift"} 1.75"#,
            r#"rampart_run_aborted{mode="drift"} 0"#,
            r#"rampart_hosts{mode="drift",status="differs"} 1"#,
            r#"rampart_hosts{mode="drift",status="in_line"} 1"#,
            r#"rampart_hosts{mode="drift",status="unreachable"} 1"#,
            r#"rampart_hosts{mode="drift",status="failed"} 0"#,
            r#"rampart_host_unreachable{mode="drift",host="gw-3"} 1"#,
            r#"rampart_host_unreachable{mode="drift",host="gw-1"} 0"#,
            r#"rampart_host_failed{mode="drift",host="gw-3"} 0"#,
            r#"rampart_host_drifted_steps{mode="drift",host="gw-1"} 2"#,
            r#"rampart_host_drifted_steps{mode="drift",host="gw-2"} 0"#,
            r#"rampart_host_failed_steps{mode="drift",host="gw-1"} 0"#,
            r#"rampart_host_findings{mode="drift",host="gw-1",severity="critical"} 1"#,
            r#"rampart_host_findings{mode="drift",host="gw-1",severity="high"} 1"#,
            r#"rampart_host_findings{mode="drift",host="gw-1",severity="low"} 0"#,
            r#"rampart_host_findings{mode="drift",host="gw-2",severity="medium"} 0"#,
            "# HELP rampart_host_findings Unmanaged drift found on the host, per severity.",
            "# TYPE rampart_host_findings gauge",
        ] {
            assert!(has(&text, line), "no line {line} in\n{text}");
        }
        // An unreachable host's steps and findings are unknown, not zero.
        assert!(!text.contains(r#"rampart_host_findings{mode="drift",host="gw-3""#));
        assert!(!text.contains(r#"rampart_host_drifted_steps{mode="drift",host="gw-3""#));
        assert!(!text.contains("rampart_audit_checks"));
    }

    #[test]
    fn audit_adds_the_checklist() {
        let text = render(&sample_summary("audit"));
        for line in [
            r#"rampart_audit_checks{mode="audit",host="gw-1",status="pass"} 1"#,
            r#"rampart_audit_checks{mode="audit",host="gw-1",status="fail"} 1"#,
            r#"rampart_audit_checks{mode="audit",host="gw-1",status="unknown"} 1"#,
            r#"rampart_audit_checks{mode="audit",host="gw-2",status="pass"} 1"#,
            r#"rampart_audit_checks{mode="audit",host="gw-2",status="fail"} 0"#,
        ] {
            assert!(has(&text, line), "no line {line} in\n{text}");
        }
    }

    #[test]
    fn every_family_once_with_help_and_type_first() {
        let text = render(&sample_summary("audit"));
        let mut seen = Vec::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name);
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line} outside its family");
            }
        }
        assert_eq!(seen.len(), 11);
    }

    #[test]
    fn escapes_label_values() {
        let mut summary = sample_summary("drift");
        summary.hosts[1].name = "odd \"host\"\\\nname".into();
        let text = render(&summary);
        assert!(has(
            &text,
            r#"rampart_host_unreachable{mode="drift",host="odd \"host\"\\\nname"} 0"#
        ));
        assert_eq!(escape_help("a\\b\nc"), r"a\\b\nc");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
