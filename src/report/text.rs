//! text: the human report of `plan` and `apply`: per host, each step that differs or failed
//! with its diff, then one summary line per host and for the fleet.
//!
//! Everything it writes goes through [`Escaping`]: host names, errors, diffs of a file's
//! content, evidence all may hold the host's terminal escapes, which reach the operator's
//! terminal only as visible text (`\x1b`). The report's own colors are the only raw escapes.

use std::io::{self, Write};

use similar::TextDiff;

use crate::inspect::CheckStatus;
use crate::summary::FleetSummary;
use crate::summary::{ChangeReport, HostReport, HostStatus, StepStatus};

/// How to show a report: with `--stats` lines, and in color (a terminal).
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub stats: bool,
    pub color: bool,
}

/// A writer that escapes control characters ([`crate::untrusted::escape_controls`]) in all
/// that is written through it; [`Escaping::paint`] writes the report's own color codes raw.
pub struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Escaping<'_, W> {
    fn paint(&mut self, code: &str) -> io::Result<()> {
        self.0.write_all(code.as_bytes())
    }
}

impl<W: Write> Write for Escaping<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // `write!` hands over whole `str` pieces: no character is split between calls.
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(crate::untrusted::escape_controls(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

pub fn write(out: &mut impl Write, summary: &FleetSummary, style: Style) -> io::Result<()> {
    let out = &mut Escaping(out);
    for host in &summary.hosts {
        write_host(out, host, summary.mode, style)?;
    }
    if let Some(aborted) = &summary.aborted {
        writeln!(out, "error: {aborted}")?;
    }
    if summary.mode == "audit" {
        write_checklist_table(out, summary)?;
    }
    let mut parts: Vec<(String, usize)> = Vec::new();
    for host in &summary.hosts {
        let label = host_label(host, summary.mode).to_lowercase();
        match parts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => parts.push((label, 1)),
        }
    }
    let order = [
        "changed",
        "to change",
        "drift",
        "findings",
        "in line",
        "failed",
        "unreachable",
    ];
    parts.sort_by_key(|(l, _)| order.iter().position(|o| o == l));
    let parts: Vec<String> = parts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    writeln!(
        out,
        "{}: {} hosts: {}",
        summary.mode,
        summary.hosts.len(),
        parts.join(", ")
    )
}

/// A host's word in the report: its status, with `drift`/`findings` for drift and audit.
fn host_label(host: &HostReport, mode: &str) -> &'static str {
    let failing = host.checks.iter().any(|c| c.status == CheckStatus::Fail);
    match host.status {
        HostStatus::Differs if mode == "plan" => "to change",
        HostStatus::Differs => "drift",
        HostStatus::InLine if !host.findings.is_empty() || failing => "findings",
        HostStatus::InLine => "in line",
        HostStatus::Changed => "changed",
        HostStatus::Failed => "FAILED",
        HostStatus::Unreachable => "UNREACHABLE",
    }
}

