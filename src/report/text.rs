//! text: the human report of `plan` and `apply`: per host, each step that differs or failed
//! with its diff, then one summary line per host and for the fleet.

use std::io::{self, Write};

use similar::TextDiff;

use crate::engine::{ChangeReport, HostReport, HostStatus, StepStatus};
use crate::fleet::FleetSummary;

pub fn write(out: &mut impl Write, summary: &FleetSummary, stats: bool) -> io::Result<()> {
    for host in &summary.hosts {
        write_host(out, host, summary.mode, stats)?;
    }
    if let Some(aborted) = &summary.aborted {
        writeln!(out, "error: {aborted}")?;
    }
    let count = |s: HostStatus| summary.hosts.iter().filter(|h| h.status == s).count();
    let mut parts = Vec::new();
    for (status, label) in [
        (HostStatus::Changed, "changed"),
        (HostStatus::Differs, "to change"),
        (HostStatus::InLine, "in line"),
        (HostStatus::Failed, "failed"),
        (HostStatus::Unreachable, "unreachable"),
    ] {
        let n = count(status);
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    writeln!(
        out,
        "{}: {} hosts: {}",
        summary.mode,
        summary.hosts.len(),
        parts.join(", ")
    )
}

fn write_host(out: &mut impl Write, host: &HostReport, mode: &str, stats: bool) -> io::Result<()> {
    let status = match host.status {
        HostStatus::InLine => "in line",
        HostStatus::Differs => "differs",
        HostStatus::Changed => "changed",
        HostStatus::Failed => "FAILED",
        HostStatus::Unreachable => "UNREACHABLE",
    };
    writeln!(out, "{} ({}): {status}", host.name, host.address)?;
    if let Some(note) = &host.note {
        writeln!(out, "  note: {note}")?;
    }
    for step in host.steps.iter().chain(&host.handlers) {
        let (mark, detail) = match &step.status {
            StepStatus::InLine | StepStatus::Skipped(_) => continue,
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
        if mode == "plan" || matches!(step.status, StepStatus::Changed) {
            for change in &step.changes {
                write_change(out, change)?;
            }
        }
        if let Some(detail) = detail {
            for line in detail.lines() {
                writeln!(out, "      {line}")?;
            }
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
    if stats {
        writeln!(
            out,
            "  stats: {} round trips, {} bytes sent, {} bytes received, {:.3} s",
            host.stats.round_trips, host.stats.bytes_sent, host.stats.bytes_received, host.seconds
        )?;
    }
    Ok(())
}

fn write_change(out: &mut impl Write, c: &ChangeReport) -> io::Result<()> {
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
            writeln!(out, "        {line}")?;
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
