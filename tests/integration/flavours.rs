//! Hosts not built like the testbed's default image (docs/testbed.md, "Flavours"): site.yaml
//! on Debian 13 (OpenSSH 10, systemd 257), on Debian 12 arm64 under emulation with a Raspberry
//! Pi's first login (`pi`, passwordless sudo, no root login), and on a provider-like VPS whose
//! `network-online.target` never comes; and an sshd port change under socket activation.
//!
//! Hosts: h45 (socket), h47 (trixie), h48 (vps), h49 (arm64), each made fresh with its flavour
//! at its test's start (`testbed fresh hN --flavour F`).
//!
//! The VPS-like flavours have no auditd or nftables (a provider's fresh Debian has neither):
//! the playbook here installs them from the testbed's local repository before including
//! site.yaml, as site.yaml's own package steps do once they are there.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::agent_health::testbed;
use super::common::*;

const SOCKET: &str = "h45";
const TRIXIE: &str = "h47";
const VPS: &str = "h48";
const ARM64: &str = "h49";

/// The install sources: the testbed's agent cache (x86-64 Node), read-only in every host.
const AGENT_SOURCES: &str = "agent_install: true\n    agent_node_dist: /srv/rampart-agent/node\n    agent_npm_cache: /srv/rampart-agent/npm-cache";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A playbook in `dir` that installs what a fresh VPS lacks, then includes site.yaml. The
/// repository's templates are linked beside it (templates are looked up next to the playbook).
fn site_playbook(dir: &Path) -> PathBuf {
    std::os::unix::fs::symlink(repo().join("templates"), dir.join("templates")).unwrap();
    let path = dir.join("site-fresh-vps.yaml");
    std::fs::write(
        &path,
        format!(
            "steps:\n  - name: what a provider's fresh Debian lacks\n    package: {{names: [nftables, auditd]}}\n  - include: {}\n",
            repo().join("playbooks/site.yaml").display()
        ),
    )
    .unwrap();
    path
}

fn run(dir: &Path, inv: &Path, known: &Path, cmd: &str, playbook: &Path) -> Output {
    rampart(dir)
        .args([cmd, "--format", "json", "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known)
        .arg(playbook)
        .output()
        .unwrap()
}

fn assert_ok(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}:\n{}{}",
        stdout(out),
        stderr(out)
    );
}

fn assert_in_line(out: &Output) {
    assert_ok(out, "second apply");
    let j = json(out);
    for h in j["hosts"].as_array().unwrap() {
        assert_eq!(
            h["status"],
            "in_line",
            "a second apply changes nothing:\n{}",
            stdout(out)
        );
    }
}

fn inventory_for(dir: &Path, host: &str, vars: &str) -> PathBuf {
    let inv = dir.join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    user: admin\n    identity: {}\n    {vars}\n  hosts:\n    {host}: {{address: {}}}\n",
            test_key().display(),
            addr(host)
        ),
    )
    .unwrap();
    inv
}

/// Root on the host after site.yaml: the admin with sudo.
fn sudo(host: &str, script: &str) -> String {
    let quoted = format!("'{}'", script.replace('\'', r"'\''"));
    ssh_as("admin", host, &format!("sudo -n sh -c {quoted}"))
        .unwrap_or_else(|e| panic!("{host}: {script}: {e}"))
}

fn agent_port_closed(host: &str) {
    let target: SocketAddr = format!("{}:18789", addr(host)).parse().unwrap();
    assert!(
        TcpStream::connect_timeout(&target, Duration::from_secs(2)).is_err(),
        "{host}: the agent port answers from outside"
    );
}

