//! leaks: the property that no secret leaves rampart in clear (issue 9, items 4-5), over
//! random secrets and every filter the template engine offers. Pure: rendering (host
//! variables, steps), the diff of a host's recorded probe output, masking and every report
//! renderer, for `plan`, `drift` and `audit`. No host is contacted.

use base64::Engine as _;
use proptest::prelude::*;

use crate::engine::{self, RunSettings, StepWork};
use crate::inventory::Inventory;
use crate::playbook::Playbook;
use crate::secrets::Secrets;
use crate::summary::FleetSummary;
use crate::summary::{HostReport, HostStatus, StepStatus};
use crate::template::Templates;

/// Every filter with arguments it accepts: minijinja's and rampart's (the template module's
/// test `every_filter_is_called_by_the_leak_property` keeps this list whole).
pub(crate) const FILTER_CALLS: &[(&str, &str)] = &[
    ("safe", ""),
    ("escape", ""),
    ("e", ""),
    ("lower", ""),
    ("upper", ""),
    ("title", ""),
    ("capitalize", ""),
    ("replace", "('a', 'b')"),
    ("length", ""),
    ("count", ""),
    ("dictsort", ""),
    ("items", ""),
    ("reverse", ""),
    ("trim", ""),
    ("join", "('-')"),
    ("split", ""),
    ("lines", ""),
    ("default", "('x')"),
    ("d", "('x')"),
    ("round", ""),
    ("abs", ""),
    ("int", ""),
    ("float", ""),
    ("attr", "('x')"),
    ("first", ""),
    ("last", ""),
    ("min", ""),
    ("max", ""),
    ("sort", ""),
    ("list", ""),
    ("string", ""),
    ("bool", ""),
    ("batch", "(3)"),
    ("slice", "(3)"),
    ("sum", ""),
    ("indent", "(2)"),
    ("select", ""),
    ("reject", ""),
    ("selectattr", "('x')"),
    ("rejectattr", "('x')"),
    ("map", "('upper')"),
    ("groupby", "('x')"),
    ("unique", ""),
    ("chain", "(['x'])"),
    ("zip", "(['x'])"),
    ("pprint", ""),
    ("format", "('y')"),
    ("tojson", ""),
    ("ip_host", "(1)"),
    ("quote", ""),
    ("index_of", "('x')"),
    ("from_json", ""),
    ("to_json", ""),
    ("to_nice_json", ""),
    ("mandatory", ""),
    ("combine", "({})"),
    ("regex_replace", "('[a-z]', 'Z')"),
    ("b64encode", ""),
    ("b64decode", ""),
];

/// How each filter meets the secret: directly, inside other text, inside a list, and followed
/// by another filter.
const SHAPES: &[&str] = &[
    "pw | F",
    "('<' ~ pw ~ '>') | F",
    "[pw, 'x'] | F",
    "pw | F | string | lower",
];

/// A secret: random letters and digits around what a template or a report would trip on.
fn secret() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9]{4,8}",
        prop::sample::select(vec![
            "{{ 7*7 }}",
            "{% if x %}",
            "'",
            "\"",
            "\\",
            "é",
            "Größe",
            "日本",
            "<&>",
            " ",
            "$HOME",
            "]]>",
            "",
        ]),
        "[a-zA-Z0-9]{4,8}",
    )
        .prop_map(|(a, mid, b)| format!("{a}{mid}{b}"))
}

/// The forms of `value` that must never show.
fn forms(value: &str) -> Vec<String> {
    vec![
        value.to_string(),
        value.to_uppercase(),
        value.to_lowercase(),
        base64::engine::general_purpose::STANDARD.encode(value),
    ]
}

fn settings() -> RunSettings {
    RunSettings {
        apply: false,
        run_id: "leaks".into(),
        timeout: std::time::Duration::from_secs(1),
        tags: vec![],
        skip_tags: vec![],
        deadman_seconds: 60,
        keep_backups: None,
        inspect: None,
    }
}

