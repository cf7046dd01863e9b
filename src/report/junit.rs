//! junit: the JUnit XML report (`--format junit`, `--output FILE.xml`), for CI systems that
//! chart test results (Jenkins, GitLab, GitHub Actions' test reporters).
//!
//! One `<testsuite>` per host, one `<testcase>` per step (a step that differs is a `<failure>`
//! of type `drift` carrying the diff; a failed step, or one not run, an `<error>`; a skipped
//! one `<skipped>`), then one per finding (a `<failure>`) and per checklist item (a
//! `<failure>` when it fails, `<skipped>` when the scan could not tell). A host that could not
//! be reached is a suite with one testcase, `connect`, carrying the `<error>`. A run stopped by
//! bad input adds a suite `rampart` with an errored testcase `run`.
//!
//! The output is valid against both the strict Apache Ant schema and the Jenkins xUnit
//! plugin's, copies of which are in `tests/fixtures/junit/`. The Ant schema is what shapes it:
//! `<testsuites>` carries no attributes, each suite has `package` and `id`, `<properties>`,
//! `<system-out>` and `<system-err>` (in that order), a testcase at most one outcome, and the
//! timestamp is UTC without a zone suffix.
//!
//! This module owns the XML and its escaping; the cli chooses the file and masks secrets first.

use std::fmt::Write as _;
use std::io::{self, Write};

use similar::TextDiff;

use crate::inspect::{Check, CheckStatus, Finding};
use crate::summary::FleetSummary;
use crate::summary::{ChangeReport, HostReport, HostStatus, StepReport, StepStatus};

/// A testcase's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    /// The host is not as it should be (drift, a finding, a failed check).
    Failure {
        kind: &'static str,
        message: String,
        text: String,
    },
    /// rampart could not tell (a failed probe or apply, no connection, a step not run).
    Error {
        kind: &'static str,
        message: String,
        text: String,
    },
    Skipped {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Case {
    name: String,
    outcome: Outcome,
}

/// One `<testsuite>`: a host, or the run itself when bad input stopped it.
struct Suite<'a> {
    name: &'a str,
    hostname: &'a str,
    seconds: f64,
    properties: Vec<(&'static str, String)>,
    cases: Vec<Case>,
    out: String,
    err: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

fn counts(cases: &[Case]) -> Counts {
    let mut c = Counts {
        tests: cases.len(),
        ..Counts::default()
    };
    for case in cases {
        match case.outcome {
            Outcome::Passed => {}
            Outcome::Failure { .. } => c.failures += 1,
            Outcome::Error { .. } => c.errors += 1,
            Outcome::Skipped { .. } => c.skipped += 1,
        }
    }
    c
}

pub fn write(out: &mut impl Write, summary: &FleetSummary) -> io::Result<()> {
    let timestamp = iso8601_utc(summary.started);
    let mut suites: Vec<Suite> = summary
        .hosts
        .iter()
        .map(|h| host_suite(summary, h))
        .collect();
    if let Some(aborted) = &summary.aborted {
        suites.push(Suite {
            name: "rampart",
            hostname: "localhost",
            seconds: summary.seconds,
            properties: run_properties(summary),
            cases: vec![Case {
                name: "run".into(),
                outcome: Outcome::Error {
                    kind: "aborted",
                    message: first_line(aborted),
                    text: aborted.clone(),
                },
            }],
            out: String::new(),
            err: aborted.clone(),
        });
    }

    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for (id, suite) in suites.iter().enumerate() {
        write_suite(&mut xml, id, suite, &timestamp);
    }
    xml.push_str("</testsuites>\n");
    out.write_all(xml.as_bytes())
}

fn run_properties(summary: &FleetSummary) -> Vec<(&'static str, String)> {
    vec![
        ("rampart.run_id", summary.run_id.clone()),
        ("rampart.mode", summary.mode.to_string()),
    ]
}

fn host_suite<'a>(summary: &FleetSummary, host: &'a HostReport) -> Suite<'a> {
    let mut properties = run_properties(summary);
    properties.push(("rampart.status", host_status(host.status).to_string()));
    if let Some(login) = &host.login {
        properties.push(("rampart.login", login.clone()));
    }
    let mut err = String::new();
    if let Some(error) = &host.error {
        err.push_str(&format!("error: {error}\n"));
    }
    if let Some(hint) = &host.hint {
        err.push_str(&format!("hint: {hint}\n"));
    }
    Suite {
        name: &host.name,
        hostname: if host.address.trim().is_empty() {
            "localhost"
        } else {
            &host.address
        },
        seconds: host.seconds,
        properties,
        cases: host_cases(host),
        out: host
            .note
            .as_ref()
            .map(|n| format!("note: {n}\n"))
            .unwrap_or_default(),
        err,
    }
}