#[test]
fn trixie_site_converges_and_the_client_speaks_mlkem() {
    testbed(&["fresh", TRIXIE, "--flavour", "trixie"]);
    let dir = tempfile::tempdir().unwrap();
    let playbook = site_playbook(dir.path());
    let inv = inventory_for(
        dir.path(),
        TRIXIE,
        &format!("bootstrap_user: root\n    {AGENT_SOURCES}"),
    );
    let start = Instant::now();
    let first = run(dir.path(), &inv, &known_hosts(), "apply", &playbook);
    assert_ok(&first, "first apply on Debian 13");
    eprintln!("trixie: site apply {:.0} s", start.elapsed().as_secs_f64());
    assert_in_line(&run(dir.path(), &inv, &known_hosts(), "apply", &playbook));
    assert_eq!(sudo(TRIXIE, "cut -d. -f1 /etc/debian_version"), "13\n");
    agent_port_closed(TRIXIE);
    // sshd offers the post-quantum hybrid first (OpenSSH 10 has it, so baseline asks for it).
    let kex = sudo(TRIXIE, "sshd -T | sed -n 's/^kexalgorithms //p'");
    assert!(kex.starts_with("mlkem768x25519-sha256,"), "{kex}");
    // With sshd allowing ONLY it, rampart still gets in: the change is confirmed over a new
    // connection (else the dead-man switch restores it), and a plan connects afresh.
    let only = dir.path().join("kex-only.yaml");
    std::fs::write(
        &only,
        "steps:\n  - name: only ML-KEM\n    sshd:\n      file: /etc/ssh/sshd_config.d/05-kex.conf\n      settings: {KexAlgorithms: mlkem768x25519-sha256}\n",
    )
    .unwrap();
    assert_ok(
        &run(dir.path(), &inv, &known_hosts(), "apply", &only),
        "mlkem-only apply",
    );
    let plan = run(dir.path(), &inv, &known_hosts(), "plan", &only);
    assert_ok(&plan, "plan over an ML-KEM-only sshd");
    // This machine's OpenSSH 9.2 has no ML-KEM: the server really offers nothing else.
    let refused = ssh_as("admin", TRIXIE, "true").unwrap_err();
    assert!(
        refused.contains("no matching key exchange method found")
            && refused.contains("Their offer: mlkem768x25519-sha256,"),
        "{refused}"
    );
}

#[test]
fn a_network_online_target_that_never_comes_does_not_hold_the_apply() {
    testbed(&["fresh", VPS, "--flavour", "vps"]);
    // systemd-networkd-wait-online waits for links networkd manages; eth0 is configured from
    // outside. Its default 2 minutes become forever: a host whose network-online.target never
    // comes (a Pi with an unconfigured wlan0, a VPS with a second NIC down).
    ssh_root(
        VPS,
        "mkdir -p /etc/systemd/system/systemd-networkd-wait-online.service.d && \
         printf '[Service]\\nExecStart=\\nExecStart=/lib/systemd/systemd-networkd-wait-online --timeout=0\\n' \
         >/etc/systemd/system/systemd-networkd-wait-online.service.d/forever.conf && \
         systemctl daemon-reload",
    );
    let dir = tempfile::tempdir().unwrap();
    let playbook = site_playbook(dir.path());
    let inv = inventory_for(
        dir.path(),
        VPS,
        &format!("bootstrap_user: root\n    {AGENT_SOURCES}"),
    );
    // Were any step to wait for network-online.target, the apply's command timeout would end
    // it: converging is the proof.
    let start = Instant::now();
    let first = run(dir.path(), &inv, &known_hosts(), "apply", &playbook);
    assert_ok(
        &first,
        "site.yaml on a host whose network-online.target never comes",
    );
    eprintln!("vps: site apply {:.0} s", start.elapsed().as_secs_f64());
    assert_in_line(&run(dir.path(), &inv, &known_hosts(), "apply", &playbook));
    assert_eq!(
        sudo(VPS, "systemctl is-active wg-quick@wg0.service"),
        "active\n"
    );
    agent_port_closed(VPS);
    // The host is still one where the target never comes: started now, it waits.
    let waiting = sudo(
        VPS,
        "systemctl is-active network-online.target || true; \
         systemctl start --no-block network-online.target; \
         systemctl is-active systemd-networkd-wait-online.service || true",
    );
    assert_eq!(waiting, "inactive\nactivating\n");
}