fn write_host<W: Write>(
    out: &mut Escaping<W>,
    host: &HostReport,
    mode: &str,
    style: Style,
) -> io::Result<()> {
    let status = match host_label(host, mode) {
        "to change" => "differs",
        other => other,
    };
    writeln!(out, "{} ({}): {status}", host.name, host.address)?;
    if let Some(note) = &host.note {
        writeln!(out, "  note: {note}")?;
    }
    for step in host.steps.iter().chain(&host.handlers) {
        let (mark, detail) = match &step.status {
            // An in-line step speaks only when it has more to say than "in line" (a setting
            // this environment cannot hold, say).
            StepStatus::InLine => match &step.note {
                // Notes about what this environment cannot do ("not settable live here",
                // "audit unavailable here") are worth a line; routine sentences are not.
                Some(note) if note.contains(" here") => {
                    writeln!(out, "  = {}: {note}", step.name)?;
                    continue;
                }
                _ => continue,
            },
            StepStatus::Skipped(_) => continue,
            StepStatus::Differs => ("~", None),
            StepStatus::Changed => ("*", None),
            StepStatus::NotRun => ("-", Some("not run: an earlier step failed".to_string())),
            StepStatus::Failed(e) => ("!", Some(e.clone())),
        };
        let action = step
            .action
            .as_deref()
            .map(|a| format!(" [{a}]"))
            .unwrap_or_default();
        let what = step.resource.as_deref().unwrap_or("");
        writeln!(
            out,
            "  {mark} {} ({what}){action}  {}",
            step.name, step.location
        )?;
        if mode != "apply" || matches!(step.status, StepStatus::Changed) {
            for change in &step.changes {
                write_change(out, change, style.color)?;
            }
        }
        if let Some(detail) = detail {
            for line in detail.lines() {
                writeln!(out, "      {line}")?;
            }
        }
    }
    for f in &host.findings {
        writeln!(
            out,
            "  ! [{}] {} {}: {}",
            f.severity.as_str(),
            f.id,
            f.subject,
            f.title
        )?;
        for e in &f.evidence {
            writeln!(out, "      {e}")?;
        }
    }
    // Passing checks are in the fleet table; here what needs a look, with its evidence.
    for c in host.checks.iter().filter(|c| c.status != CheckStatus::Pass) {
        let mark = if c.status == CheckStatus::Fail {
            "FAIL"
        } else {
            "unknown"
        };
        writeln!(out, "  {mark} {} ({}): {}", c.id, c.source, c.title)?;
        for e in &c.evidence {
            writeln!(out, "      {e}")?;
        }
    }
    // OpenClaw's own audit beside rampart's checks: its findings always, and where a passing
    // check and OpenClaw disagree, both verdicts.
    for c in host.checks.iter().filter(|c| c.status == CheckStatus::Pass) {
        let lines: Vec<&String> = if c.id == "openclaw_audit" {
            c.evidence.iter().collect()
        } else {
            c.evidence
                .iter()
                .filter(|e| e.contains("verdicts differ"))
                .collect()
        };
        if lines.is_empty() {
            continue;
        }
        writeln!(out, "  pass {} ({}): {}", c.id, c.source, c.title)?;
        for e in lines {
            writeln!(out, "      {e}")?;
        }
    }
    if let Some(error) = &host.error {
        for (i, line) in error.lines().enumerate() {
            writeln!(out, "  {}{line}", if i == 0 { "error: " } else { "  " })?;
        }
    }
    if let Some(hint) = &host.hint {
        writeln!(out, "  hint: {hint}")?;
    }
    if style.stats {
        writeln!(
            out,
            "  stats: {} round trips, {} bytes sent, {} bytes received, {:.3} s",
            host.stats.round_trips, host.stats.bytes_sent, host.stats.bytes_received, host.seconds
        )?;
    }
    Ok(())
}