/// Every report of `summary` in every format, as the cli writes them (masked twice).
fn every_report(summary: &FleetSummary, secrets: &Secrets) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for mode in ["plan", "drift", "audit"] {
        let mut s = summary.clone();
        s.mode = mode;
        s.mask(secrets);
        let mut text = Vec::new();
        crate::report::text::write(
            &mut text,
            &s,
            crate::report::text::Style {
                stats: true,
                color: false,
            },
        )
        .unwrap();
        let mut json = serde_json::to_vec_pretty(&s).unwrap();
        json.push(b'\n');
        let mut junit = Vec::new();
        crate::report::junit::write(&mut junit, &s).unwrap();
        let mut prom = Vec::new();
        crate::report::prometheus::write(&mut prom, &s).unwrap();
        let mut html = Vec::new();
        crate::report::html::write(&mut html, &s).unwrap();
        for (format, bytes) in [
            ("text", text),
            ("json", json),
            ("junit", junit),
            ("prometheus", prom),
            ("html", html),
        ] {
            let shown = secrets.mask(&String::from_utf8_lossy(&bytes));
            out.push((format!("{mode} {format}"), shown));
        }
    }
    out
}

/// Renders `pw` through every filter in every shape for a host whose old file holds the
/// secret, and returns every report.
fn run(value: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("pw");
    std::fs::write(&secret_file, value).unwrap();
    let inv_path = dir.path().join("inventory.yaml");
    let inv_text = format!(
        "all:\n  hosts:\n    h: {{address: 10.203.0.131}}\n  vars:\n    pw: {{secret: {{file: {}, name: pw}}}}\n",
        secret_file.display()
    );
    let inventory = Inventory::parse(&inv_path, &inv_text).unwrap();
    let host = inventory.limit(&[]).unwrap()[0].clone();
    let mut book_text = String::from("steps:\n");
    let mut n = 0;
    for (filter, args) in FILTER_CALLS {
        for shape in SHAPES {
            let expr = shape.replace('F', &format!("{filter}{args}"));
            let expr = serde_json::to_string(&format!("v={{{{ {expr} }}}}")).unwrap();
            book_text.push_str(&format!(
                "  - name: s{n} {filter}\n    file: {{path: /etc/leak{n}, content: {expr}, mode: '0644'}}\n"
            ));
            n += 1;
        }
    }
    let book_path = dir.path().join("p.yaml");
    std::fs::write(&book_path, book_text).unwrap();
    let book = Playbook::load(&book_path).unwrap();
    let templates = Templates::new(vec![]);
    let secrets = Secrets::default();
    let vars = engine::host_vars(&host, &inventory, &book, &secrets, &templates).unwrap();
    // The host's old file holds the secret, as is and in base64.
    let old = format!(
        "old={value}\nb64={}\n",
        base64::engine::general_purpose::STANDARD.encode(value)
    );
    let probe = format!(
        "kind file\nstat root 0 root 0 644 {}\ncontent\n{}\nend\n",
        old.len(),
        base64::engine::general_purpose::STANDARD.encode(&old)
    );
    let mut report = HostReport::new(&host);
    report.status = HostStatus::Differs;
    let mut hosts = Vec::new();
    for i in 0..book.steps.len() {
        match engine::render_steps(
            &book.steps[i..=i],
            &templates,
            &secrets,
            &vars,
            None,
            &settings(),
        ) {
            Ok(steps) => {
                let step = &steps[0];
                let StepWork::Run(resource) = &step.work else {
                    unreachable!("no step is skipped")
                };
                let verdict = resource.diff(&probe).unwrap();
                report.steps.push(engine::step_report(
                    step,
                    StepStatus::Differs,
                    Some(&verdict),
                ));
            }
            Err(failure) => {
                let mut failed = HostReport::new(&host);
                failed.name = format!("h-{i}");
                failed.fail(HostStatus::Failed, failure.message, None);
                hosts.push(failed);
            }
        }
    }
    // The drift scan's evidence is the host's output too.
    report.findings.push(crate::inspect::Finding {
        id: "secret.plaintext".into(),
        severity: crate::inspect::Severity::High,
        subject: format!("file /home/agent/{value}"),
        title: "a secret in a file".into(),
        evidence: vec![format!("line 3: token={value}")],
    });
    hosts.insert(0, report);
    let summary = FleetSummary {
        schema_version: crate::summary::SCHEMA_VERSION,
        run_id: "leaks".into(),
        mode: "plan",
        started: 0,
        seconds: 0.0,
        hosts,
        aborted: None,
    };
    every_report(&summary, &secrets)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn no_report_shows_a_secret_in_any_form(value in secret()) {
        for (what, text) in run(&value) {
            for (i, form) in forms(&value).iter().enumerate() {
                prop_assert!(
                    !text.contains(form.as_str()),
                    "{} shows the secret (form {}: 0 as is, 1 upper, 2 lower, 3 base64)",
                    what,
                    i
                );
            }
        }
    }
}
