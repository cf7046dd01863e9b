//! html: the one-file HTML report (`--format html`): a grid of hosts × steps, findings and
//! checklist items, each cell colored *and* labelled by its verdict, and every cell's details
//! (the diff, the evidence, the error and its hint) in the same file. It reads only the
//! [`FleetSummary`] (the cli masks secrets before calling it) and never fetches anything:
//! inline CSS and a few lines of inline JS, which a Content-Security-Policy allows by hash
//! and nothing else.
//!
//! A cell is a link to `#<cell-id>`, the id of its detail `<section>`, and CSS shows the
//! section that is the `:target`. So clicking works without the script, the back button
//! closes a detail, and `report.html#gw-1/step/login-banner` opens that detail on load. The
//! script only marks the selected cell. Cell ids are `<host>/host`, `<host>/step/<name>`,
//! `<host>/handler/<name>`, `<host>/finding/<id>` and `<host>/check/<id>`, each part
//! lowercased to `[a-z0-9_.-]` (`-2`, `-3` on a collision).
//!
//! Everything from the summary goes through [`Esc`]; ids are made of safe characters only.
//! What a person sees is tested in headless Chromium (`tests/integration/report_html.rs`).

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::io::{self, Write};

use similar::TextDiff;

use crate::inspect::{Check, CheckStatus, Finding, Severity};
use crate::summary::FleetSummary;
use crate::summary::{ChangeReport, HostReport, HostStatus, StepReport, StepStatus};

pub fn write(out: &mut impl Write, summary: &FleetSummary) -> io::Result<()> {
    let mut page = String::with_capacity(32 * 1024);
    write_page(&mut page, summary).expect("writing into a String cannot fail");
    out.write_all(page.as_bytes())
}