/// `audit`'s fleet table: one row per check, one column per host.
fn write_checklist_table(out: &mut impl Write, summary: &FleetSummary) -> io::Result<()> {
    let mut ids: Vec<(&str, &str)> = Vec::new();
    for h in &summary.hosts {
        for c in &h.checks {
            if !ids.iter().any(|(id, _)| *id == c.id) {
                ids.push((&c.id, &c.title));
            }
        }
    }
    let mut rows = vec![vec!["CHECK".to_string()]];
    rows[0].extend(summary.hosts.iter().map(|h| h.name.clone()));
    for (id, _) in &ids {
        let mut row = vec![id.to_string()];
        for h in &summary.hosts {
            row.push(match h.checks.iter().find(|c| c.id == *id) {
                Some(c) => match c.status {
                    CheckStatus::Pass => "pass",
                    CheckStatus::Fail => "FAIL",
                    CheckStatus::Unknown => "?",
                }
                .to_string(),
                None if h.status == HostStatus::Unreachable => "unreachable".into(),
                None => "-".into(),
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    writeln!(out)?;
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    writeln!(out)
}

fn write_change<W: Write>(out: &mut Escaping<W>, c: &ChangeReport, color: bool) -> io::Result<()> {
    let multi = |s: &Option<String>| s.as_deref().is_some_and(|t| t.contains('\n'));
    if multi(&c.before) || multi(&c.after) {
        let before = c.before.as_deref().unwrap_or("");
        let after = c.after.as_deref().unwrap_or("");
        writeln!(out, "      {}:", c.field)?;
        let diff = TextDiff::from_lines(before, after);
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header("before", "after")
            .to_string();
        for line in text.lines() {
            let paint = match line.as_bytes().first() {
                _ if !color => "",
                Some(b'+') => "\x1b[32m",
                Some(b'-') => "\x1b[31m",
                Some(b'@') => "\x1b[36m",
                _ => "",
            };
            let reset = if paint.is_empty() { "" } else { "\x1b[0m" };
            write!(out, "        ")?;
            out.paint(paint)?;
            write!(out, "{line}")?;
            out.paint(reset)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let show = |s: &Option<String>| match s {
        None => "(absent)".to_string(),
        Some(v) => v.clone(),
    };
    writeln!(
        out,
        "      {}: {} -> {}",
        c.field,
        show(&c.before),
        show(&c.after)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{StepReport, StepStatus};
    use crate::transport::StatsSnapshot;

    fn host(name: &str, status: HostStatus, steps: Vec<StepReport>) -> HostReport {
        HostReport {
            name: name.into(),
            address: format!("{name}.example:22"),
            status,
            error: None,
            hint: None,
            login: Some("root".into()),
            note: None,
            steps,
            handlers: vec![],
            findings: vec![],
            checks: vec![],
            facts: None,
            stats: StatsSnapshot {
                round_trips: 1,
                bytes_sent: 100,
                bytes_received: 50,
            },
            seconds: 0.1,
        }
    }

    fn step(name: &str, status: StepStatus, changes: Vec<ChangeReport>) -> StepReport {
        StepReport {
            name: name.into(),
            resource: Some(format!("file /etc/{name}")),
            location: "site.yaml:3:5".into(),
            status,
            action: Some("modify".into()),
            changes,
            note: None,
        }
    }

    #[test]
    fn a_hosts_terminal_escapes_are_shown_not_sent() {
        let evil = "\x1b]0;owned\x07\x1b[2J\r\u{9b}31m";
        let mut h = host(
            "pi-1",
            HostStatus::Failed,
            vec![step(
                "motd",
                StepStatus::Failed(format!("probe said {evil}")),
                vec![ChangeReport {
                    field: "content".into(),
                    before: Some(format!("Welcome {evil}\nold\n")),
                    after: Some("Welcome\nnew\n".into()),
                }],
            )],
        );
        h.error = Some(format!("---- stderr ----\n{evil}"));
        h.note = Some(evil.into());
        h.findings = vec![crate::inspect::Finding {
            id: "ssh.malformed_key".into(),
            severity: crate::inspect::Severity::Medium,
            subject: format!("/root/.ssh/authorized_keys:1{evil}"),
            title: "t".into(),
            evidence: vec![evil.into()],
        }];
        let summary = FleetSummary {
            schema_version: 1,
            run_id: "r".into(),
            started: 0,
            seconds: 0.0,
            mode: "plan",
            hosts: vec![h],
            aborted: None,
        };
        let colors = regex::Regex::new("\x1b\\[(0|3[126])m").unwrap();
        for color in [false, true] {
            let mut out = Vec::new();
            write(
                &mut out,
                &summary,
                Style {
                    stats: false,
                    color,
                },
            )
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            // Only the report's own colors (SGR codes) may be raw escapes.
            let without_colors = colors.replace_all(&text, "");
            assert!(
                !without_colors.chars().any(crate::untrusted::is_unsafe),
                "{text:?}"
            );
            assert!(text.contains("\\x1b]0;owned\\x07"), "{text}");
            assert!(text.contains("-Welcome \\x1b]0;owned"), "{text}");
        }
    }

    #[test]
    fn plan_shows_diffs_failures_and_a_summary() {
        let mut down = host("pi-2", HostStatus::Unreachable, vec![]);
        down.error = Some("cannot reach pi-2.example:22: Connection refused".into());
        down.hint = Some("check the address".into());
        let summary = FleetSummary {
            schema_version: 1,
            run_id: "r".into(),
            started: 1_764_000_000,
            seconds: 1.5,
            mode: "plan",
            hosts: vec![
                host(
                    "pi-1",
                    HostStatus::Differs,
                    vec![
                        step(
                            "motd",
                            StepStatus::Differs,
                            vec![ChangeReport {
                                field: "content".into(),
                                before: Some("hello\nold\n".into()),
                                after: Some("hello\nnew\n".into()),
                            }],
                        ),
                        step(
                            "sshd",
                            StepStatus::Differs,
                            vec![ChangeReport {
                                field: "mode".into(),
                                before: Some("0644".into()),
                                after: Some("0600".into()),
                            }],
                        ),
                        step("ok", StepStatus::InLine, vec![]),
                    ],
                ),
                down,
            ],
            aborted: None,
        };
        let mut out = Vec::new();
        write(
            &mut out,
            &summary,
            Style {
                stats: true,
                color: false,
            },
        )
        .unwrap();
        insta::assert_snapshot!(String::from_utf8(out).unwrap(), @r"
        pi-1 (pi-1.example:22): differs
          ~ motd (file /etc/motd) [modify]  site.yaml:3:5
              content:
                --- before
                +++ after
                @@ -1,2 +1,2 @@
                 hello
                -old
                +new
          ~ sshd (file /etc/sshd) [modify]  site.yaml:3:5
              mode: 0644 -> 0600
          stats: 1 round trips, 100 bytes sent, 50 bytes received, 0.100 s
        pi-2 (pi-2.example:22): UNREACHABLE
          error: cannot reach pi-2.example:22: Connection refused
          hint: check the address
          stats: 1 round trips, 100 bytes sent, 50 bytes received, 0.100 s
        plan: 2 hosts: 1 to change, 1 unreachable
        ");
    }

    #[test]
    fn openclaw_s_audit_and_differing_verdicts_show_even_beside_a_pass() {
        use crate::inspect::{Check, CheckStatus};
        let check = |id: &str, evidence: &[&str]| Check {
            id: id.into(),
            source: "guide checklist".into(),
            title: id.into(),
            status: CheckStatus::Pass,
            evidence: evidence.iter().map(|e| e.to_string()).collect(),
        };
        let mut gw = host("gw-1", HostStatus::InLine, vec![]);
        gw.checks = vec![
            check("auth_token", &["config: ${AGENT_AUTH_TOKEN}"]),
            check(
                "loopback_bind",
                &[
                    "config: gateway.bind is \"loopback\"",
                    "openclaw: gateway.bind_x (warn): x; verdicts differ: rampart pass, openclaw warn",
                ],
            ),
            check(
                "openclaw_audit",
                &["openclaw security audit --deep: 0 critical, 1 warn, 0 info"],
            ),
        ];
        let summary = FleetSummary {
            schema_version: 1,
            run_id: "r".into(),
            started: 0,
            seconds: 0.0,
            mode: "audit",
            hosts: vec![gw],
            aborted: None,
        };
        let mut out = Vec::new();
        write(
            &mut out,
            &summary,
            Style {
                stats: false,
                color: false,
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("  pass loopback_bind (guide checklist): loopback_bind\n      openclaw: gateway.bind_x (warn): x; verdicts differ: rampart pass, openclaw warn\n"), "{text}");
        assert!(!text.contains("gateway.bind is"), "{text}");
        assert!(!text.contains("pass auth_token"), "{text}");
        assert!(
            text.contains("      openclaw security audit --deep: 0 critical, 1 warn, 0 info\n"),
            "{text}"
        );
    }
}
