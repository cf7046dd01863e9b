//! After a compromise (issue 13): `quarantine`, `collect` and `release` on a host provisioned
//! with playbooks/site.yaml and the REAL OpenClaw (h55, made fresh here), with a second fresh
//! host (h56) as "somewhere else" the compromised host must no longer reach.
//!
//! The compromise is played as root on h55: an attacker's systemd timer and its service, a
//! cron entry, a line in the admin's authorized_keys, /etc/ld.so.preload, a plaintext API key
//! in the agent's workspace, and a listener (as root: quarantine leaves root's processes
//! alone, so `collect` still sees it); the agent also plants a link to /etc/shadow and a FIFO
//! where its .profile was. Then, in the order the README gives:
//! - `quarantine` whose confirmation login is refused (a PAM hook): exit 1, and the host's
//!   dead-man switch removes the table by itself; the agent stays stopped;
//! - `quarantine`: the agent is stopped, h55 cannot reach h56 (it could before), the
//!   controller still logs in; again: nothing to do;
//! - `collect` (while quarantined): the manifest lists every planted item with the hash of
//!   what is on the host, the archive holds exactly what the manifest says, both are 0600,
//!   and no file under the trees collect reads changed (mtime, ctime and size of every file,
//!   before and after; the same snapshot does see a touched file); with small caps, members
//!   are cut and marked, and past --max-size the archive is kept, incomplete, exit 1;
//! - `release`: the agent runs again and h55 reaches h56 again.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::common::*;

const HOST: &str = "h55";
const OTHER: &str = "h56";

fn testbed(args: &[&str]) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
        .args(args)
        .env("RAMPART_TESTBED_BOOT_TIMEOUT", "300")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// As root on h55, through the admin login site.yaml made (root's is closed).
fn sudo(script: &str) -> String {
    ssh_as(
        "admin",
        HOST,
        &format!("sudo -n sh -c {}", shell_quote(script)),
    )
    .unwrap_or_else(|e| panic!("{HOST}: `{script}`: {e}"))
}

