//! What the tests know about the testbed, and helpers to drive the binary and the hosts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder `testbed up` writes its inventory, known_hosts and host records to.
pub fn testbed_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("RAMPART_TESTBED_DIR").unwrap_or_else(|_| "/var/tmp/rampart-testbed".into()),
    )
}

pub fn inventory() -> PathBuf {
    let path = testbed_dir().join("inventory.yaml");
    assert!(
        path.exists(),
        "no testbed at {}: run `tests/testbed/testbed up 4 --vms 1` first (scripts/test does)",
        path.display()
    );
    path
}

pub fn known_hosts() -> PathBuf {
    testbed_dir().join("known_hosts")
}

/// The testbed's root key (authorized on every fresh host).
pub fn test_key() -> PathBuf {
    let cache = std::env::var("RAMPART_TESTBED_CACHE")
        .unwrap_or_else(|_| "/var/cache/rampart-testbed".into());
    PathBuf::from(cache).join("id_ed25519")
}

/// A host's address from the testbed's record of it.
pub fn addr(host: &str) -> String {
    let env = std::fs::read_to_string(testbed_dir().join("hosts").join(format!("{host}.env")))
        .unwrap_or_else(|e| panic!("testbed host {host} is not up: {e}"));
    env.lines()
        .find_map(|l| l.strip_prefix("ADDR="))
        .unwrap_or_else(|| panic!("no ADDR in {host}.env"))
        .trim()
        .to_string()
}

/// The host's public host keys as the testbed recorded them at start.
pub fn host_pub(host: &str) -> String {
    std::fs::read_to_string(testbed_dir().join("hosts").join(format!("{host}.pub"))).unwrap()
}