fn host_status(s: HostStatus) -> &'static str {
    match s {
        HostStatus::InLine => "in_line",
        HostStatus::Differs => "differs",
        HostStatus::Changed => "changed",
        HostStatus::Failed => "failed",
        HostStatus::Unreachable => "unreachable",
    }
}

/// The testcases of one host, in report order: steps, handlers, findings, checks.
fn host_cases(host: &HostReport) -> Vec<Case> {
    if host.status == HostStatus::Unreachable {
        let error = host
            .error
            .as_deref()
            .unwrap_or("the host could not be reached");
        return vec![Case {
            name: "connect".into(),
            outcome: Outcome::Error {
                kind: "unreachable",
                message: first_line(error),
                text: with_hint(error, host.hint.as_deref()),
            },
        }];
    }
    let mut cases: Vec<Case> = host
        .steps
        .iter()
        .map(|s| step_case(s, ""))
        .chain(host.handlers.iter().map(|s| step_case(s, "handler ")))
        .collect();
    // A host that failed outside any step (bad input, a probe that broke) still shows red.
    let shown = cases
        .iter()
        .any(|c| matches!(c.outcome, Outcome::Error { .. }));
    if host.status == HostStatus::Failed && !shown {
        let error = host.error.as_deref().unwrap_or("the host failed");
        cases.push(Case {
            name: "host".into(),
            outcome: Outcome::Error {
                kind: "failed",
                message: first_line(error),
                text: with_hint(error, host.hint.as_deref()),
            },
        });
    }
    cases.extend(host.findings.iter().map(finding_case));
    cases.extend(host.checks.iter().map(check_case));
    cases
}

fn step_case(step: &StepReport, prefix: &str) -> Case {
    let what = step.resource.as_deref().unwrap_or("step");
    let outcome = match &step.status {
        StepStatus::InLine | StepStatus::Changed => Outcome::Passed,
        StepStatus::Differs => {
            let fields: Vec<&str> = step.changes.iter().map(|c| c.field.as_str()).collect();
            let mut text = format!("{what} at {}", step.location);
            if let Some(action) = &step.action {
                text.push_str(&format!(" [{action}]"));
            }
            text.push('\n');
            for change in &step.changes {
                text.push_str(&change_text(change));
            }
            Outcome::Failure {
                kind: "drift",
                message: if fields.is_empty() {
                    format!("{what} differs")
                } else {
                    format!("{what} differs: {}", fields.join(", "))
                },
                text,
            }
        }
        StepStatus::Skipped(reason) => Outcome::Skipped {
            message: reason.clone(),
        },
        StepStatus::Failed(e) => Outcome::Error {
            kind: "failed",
            message: first_line(e),
            text: format!("{what} at {}\n{e}", step.location),
        },
        StepStatus::NotRun => Outcome::Error {
            kind: "not_run",
            message: "not run: an earlier step failed".into(),
            text: format!("{what} at {}", step.location),
        },
    };
    Case {
        name: format!("{prefix}{}", step.name),
        outcome,
    }
}

