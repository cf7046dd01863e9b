//! r9 (issue 9, items 4-5): secrets never leak. On h31 (this module's only host, renewed by
//! each test with `testbed fresh`): a hand-edited 0600 secrets file whose old content holds a
//! token, a JSON config whose onboarding token the playbook replaces, and a `sensitive: true`
//! step show size and sha256 in plan, drift and every report format, never the old or new
//! content; reports and the fact cache are their owner's only (0600); a secret written
//! `p4ss{{ 7*7 }}word` arrives on the host byte for byte; a secret of 7 characters is refused
//! before any host is touched.
//!
//! h31's host key is read from the testbed's record of it (`hosts/h31.pub`) into a
//! known_hosts of this test's own, so that a refresh of other hosts cannot make it stale.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::common::*;

const HOST: &str = "h31";

/// Both tests renew and use h31: one at a time.
static HOST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock_host() -> std::sync::MutexGuard<'static, ()> {
    HOST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// This run's marker (`scripts/test` makes a fresh one and greps all output for it).
fn run_marker() -> String {
    std::env::var("RAMPART_TEST_SECRET_VALUE").unwrap_or_else(|_| "w2-0f4e9c1d27b86a35".into())
}

/// The new token: a secret with template syntax in it, which must never be rendered.
fn new_token() -> String {
    format!("p4ss{{{{ 7*7 }}}}word-{}", run_marker())
}

/// What a hand edit left in the secrets file, and the onboarding token the config held.
fn old_token() -> String {
    format!("hand-edited-{}-old", run_marker())
}

fn onboarding_token() -> String {
    format!("onboarding-{}-first", run_marker())
}

/// The plain text of the `sensitive: true` step, before and after.
fn notes_before() -> String {
    format!("notes v1 private-{}\n", run_marker())
}

const NOTES_AFTER: &str = "notes v2: the quarterly recovery phrase lives offline\n";

