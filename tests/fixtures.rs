//! Fixture tests: every resource type's parse + diff over probe outputs recorded on testbed
//! hosts, without SSH.
//!
//! A case is a folder `tests/fixtures/<type>/<case>/` holding:
//!
//! - `params.json`: the step's parameters (after templating), as the playbook gives them;
//! - `probe.out`: what the type's real probe printed on a testbed host (recorded, see below),
//!   or, for a case named `edited-*`, a recorded output edited by hand to play what a host can
//!   send but a healthy testbed host does not (cut short, garbled); its `NOTE` says what;
//! - `expected.txt`: the verdict the diff must give, as [`render`] writes it;
//! - `NOTE`: how the output was recorded (host, flavour, what `setup.sh` prepared);
//! - `setup.sh` (optional): POSIX sh run as root on the host before the probe, to put the
//!   host in the state the case is about.
//!
//! The harness ([`every_fixture_gives_its_expected_verdict`]) builds each step through the
//! type registry, exactly as a playbook would, feeds it the recorded output and compares the
//! verdict with `expected.txt`.
//!
//! A new `edited-*` case gets its `expected.txt` written (when it has none) by running the
//! harness with `RAMPART_FIXTURES_WRITE=1`.
//!
//! Recording: `RAMPART_RECORD_HOST=h43 cargo test --test fixtures record -- --ignored`
//! runs `setup.sh` and then the probe (the real script, as the engine sends it: through
//! `sh -c 's=$(cat) && eval "$s"'` as root over OpenSSH) on that testbed host for every case
//! without a `probe.out` (or the cases named in `RAMPART_RECORD_CASES`, `type/case,...`), and
//! writes `probe.out` and the current verdict as `expected.txt`, to be read and checked by eye
//! before committing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rampart::resource::{self, Verdict};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every case folder, as `(type, case folder)`, in a stable order.
fn cases() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for info in resource::TYPES {
        let dir = root().join(info.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("params.json").exists())
            .collect();
        dirs.sort();
        out.extend(dirs.into_iter().map(|d| (info.name.to_string(), d)));
    }
    out
}

fn build(ty: &str, case: &Path) -> Box<dyn resource::Resource> {
    let text = std::fs::read_to_string(case.join("params.json")).unwrap();
    let params: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}/params.json: {e}", case.display()));
    let info = resource::lookup(ty).unwrap();
    (info.build)(params).unwrap_or_else(|e| panic!("{}: bad params: {e}", case.display()))
}

/// The verdict as text: its action, then one line per change with both sides quoted as Rust
/// strings (`-` for absent), or `error: MESSAGE` when the diff refuses the output.
fn render(verdict: &Result<Verdict, resource::ProbeError>) -> String {
    let side = |s: &Option<String>| match s {
        Some(t) => format!("{t:?}"),
        None => "-".to_string(),
    };
    match verdict {
        Err(e) => format!("error: {}\n", e.message),
        Ok(Verdict::InLine(sentence)) => format!("in line: {sentence}\n"),
        Ok(v) => {
            let mut s = format!("{}\n", v.action());
            for c in v.changes() {
                s.push_str(&format!(
                    "{}: {} -> {}\n",
                    c.field,
                    side(&c.before),
                    side(&c.after)
                ));
            }
            s
        }
    }
}

#[test]
fn every_fixture_gives_its_expected_verdict() {
    let cases = cases();
    let mut failed = Vec::new();
    let mut types = std::collections::BTreeSet::new();
    for (ty, case) in &cases {
        let probe = std::fs::read_to_string(case.join("probe.out"))
            .unwrap_or_else(|e| panic!("{}/probe.out: {e}", case.display()));
        let step = build(ty, case);
        let verdict = step.diff(&probe);
        let got = render(&verdict);
        // The verdict's field names come back as the type's fields in its apply (a debug
        // assertion there), and the apply renders.
        if let Ok(v) = &verdict
            && !v.is_in_line()
        {
            let ctx = resource::ApplyContext::new("fixture");
            if let Err(e) = step.apply(v, &ctx).render() {
                failed.push(format!(
                    "{}: the apply does not render: {e}",
                    case.display()
                ));
            }
        }
        if std::env::var_os("RAMPART_FIXTURES_WRITE").is_some()
            && !case.join("expected.txt").exists()
        {
            // A new hand-edited case: its verdict, to be read by eye before committing.
            std::fs::write(case.join("expected.txt"), &got).unwrap();
        }
        let expected = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{}/expected.txt: {e}", case.display()));
        assert!(
            case.join("NOTE").exists(),
            "{}: every case says how it was recorded",
            case.display()
        );
        if got != expected {
            failed.push(format!(
                "{}\n--- expected\n{expected}--- got\n{got}",
                case.display()
            ));
        }
        types.insert(ty.clone());
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // Every registered type has at least one recorded case.
    let missing: Vec<&str> = resource::TYPES
        .iter()
        .map(|t| t.name)
        .filter(|n| !types.contains(*n))
        .collect();
    assert!(missing.is_empty(), "types without a fixture: {missing:?}");
}

/// Runs `script` as root on the testbed host `host` as the engine runs one.
fn on_host(host: &str, script: &str) -> String {
    let testbed = PathBuf::from(
        std::env::var("RAMPART_TESTBED_DIR").unwrap_or_else(|_| "/var/tmp/rampart-testbed".into()),
    );
    let env = std::fs::read_to_string(testbed.join("hosts").join(format!("{host}.env"))).unwrap();
    let addr = env
        .lines()
        .find_map(|l| l.strip_prefix("ADDR="))
        .unwrap()
        .trim()
        .to_string();
    let mut child = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            testbed.join("known_hosts").display()
        ))
        .arg("-i")
        .arg(
            PathBuf::from(
                std::env::var("RAMPART_TESTBED_CACHE")
                    .unwrap_or_else(|_| "/var/cache/rampart-testbed".into()),
            )
            .join("id_ed25519"),
        )
        .arg(format!("root@{addr}"))
        .arg(rampart::remote::exec_command(false))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{host}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "records probe outputs on a testbed host: RAMPART_RECORD_HOST=hN"]
fn record() {
    let host = std::env::var("RAMPART_RECORD_HOST").expect("RAMPART_RECORD_HOST=hN");
    let only: Option<Vec<String>> = std::env::var("RAMPART_RECORD_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    for (ty, case) in cases() {
        let name = format!("{ty}/{}", case.file_name().unwrap().to_string_lossy());
        let wanted = match &only {
            Some(list) => list.contains(&name),
            None => !case.join("probe.out").exists(),
        };
        if !wanted || name.contains("/edited-") {
            continue;
        }
        if let Ok(setup) = std::fs::read_to_string(case.join("setup.sh")) {
            on_host(&host, &setup);
        }
        let r = build(&ty, &case);
        let out = on_host(&host, &r.probe().render().unwrap());
        std::fs::write(case.join("probe.out"), &out).unwrap();
        std::fs::write(case.join("expected.txt"), render(&r.diff(&out))).unwrap();
        eprintln!("recorded {name} on {host}");
    }
}