/// A change as text: a unified diff for multi-line values, `before -> after` otherwise.
fn change_text(c: &ChangeReport) -> String {
    let multi = |s: &Option<String>| s.as_deref().is_some_and(|t| t.contains('\n'));
    if multi(&c.before) || multi(&c.after) {
        let before = c.before.as_deref().unwrap_or("");
        let after = c.after.as_deref().unwrap_or("");
        let diff = TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header("before", "after")
            .to_string();
        let mut text = format!("{}:\n{diff}", c.field);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return text;
    }
    let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "(absent)".into());
    format!("{}: {} -> {}\n", c.field, show(&c.before), show(&c.after))
}

fn finding_case(f: &Finding) -> Case {
    let mut text = format!("{} ({}): {}\n", f.id, f.severity.as_str(), f.title);
    for line in &f.evidence {
        let _ = writeln!(text, "  {line}");
    }
    Case {
        name: format!("finding {} {}", f.id, f.subject),
        outcome: Outcome::Failure {
            kind: "finding",
            message: format!("{}: {}", f.severity.as_str(), f.title),
            text,
        },
    }
}

fn check_case(c: &Check) -> Case {
    let evidence = c.evidence.join("; ");
    let outcome = match c.status {
        CheckStatus::Pass => Outcome::Passed,
        CheckStatus::Fail => {
            let mut text = format!("{} ({})\n", c.title, c.source);
            for line in &c.evidence {
                let _ = writeln!(text, "  {line}");
            }
            Outcome::Failure {
                kind: "check",
                message: first_line(&evidence),
                text,
            }
        }
        CheckStatus::Unknown => Outcome::Skipped {
            message: format!("unknown: {}", first_line(&evidence)),
        },
    };
    Case {
        name: format!("check {}: {}", c.id, c.title),
        outcome,
    }
}

fn with_hint(error: &str, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!("{error}\nhint: {h}"),
        None => error.to_string(),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn write_suite(xml: &mut String, id: usize, suite: &Suite, timestamp: &str) {
    let n = counts(&suite.cases);
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" package=\"rampart\" id=\"{id}\" hostname=\"{}\" \
         timestamp=\"{timestamp}\" time=\"{:.3}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" \
         skipped=\"{}\">",
        attr(suite.name),
        attr(suite.hostname),
        seconds(suite.seconds),
        n.tests,
        n.failures,
        n.errors,
        n.skipped,
    );
    xml.push_str("    <properties>\n");
    for (name, value) in &suite.properties {
        let _ = writeln!(
            xml,
            "      <property name=\"{name}\" value=\"{}\"/>",
            attr(value)
        );
    }
    xml.push_str("    </properties>\n");
    let classname = attr(&format!("rampart.{}", suite.name));
    for case in &suite.cases {
        let head = format!(
            "    <testcase classname=\"{classname}\" name=\"{}\" time=\"0\"",
            attr(&case.name)
        );
        match &case.outcome {
            Outcome::Passed => {
                let _ = writeln!(xml, "{head}/>");
            }
            Outcome::Skipped { message } => {
                let _ = writeln!(
                    xml,
                    "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                    attr(message)
                );
            }
            Outcome::Failure {
                kind,
                message,
                text,
            }
            | Outcome::Error {
                kind,
                message,
                text,
            } => {
                let element = match case.outcome {
                    Outcome::Failure { .. } => "failure",
                    _ => "error",
                };
                let _ = writeln!(
                    xml,
                    "{head}>\n      <{element} message=\"{}\" type=\"{kind}\">{}</{element}>\n    </testcase>",
                    attr(message),
                    text_node(text)
                );
            }
        }
    }
    let _ = writeln!(
        xml,
        "    <system-out>{}</system-out>",
        text_node(&suite.out)
    );
    let _ = writeln!(
        xml,
        "    <system-err>{}</system-err>",
        text_node(&suite.err)
    );
    xml.push_str("  </testsuite>\n");
}