fn fresh_host() {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
        .args(["fresh", HOST])
        .output()
        .unwrap();
    // `fresh` rewrites the shared known_hosts last, and fails when another engineer's host is
    // half-made; our host is up when its record is.
    assert!(
        testbed_dir().join(format!("hosts/{HOST}.pub")).exists(),
        "testbed fresh {HOST}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A known_hosts file for h31 alone, from the testbed's record of its keys.
fn own_known_hosts(dir: &Path) -> PathBuf {
    let path = dir.join("known_hosts");
    let text: String = host_pub(HOST)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{} {l}\n", addr(HOST)))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Root on h31 over OpenSSH (setting up and checking only).
fn root(kh: &Path, script: &str) -> String {
    let out = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(test_key())
        .arg(format!("root@{}", addr(HOST)))
        .arg(script)
        .output()
        .expect("ssh runs");
    // The script's output may hold secrets: only its status is shown on failure.
    assert!(out.status.success(), "ssh {HOST} failed ({})", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run(home: &Path, kh: &Path, inv: &Path, book: &Path, cmd: &str, extra: &[&str]) -> Output {
    rampart(home)
        .env("RAMPART_W2_TOKEN", new_token())
        .args([cmd, "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(kh)
        .args(extra)
        .arg(book)
        .output()
        .unwrap()
}

/// Every form of a value that must never show: as is, upper, lower and base64.
fn forms(value: &str) -> Vec<String> {
    use base64::Engine;
    vec![
        value.to_string(),
        value.to_uppercase(),
        value.to_lowercase(),
        base64::engine::general_purpose::STANDARD.encode(value),
    ]
}

/// Fails, naming `what` and the form (never the value), when `text` holds one.
fn assert_no_leak(what: &str, text: &str) {
    let secrets = [
        ("the new token", new_token()),
        ("the old token", old_token()),
        ("the onboarding token", onboarding_token()),
        ("the old notes", notes_before().trim_end().to_string()),
        ("the new notes", NOTES_AFTER.trim_end().to_string()),
        ("the run's marker", run_marker()),
    ];
    for (name, value) in secrets {
        for (i, form) in forms(&value).iter().enumerate() {
            assert!(
                !text.contains(form.as_str()),
                "{what} shows {name} (form {i}: 0 as is, 1 upper, 2 lower, 3 base64)"
            );
        }
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `sha256sum` of a file on the host, as rampart's fingerprint shows it.
fn host_fingerprint(kh: &Path, path: &str) -> String {
    let out = root(
        kh,
        &format!("wc -c <{p}; sha256sum <{p}", p = shell_quote(path)),
    );
    let mut lines = out.lines();
    let size = lines.next().unwrap().trim().to_string();
    let hash = lines
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!("<{size} bytes, sha256 {hash}>")
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    host(report, HOST)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

fn change<'a>(step: &'a Value, field: &str) -> &'a Value {
    step["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == field)
        .unwrap_or_else(|| panic!("no change of {field} in step {}", step["name"]))
}

fn is_fingerprint(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .and_then(|t| t.split_once(" bytes, sha256 "))
            .is_some_and(|(n, h)| {
                n.parse::<u64>().is_ok()
                    && h.len() == 64
                    && h.bytes().all(|b| b.is_ascii_hexdigit())
            })
    })
}

const PLAYBOOK: &str = r#"steps:
  - name: agent env
    file: {path: /etc/w2/agent.env, content: "TOKEN={{ agent_token }}\n", mode: "0600"}
  - name: gateway token
    json_config: {path: /etc/w2/openclaw.json, settings: {gateway: {auth: {token: "{{ agent_token }}"}}}}
  - name: notes
    file: {path: /etc/w2/notes, content: "notes v2: the quarterly recovery phrase lives offline\n", mode: "0644"}
    sensitive: true
  - name: motd
    file: {path: /etc/w2/motd, content: "{{ hostvars[inventory_hostname].facts.os_id }} host\n", mode: "0644"}
"#;

#[test]
fn r9_sensitive_diffs_show_size_and_hash_in_every_format_and_secrets_arrive_as_written() {
    let _host = lock_host();
    fresh_host();
    let dir = tempfile::tempdir().unwrap();
    let kh = own_known_hosts(dir.path());
    let inv = write_inventory(
        dir.path(),
        &[(
            HOST,
            &format!(
                "address: {}, agent_token: {{secret: {{env: RAMPART_W2_TOKEN}}}}",
                addr(HOST)
            ),
        )],
    );
    let book = dir.path().join("secrets.yaml");
    std::fs::write(&book, PLAYBOOK).unwrap();
    // The host as a hand edit left it: a 0600 env file with an old token, the config with its
    // onboarding token, notes holding private text.
    root(
        &kh,
        &format!(
            "set -e; mkdir -p /etc/w2; umask 077; printf 'TOKEN=%s\\n' {old} >/etc/w2/agent.env; \
             umask 022; printf '{{\"gateway\": {{\"auth\": {{\"token\": \"%s\"}}, \"port\": 18789}}}}\\n' {onb} >/etc/w2/openclaw.json; \
             printf '%s' {notes} >/etc/w2/notes",
            old = shell_quote(&old_token()),
            onb = shell_quote(&onboarding_token()),
            notes = shell_quote(&notes_before()),
        ),
    );
    let old_env = host_fingerprint(&kh, "/etc/w2/agent.env");
    let old_notes = host_fingerprint(&kh, "/etc/w2/notes");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let reports = dir.path().join("out");
    std::fs::create_dir(&reports).unwrap();
    // An older report, readable by all: it is replaced, not kept with its mode.
    std::fs::write(reports.join("plan.json"), "{}").unwrap();
    let outputs = |mode: &str| -> Vec<String> {
        ["json", "html", "xml", "prom", "txt"]
            .iter()
            .map(|ext| format!("{}/{mode}.{ext}", reports.display()))
            .collect()
    };
    for mode in ["plan", "drift"] {
        let files = outputs(mode);
        let mut args: Vec<&str> = vec!["--format", "json"];
        for f in &files {
            args.extend(["-o", f.as_str()]);
        }
        let out = run(&home, &kh, &inv, &book, mode, &args);
        assert_no_leak(&format!("{mode}'s stderr"), &stderr(&out));
        assert_no_leak(&format!("{mode}'s stdout"), &stdout(&out));
        assert_eq!(
            out.status.code(),
            Some(i32::from(rampart::exit::Outcome::DIFFERS)),
            "{mode}: {}",
            stderr(&out)
        );
        let report = json(&out);
        assert_eq!(host(&report, HOST)["status"], "differs");
        // The 0600 file: size and sha256 of what is on the host and of what is wanted.
        let env = change(step(&report, "agent env"), "content");
        assert_eq!(env["before"], old_env.as_str(), "{mode}: {env}");
        assert!(is_fingerprint(&env["after"]), "{mode}: {env}");
        // The config's token, per key path: that it changes, as hashes.
        let token = change(step(&report, "gateway token"), "gateway.auth.token");
        assert!(
            is_fingerprint(&token["before"]) && is_fingerprint(&token["after"]),
            "{mode}: {token}"
        );
        assert_ne!(token["before"], token["after"]);
        // `sensitive: true`, though the file is 0644 and no secret is in it.
        let notes = change(step(&report, "notes"), "content");
        assert_eq!(notes["before"], old_notes.as_str(), "{mode}: {notes}");
        assert!(is_fingerprint(&notes["after"]), "{mode}: {notes}");
        // A step that is not sensitive still shows its text.
        let motd = change(step(&report, "motd"), "content");
        assert_eq!(motd["after"], "debian host\n");
        for f in &files {
            let path = Path::new(f);
            let text = std::fs::read_to_string(path).unwrap();
            assert!(!text.is_empty(), "{f} is empty");
            assert_no_leak(f, &text);
            assert_eq!(mode_of(path), 0o600, "{f} is readable by others");
        }
        let txt = std::fs::read_to_string(format!("{}/{mode}.txt", reports.display())).unwrap();
        assert!(txt.contains(&old_env), "{mode}.txt shows the hash: {txt}");
    }
    // The fact cache (`hostvars` made rampart gather and cache facts).
    let cache = home.join(".cache/rampart/facts");
    let cached: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("no fact cache at {}: {e}", cache.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!cached.is_empty());
    assert_eq!(mode_of(&cache), 0o700);
    for f in &cached {
        assert_eq!(mode_of(f), 0o600, "{} is readable by others", f.display());
    }

    // Apply: the secret arrives byte for byte, never rendered as a template.
    let out = run(&home, &kh, &inv, &book, "apply", &[]);
    assert_no_leak("apply's stdout", &stdout(&out));
    assert_no_leak("apply's stderr", &stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(i32::from(rampart::exit::Outcome::OK)),
        "apply failed: {}",
        stderr(&out)
    );
    let env = root(&kh, "cat /etc/w2/agent.env");
    assert!(
        env == format!("TOKEN={}\n", new_token()),
        "agent.env does not hold the token as written (rendered: {})",
        env.contains("p4ss49word")
    );
    let cfg: Value = serde_json::from_str(&root(&kh, "cat /etc/w2/openclaw.json")).unwrap();
    assert!(
        cfg["gateway"]["auth"]["token"] == new_token().as_str(),
        "openclaw.json does not hold the token as written"
    );
    assert_eq!(cfg["gateway"]["port"], 18789, "other keys kept");
    assert_eq!(root(&kh, "stat -c %a /etc/w2/agent.env").trim(), "600");
}

#[test]
fn r9_a_secret_of_7_characters_is_refused_before_any_host_is_touched() {
    let _host = lock_host();
    fresh_host();
    let dir = tempfile::tempdir().unwrap();
    let kh = own_known_hosts(dir.path());
    let logins = || {
        root(
            &kh,
            "journalctl -u ssh --no-pager -o cat | grep -c '^Accepted' || true",
        )
        .trim()
        .parse::<u32>()
        .unwrap()
    };
    let before = logins();
    let inv = write_inventory(
        dir.path(),
        &[(
            HOST,
            &format!(
                "address: {}, pin: {{secret: {{env: RAMPART_W2_PIN}}}}",
                addr(HOST)
            ),
        )],
    );
    let book = dir.path().join("short.yaml");
    std::fs::write(
        &book,
        "steps:\n  - file: {path: /etc/w2-short, content: 'pin {{ pin }}\\n', mode: '0600'}\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = rampart(&home)
        .env("RAMPART_W2_PIN", "7chars!")
        .args(["apply", "-q", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(&kh)
        .arg(&book)
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(i32::from(rampart::exit::Outcome::FAILED)),
        "{all}"
    );
    assert!(
        all.contains(
            "secret `RAMPART_W2_PIN` (from environment variable RAMPART_W2_PIN) is 7 characters long"
        ) && all.contains("hint: use a longer secret"),
        "{all}"
    );
    assert!(!all.contains("7chars!"), "the refused value shows: {all}");
    // One login since: this check's own.
    assert_eq!(logins(), before + 1, "rampart logged in to {HOST}");
    assert_eq!(
        root(
            &kh,
            "[ -e /etc/w2-short ] || [ -e /var/lib/rampart ] || echo untouched"
        )
        .trim(),
        "untouched",
        "rampart wrote to {HOST}"
    );
}