/// `rampart ARGS` with a clean environment for SSH (no agent, a HOME without keys).
pub fn rampart(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
    cmd.env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("RAMPART_KNOWN_HOSTS")
        .env_remove("RAMPART_KEY_PASSPHRASE")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs OpenSSH's client as root on a testbed host (for setting up and checking, never for
/// what rampart itself is tested on).
pub fn ssh_root(host: &str, script: &str) -> String {
    ssh_root_with(host, script, &known_hosts().display().to_string())
}

/// [`ssh_root`] for a host whose key a test changes on purpose (h4): the testbed's record of
/// its key may be stale, so the set-up step does not check it. Never for rampart itself.
pub fn ssh_root_unchecked(host: &str, script: &str) -> String {
    ssh_root_with(host, script, "/dev/null")
}

fn ssh_root_with(host: &str, script: &str, known: &str) -> String {
    let strict = if known == "/dev/null" { "no" } else { "yes" };
    let out = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            &format!("StrictHostKeyChecking={strict}"),
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={known}"))
        .arg("-i")
        .arg(test_key())
        .arg(format!("root@{}", addr(host)))
        .arg(script)
        .output()
        .expect("ssh runs");
    assert!(
        out.status.success(),
        "ssh {host} `{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The JSON report a run printed on stdout.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

/// One host's entry in a JSON report (`facts`, `plan`, `drift`, ...).
pub fn host<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes an inventory for the given `(name, extra vars)` hosts, using the testbed key.
pub fn write_inventory(dir: &Path, hosts: &[(&str, &str)]) -> PathBuf {
    let mut text = format!(
        "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n  hosts:\n",
        test_key().display()
    );
    for (name, extra) in hosts {
        text.push_str(&format!("    {name}: {{{extra}}}\n"));
    }
    let path = dir.join("inventory.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The SHA256 fingerprint of the `algo` key among OpenSSH public key lines.
pub fn fingerprint_of(pub_lines: &str, algo: &str) -> String {
    let line = pub_lines
        .lines()
        .find(|l| l.starts_with(algo))
        .unwrap_or_else(|| panic!("no {algo} key in {pub_lines}"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.pub");
    std::fs::write(&f, format!("{line}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Runs OpenSSH's client as `user` on a testbed host; the output, or the error text.
pub fn ssh_as(user: &str, host: &str, script: &str) -> Result<String, String> {
    let out = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts().display()))
        .arg("-i")
        .arg(test_key())
        .arg(format!("{user}@{}", addr(host)))
        .arg(script)
        .output()
        .expect("ssh runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An SSH session (rampart's own transport) to a testbed host as `user` with `identity`.
pub async fn session_as(
    host: &str,
    user: &str,
    identity: &Path,
) -> rampart::transport::ssh::SshSession {
    use rampart::transport::ssh::{self, ConnectOptions, Endpoint, Target};
    let target = Target {
        endpoint: Endpoint {
            name: host.into(),
            address: addr(host),
            port: 22,
            user: user.into(),
            identity: Some(identity.to_path_buf()),
        },
        jump: None,
    };
    let options = ConnectOptions::new(known_hosts(), false, std::time::Duration::from_secs(10));
    ssh::connect(&target, &options)
        .await
        .unwrap_or_else(|e| panic!("cannot log in to {host} as {user}: {e}"))
}

/// An SSH session as root with the testbed key.
pub async fn root_session(host: &str) -> rampart::transport::ssh::SshSession {
    session_as(host, "root", &test_key()).await
}

/// A stand-in for the agent gateway that behaves like OpenClaw where rampart looks: it binds
/// where its config says (loopback for `"bind": "loopback"`, every address otherwise),
/// answers `GET /health` without auth, and answers anything else only with the token of its
/// environment (`AGENT_AUTH_TOKEN`): 401 without it, 400 for an empty `POST /tools/invoke`
/// with it. Free of `$`, `%` and backslashes, which systemd's ExecStart would expand.
pub const GATEWAY_STANDIN: &str = "/usr/bin/python3 -c \"import json,os,http.server as h;\
g=json.load(open('/home/openclaw/.openclaw/openclaw.json'))['gateway'];\
t=os.environ.get('AGENT_AUTH_TOKEN','');\
ok=lambda s:bool(t) and s.headers.get('Authorization')=='Bearer '+t;\
R=lambda s,c:(s.send_response(c),s.send_header('Content-Length','0'),s.end_headers());\
H=type('H',(h.BaseHTTPRequestHandler,),dict(\
do_GET=lambda s:R(s,200 if s.path=='/health' else 404 if ok(s) else 401),\
do_POST=lambda s:R(s,400 if ok(s) else 401),log_message=lambda *a:None));\
h.ThreadingHTTPServer(('127.0.0.1' if g['bind']=='loopback' else '0.0.0.0',g['port']),H)\
.serve_forever()\"";

pub use rampart::exit::Outcome;

/// The exit status the binary ends with for `outcome`, as `ExitStatus::code` reports it:
/// tests compare against this, never against a bare number.
pub fn exit_code(outcome: Outcome) -> Option<i32> {
    Some(outcome.code().into())
}

/// insta filters for what changes from run to run and testbed to testbed: run ids
/// (`20261125T103000Z-4f2a9c`), times (RFC 3339, and Unix seconds), IPv4 and IPv6 addresses.
/// A port after an address stays: it is the test's choice, not the testbed's.
pub const SNAPSHOT_FILTERS: &[(&str, &str)] = &[
    (r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b", "[RUN_ID]"),
    (
        r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?",
        "[TIME]",
    ),
    (r"\b1[6-9]\d{8}(?:\.\d+)?\b", "[UNIX_TIME]"),
    (
        r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b",
        "[ADDR]",
    ),
    (r"\[[0-9a-fA-F]*:[0-9a-fA-F:.]*\]", "[ADDR]"),
];

/// insta settings with `SNAPSHOT_FILTERS`: every snapshot of the binary's output on testbed
/// hosts goes through `snapshot_settings().bind(|| insta::assert_snapshot!(...))`.
pub fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (pattern, replacement) in SNAPSHOT_FILTERS {
        s.add_filter(pattern, *replacement);
    }
    s
}

/// The filters themselves, on text of the shapes the reports print: no testbed needed.
#[test]
fn snapshot_filters_hide_addresses_times_and_run_ids() {
    let text = "run 20261208T010203Z-4f2a9c at 2026-12-08T01:02:03Z (1796000000)\n\
                h1 (10.203.0.101:22): ok; tunnel [fd00::1]:18789; 127.0.0.1:1 refused\n\
                kept: openclaw 2026.9.6, port 18789, 3 of 4 hosts, sha 0123456789abcdef\n";
    snapshot_settings().bind(|| {
        insta::assert_snapshot!(text, @r"
        run [RUN_ID] at [TIME] ([UNIX_TIME])
        h1 ([ADDR]:22): ok; tunnel [ADDR]:18789; [ADDR]:1 refused
        kept: openclaw 2026.9.6, port 18789, 3 of 4 hosts, sha 0123456789abcdef
        ");
    });
}
