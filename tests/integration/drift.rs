//! The nightly drift check and the checklist audit on hosts provisioned with site.yaml: clean,
//! read-only, then tampered with by hand the way an intruder or a hurried admin would, then
//! repaired by `apply`. Every report format is checked for the findings and for secrets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::common::*;

const HOSTS: [&str; 3] = ["h26", "h27", "h28"];

/// The stand-in gateway binds where its config says, answers /health and enforces its token,
/// as OpenClaw does (common.rs).
const STANDIN: &str = GATEWAY_STANDIN;

/// A plaintext key dropped into the workspace. Not a rampart secret: the scan must find it
/// without ever printing it.
const PLANTED: &str = "sk-ant-api03-Pl4nt3dK3yN0tF0rR3p0rts-zQ9xW8vU7tS6rR5qP4oN3mL2kJ1";

/// The gateway's token, a rampart secret (from the environment): `scripts/test` makes a fresh
/// value per run and greps the whole suite's output for it.
fn agent_token() -> String {
    let run = std::env::var("RAMPART_TEST_SECRET_VALUE")
        .unwrap_or_else(|_| "tok-3b1f9e07c2a64d51-secret".into());
    format!("{run}-gateway-token-of-32-chars-or-more")
}

fn site() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yaml")
}

fn run(dir: &Path, inv: &Path, cmd: &str, extra: &[&str]) -> Output {
    rampart(dir)
        .env("RAMPART_TEST_AGENT_TOKEN", agent_token())
        .args([cmd, "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .args(extra)
        .arg(site())
        .output()
        .unwrap()
}

/// (finding id, subject) of a host.
fn findings(report: &Value, name: &str) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = host(report, name)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(
                !f["evidence"].as_array().unwrap().is_empty(),
                "a finding without evidence: {f}"
            );
            assert!(f["severity"].is_string(), "{f}");
            (
                f["id"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    f.sort();
    f
}

/// Names of the steps of a host that differ.
fn drifted(report: &Value, name: &str) -> Vec<String> {
    host(report, name)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "differs")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Check ids of a host with the given status.
fn checks(report: &Value, name: &str, status: &str) -> Vec<String> {
    host(report, name)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == status)
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn testbed(args: &[&str]) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn sudo(h: &str, script: &str) -> String {
    ssh_as("admin", h, &format!("sudo sh -c {}", shell_quote(script)))
        .unwrap_or_else(|e| panic!("{h}: {script}: {e}"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Files changed on the host since the marker, outside what the kernel, logins and logs
/// touch by themselves.
fn changed_since_marker(h: &str) -> String {
    sudo(
        h,
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
         -o -path /var/tmp -o -path /var/log \\) -prune -o \\( -newer /run/drift-marker -o \
         -cnewer /run/drift-marker \\) -print",
    )
}

#[test]
fn drift_and_audit_find_tampering_in_every_format_and_apply_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    let hosts: serde_json::Map<String, Value> = HOSTS
        .iter()
        .map(|h| (h.to_string(), serde_json::json!({"address": addr(h)})))
        .collect();
    // JSON is YAML: the stand-in's quotes need no YAML escaping this way.
    let inventory = serde_json::json!({"all": {
        "vars": {"user": "admin", "bootstrap_user": "root",
                 "identity": test_key(), "agent_command": STANDIN,
                 "agent_token": {"secret": {"env": "RAMPART_TEST_AGENT_TOKEN"}}},
        "hosts": hosts}});
    std::fs::write(&inv, serde_json::to_string_pretty(&inventory).unwrap()).unwrap();

    let first = run(dir.path(), &inv, "apply", &[]);
    assert_eq!(
        first.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );

    // Clean, and read-only: no file on any host changes during a drift check.
    for h in HOSTS {
        sudo(h, "touch /run/drift-marker && sleep 1");
    }
    let clean = run(dir.path(), &inv, "drift", &["--format", "json"]);
    assert_eq!(
        clean.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&clean),
        stderr(&clean)
    );
    let report = json(&clean);
    assert_eq!(report["mode"], "drift");
    assert_eq!(report["schema_version"], 1);
    for h in HOSTS {
        assert_eq!(findings(&report, h), vec![], "{h}");
        assert_eq!(host(&report, h)["status"], "in_line", "{h}");
        // One round trip per host, hostvars and all: the fleet's facts come from the cache
        // the apply left, and the probe confirms them.
        assert_eq!(host(&report, h)["stats"]["round_trips"], 1, "{h}");
        assert_eq!(changed_since_marker(h), "", "{h}: drift changed files");
    }
    let audit = run(dir.path(), &inv, "audit", &["--format", "json"]);
    assert_eq!(
        audit.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&audit),
        stderr(&audit)
    );
    let report = json(&audit);
    for h in HOSTS {
        assert_eq!(checks(&report, h, "fail"), Vec::<String>::new(), "{h}");
        // Containers have no kernel audit: monitoring cannot be confirmed, and says why; the
        // stand-in is no OpenClaw, so its own audit is unknown, never a pass.
        assert_eq!(
            checks(&report, h, "unknown"),
            vec!["monitoring", "openclaw_audit"],
            "{h}"
        );
        assert!(checks(&report, h, "pass").contains(&"outside_probe".to_string()));
    }

    // Tamper: h26's agent rebound to every address and its firewall flushed; on h27 a uid-0
    // account, a world-readable env file and a plaintext key in the workspace; h28 down.
    sudo(
        "h26",
        "sed -i 's/\"bind\": \"loopback\"/\"bind\": \"lan\"/' /home/openclaw/.openclaw/openclaw.json \
         && systemctl restart openclaw-gateway && nft flush ruleset",
    );
    sudo(
        "h27",
        &format!(
            "useradd -o -u 0 -M -d /root -s /bin/sh toor && chmod 644 /etc/openclaw/agent.env \
             && echo DEBUG=1 >> /etc/openclaw/agent.env && printf 'notes\\nANTHROPIC_API_KEY={PLANTED}\\n' > /home/openclaw/.openclaw/workspace/notes.md"
        ),
    );
    testbed(&["stop", "h28"]);
    // The stand-in takes a moment to listen again after its restart.
    let reachable = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect((addr("h26").as_str(), 18789)).is_ok()
    });
    assert!(reachable, "the rebound stand-in never listened on h26");

    let out = dir.path().join("reports");
    std::fs::create_dir(&out).unwrap();
    let o = |name: &str| out.join(name).display().to_string();
    let (json_file, xml, prom, html, txt) = (
        o("drift.json"),
        o("drift.xml"),
        o("rampart.prom"),
        o("drift.html"),
        o("drift.txt"),
    );
    let drift = run(
        dir.path(),
        &inv,
        "drift",
        &[
            "--format", "json", "-o", &json_file, "-o", &xml, "-o", &prom, "-o", &html, "-o", &txt,
        ],
    );
    assert_eq!(
        drift.status.code(),
        exit_code(Outcome::Failed),
        "h28 is down: {}",
        stderr(&drift)
    );
    let report = json(&drift);
    assert_eq!(
        report,
        serde_json::from_str::<Value>(&std::fs::read_to_string(&json_file).unwrap()).unwrap()
    );
    assert_eq!(
        findings(&report, "h26"),
        vec![
            (
                "agent.bind".into(),
                "/home/openclaw/.openclaw/openclaw.json".into()
            ),
            ("listener.agent_port".into(), "tcp 0.0.0.0:18789".into()),
        ]
    );
    // Exactly the tampered steps: h28 being down changes nothing on its WireGuard peers
    // (its last facts come from the controller's cache).
    assert_eq!(
        drifted(&report, "h26"),
        [
            "firewall (nftables, inbound default drop)",
            "agent config (OpenClaw)"
        ]
    );
    assert_eq!(
        findings(&report, "h27"),
        vec![
            (
                "secret.plaintext".into(),
                "/home/openclaw/.openclaw/workspace/notes.md".into()
            ),
            ("secret.readable".into(), "/etc/openclaw/agent.env".into()),
            ("user.uid0".into(), "user toor".into()),
        ]
    );
    assert_eq!(
        drifted(&report, "h27"),
        [
            "root is the only account with uid 0 (others removed, their files kept)",
            "secrets env file (0600)",
            "no plaintext secrets in the agent's folders (moved to quarantine)"
        ]
    );
    assert_eq!(host(&report, "h28")["status"], "unreachable");
    let evidence = host(&report, "h27")["findings"].to_string();
    assert!(evidence.contains("line 2: Anthropic API key"), "{evidence}");

    // Every format names the same findings on the same hosts.
    let text = std::fs::read_to_string(&txt).unwrap();
    for needle in [
        "h26 (",
        "listener.agent_port tcp 0.0.0.0:18789",
        "agent.bind",
        "user.uid0 user toor",
        "secret.readable /etc/openclaw/agent.env",
        "h28 (",
    ] {
        assert!(text.contains(needle), "text lacks {needle:?}:\n{text}");
    }
    let junit = std::fs::read_to_string(&xml).unwrap();
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit/JUnit.xsd");
    let lint = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&xsd)
        .arg(&xml)
        .output()
        .unwrap();
    assert!(lint.status.success(), "{}", stderr(&lint));
    for needle in [
        "finding user.uid0 user toor",
        "finding listener.agent_port",
        "name=\"h28\"",
    ] {
        assert!(junit.contains(needle), "JUnit lacks {needle:?}");
    }
    let metrics = std::fs::read_to_string(&prom).unwrap();
    let parsed = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
             for f in p(sys.stdin.read()):\n  for s in f.samples:\n    \
             print(s.name, s.labels.get('host', '-'), s.labels.get('severity', '-'), s.value)",
        ])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{}\n{metrics}", stderr(&parsed));
    let samples = stdout(&parsed);
    for line in [
        "rampart_host_unreachable h28 - 1.0",
        "rampart_host_unreachable h26 - 0.0",
        "rampart_host_findings h27 critical 2.0",
        "rampart_host_findings h26 critical 2.0",
        "rampart_host_findings h27 high 1.0",
    ] {
        assert!(
            samples.lines().any(|l| l == line),
            "no `{line}` in\n{samples}"
        );
    }
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in ["h26", "h27", "h28", "user.uid0", "listener.agent_port"] {
        assert!(page.contains(needle), "HTML lacks {needle:?}");
    }
    // The env file's diff holds the gateway token and the hand edit: a sensitive step (0600,
    // and it uses a secret), so both sides show as size and sha256, never as text (r9).
    let env_step = host(&report, "h27")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "secrets env file (0600)")
        .unwrap()
        .clone();
    let content = env_step["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "content")
        .unwrap_or_else(|| panic!("{env_step}"));
    for side in ["before", "after"] {
        let shown = content[side].as_str().unwrap_or_default();
        assert!(
            shown.starts_with('<') && shown.contains(" bytes, sha256 "),
            "{side}: {env_step}"
        );
    }
    assert!(
        !env_step.to_string().contains("AGENT_AUTH_TOKEN")
            && !env_step.to_string().contains("DEBUG=1"),
        "{env_step}"
    );
    for (name, body) in [
        ("json", stdout(&drift)),
        ("text", text.clone()),
        ("junit", junit.clone()),
        ("prometheus", metrics.clone()),
        ("html", page.clone()),
    ] {
        assert!(
            !body.contains(PLANTED),
            "the planted key is in the {name} report"
        );
        assert!(
            !body.contains("sk-ant-api03"),
            "a piece of the key is in the {name} report"
        );
    }

    // audit fails exactly the checklist items the tampering breaks; its outside probe
    // reaches h26's rebound agent port.
    let audit = run(dir.path(), &inv, "audit", &["--format", "json"]);
    assert_eq!(
        audit.status.code(),
        exit_code(Outcome::Failed),
        "h28 is down: {}",
        stderr(&audit)
    );
    let report = json(&audit);
    let mut h26_fail = checks(&report, "h26", "fail");
    h26_fail.sort();
    assert_eq!(
        h26_fail,
        ["firewall", "listeners", "loopback_bind", "outside_probe"]
    );
    let mut h27_fail = checks(&report, "h27", "fail");
    h27_fail.sort();
    assert_eq!(h27_fail, ["root_only_uid0", "secrets_in_env"]);
    let probe = host(&report, "h26")["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "outside_probe")
        .unwrap()
        .to_string();
    assert!(probe.contains(":18789: connected"), "{probe}");
    assert_eq!(host(&report, "h28")["status"], "unreachable");
    assert!(!stdout(&audit).contains(PLANTED));
    assert!(!stdout(&audit).contains(&agent_token()));

    // Repair: the host back up, one apply, and both are clean.
    testbed(&["start", "h28"]);
    let repair = run(dir.path(), &inv, "apply", &[]);
    assert_eq!(
        repair.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&repair),
        stderr(&repair)
    );
    let drift = run(dir.path(), &inv, "drift", &["--format", "json"]);
    assert_eq!(
        drift.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&drift)
    );
    let audit = run(dir.path(), &inv, "audit", &[]);
    assert_eq!(
        audit.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&audit)
    );
    // The plaintext key was moved out of the agent's reach, kept as evidence for root only.
    let kept = sudo(
        "h27",
        "find /var/lib/rampart/quarantine -name notes.md -path '*/home/openclaw/*' | head -n 1",
    );
    assert!(
        kept.trim()
            .ends_with("/home/openclaw/.openclaw/workspace/notes.md"),
        "{kept}"
    );
    assert_eq!(sudo("h27", "grep -c toor /etc/passwd || true").trim(), "0");
}

#[test]
fn bad_report_arguments_exit_1_not_2_which_means_drift() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &[]);
    for (output, says) in [
        ("report.docx", "cannot tell the format of `report.docx`"),
        ("html:", "names no file"),
        (
            "/nonexistent-folder/drift.json",
            "the folder /nonexistent-folder does not exist",
        ),
    ] {
        let out = run(dir.path(), &inv, "drift", &["-o", output]);
        assert_eq!(
            out.status.code(),
            exit_code(Outcome::Failed),
            "{output}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(says), "{output}: {}", stderr(&out));
    }
}