/// Seconds for a `time` attribute (`xs:decimal`: never NaN, never negative).
fn seconds(s: f64) -> f64 {
    if s.is_finite() && s > 0.0 { s } else { 0.0 }
}

/// Whether XML 1.0 allows the character at all (its `Char` production). Rust's `char`
/// already excludes the surrogates.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text for an attribute value: quotes, and the whitespace that attribute-value
/// normalization would otherwise turn into spaces. Characters XML cannot carry are dropped.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escapes a text node. `>` is escaped too, so `]]>` cannot appear.
fn text_node(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A parser turns CR LF into LF; as a reference it survives.
            '\r' => out.push_str("&#13;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, without a zone suffix (the Ant schema's pattern allows none).
pub(crate) fn iso8601_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

    /// The `<testsuite …>` line of a host.
    fn suite_line<'a>(xml: &'a str, host: &str) -> &'a str {
        xml.lines()
            .find(|l| l.contains(&format!("<testsuite name=\"{host}\"")))
            .unwrap_or_else(|| panic!("no suite for {host} in\n{xml}"))
    }

    #[test]
    fn counts_per_host_in_drift() {
        let xml = render(&sample_summary("drift"));
        // gw-1: 4 steps (2 differ, 1 in line, 1 skipped) + 2 findings.
        let gw1 = suite_line(&xml, "gw-1");
        assert!(
            gw1.contains(r#"tests="6" failures="4" errors="0" skipped="1""#),
            "{gw1}"
        );
        assert!(gw1.contains(r#"hostname="10.0.0.4:22""#), "{gw1}");
        assert!(gw1.contains(r#"timestamp="2026-11-25T02:00:00""#), "{gw1}");
        assert!(gw1.contains(r#"time="0.250""#), "{gw1}");
        let gw2 = suite_line(&xml, "gw-2");
        assert!(
            gw2.contains(r#"tests="1" failures="0" errors="0" skipped="0""#),
            "{gw2}"
        );
        let gw3 = suite_line(&xml, "gw-3");
        assert!(
            gw3.contains(r#"tests="1" failures="0" errors="1" skipped="0""#),
            "{gw3}"
        );
        assert!(xml.contains(
            "<testcase classname=\"rampart.gw-3\" name=\"connect\" time=\"0\">\n      \
             <error message=\"cannot reach 10.0.0.4:22: connection refused\" type=\"unreachable\">\
             cannot reach 10.0.0.4:22: connection refused\n\
             hint: is the host up, and is sshd listening on that port?</error>"
        ));
    }

    #[test]
    fn counts_with_the_checklist_in_audit() {
        let xml = render(&sample_summary("audit"));
        // gw-1: 6 as in drift + 3 checks (pass, fail, unknown).
        let gw1 = suite_line(&xml, "gw-1");
        assert!(
            gw1.contains(r#"tests="9" failures="5" errors="0" skipped="2""#),
            "{gw1}"
        );
        assert!(
            xml.contains(
                r#"name="check loopback_bind: Gateway bound to localhost only" time="0">"#
            )
        );
        assert!(xml.contains(
            r#"<skipped message="unknown: audit is unavailable here (a container): rules written, not loaded"/>"#
        ));
        let gw2 = suite_line(&xml, "gw-2");
        assert!(gw2.contains(r#"tests="2" failures="0""#), "{gw2}");
    }

    #[test]
    fn counts_match_the_elements() {
        for mode in ["drift", "audit"] {
            let xml = render(&sample_summary(mode));
            let n = |needle: &str| xml.matches(needle).count();
            let total = |attr: &str| -> usize {
                xml.lines()
                    .filter(|l| l.trim_start().starts_with("<testsuite "))
                    .map(|l| {
                        let at = l.find(&format!(" {attr}=\"")).unwrap() + attr.len() + 3;
                        l[at..].split('"').next().unwrap().parse::<usize>().unwrap()
                    })
                    .sum()
            };
            assert_eq!(total("tests"), n("<testcase "), "{mode}");
            assert_eq!(total("failures"), n("<failure "), "{mode}");
            assert_eq!(total("errors"), n("<error "), "{mode}");
            assert_eq!(total("skipped"), n("<skipped "), "{mode}");
        }
    }

    #[test]
    fn drift_carries_the_diff_escaped() {
        let xml = render(&sample_summary("drift"));
        assert!(xml.contains(
            r#"<failure message="file /etc/motd differs: content" type="drift">file /etc/motd at playbooks/site.yaml:12:5 [modify]"#
        ));
        // The diff's removed line, with every special character escaped and `]]>` broken.
        assert!(xml.contains("-Welcome &lt;admin&gt; &amp; \"friends\"\n-]]&gt; old line\n"));
        assert!(xml.contains("+Authorized use only.\n"));
        assert!(!xml.contains("]]>"));
        assert!(xml.contains("mode: 0644 -&gt; 0600\n"));
        assert!(xml.contains(r#"<skipped message="`when` is false: agent_install"/>"#));
        assert!(xml.contains(r#"name="finding listener.unexpected tcp 0.0.0.0:18789" time="0">"#));
        assert!(xml.contains(
            r#"<failure message="critical: the agent gateway listens on a public address" type="finding">"#
        ));
    }

    #[test]
    fn escapes_attributes_and_drops_what_xml_cannot_carry() {
        assert_eq!(
            attr("a<b>&\"c'\n\td\r\u{1}\u{1b}[31m\u{FFFE}é"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;&#9;d&#13;[31mé"
        );
        assert_eq!(text_node("x ]]> \"q\"\n\u{0}"), "x ]]&gt; \"q\"\n");
    }

    #[test]
    fn failed_steps_and_failed_hosts_are_errors() {
        let mut summary = sample_summary("drift");
        let gw2 = &mut summary.hosts[1];
        gw2.status = HostStatus::Failed;
        gw2.steps[0].status = StepStatus::Failed("nft -c said:\n<stderr>".into());
        gw2.steps.push(StepReport {
            status: StepStatus::NotRun,
            ..gw2.steps[0].clone()
        });
        let xml = render(&summary);
        assert!(suite_line(&xml, "gw-2").contains(r#"tests="2" failures="0" errors="2""#));
        assert!(xml.contains(r#"<error message="nft -c said:" type="failed">"#));
        assert!(
            xml.contains(r#"<error message="not run: an earlier step failed" type="not_run">"#)
        );

        // A failure outside any step still makes the suite red.
        let mut summary = sample_summary("drift");
        let gw2 = &mut summary.hosts[1];
        gw2.fail(
            HostStatus::Failed,
            "template error in motd.j2".into(),
            Some("fix the template".into()),
        );
        let xml = render(&summary);
        assert!(suite_line(&xml, "gw-2").contains(r#"tests="2" failures="0" errors="1""#));
        assert!(xml.contains(
            "<system-err>error: template error in motd.j2\nhint: fix the template\n</system-err>"
        ));
    }

    #[test]
    fn an_aborted_run_is_an_error() {
        let mut summary = sample_summary("drift");
        summary.hosts.clear();
        summary.aborted = Some("playbook.yaml:3: unknown resource type `fiel`".into());
        let xml = render(&summary);
        assert!(xml.contains(
            r#"<testsuite name="rampart" package="rampart" id="0" hostname="localhost""#
        ));
        assert!(xml.contains(r#"tests="1" failures="0" errors="1" skipped="0""#));
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(iso8601_utc(1_795_572_000), "2026-11-25T02:00:00");
        assert_eq!(iso8601_utc(4_102_444_799), "2099-12-31T23:59:59");
    }
}
