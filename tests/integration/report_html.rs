//! The HTML report as a person sees it: `tests/html/check_report.py` opens it in headless
//! Chromium as a 390×844 phone, clicks cells with real mouse events and reports what was on
//! screen as JSON. No testbed: the report is made from `sample_summary("audit")`. Needs
//! `/usr/bin/chromium` and Debian's `python3-websocket` (scripts/setup installs both).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rampart::report::{html, sample_summary};
use serde_json::{Value, json};

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/html/check_report.py");

/// The driver's own limit is 90 s; this one catches a driver that hangs anyway.
const TIMEOUT: Duration = Duration::from_secs(150);

#[test]
fn a_phone_sees_the_grid_and_a_click_shows_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let summary = sample_summary("audit");
    let mut out = Vec::new();
    html::write(&mut out, &summary).unwrap();
    std::fs::write(&report, out).unwrap();

    let unreachable = &summary.hosts[2];
    let expect = json!({
        "hosts": summary.hosts.iter().map(|h| &h.name).collect::<Vec<_>>(),
        "drifted_cell": "gw-1/step/login-banner",
        "in_line_cell": "gw-1/step/firewall",
        "diff_line": "+Authorized use only.",
        "escaped_text": "-Welcome <admin> & \"friends\"",
        "unreachable": {
            "host": unreachable.name,
            "error": unreachable.error.as_deref().unwrap(),
            "hint": unreachable.hint.as_deref().unwrap(),
        },
        "deep_link": {
            "cell": "gw-1/check/loopback_bind",
            "text": "gateway.bind is \"lan\"",
        },
    });
    let expect_path = dir.path().join("expect.json");
    std::fs::write(&expect_path, expect.to_string()).unwrap();

    let (code, stdout, stderr) = run_driver(&report, &expect_path);
    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "the driver printed no JSON ({e}), exit {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )
    });
    let failed: Vec<&Value> = result["checks"]
        .as_array()
        .map(|checks| checks.iter().filter(|c| c["ok"] != true).collect())
        .unwrap_or_default();
    let passed = result["error"].is_null() && result["ok"] == true && code == Some(0);
    if !passed || !failed.is_empty() {
        let kept = dir.keep();
        panic!(
            "the report failed in Chromium (exit {code:?}): error: {}\nfailed checks:\n{}\n\
             whole result:\n{stdout}\nstderr:\n{stderr}\nthe report is kept in {}",
            result["error"],
            serde_json::to_string_pretty(&failed).unwrap(),
            kept.display()
        );
    }
    // The driver got to the end (one that stopped early would pass fewer checks).
    let names: Vec<&str> = result["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for want in [
        "page does not scroll sideways",
        "a drifted cell's color differs from an in-line cell's",
        "a click shows the detail",
        "the detail shows the diff",
        "unreachable gw-3 shows its whole error on screen",
        "a deep link opens that detail on load",
        "the report loads nothing from outside",
    ] {
        assert!(names.contains(&want), "no check {want:?} ran:\n{stdout}");
    }
}

/// Runs the driver; kills it after [`TIMEOUT`].
fn run_driver(report: &std::path::Path, expect: &std::path::Path) -> (Option<i32>, String, String) {
    for need in ["/usr/bin/python3", "/usr/bin/chromium"] {
        assert!(
            std::path::Path::new(need).exists(),
            "{need} is missing: run scripts/setup (it installs chromium and python3-websocket)"
        );
    }
    let mut child = Command::new("/usr/bin/python3")
        .arg(DRIVER)
        .arg(report)
        .arg(expect)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tests/html/check_report.py");
    // Read the pipes on threads so a chatty driver cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            // SIGTERM lets the driver stop Chromium; then make sure.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "the driver took more than {TIMEOUT:?} ({status})\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}