#[test]
fn arm64_pi_bootstrap_user_with_sudo_converges_with_audit_rules_for_both_tables() {
    testbed(&["fresh", ARM64, "--flavour", "arm64"]);
    // A Pi: no root login, the Imager's user with passwordless sudo.
    let refused = ssh_as("root", ARM64, "true").unwrap_err();
    assert!(refused.contains("Permission denied"), "{refused}");
    assert_eq!(ssh_as("pi", ARM64, "uname -m").unwrap(), "aarch64\n");
    let dir = tempfile::tempdir().unwrap();
    let playbook = site_playbook(dir.path());
    // The agent cache holds x86-64 Node only: the arm64 host runs the stand-in gateway.
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        serde_json::json!({"all": {
            "vars": {"user": "admin", "bootstrap_user": "pi", "identity": test_key(),
                     "agent_command": GATEWAY_STANDIN},
            "hosts": {ARM64: {"address": addr(ARM64)}}}})
        .to_string(),
    )
    .unwrap();
    // qemu-user emulates no netfilter netlink socket, so nft cannot work on this host (it
    // does on a real Pi): the firewall step fails, said, not hidden...
    let start = Instant::now();
    let first = run(dir.path(), &inv, &known_hosts(), "apply", &playbook);
    assert_eq!(first.status.code(), Some(1), "{}", stdout(&first));
    let report = json(&first);
    let failed: Vec<&Value> = report["hosts"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", stdout(&first));
    assert!(
        failed[0]["resource"] == "nftables /etc/nftables.conf"
            && failed[0]["detail"]
                .as_str()
                .unwrap()
                .contains("Unable to initialize Netlink socket"),
        "{:#}",
        failed[0]
    );
    eprintln!(
        "arm64: site apply up to the firewall {:.0} s",
        start.elapsed().as_secs_f64()
    );
    // ...and everything else converges without it.
    let skip = |cmd: &str| {
        rampart(dir.path())
            .args([
                cmd,
                "--format",
                "json",
                "-q",
                "--skip-tags",
                "firewall",
                "-i",
            ])
            .arg(&inv)
            .arg("--known-hosts")
            .arg(known_hosts())
            .arg(&playbook)
            .output()
            .unwrap()
    };
    let start = Instant::now();
    assert_ok(&skip("apply"), "site.yaml on arm64 but the firewall");
    eprintln!(
        "arm64: site apply but the firewall {:.0} s",
        start.elapsed().as_secs_f64()
    );
    assert_in_line(&skip("apply"));
    assert_eq!(sudo(ARM64, "id -un"), "root\n");
    // An aarch64 kernel runs 32-bit programs too: execve is audited in both tables.
    let rules = sudo(ARM64, "cat /etc/audit/rules.d/61-rampart-agent.rules");
    for arch in ["b64", "b32"] {
        assert!(
            rules.contains(&format!(
                "-a always,exit -F arch={arch} -S execve -F uid=openclaw -k agent-exec"
            )),
            "{arch}:\n{rules}"
        );
    }
}