fn rampart_cmd(dir: &Path, inv: &Path, args: &[&str]) -> std::process::Output {
    rampart(dir)
        .args(args)
        .arg("-i")
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether h55 opens a TCP connection to h56's sshd (3 s at most).
fn reaches_other() -> bool {
    let out = sudo(&format!(
        "if timeout 3 bash -c '</dev/tcp/{}/22' 2>/dev/null; then echo reached; else echo blocked; fi",
        addr(OTHER)
    ));
    match out.trim() {
        "reached" => true,
        "blocked" => false,
        other => panic!("unexpected answer: {other}"),
    }
}

/// mtime, ctime, size and type of every file under the trees collect reads.
const SNAPSHOT: &str = "find /etc /usr/local /home /root /tmp /var/tmp /dev/shm -xdev \
    -printf '%T@ %C@ %s %y %p\\n' 2>/dev/null | sort -k5";

const TIMER: &str = "[Unit]\nDescription=not an attacker at all\n\n[Timer]\nOnCalendar=hourly\n\n[Install]\nWantedBy=timers.target\n";
const SERVICE: &str = "[Service]\nType=oneshot\nExecStart=/bin/true\n";
const CRON: &str = "17 3 * * * root /bin/true # rampart-test attacker\n";
const ATTACKER_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5eTqZ0rKq3o0X0dVYk2tmJfZ4k6L0tq2Nw1g0bq3xV attacker@evil";
const SECRET: &str = "notes: ANTHROPIC=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\n";

#[test]
fn quarantine_collect_and_release_a_compromised_host() {
    testbed(&["fresh", HOST, OTHER]);
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    user: admin\n    bootstrap_user: root\n    identity: {}\n    agent_install: true\n    \
             agent_node_dist: /srv/rampart-agent/node\n    agent_npm_cache: /srv/rampart-agent/npm-cache\n  hosts:\n    \
             {HOST}: {{address: {}}}\n    {OTHER}: {{address: {}}}\n",
            test_key().display(),
            addr(HOST),
            addr(OTHER)
        ),
    )
    .unwrap();
    let apply = rampart(dir.path())
        .args(["apply", "-q", "--limit", HOST, "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    assert_eq!(
        sudo("systemctl is-active openclaw-gateway.service").trim(),
        "active"
    );

    // The compromise.
    let libc = sudo("ldconfig -p | awk '/libc.so.6 / {print $NF; exit}'");
    let preload = format!("{}\n", libc.trim());
    assert!(preload.starts_with('/'), "no libc path: {preload:?}");
    let b64 = |s: &str| base64_encode(s.as_bytes());
    sudo(&format!(
        "set -e
echo {} | base64 -d >/etc/systemd/system/rampart-evil.timer
echo {} | base64 -d >/etc/systemd/system/rampart-evil.service
systemctl daemon-reload && systemctl enable --now rampart-evil.timer
echo {} | base64 -d >/etc/cron.d/rampart-evil
echo {} >>/home/admin/.ssh/authorized_keys
echo {} | base64 -d >/etc/ld.so.preload
echo {} | base64 -d >/home/openclaw/.openclaw/workspace/notes.md
chown openclaw:openclaw /home/openclaw/.openclaw/workspace/notes.md
ln -s /etc/shadow /home/openclaw/.openclaw/workspace/leak.md
chown -h openclaw:openclaw /home/openclaw/.openclaw/workspace/leak.md
rm -f /home/openclaw/.profile && mkfifo /home/openclaw/.profile && chown openclaw:openclaw /home/openclaw/.profile
setsid python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", 4444)); s.listen(); time.sleep(100000)' </dev/null >/dev/null 2>&1 &
for i in $(seq 50); do ss -tlnH | grep -q ':4444 ' && break; sleep 0.2; done
ss -tlnH | grep -q ':4444 '",
        b64(TIMER),
        b64(SERVICE),
        b64(CRON),
        shell_quote(ATTACKER_KEY),
        b64(&preload),
        b64(SECRET),
    ));
    let keys_hash = sudo("sha256sum </home/admin/.ssh/authorized_keys | cut -c1-64")
        .trim()
        .to_string();

    // Quarantine. Before it, h55 reaches h56: the check below can fail.
    assert!(
        reaches_other(),
        "{HOST} must reach {OTHER} before the quarantine"
    );

    // A quarantine whose confirmation cannot log in (PAM refuses exactly the second login: the
    // quarantine's own gets in, its confirmation does not) fails, and the host lifts the
    // firewall table by itself; the agent stays stopped.
    sudo(
        "printf '%s\\n' '#!/bin/sh' 'n=$(cat /run/rampart-test-logins 2>/dev/null || echo 0); n=$((n + 1)); echo $n >/run/rampart-test-logins; [ $n != 2 ]' >/usr/local/sbin/rampart-test-once
chmod 755 /usr/local/sbin/rampart-test-once; rm -f /run/rampart-test-logins
echo 'account required pam_exec.so quiet /usr/local/sbin/rampart-test-once' >>/etc/pam.d/sshd",
    );
    let locked = rampart_cmd(
        dir.path(),
        &inv,
        &[
            "quarantine",
            HOST,
            "--deadman-seconds",
            "5",
            "--format",
            "json",
        ],
    );
    assert_eq!(
        locked.status.code(),
        Some(1),
        "{}{}",
        stdout(&locked),
        stderr(&locked)
    );
    let j: Value = serde_json::from_slice(&locked.stdout).unwrap();
    assert!(
        j["hosts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("dead-man switch"),
        "{j}"
    );
    sudo(
        "sed -i '/rampart-test-once/d' /etc/pam.d/sshd; rm -f /usr/local/sbin/rampart-test-once /run/rampart-test-logins",
    );
    // A bounded wait for the host's own restore (its timer fires after 5 s).
    let mut gone = false;
    for _ in 0..60 {
        if sudo(
            "nft list table inet rampart_quarantine >/dev/null 2>&1 && echo present || echo gone",
        )
        .trim()
            == "gone"
        {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(gone, "the dead-man switch removed the quarantine table");
    assert!(
        reaches_other(),
        "{HOST} reaches {OTHER} again after the switch fired"
    );
    assert_ne!(
        sudo("systemctl is-active openclaw-gateway.service || true").trim(),
        "active",
        "the agent stays stopped"
    );
    let q = rampart_cmd(dir.path(), &inv, &["quarantine", HOST, "--format", "json"]);
    assert_eq!(q.status.code(), Some(0), "{}{}", stdout(&q), stderr(&q));
    let j: Value = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(j["hosts"][0]["status"], "quarantined", "{j}");
    assert!(
        j["hosts"][0]["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "confirmed over a new connection"),
        "the firewall change was confirmed over a new connection: {j}"
    );
    assert_ne!(
        sudo("systemctl is-active openclaw-gateway.service || true").trim(),
        "active"
    );
    assert_eq!(
        sudo("pgrep -u openclaw >/dev/null && echo running || echo none").trim(),
        "none",
        "no process of the agent survives"
    );
    assert!(
        !reaches_other(),
        "{HOST} must not reach {OTHER} while quarantined"
    );
    // Idempotent: again, nothing to do, still exit 0.
    let again = rampart_cmd(dir.path(), &inv, &["quarantine", HOST]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        stdout(&again),
        stderr(&again)
    );
    assert!(stdout(&again).contains("already"), "{}", stdout(&again));

    // Collect, and prove nothing changed on the host.
    let before = sudo(SNAPSHOT);
    assert!(
        before.lines().count() > 1000,
        "the snapshot lists the trees"
    );
    let out_dir = dir.path().join("evidence");
    let c = rampart_cmd(
        dir.path(),
        &inv,
        &[
            "collect",
            HOST,
            "-o",
            out_dir.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let after = sudo(SNAPSHOT);
    assert_eq!(c.status.code(), Some(0), "{}{}", stdout(&c), stderr(&c));
    if before != after {
        let b: std::collections::HashSet<&str> = before.lines().collect();
        let changed: Vec<&str> = after.lines().filter(|l| !b.contains(l)).take(30).collect();
        panic!("collect changed files on {HOST}:\n{}", changed.join("\n"));
    }
    // The same snapshot sees a change: the comparison above can fail.
    sudo("touch /etc/cron.d/rampart-evil");
    assert_ne!(sudo(SNAPSHOT), after);

    let j: Value = serde_json::from_slice(&c.stdout).unwrap();
    let h = &j["hosts"][0];
    assert_eq!(h["status"], "ok", "{j}");
    let archive = Path::new(h["archive"].as_str().unwrap()).to_path_buf();
    let manifest_path = Path::new(h["manifest"].as_str().unwrap()).to_path_buf();
    for p in [&archive, &manifest_path] {
        assert_eq!(
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(m["complete"], true, "{}", m["problems"]);
    let fps: Vec<String> = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
        .iter()
        .filter(|a| host_pub(HOST).lines().any(|l| l.starts_with(**a)))
        .map(|a| fingerprint_of(&host_pub(HOST), a))
        .collect();
    assert!(
        fps.iter().any(|f| m["host_key_fingerprint"] == f.as_str()),
        "manifest fingerprint {} is one of {HOST}'s keys {fps:?}",
        m["host_key_fingerprint"]
    );
    assert_eq!(m["rampart_version"], env!("CARGO_PKG_VERSION"));
    assert!(m["collection_started"].as_str().unwrap().ends_with('Z'));
    let members = m["members"].as_array().unwrap();
    let member = |name: &str| -> &Value {
        members
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("no member {name} in the manifest"))
    };
    for (name, content) in [
        ("files/etc/systemd/system/rampart-evil.timer", TIMER),
        ("files/etc/systemd/system/rampart-evil.service", SERVICE),
        ("files/etc/cron.d/rampart-evil", CRON),
        ("files/etc/ld.so.preload", preload.as_str()),
        ("files/home/openclaw/.openclaw/workspace/notes.md", SECRET),
    ] {
        assert_eq!(
            member(name)["sha256"],
            sha256_hex(content.as_bytes()),
            "{name}"
        );
    }
    let keys = member("files/home/admin/.ssh/authorized_keys");
    assert_eq!(keys["sha256"], keys_hash.as_str());
    assert_eq!(keys["read_as_owner"], true);
    assert_eq!(
        member("files/home/openclaw/.openclaw/workspace/notes.md")["read_as_owner"],
        true
    );

    // The archive holds what the manifest says, byte for byte.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    for mem in members {
        let name = mem["name"].as_str().unwrap();
        let data = std::fs::read(x.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(mem["sha256"], sha256_hex(&data), "{name}");
        assert_eq!(mem["size"], data.len() as u64, "{name}");
    }
    assert_eq!(
        std::fs::read(x.join("manifest.json")).unwrap(),
        std::fs::read(&manifest_path).unwrap()
    );
    let read =
        |name: &str| String::from_utf8_lossy(&std::fs::read(x.join(name)).unwrap()).into_owned();
    assert!(read("files/home/admin/.ssh/authorized_keys").contains("attacker@evil"));
    assert!(
        read("commands/sockets.txt").contains(":4444"),
        "{}",
        read("commands/sockets.txt")
    );
    assert!(read("commands/systemd-timers.txt").contains("rampart-evil.timer"));
    let since = read("commands/changed-since-apply.txt");
    for planted in [
        "/etc/cron.d/rampart-evil",
        "/etc/ld.so.preload",
        "/etc/systemd/system/rampart-evil.timer",
    ] {
        assert!(
            since.contains(&format!(" {planted} -> ")),
            "{planted} changed since the apply:\n{}",
            &since[..since.len().min(3000)]
        );
    }
    let integrity = read("commands/integrity.sha256");
    for (path, content) in [
        ("/etc/systemd/system/rampart-evil.timer", TIMER),
        ("/etc/ld.so.preload", preload.as_str()),
    ] {
        let line = format!("{}  {path}", sha256_hex(content.as_bytes()));
        assert!(
            integrity.lines().any(|l| l == line),
            "integrity lists {line}"
        );
    }
    assert!(
        integrity
            .lines()
            .any(|l| l == format!("{keys_hash}  /home/admin/.ssh/authorized_keys")),
        "integrity hashes the admin's authorized_keys (as admin)"
    );
    // The agent's FIFO where a file was expected is skipped, not waited on.
    assert!(
        !members
            .iter()
            .any(|mm| mm["name"] == "files/home/openclaw/.profile")
    );
    // The agent's link to /etc/shadow shows root nothing: not archived, and no member holds
    // shadow's lines.
    let shadow =
        sudo("cut -d: -f1,2 /etc/shadow | grep -v ':[*!]*$' | head -n 3; head -n 1 /etc/shadow");
    assert!(
        !members
            .iter()
            .any(|mm| mm["name"].as_str().unwrap().ends_with("leak.md"))
    );
    for mem in members {
        let data = std::fs::read(x.join(mem["name"].as_str().unwrap())).unwrap();
        let text = String::from_utf8_lossy(&data);
        for line in shadow.lines().filter(|l| l.len() > 8) {
            assert!(!text.contains(line), "{} holds shadow's line", mem["name"]);
        }
    }
    // rampart's own secrets never leave the host.
    assert!(
        !members
            .iter()
            .any(|mm| mm["name"].as_str().unwrap().ends_with(".env")),
        "no env file in the archive"
    );

    // Bounded: members past --member-size (1 KiB) are cut on the host and marked; a host that
    // sends more than --max-size (1 MiB) gets an archive of what came, marked incomplete, and
    // exit 1.
    let small = |name: &str, extra: &[&str]| -> (Option<i32>, Value) {
        let out = dir.path().join(name);
        let mut args = vec![
            "collect",
            HOST,
            "-o",
            out.to_str().unwrap(),
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let c = rampart_cmd(dir.path(), &inv, &args);
        let j: Value = serde_json::from_slice(&c.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&c), stderr(&c)));
        let m = serde_json::from_slice(
            &std::fs::read(j["hosts"][0]["manifest"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        (c.status.code(), m)
    };
    let (code, m) = small("cut", &["--member-size", "1"]);
    assert_eq!(code, Some(0));
    let ps = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "commands/processes.txt")
        .unwrap();
    assert_eq!(ps["truncated"], true, "{ps}");
    assert_eq!(ps["size"], 1024);
    let (code, m) = small("capped", &["--max-size", "1"]);
    assert_eq!(code, Some(1));
    assert_eq!(m["complete"], false);
    assert!(
        m["problems"].to_string().contains("more than 1 MiB"),
        "{}",
        m["problems"]
    );
    assert!(
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "commands/processes.txt"),
        "what came before the cap is kept"
    );

    // Release: the agent runs again and the host reaches out again.
    let r = rampart_cmd(dir.path(), &inv, &["release", HOST]);
    assert_eq!(r.status.code(), Some(0), "{}{}", stdout(&r), stderr(&r));
    assert_eq!(
        sudo("systemctl is-active openclaw-gateway.service").trim(),
        "active"
    );
    assert!(
        reaches_other(),
        "{HOST} reaches {OTHER} again after release"
    );
    assert_eq!(
        sudo("nft list table inet rampart_quarantine >/dev/null 2>&1 && echo present || echo gone")
            .trim(),
        "gone"
    );
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
