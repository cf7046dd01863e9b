//! The machine-read reports, checked by the tools that read them: the JUnit XML against the
//! Apache Ant schema and the Jenkins xUnit schema (xmllint), the Prometheus textfile with the
//! reference Python parser (Debian's python3-prometheus-client) and, where installed,
//! `promtool check metrics`. No testbed: the reports are made from `sample_summary`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rampart::fleet::FleetSummary;
use rampart::report::{junit, prometheus, sample_summary};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/junit")
        .join(name)
}

fn write_file(
    dir: &Path,
    name: &str,
    summary: &FleetSummary,
    write: fn(&mut Vec<u8>, &FleetSummary) -> std::io::Result<()>,
) -> PathBuf {
    let mut buf = Vec::new();
    write(&mut buf, summary).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, buf).unwrap();
    path
}

fn junit_file(dir: &Path, summary: &FleetSummary) -> PathBuf {
    let name = format!("junit-{}.xml", summary.mode);
    write_file(dir, &name, summary, junit::write)
}

fn prom_file(dir: &Path, summary: &FleetSummary) -> PathBuf {
    let name = format!("rampart-{}.prom", summary.mode);
    write_file(dir, &name, summary, prometheus::write)
}

fn xmllint(schema: &str, file: &Path) {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(fixture(schema))
        .arg(file)
        .output()
        .expect("xmllint (Debian package libxml2-utils) runs");
    assert!(
        out.status.success(),
        "{} is not valid against {schema}:\n{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap()
    );
}

#[test]
fn junit_is_valid_against_the_ant_and_jenkins_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut aborted = sample_summary("drift");
    aborted.run_id = "aborted".into();
    aborted.hosts.truncate(1);
    aborted.aborted = Some("playbook.yaml:3:1: unknown resource type `fiel`".into());
    for summary in [sample_summary("drift"), sample_summary("audit"), aborted] {
        let file = junit_file(dir.path(), &summary);
        xmllint("JUnit.xsd", &file);
        xmllint("jenkins-junit-10.xsd", &file);
    }
}

#[test]
fn junit_survives_hostile_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut summary = sample_summary("drift");
    let gw1 = &mut summary.hosts[0];
    gw1.name = "gw-1 <&\"'>".into();
    gw1.steps[0].name = "step ]]> \u{1b}[31mred\u{1b}[0m \u{0}\u{fffe} \r\n\t".into();
    gw1.steps[0].changes[0].after = Some("<![CDATA[ x ]]>\n\u{7}bell\n".into());
    gw1.note = Some("a\u{8}b ]]>".into());
    let file = junit_file(dir.path(), &summary);
    xmllint("JUnit.xsd", &file);
    xmllint("jenkins-junit-10.xsd", &file);
}

/// What the reference parser makes of a textfile: one line per sample,
/// `name{label="value",...} value`, labels sorted, with each family's type first.
fn parse_prometheus(file: &Path) -> String {
    let script = r##"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    print("# %s %s %s" % (family.name, family.type, family.documentation))
    for s in family.samples:
        labels = ",".join('%s=%r' % kv for kv in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, s.value))
"##;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(
        out.status.success(),
        "the reference parser rejects {}:\n{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn promtool(file: &Path) {
    let Ok(out) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
    else {
        eprintln!("promtool is not installed: skipping `promtool check metrics`");
        return;
    };
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_textfile_parses_with_the_reference_parser() {
    let dir = tempfile::tempdir().unwrap();
    let drift = prom_file(dir.path(), &sample_summary("drift"));
    promtool(&drift);
    let parsed = parse_prometheus(&drift);
    for line in [
        "# rampart_last_run_timestamp_seconds gauge When the last rampart run finished, seconds since the Unix epoch.",
        "rampart_last_run_timestamp_seconds{mode='drift'} 1795572001.75",
        "rampart_run_duration_seconds{mode='drift'} 1.75",
        "rampart_run_aborted{mode='drift'} 0.0",
        "rampart_hosts{mode='drift',status='differs'} 1.0",
        "rampart_hosts{mode='drift',status='unreachable'} 1.0",
        "rampart_hosts{mode='drift',status='changed'} 0.0",
        "rampart_host_unreachable{host='gw-3',mode='drift'} 1.0",
        "rampart_host_unreachable{host='gw-1',mode='drift'} 0.0",
        "rampart_host_failed{host='gw-1',mode='drift'} 0.0",
        "rampart_host_drifted_steps{host='gw-1',mode='drift'} 2.0",
        "rampart_host_drifted_steps{host='gw-2',mode='drift'} 0.0",
        "rampart_host_failed_steps{host='gw-1',mode='drift'} 0.0",
        "rampart_host_findings{host='gw-1',mode='drift',severity='critical'} 1.0",
        "rampart_host_findings{host='gw-1',mode='drift',severity='high'} 1.0",
        "rampart_host_findings{host='gw-1',mode='drift',severity='medium'} 0.0",
        "rampart_host_findings{host='gw-1',mode='drift',severity='low'} 0.0",
    ] {
        assert!(
            parsed.lines().any(|l| l == line),
            "no `{line}` in\n{parsed}"
        );
    }
    let families: Vec<&str> = parsed
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        families,
        [
            "rampart_last_run_timestamp_seconds",
            "rampart_run_duration_seconds",
            "rampart_run_aborted",
            "rampart_hosts",
            "rampart_host_unreachable",
            "rampart_host_failed",
            "rampart_host_drifted_steps",
            "rampart_host_changed_steps",
            "rampart_host_failed_steps",
            "rampart_host_findings",
        ]
    );
    // Every family is a gauge, and gw-3 (unreachable) has no step or finding counts.
    assert!(
        parsed
            .lines()
            .filter(|l| l.starts_with("# "))
            .all(|l| l.contains(" gauge "))
    );
    assert!(!parsed.lines().any(|l| l.contains("host='gw-3'")
        && !l.starts_with("rampart_host_unreachable")
        && !l.starts_with("rampart_host_failed{")));

    let audit = prom_file(dir.path(), &sample_summary("audit"));
    promtool(&audit);
    let parsed = parse_prometheus(&audit);
    for line in [
        "# rampart_audit_checks gauge Checklist items of the audit, per verdict.",
        "rampart_audit_checks{host='gw-1',mode='audit',status='pass'} 1.0",
        "rampart_audit_checks{host='gw-1',mode='audit',status='fail'} 1.0",
        "rampart_audit_checks{host='gw-1',mode='audit',status='unknown'} 1.0",
        "rampart_audit_checks{host='gw-2',mode='audit',status='pass'} 1.0",
        "rampart_audit_checks{host='gw-2',mode='audit',status='unknown'} 0.0",
    ] {
        assert!(
            parsed.lines().any(|l| l == line),
            "no `{line}` in\n{parsed}"
        );
    }
}

#[test]
fn prometheus_label_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut summary = sample_summary("drift");
    summary.hosts[1].name = "odd \"host\" \\ with\na newline".into();
    let file = prom_file(dir.path(), &summary);
    promtool(&file);
    let parsed = parse_prometheus(&file);
    // Python's repr of the parsed value: the exact name came back.
    assert!(
        parsed.contains(
            "rampart_host_unreachable{host='odd \"host\" \\\\ with\\na newline',mode='drift'} 0.0"
        ),
        "{parsed}"
    );
}
