//! One host's whole pipeline (`engine::host`) over real SSH, driving the real binary on h54,
//! this file's own host: apply with a risky change confirmed over a new connection, the one
//! handler a changing step notifies, the verify probe; a step that still differs after its
//! apply is "not idempotent"; a risky change that locks rampart out is rolled back by the host
//! and reported so. The unit tests play the same over local sessions; this is the SSH side.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::agent_health::testbed;
use super::common::*;

const HOST: &str = "h54";

fn apply(dir: &Path, cmd: &str, book: &str) -> (Output, Value) {
    let path = dir.join("book.yaml");
    std::fs::write(&path, book).unwrap();
    let out = rampart(dir)
        .args([cmd, "-i"])
        .arg(dir.join("inventory.yaml"))
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(&path)
        .args(["--deadman-seconds", "10", "--format", "json", "--quiet"])
        .output()
        .unwrap();
    let j = json(&out);
    let host = j["hosts"][0].clone();
    (out, host)
}

fn expect(dir: &Path, cmd: &str, book: &str, code: i32) -> Value {
    let (out, host) = apply(dir, cmd, book);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd}: {host:#}{}",
        stderr(&out)
    );
    host
}

const GOOD: &str = "steps:
  - name: motd
    file: {path: /etc/motd-rampart, content: \"hardened\\n\"}
    risky: true
    notify: motd changed
  - name: already there
    command: {run: 'true', creates: /etc}
    notify: never
handlers:
  - name: motd changed
    command: {run: 'echo ran > /root/handler-ran'}
  - name: never
    command: {run: 'touch /root/never-ran'}
";

#[test]
fn one_host_applies_notifies_confirms_verifies_and_rolls_back_over_ssh() {
    testbed(&["fresh", HOST]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_inventory(d, &[(HOST, &format!("ansible_host: {}", addr(HOST)))]);

    let host = expect(d, "apply", GOOD, 0);
    assert_eq!(host["status"], "changed", "{host:#}");
    assert_eq!(host["steps"][0]["status"], "changed", "{host:#}");
    assert_eq!(host["steps"][1]["status"], "in_line", "{host:#}");
    let handlers: Vec<(&str, &str)> = host["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["status"].as_str().unwrap()))
        .collect();
    assert_eq!(handlers, [("motd changed", "changed")], "{host:#}");
    assert_eq!(ssh_root(HOST, "cat /etc/motd-rampart"), "hardened\n");
    assert_eq!(ssh_root(HOST, "cat /root/handler-ran"), "ran\n");
    assert_eq!(ssh_root(HOST, "ls /root/never-ran 2>/dev/null; true"), "");
    // Confirmed: no switch of any run is left on the host.
    assert_eq!(
        ssh_root(HOST, "ls -A /var/lib/rampart/deadman 2>/dev/null; true"),
        ""
    );
    let host = expect(d, "plan", GOOD, 0);
    assert_eq!(host["status"], "in_line", "{host:#}");

    // The command claims to make a file and does not: its verify says so.
    let host = expect(
        d,
        "apply",
        "steps:\n  - command: {run: 'true', creates: /root/never-made}\n",
        1,
    );
    assert_eq!(host["status"], "failed", "{host:#}");
    assert_eq!(host["error"], "a step still differs after its apply");
    let detail = host["steps"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("not idempotent: still differs after apply"),
        "{detail}"
    );

    // Root's keys replaced by a key nobody has: the confirming login is refused, the host
    // restores the keys by itself, and rampart says access is back.
    let keys = ssh_root(HOST, "cat /root/.ssh/authorized_keys");
    let host = expect(
        d,
        "apply",
        "steps:\n  - name: lock out\n    file:\n      path: /root/.ssh/authorized_keys\n      content: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA nobody\\n\"\n      mode: \"0600\"\n    risky: true\n",
        1,
    );
    assert_eq!(host["status"], "failed", "{host:#}");
    let detail = host["steps"][0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("rolled back: lost access"), "{detail}");
    assert_eq!(
        host["note"], "the host restored the previous state; access is back",
        "{host:#}"
    );
    assert_eq!(ssh_root(HOST, "cat /root/.ssh/authorized_keys"), keys);
}