const CSS: &str = r#"
:root{--line:#c9c9d1;--ok:#d2f1d9;--ok-t:#0b4a1c;--warn:#ffdcaa;--warn-t:#643400;--bad:#ffc4c4;--bad-t:#7a0000;--err:#7a0a14;--err-t:#fff;--grey:#e3e3e7;--grey-t:#393940;--chg:#d2e3ff;--chg-t:#0b3674}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;padding:.75rem;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1f;background:#f7f7f9;overflow-wrap:anywhere}
h1{font-size:1.3rem;margin:0 0 .2rem}
h2{font-size:1.1rem;margin:0 0 .4rem}
h3{font-size:1rem;margin:.8rem 0 .25rem}
header p{margin:.1rem 0;color:#444}
ul.counts{list-style:none;padding:0;margin:.5rem 0;display:flex;flex-wrap:wrap;gap:.3rem}
.counts li,.badge{display:inline-block;padding:.05rem .5rem;border-radius:.7rem;font-size:.85rem;white-space:nowrap;border:1px solid var(--line)}
.plain{background:#fff}
.aborted{padding:.5rem;margin:.5rem 0}
#grid{overflow-x:auto;width:fit-content;max-width:100%;border:1px solid var(--line);background:#fff}
table{border-collapse:separate;border-spacing:0;font-size:.85rem}
th,td{border-right:1px solid var(--line);border-bottom:1px solid var(--line);padding:0;text-align:left;vertical-align:top}
thead th{background:#eeeef2;padding:.3rem .45rem;font-weight:600;min-width:6.5em;max-width:11em}
thead th.group{text-align:center;font-weight:500;color:#555;min-width:0;max-width:none}
.host{position:sticky;left:0;z-index:1;min-width:6em;max-width:9em}
thead .host{z-index:2}
tbody th.host{font-weight:600}
a.cell{display:block;padding:.35rem .45rem;min-height:2.4rem;color:inherit;text-decoration:none;white-space:nowrap}
th a.cell,td.wide a.cell{white-space:normal}
td.wide a.cell{min-width:12em;max-width:min(36em,calc(100vw - 11em))}
a.cell small{display:block;font-weight:400;white-space:nowrap}
a.cell:hover,a.cell:focus-visible{outline:2px solid #1b1b1f;outline-offset:-2px}
a.cell[aria-current]{outline:3px solid #1b1b1f;outline-offset:-3px}
td.none{padding:.35rem .45rem;color:#8a8a92;text-align:center}
.ok{background:var(--ok);color:var(--ok-t)}
.warn{background:var(--warn);color:var(--warn-t)}
.bad{background:var(--bad);color:var(--bad-t)}
.err{background:var(--err);color:var(--err-t)}
.grey{background:var(--grey);color:var(--grey-t)}
.chg{background:var(--chg);color:var(--chg-t)}
tbody th.host:not(.ok):not(.warn):not(.bad):not(.err):not(.grey):not(.chg){background:#fff}
.legend{font-size:.8rem;color:#555;margin:.4rem 0}
.legend .badge{margin:.1rem 0}
#details{margin-top:.75rem}
.empty{color:#666}
#details:has(.detail:target) .empty{display:none}
.detail{display:none;width:100%;background:#fff;border:1px solid var(--line);padding:.75rem}
.detail:target{display:block}
.detail nav{margin:.2rem 0 .5rem}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.1rem .75rem;margin:.25rem 0}
dt{color:#555}
dd{margin:0;min-width:0}
pre{margin:.25rem 0;padding:.45rem;background:#f2f2f5;overflow-x:auto;max-width:100%;font:13px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre;overflow-wrap:normal}
pre.wrap{white-space:pre-wrap;overflow-wrap:anywhere}
pre.diff span{display:block;min-height:1.35em}
pre.diff .add{background:#d8f5de;color:#0b4a1c}
pre.diff .del{background:#ffdede;color:#7a0000}
pre.diff .hunk{color:#0b5a7a}
pre.diff .head{color:#555}
"#;

const JS: &str = r#"
(function () {
  function mark() {
    var id = location.hash.slice(1);
    try { id = decodeURIComponent(id); } catch (e) {}
    document.querySelectorAll("a.cell").forEach(function (a) {
      if (a.dataset.cell === id) a.setAttribute("aria-current", "true");
      else a.removeAttribute("aria-current");
    });
  }
  addEventListener("hashchange", mark);
  mark();
})();
"#;

/// `sha256-…` of [`CSS`] and [`JS`] for the Content-Security-Policy; a unit test recomputes
/// them (and prints the new values when the CSS or JS changes).
const CSS_SHA256: &str = "sha256-h+D+cSmYYd+u7BcSleFDXAMB2e36rEVm+Qmi3ogH/vU=";
const JS_SHA256: &str = "sha256-app4891FkrZkLrkzosEbgeg+TszI66O/Rhbp60mNquQ=";

/// HTML-escapes text for element content and double-quoted attribute values. Control
/// characters (a host's terminal escapes) are shown as visible escapes first, as in the text
/// report, so that neither a browser nor `cat` of the file meets them raw.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let visible = crate::untrusted::escape_controls(self.0);
        let mut rest = visible.as_ref();
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// [`Esc`], plus a line-break opportunity after each `.`, `_` and `/` (for narrow column
/// headers like `listener.unexpected`).
struct EscWrap<'a>(&'a str);

impl fmt::Display for EscWrap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in self.0.split_inclusive(['.', '_', '/']) {
            write!(f, "{}", Esc(part))?;
            if part.ends_with(['.', '_', '/']) {
                f.write_str("<wbr>")?;
            }
        }
        Ok(())
    }
}

/// A cell's verdict, as a CSS class (its color).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Ok,
    Warn,
    Bad,
    Changed,
    Grey,
    Error,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ok => "ok",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
            Tone::Changed => "chg",
            Tone::Grey => "grey",
            Tone::Error => "err",
        }
    }
}

/// What a cell says: its color, a symbol and a word (never color alone).
struct Verdict {
    tone: Tone,
    symbol: &'static str,
    label: String,
}

impl Verdict {
    fn new(tone: Tone, symbol: &'static str, label: impl Into<String>) -> Verdict {
        Verdict {
            tone,
            symbol,
            label: label.into(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<span aria-hidden=\"true\">{}</span> {}",
            self.symbol,
            Esc(&self.label)
        )
    }
}

fn host_verdict(status: HostStatus) -> Verdict {
    match status {
        HostStatus::InLine => Verdict::new(Tone::Ok, "✓", "in line"),
        HostStatus::Differs => Verdict::new(Tone::Warn, "~", "differs"),
        HostStatus::Changed => Verdict::new(Tone::Changed, "✎", "changed"),
        HostStatus::Failed => Verdict::new(Tone::Error, "✗", "failed"),
        HostStatus::Unreachable => Verdict::new(Tone::Error, "✗", "unreachable"),
    }
}

fn step_verdict(step: &StepReport, mode: &str) -> Verdict {
    match &step.status {
        StepStatus::InLine => Verdict::new(Tone::Ok, "✓", "in line"),
        StepStatus::Differs if mode == "drift" => Verdict::new(Tone::Warn, "~", "drift"),
        StepStatus::Differs => Verdict::new(Tone::Warn, "~", "differs"),
        StepStatus::Changed => Verdict::new(Tone::Changed, "✎", "changed"),
        StepStatus::Skipped(_) => Verdict::new(Tone::Grey, "–", "skipped"),
        StepStatus::Failed(_) => Verdict::new(Tone::Error, "✗", "failed"),
        StepStatus::NotRun => Verdict::new(Tone::Grey, "·", "not run"),
    }
}

fn severity_verdict(severity: Severity, count: usize) -> Verdict {
    let tone = if severity >= Severity::High {
        Tone::Bad
    } else {
        Tone::Warn
    };
    let label = match count {
        1 => severity.as_str().to_string(),
        n => format!("{} ×{n}", severity.as_str()),
    };
    Verdict::new(tone, "!", label)
}

fn check_verdict(status: CheckStatus) -> Verdict {
    match status {
        CheckStatus::Pass => Verdict::new(Tone::Ok, "✓", "pass"),
        CheckStatus::Fail => Verdict::new(Tone::Bad, "✗", "fail"),
        CheckStatus::Unknown => Verdict::new(Tone::Grey, "?", "unknown"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Step,
    Handler,
    Finding,
    Check,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Handler => "handler",
            Kind::Finding => "finding",
            Kind::Check => "check",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Step => "steps",
            Kind::Handler => "handlers",
            Kind::Finding => "findings",
            Kind::Check => "checklist",
        }
    }
}

/// One grid column: a step (by name, and which one when a name repeats), a finding id or a
/// check id, over the whole fleet.
struct Column {
    kind: Kind,
    key: String,
    nth: usize,
    slug: String,
    /// The header's tooltip: the step's resource or the check's title.
    title: String,
}

impl Column {
    fn label(&self) -> String {
        match self.nth {
            0 => self.key.clone(),
            n => format!("{} ({})", self.key, n + 1),
        }
    }
}

/// What one host has in one column.
enum Content<'a> {
    Step(&'a StepReport),
    Findings(Vec<&'a Finding>),
    Check(&'a Check),
    /// Scanned, and no finding of this id.
    Clean,
    /// Not in this host's run.
    Absent,
}

/// `(name, nth)` for each step: the nth step of that name on this host.
fn numbered(steps: &[StepReport]) -> impl Iterator<Item = (&StepReport, usize)> {
    steps.iter().enumerate().map(|(i, s)| {
        let nth = steps[..i].iter().filter(|t| t.name == s.name).count();
        (s, nth)
    })
}

/// Lowercase `[a-z0-9_.-]`, other runs as one `-`; never empty.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

fn unique(taken: &mut HashSet<String>, base: String) -> String {
    let mut candidate = base.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

struct Grid<'a> {
    summary: &'a FleetSummary,
    /// Each host's id part, in `summary.hosts` order.
    hosts: Vec<String>,
    columns: Vec<Column>,
}

impl<'a> Grid<'a> {
    fn new(summary: &'a FleetSummary) -> Grid<'a> {
        let mut taken = HashSet::new();
        let hosts = summary
            .hosts
            .iter()
            .map(|h| unique(&mut taken, slug(&h.name)))
            .collect();

        let mut columns: Vec<Column> = Vec::new();
        let mut add = |kind: Kind, key: &str, nth: usize, title: &str| {
            if !columns
                .iter()
                .any(|c| c.kind == kind && c.key == key && c.nth == nth)
            {
                columns.push(Column {
                    kind,
                    key: key.to_string(),
                    nth,
                    slug: String::new(),
                    title: title.to_string(),
                });
            }
        };
        for host in &summary.hosts {
            for (step, nth) in numbered(&host.steps) {
                add(
                    Kind::Step,
                    &step.name,
                    nth,
                    step.resource.as_deref().unwrap_or(""),
                );
            }
        }
        for host in &summary.hosts {
            for (step, nth) in numbered(&host.handlers) {
                add(
                    Kind::Handler,
                    &step.name,
                    nth,
                    step.resource.as_deref().unwrap_or(""),
                );
            }
        }
        // The worst findings first: a finding id's first place in this (stable) order is at
        // its worst severity; equals keep their first-seen order.
        let mut findings: Vec<&Finding> = summary.hosts.iter().flat_map(|h| &h.findings).collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        for finding in findings {
            add(Kind::Finding, &finding.id, 0, &finding.title);
        }
        for host in &summary.hosts {
            for check in &host.checks {
                add(Kind::Check, &check.id, 0, &check.title);
            }
        }

        let mut taken = HashSet::new();
        for column in &mut columns {
            let id = unique(
                &mut taken,
                format!("{}/{}", column.kind.path(), slug(&column.label())),
            );
            column.slug = id.split_once('/').expect("kind/slug").1.to_string();
        }
        Grid {
            summary,
            hosts,
            columns,
        }
    }

    fn host_id(&self, h: usize) -> String {
        format!("{}/host", self.hosts[h])
    }

    fn cell_id(&self, h: usize, column: &Column) -> String {
        format!("{}/{}/{}", self.hosts[h], column.kind.path(), column.slug)
    }

    fn content(&self, host: &'a HostReport, column: &Column) -> Content<'a> {
        match column.kind {
            Kind::Step | Kind::Handler => {
                let steps = if column.kind == Kind::Step {
                    &host.steps
                } else {
                    &host.handlers
                };
                numbered(steps)
                    .find(|(s, nth)| s.name == column.key && *nth == column.nth)
                    .map_or(Content::Absent, |(s, _)| Content::Step(s))
            }
            Kind::Finding => {
                let found: Vec<&Finding> = host
                    .findings
                    .iter()
                    .filter(|f| f.id == column.key)
                    .collect();
                if !found.is_empty() {
                    Content::Findings(found)
                } else if host.status == HostStatus::Unreachable {
                    Content::Absent
                } else {
                    Content::Clean
                }
            }
            Kind::Check => host
                .checks
                .iter()
                .find(|c| c.id == column.key)
                .map_or(Content::Absent, Content::Check),
        }
    }
}

/// A host with nothing to show but its error: one wide cell across the row.
fn broken(host: &HostReport) -> bool {
    match host.status {
        HostStatus::Unreachable => true,
        HostStatus::Failed => {
            host.steps.is_empty() && host.findings.is_empty() && host.checks.is_empty()
        }
        _ => false,
    }
}

fn write_page(p: &mut String, summary: &FleetSummary) -> fmt::Result {
    let grid = Grid::new(summary);
    let mode = summary.mode;
    writeln!(p, "<!DOCTYPE html>")?;
    writeln!(p, "<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">")?;
    writeln!(
        p,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    writeln!(
        p,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src '{CSS_SHA256}'; script-src '{JS_SHA256}'; base-uri 'none'; \
         form-action 'none'\">"
    )?;
    writeln!(
        p,
        "<title>rampart {} {}</title>",
        Esc(mode),
        Esc(&summary.run_id)
    )?;
    writeln!(p, "<style>{CSS}</style>\n</head>\n<body>")?;
    write_header(p, summary)?;
    writeln!(p, "<main>")?;
    write_grid(p, &grid)?;
    write_legend(p, mode)?;
    write_details(p, &grid)?;
    writeln!(p, "</main>\n<script>{JS}</script>\n</body>\n</html>")
}

fn write_header(p: &mut String, summary: &FleetSummary) -> fmt::Result {
    let started = utc(summary.started);
    writeln!(p, "<header id=\"top\">")?;
    writeln!(p, "<h1>rampart {}</h1>", Esc(summary.mode))?;
    writeln!(
        p,
        "<p>run <code>{}</code></p>\n<p>started <time datetime=\"{}\">{}</time>, took {:.1} s</p>",
        Esc(&summary.run_id),
        started.replace(' ', "T").replace("TUTC", "Z"),
        started,
        summary.seconds
    )?;
    let hosts = &summary.hosts;
    let count = |v: Verdict, n: usize, noun: &str| {
        let s = if n == 1 { "" } else { "s" };
        (
            Some(v.tone),
            format!("{} {}: {n} {noun}{s}", v.symbol, v.label),
        )
    };
    let mut counts = vec![(None, format!("{} hosts", hosts.len()))];
    for status in [
        HostStatus::InLine,
        HostStatus::Differs,
        HostStatus::Changed,
        HostStatus::Failed,
        HostStatus::Unreachable,
    ] {
        let n = hosts.iter().filter(|h| h.status == status).count();
        if n > 0 {
            counts.push(count(host_verdict(status), n, "host"));
        }
    }
    let steps: Vec<&StepReport> = hosts
        .iter()
        .flat_map(|h| h.steps.iter().chain(&h.handlers))
        .collect();
    for status in [
        StepStatus::Differs,
        StepStatus::Changed,
        StepStatus::Failed(String::new()),
    ] {
        let same =
            |s: &&&StepReport| std::mem::discriminant(&s.status) == std::mem::discriminant(&status);
        if let Some(first) = steps.iter().find(same) {
            let n = steps.iter().filter(same).count();
            counts.push(count(step_verdict(first, summary.mode), n, "step"));
        }
    }
    for severity in [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ] {
        let n = hosts
            .iter()
            .flat_map(|h| &h.findings)
            .filter(|f| f.severity == severity)
            .count();
        if n > 0 {
            counts.push(count(severity_verdict(severity, 1), n, "finding"));
        }
    }
    for status in [CheckStatus::Pass, CheckStatus::Fail, CheckStatus::Unknown] {
        let n = hosts
            .iter()
            .flat_map(|h| &h.checks)
            .filter(|c| c.status == status)
            .count();
        if n > 0 {
            counts.push(count(check_verdict(status), n, "check"));
        }
    }
    write!(p, "<ul class=\"counts\" aria-label=\"counts\">")?;
    for (tone, text) in counts {
        match tone {
            Some(t) => write!(p, "<li class=\"{}\">{}</li>", t.class(), Esc(&text))?,
            None => write!(p, "<li class=\"plain\">{}</li>", Esc(&text))?,
        }
    }
    writeln!(p, "</ul>")?;
    if let Some(aborted) = &summary.aborted {
        writeln!(
            p,
            "<p class=\"aborted err\" role=\"alert\">✗ the run stopped: {}</p>",
            Esc(aborted)
        )?;
    }
    writeln!(p, "</header>")
}

fn write_grid(p: &mut String, grid: &Grid) -> fmt::Result {
    let columns = &grid.columns;
    writeln!(
        p,
        "<div id=\"grid\" role=\"region\" aria-label=\"hosts and their verdicts\" tabindex=\"0\">\n<table>\n<thead>"
    )?;
    if columns.is_empty() {
        writeln!(
            p,
            "<tr><th class=\"host\" scope=\"col\">host</th><th scope=\"col\">result</th></tr>"
        )?;
    } else {
        write!(
            p,
            "<tr><th class=\"host\" scope=\"col\" rowspan=\"2\">host</th>"
        )?;
        let mut i = 0;
        while i < columns.len() {
            let kind = columns[i].kind;
            let n = columns[i..].iter().take_while(|c| c.kind == kind).count();
            write!(
                p,
                "<th class=\"group\" scope=\"colgroup\" colspan=\"{n}\">{}</th>",
                kind.group()
            )?;
            i += n;
        }
        write!(p, "</tr>\n<tr>")?;
        for column in columns {
            write!(
                p,
                "\n<th scope=\"col\" title=\"{}\">{}</th>",
                Esc(&column.title),
                EscWrap(&column.label())
            )?;
        }
        writeln!(p, "\n</tr>")?;
    }
    writeln!(p, "</thead>\n<tbody>")?;
    for (h, host) in grid.summary.hosts.iter().enumerate() {
        let v = host_verdict(host.status);
        let host_id = grid.host_id(h);
        writeln!(
            p,
            "<tr><th class=\"host {}\" scope=\"row\"><a class=\"cell\" href=\"#{host_id}\" data-cell=\"{host_id}\">{}<small>{v}</small></a></th>",
            v.tone.class(),
            Esc(&host.name)
        )?;
        if broken(host) || columns.is_empty() {
            let mut text = v.label.clone();
            if let Some(first) = host.error.as_deref().and_then(|e| e.lines().next()) {
                text = format!("{text}: {first}");
            }
            let shown = Verdict { label: text, ..v };
            writeln!(
                p,
                "<td class=\"wide {}\" colspan=\"{}\"><a class=\"cell\" href=\"#{host_id}\">{shown}</a></td>",
                shown.tone.class(),
                columns.len().max(1)
            )?;
        } else {
            for column in columns {
                let id = grid.cell_id(h, column);
                let v = match grid.content(host, column) {
                    Content::Step(s) => step_verdict(s, grid.summary.mode),
                    Content::Findings(found) => {
                        let worst = found.iter().map(|f| f.severity).max().expect("non-empty");
                        severity_verdict(worst, found.len())
                    }
                    Content::Check(c) => check_verdict(c.status),
                    Content::Clean => {
                        writeln!(
                            p,
                            "<td class=\"ok\"><a class=\"cell\" href=\"#{id}\" data-cell=\"{id}\"><span aria-hidden=\"true\">✓</span> none</a></td>"
                        )?;
                        continue;
                    }
                    Content::Absent => {
                        writeln!(
                            p,
                            "<td class=\"none\" title=\"not in this host's run\">—</td>"
                        )?;
                        continue;
                    }
                };
                writeln!(
                    p,
                    "<td class=\"{}\"><a class=\"cell\" href=\"#{id}\" data-cell=\"{id}\">{v}</a></td>",
                    v.tone.class()
                )?;
            }
        }
        writeln!(p, "</tr>")?;
    }
    writeln!(p, "</tbody>\n</table>\n</div>")
}

fn write_legend(p: &mut String, mode: &str) -> fmt::Result {
    let differs = if mode == "drift" { "drift" } else { "differs" };
    write!(p, "<p class=\"legend\">")?;
    for (tone, text) in [
        (Tone::Ok, "✓ in line, pass, none found".to_string()),
        (Tone::Warn, format!("~ {differs}, ! finding (low, medium)")),
        (
            Tone::Bad,
            "✗ check failed, ! finding (high, critical)".into(),
        ),
        (Tone::Changed, "✎ changed".into()),
        (Tone::Grey, "? unknown, – skipped, · not run".into()),
        (Tone::Error, "✗ failed, unreachable".into()),
    ] {
        write!(p, "<span class=\"badge {}\">{}</span> ", tone.class(), text)?;
    }
    writeln!(p, "— means not in that host's run.</p>")
}

fn write_details(p: &mut String, grid: &Grid) -> fmt::Result {
    writeln!(
        p,
        "<div id=\"details\" aria-live=\"polite\">\n<p class=\"empty\">Tap a cell for its details.</p>"
    )?;
    let mode = grid.summary.mode;
    for (h, host) in grid.summary.hosts.iter().enumerate() {
        write_host_detail(p, &grid.host_id(h), host)?;
        if broken(host) {
            continue;
        }
        for column in &grid.columns {
            let id = grid.cell_id(h, column);
            let content = grid.content(host, column);
            if matches!(content, Content::Absent) {
                continue;
            }
            let (what, v) = match &content {
                Content::Step(s) => (
                    format!("{} {}", column.kind.path(), column.label()),
                    step_verdict(s, mode),
                ),
                Content::Findings(found) => (
                    format!("finding {}", column.key),
                    severity_verdict(
                        found.iter().map(|f| f.severity).max().expect("non-empty"),
                        found.len(),
                    ),
                ),
                Content::Check(c) => (format!("check {}", column.key), check_verdict(c.status)),
                Content::Clean => (
                    format!("finding {}", column.key),
                    Verdict::new(Tone::Ok, "✓", "none"),
                ),
                Content::Absent => unreachable!("skipped above"),
            };
            section_start(p, &id, &host.name, &what, &v)?;
            match content {
                Content::Step(s) => write_step(p, s)?,
                Content::Findings(found) => write_findings(p, &found)?,
                Content::Check(c) => write_check(p, c)?,
                Content::Clean => writeln!(p, "<p>The scan found nothing of this kind here.</p>")?,
                Content::Absent => unreachable!("skipped above"),
            }
            writeln!(p, "</section>")?;
        }
    }
    writeln!(p, "</div>")
}

fn section_start(p: &mut String, id: &str, host: &str, what: &str, v: &Verdict) -> fmt::Result {
    writeln!(
        p,
        "<section class=\"detail\" id=\"{id}\">\n<h2>{} · {}</h2>\n<nav><span class=\"badge {}\">{v}</span> <a href=\"#grid\">back to the grid</a></nav>",
        Esc(host),
        Esc(what),
        v.tone.class()
    )
}

fn dl(p: &mut String, rows: &[(&str, Option<&str>)]) -> fmt::Result {
    write!(p, "<dl>")?;
    for (term, value) in rows {
        if let Some(value) = value {
            write!(p, "<dt>{term}</dt><dd>{}</dd>", Esc(value))?;
        }
    }
    writeln!(p, "</dl>")
}

/// Evidence and errors, wrapped (a diff keeps its lines and scrolls instead).
fn pre(p: &mut String, text: &str) -> fmt::Result {
    writeln!(p, "<pre class=\"wrap\">{}</pre>", Esc(text))
}

fn write_host_detail(p: &mut String, id: &str, host: &HostReport) -> fmt::Result {
    let v = host_verdict(host.status);
    section_start(p, id, &host.name, "host", &v)?;
    let time = format!(
        "{:.2} s, {} round trips, {} bytes sent, {} received",
        host.seconds, host.stats.round_trips, host.stats.bytes_sent, host.stats.bytes_received
    );
    dl(
        p,
        &[
            ("address", Some(&host.address)),
            ("login", host.login.as_deref()),
            ("time", Some(&time)),
            ("note", host.note.as_deref()),
        ],
    )?;
    if let Some(error) = &host.error {
        writeln!(p, "<h3>error</h3>")?;
        pre(p, error)?;
    }
    if let Some(hint) = &host.hint {
        writeln!(p, "<p><strong>hint:</strong> {}</p>", Esc(hint))?;
    }
    writeln!(p, "</section>")
}

fn write_step(p: &mut String, step: &StepReport) -> fmt::Result {
    dl(
        p,
        &[
            ("resource", step.resource.as_deref()),
            ("where", Some(&step.location)),
            ("action", step.action.as_deref()),
            ("note", step.note.as_deref()),
        ],
    )?;
    match &step.status {
        StepStatus::Skipped(why) => writeln!(p, "<p>skipped: {}</p>", Esc(why))?,
        StepStatus::Failed(error) => {
            writeln!(p, "<h3>error</h3>")?;
            pre(p, error)?;
        }
        StepStatus::NotRun => writeln!(p, "<p>not run: an earlier step failed</p>")?,
        _ => {}
    }
    for change in &step.changes {
        writeln!(p, "<h3>{}</h3>", Esc(&change.field))?;
        write!(p, "<pre class=\"diff\">")?;
        for (class, line) in diff_lines(change) {
            write!(p, "<span class=\"{class}\">{}</span>", Esc(&line))?;
        }
        writeln!(p, "</pre>")?;
    }
    Ok(())
}

/// A change as diff lines with their CSS class: a unified diff (as `report::text` makes it)
/// for text of several lines, else `-before` and `+after`.
fn diff_lines(c: &ChangeReport) -> Vec<(&'static str, String)> {
    let multi = |s: &Option<String>| s.as_deref().is_some_and(|t| t.contains('\n'));
    if multi(&c.before) || multi(&c.after) {
        let before = c.before.as_deref().unwrap_or("");
        let after = c.after.as_deref().unwrap_or("");
        let diff = TextDiff::from_lines(before, after);
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header("before", "after")
            .to_string();
        return text
            .lines()
            .map(|line| {
                let class = match line.as_bytes() {
                    [b'+', b'+', b'+', ..] | [b'-', b'-', b'-', ..] => "head",
                    [b'+', ..] => "add",
                    [b'-', ..] => "del",
                    [b'@', ..] => "hunk",
                    _ => "ctx",
                };
                (class, line.to_string())
            })
            .collect();
    }
    let mut lines = Vec::new();
    match &c.before {
        Some(b) => lines.push(("del", format!("-{b}"))),
        None => lines.push(("ctx", "(absent before)".to_string())),
    }
    match &c.after {
        Some(a) => lines.push(("add", format!("+{a}"))),
        None => lines.push(("ctx", "(absent after)".to_string())),
    }
    lines
}

fn write_findings(p: &mut String, found: &[&Finding]) -> fmt::Result {
    for f in found {
        let v = severity_verdict(f.severity, 1);
        writeln!(
            p,
            "<h3><span class=\"badge {}\">{v}</span> {}</h3>",
            v.tone.class(),
            Esc(&f.title)
        )?;
        dl(p, &[("subject", Some(&f.subject)), ("id", Some(&f.id))])?;
        if !f.evidence.is_empty() {
            pre(p, &f.evidence.join("\n"))?;
        }
    }
    Ok(())
}

fn write_check(p: &mut String, c: &Check) -> fmt::Result {
    writeln!(p, "<p>{}</p>", Esc(&c.title))?;
    dl(p, &[("id", Some(&c.id)), ("source", Some(&c.source))])?;
    if !c.evidence.is_empty() {
        pre(p, &c.evidence.join("\n"))?;
    }
    Ok(())
}

/// `2026-11-25 02:00:00 UTC` from seconds since the Unix epoch (Howard Hinnant's
/// `civil_from_days`).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample_summary;

    fn html(summary: &FleetSummary) -> String {
        let mut out = Vec::new();
        write(&mut out, summary).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// `sha256-<base64>` of `text`, by coreutils' `sha256sum`.
    fn sha256(text: &str) -> String {
        use base64::Engine as _;
        use std::process::{Command, Stdio};
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha256sum (coreutils)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let hex = String::from_utf8(out.stdout).unwrap();
        let bytes: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_css_and_js() {
        assert_eq!(
            (CSS_SHA256, JS_SHA256),
            (sha256(CSS).as_str(), sha256(JS).as_str()),
            "update CSS_SHA256 and JS_SHA256"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_572_000), "2026-11-25 02:00:00 UTC");
        assert_eq!(utc(951_825_599), "2000-02-29 11:59:59 UTC");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn slugs_are_safe_and_unique() {
        assert_eq!(slug("login banner"), "login-banner");
        assert_eq!(slug("secrets env file (0600)"), "secrets-env-file-0600");
        assert_eq!(slug("listener.unexpected"), "listener.unexpected");
        assert_eq!(slug("<script>\"'&"), "script");
        assert_eq!(slug("  ★ "), "x");
        let mut taken = HashSet::new();
        assert_eq!(unique(&mut taken, "a".into()), "a");
        assert_eq!(unique(&mut taken, "a".into()), "a-2");
        assert_eq!(unique(&mut taken, "a".into()), "a-3");
    }

    #[test]
    fn every_host_step_finding_and_check_has_a_cell_and_a_detail() {
        let page = html(&sample_summary("audit"));
        for id in [
            "gw-1/host",
            "gw-1/step/login-banner",
            "gw-1/step/secrets-env-file-0600",
            "gw-1/step/firewall",
            "gw-1/step/install-the-agent",
            "gw-1/finding/listener.unexpected",
            "gw-1/finding/secret.plaintext",
            "gw-1/check/auth_token",
            "gw-1/check/loopback_bind",
            "gw-1/check/monitoring",
            "gw-2/host",
            "gw-2/step/firewall",
            "gw-2/finding/listener.unexpected",
            "gw-2/check/auth_token",
            "gw-3/host",
        ] {
            assert!(page.contains(&format!("href=\"#{id}\"")), "no cell {id}");
            assert!(page.contains(&format!("id=\"{id}\"")), "no detail {id}");
        }
        for text in [
            "gw-1",
            "gw-2",
            "gw-3",
            "login banner",
            "secrets env file (0600)",
            "install the agent",
            "listener.unexpected",
            "LISTEN 0.0.0.0:18789 python3 (pid 812, user openclaw)",
            "Gateway bound to localhost only",
            "cannot reach 10.0.0.4:22: connection refused",
            "is the host up, and is sshd listening on that port?",
            "20261125T020000Z-a1b2c3",
            "2026-11-25 02:00:00 UTC",
            "<span class=\"add\">+Authorized use only.</span>",
            "<span class=\"del\">-0644</span><span class=\"add\">+0600</span>",
        ] {
            assert!(page.contains(text), "missing {text:?}");
        }
        // Each link goes to a detail; ids are unique.
        let ids: Vec<&str> = page
            .split(" id=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        let unique: HashSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate ids: {ids:?}");
        for href in page.split("href=\"#").skip(1) {
            let target = &href[..href.find('"').unwrap()];
            assert!(ids.contains(&target), "link to a missing #{target}");
        }
        // Not in gw-2's run: a dash, and no detail.
        assert!(!page.contains("id=\"gw-2/check/loopback_bind\""));
        assert!(page.contains("<td class=\"none\""));
    }

    #[test]
    fn nothing_from_the_summary_becomes_markup() {
        let page = html(&sample_summary("audit"));
        assert!(page.contains(
            "<span class=\"del\">-Welcome &lt;admin&gt; &amp; &quot;friends&quot;</span>"
        ));
        assert!(!page.contains("<admin>"));

        let evil = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&";
        let mut summary = sample_summary("drift");
        summary.run_id = evil.into();
        summary.aborted = Some(evil.into());
        let gw1 = &mut summary.hosts[0];
        gw1.name = evil.into();
        gw1.note = Some(evil.into());
        gw1.steps[0].name = evil.into();
        gw1.steps[0].changes[0].after = Some(format!("{evil}\n"));
        gw1.steps[1].changes[0].field = evil.into();
        gw1.findings[0].id = evil.into();
        gw1.findings[0].evidence = vec![evil.into()];
        gw1.checks = vec![Check {
            id: evil.into(),
            source: evil.into(),
            title: evil.into(),
            status: CheckStatus::Fail,
            evidence: vec![evil.into()],
        }];
        summary.hosts[2].error = Some(evil.into());
        summary.hosts[2].hint = Some(evil.into());
        let page = html(&summary);
        assert_eq!(page.matches("<script").count(), 1, "only the report's own");
        assert!(!page.contains("<img"));
        assert!(!page.contains("alert('x')"));
        assert!(page.contains("+&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        // Ids and hrefs hold only safe characters.
        let ids = page.split(" id=\"").skip(1);
        for attr in ids.chain(page.split("href=\"#").skip(1)) {
            let value = &attr[..attr.find('"').unwrap()];
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)),
                "unsafe id {value:?}"
            );
        }
    }

    #[test]
    fn verdicts_have_words_not_only_colors() {
        let page = html(&sample_summary("drift"));
        for cell in [
            "<td class=\"warn\"><a class=\"cell\" href=\"#gw-1/step/login-banner\" data-cell=\"gw-1/step/login-banner\"><span aria-hidden=\"true\">~</span> drift</a></td>",
            "<td class=\"ok\"><a class=\"cell\" href=\"#gw-1/step/firewall\" data-cell=\"gw-1/step/firewall\"><span aria-hidden=\"true\">✓</span> in line</a></td>",
            "<td class=\"grey\"><a class=\"cell\" href=\"#gw-1/step/install-the-agent\" data-cell=\"gw-1/step/install-the-agent\"><span aria-hidden=\"true\">–</span> skipped</a></td>",
            "<td class=\"bad\"><a class=\"cell\" href=\"#gw-1/finding/listener.unexpected\" data-cell=\"gw-1/finding/listener.unexpected\"><span aria-hidden=\"true\">!</span> critical</a></td>",
            "<td class=\"wide err\" colspan=\"6\"><a class=\"cell\" href=\"#gw-3/host\"><span aria-hidden=\"true\">✗</span> unreachable: cannot reach 10.0.0.4:22: connection refused</a></td>",
        ] {
            assert!(page.contains(cell), "missing {cell}");
        }
        // drift has no checklist
        assert!(!page.contains("checklist"));
    }

    #[test]
    fn odd_fleets_still_make_a_grid() {
        // Nobody reachable: no columns, one wide cell per host.
        let mut summary = sample_summary("plan");
        summary.hosts = vec![summary.hosts[2].clone(), summary.hosts[2].clone()];
        summary.hosts[1].name = "GW 3".into();
        summary.aborted = Some("bad <input>".into());
        let page = html(&summary);
        assert!(page.contains("<th scope=\"col\">result</th>"));
        assert!(page.contains("<td class=\"wide err\" colspan=\"1\">"));
        assert!(page.contains("id=\"gw-3/host\"") && page.contains("id=\"gw-3-2/host\""));
        assert!(page.contains("✗ the run stopped: bad &lt;input&gt;"));
        assert!(page.contains("✗ unreachable: 2 hosts"));

        // A step name twice, a handler, and findings: the worst one's column first.
        let mut summary = sample_summary("drift");
        let gw1 = &mut summary.hosts[0];
        gw1.steps.push(gw1.steps[2].clone());
        gw1.handlers.push(gw1.steps[0].clone());
        gw1.findings.reverse();
        gw1.findings[0].severity = Severity::Low;
        let page = html(&summary);
        for id in [
            "gw-1/step/firewall",
            "gw-1/step/firewall-2",
            "gw-1/handler/login-banner",
        ] {
            assert!(page.contains(&format!("id=\"{id}\"")), "no detail {id}");
        }
        assert!(page.contains("firewall (2)</th>"));
        assert!(page.contains("colspan=\"1\">handlers</th>"));
        let critical = page
            .find("<th scope=\"col\" title=\"the agent gateway")
            .unwrap();
        let low = page
            .find("<th scope=\"col\" title=\"a secret-looking")
            .unwrap();
        assert!(critical < low, "the critical finding's column comes first");
    }

    #[test]
    fn a_small_plan() {
        let mut summary = sample_summary("plan");
        summary.hosts.truncate(1);
        let host = &mut summary.hosts[0];
        host.steps.truncate(2);
        host.steps[1].status = StepStatus::Failed("exit 1".into());
        host.findings.clear();
        host.status = HostStatus::Failed;
        let page = html(&summary);
        let start = page.find("<table>").unwrap();
        let end = page.find("</table>").unwrap() + "</table>".len();
        insta::assert_snapshot!(&page[start..end], @r##"
        <table>
        <thead>
        <tr><th class="host" scope="col" rowspan="2">host</th><th class="group" scope="colgroup" colspan="2">steps</th></tr>
        <tr>
        <th scope="col" title="file /etc/motd">login banner</th>
        <th scope="col" title="file /etc/openclaw/agent.env">secrets env file (0600)</th>
        </tr>
        </thead>
        <tbody>
        <tr><th class="host err" scope="row"><a class="cell" href="#gw-1/host" data-cell="gw-1/host">gw-1<small><span aria-hidden="true">✗</span> failed</small></a></th>
        <td class="warn"><a class="cell" href="#gw-1/step/login-banner" data-cell="gw-1/step/login-banner"><span aria-hidden="true">~</span> differs</a></td>
        <td class="err"><a class="cell" href="#gw-1/step/secrets-env-file-0600" data-cell="gw-1/step/secrets-env-file-0600"><span aria-hidden="true">✗</span> failed</a></td>
        </tr>
        </tbody>
        </table>
        "##);
    }
}