#[test]
fn an_ssh_port_change_reaches_ssh_socket_and_the_old_port_closes() {
    // site.yaml converges with sshd socket-activated (its sshd step restarts no socket when
    // the port stays).
    testbed(&["fresh", SOCKET, "--flavour", "socket"]);
    let site_dir = tempfile::tempdir().unwrap();
    let playbook = site_playbook(site_dir.path());
    let site_inv = inventory_for(
        site_dir.path(),
        SOCKET,
        &format!("bootstrap_user: root\n    {AGENT_SOURCES}"),
    );
    let start = Instant::now();
    let first = run(
        site_dir.path(),
        &site_inv,
        &known_hosts(),
        "apply",
        &playbook,
    );
    assert_ok(&first, "site.yaml with ssh.socket");
    eprintln!("socket: site apply {:.0} s", start.elapsed().as_secs_f64());
    assert_in_line(&run(
        site_dir.path(),
        &site_inv,
        &known_hosts(),
        "apply",
        &playbook,
    ));
    assert_eq!(
        sudo(
            SOCKET,
            "systemctl is-active ssh.socket; systemctl is-enabled ssh.service || true"
        ),
        "active\ndisabled\n"
    );
    agent_port_closed(SOCKET);

    // The port, on a fresh host.
    testbed(&["fresh", SOCKET, "--flavour", "socket"]);
    let dir = tempfile::tempdir().unwrap();
    // known_hosts with the host's keys on both ports.
    let known = dir.path().join("known_hosts");
    let a = addr(SOCKET);
    let mut text = String::new();
    for line in host_pub(SOCKET).lines() {
        text.push_str(&format!("{a} {line}\n[{a}]:2222 {line}\n"));
    }
    std::fs::write(&known, text).unwrap();
    let ssh_step = |ports: &str| {
        let p = dir.path().join("sshd.yaml");
        std::fs::write(
            &p,
            format!("steps:\n  - name: sshd port\n    sshd: {{settings: {{Port: {ports}}}}}\n"),
        )
        .unwrap();
        p
    };
    let inv = |port: u16| {
        let p = dir.path().join(format!("inventory-{port}.yaml"));
        std::fs::write(
            &p,
            format!(
                "all:\n  vars:\n    ansible_user: root\n    identity: {}\n  hosts:\n    {SOCKET}: {{address: {a}, port: {port}}}\n",
                test_key().display()
            ),
        )
        .unwrap();
        p
    };
    let listen = || {
        ssh_as(
            "root",
            SOCKET,
            "systemctl show -p Listen --value ssh.socket",
        )
    };
    assert_eq!(listen().unwrap(), "[::]:22 (Stream)\n");
    // 0. Straight to 2222 while rampart's connection is on 22: the socket moves, so the
    // confirmation over a new connection to 22 fails and the dead-man switch moves it back.
    let moved = ssh_step("2222");
    let out = rampart(dir.path())
        .args([
            "apply",
            "--format",
            "json",
            "-q",
            "--deadman-seconds",
            "10",
            "-i",
        ])
        .arg(inv(22))
        .arg("--known-hosts")
        .arg(&known)
        .arg(&moved)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let j = json(&out);
    let detail = j["hosts"][0]["steps"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with("rolled back: lost access"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listen().unwrap(), "[::]:22 (Stream)\n");
    // 1. Both ports: confirmed over port 22 while 2222 opens.
    let both = ssh_step("[22, 2222]");
    assert_ok(
        &run(dir.path(), &inv(22), &known, "apply", &both),
        "ports 22 and 2222",
    );
    let now = listen().unwrap();
    assert!(
        now.contains("[::]:22 (Stream)") && now.contains("[::]:2222 (Stream)"),
        "{now}"
    );
    assert_in_line(&run(dir.path(), &inv(2222), &known, "apply", &both));
    // 2. Only 2222, from a connection on 2222: confirmed there, and 22 closes.
    let moved = ssh_step("2222");
    assert_ok(
        &run(dir.path(), &inv(2222), &known, "apply", &moved),
        "port 2222 only",
    );
    let old: SocketAddr = format!("{a}:22").parse().unwrap();
    assert!(
        TcpStream::connect_timeout(&old, Duration::from_secs(2)).is_err(),
        "port 22 still answers"
    );
    assert_in_line(&run(dir.path(), &inv(2222), &known, "apply", &moved));
    let plan = run(dir.path(), &inv(2222), &known, "plan", &moved);
    assert_ok(&plan, "plan on 2222");
    let j: Value = json(&plan);
    assert_eq!(j["hosts"][0]["status"], "in_line", "{}", stdout(&plan));
}
