//! Provisioning beside the tools already on a host (issue 12, items 2 and 3), on fresh hosts:
//!
//! - h42: Docker-like nat and filter tables (`ip nat` DOCKER chains, a FORWARD chain with
//!   DOCKER-USER, ip_forward=1, a `docker0` bridge), Tailscale's `ts-input` chain and a `tailscale0` TUN device,
//!   fail2ban's `inet f2b-table` with a ban, and a filter INPUT chain that accepts the agent
//!   port, all there BEFORE `site.yaml`: they survive the apply, the agent port stays closed
//!   from the controller although a listener waits on the public address and another table
//!   accepts it, drift is in line, and so is the second apply.
//! - h46: auditd and nftables purged. An `audit_rules` step alone fails plainly; the
//!   baseline, which installs what it configures, converges, and its second apply is in line.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use super::agent_health::testbed;
use super::common::*;

/// The install sources: the testbed's agent cache, read-only in every container host.
const AGENT_SOURCES: &str = "agent_install: true\n    agent_node_dist: /srv/rampart-agent/node\n    agent_npm_cache: /srv/rampart-agent/npm-cache";

/// What Docker, Tailscale and fail2ban leave in a host's nftables, with a filter INPUT chain
/// (policy accept) that even accepts the agent's port.
const FOREIGN: &str = r#"set -e
sysctl -qw net.ipv4.ip_forward=1
ip link add docker0 type bridge
ip tuntap add dev tailscale0 mode tun
ip link set tailscale0 up
nft -f - <<'EOF'
table ip nat {
  chain DOCKER {
    iifname "docker0" return
  }
  chain PREROUTING {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump DOCKER
  }
  chain POSTROUTING {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 172.17.0.0/16 oifname != "docker0" masquerade
  }
}
table ip filter {
  chain DOCKER {
  }
  chain DOCKER-USER {
    return
  }
  chain ts-input {
    iifname "lo" ip saddr 100.101.102.103 accept
    iifname != "tailscale0" ip saddr 100.64.0.0/10 drop
    iifname "tailscale0" accept
    udp dport 41641 accept
  }
  chain INPUT {
    type filter hook input priority filter; policy accept;
    jump ts-input
    tcp dport 18789 accept
  }
  chain FORWARD {
    type filter hook forward priority filter; policy drop;
    jump DOCKER-USER
    ct state established,related accept
    oifname "docker0" jump DOCKER
    iifname "docker0" accept
  }
}
table inet f2b-table {
  set addr-set-sshd {
    type ipv4_addr
    elements = { 192.0.2.7 }
  }
  chain f2b-chain {
    type filter hook input priority filter - 1; policy accept;
    tcp dport 22 ip saddr @addr-set-sshd reject
  }
}
EOF
"#;

/// The foreign tables as nft lists them (without counters).
const LIST_FOREIGN: &str =
    "nft -s list table ip nat; nft -s list table ip filter; nft -s list table inet f2b-table";

fn run(dir: &Path, inv: &Path, cmd: &str, book: &Path) -> Output {
    rampart(dir)
        .args([cmd, "--format", "json", "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(book)
        .output()
        .unwrap()
}

fn book(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("playbooks")
        .join(name)
}

fn inventory(dir: &Path, h: &str, extra: &str) -> std::path::PathBuf {
    let inv = dir.join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    user: admin\n    bootstrap_user: root\n    identity: {}\n{extra}  hosts:\n    {h}: {{address: {}}}\n",
            test_key().display(),
            addr(h)
        ),
    )
    .unwrap();
    inv
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn says(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn connects(h: &str, port: u16) -> bool {
    let target: SocketAddr = format!("{}:{port}", addr(h)).parse().unwrap();
    TcpStream::connect_timeout(&target, Duration::from_secs(3)).is_ok()
}

fn sudo(h: &str, script: &str) -> String {
    ssh_as(
        "admin",
        h,
        &format!("sudo -n sh -c {}", shell_quote(script)),
    )
    .unwrap_or_else(|e| panic!("{h}: `{script}`: {e}"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn site_lives_beside_docker_tailscale_and_fail2ban() {
    let h = "h42";
    testbed(&["fresh", h]);
    ssh_root(h, FOREIGN);
    let foreign = ssh_root(h, LIST_FOREIGN);
    // A listener on the public address, on the agent's port, which another table accepts:
    // before rampart it answers the controller, so the check after the apply can fail.
    ssh_root(
        h,
        &format!(
            "setsid python3 -m http.server --bind {} --directory /usr/share/doc/python3 18789 \
             </dev/null >/dev/null 2>&1 &\necho $! >/run/standin.pid\nfor i in $(seq 100); do ss -ltn | grep -q ':18789 ' && exit; sleep 0.1; done; exit 1",
            addr(h)
        ),
    );
    assert!(connects(h, 18789), "the stand-in listener is not reachable");

    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), h, &format!("    {AGENT_SOURCES}\n"));
    let site = book("site.yaml");
    // The facts see what is there.
    let facts = rampart(dir.path())
        .args(["facts", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap();
    let facts = json(&facts);
    let f = &host(&facts, h)["facts"];
    for (fact, want) in [
        ("docker", true),
        ("tailscale", true),
        ("ip_forward", true),
        ("ufw", false),
    ] {
        assert_eq!(f[fact], want, "{fact}: {f:#}");
    }
    let first = run(dir.path(), &inv, "apply", &site);
    assert_eq!(code(&first), Some(0), "{}", says(&first));

    // Every foreign table is as it was; forwarding and the VPN interface are untouched.
    assert_eq!(sudo(h, LIST_FOREIGN), foreign);
    assert_eq!(sudo(h, "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
    assert_eq!(
        sudo(
            h,
            "ls /etc/sysctl.d/60-rampart-forwarding.conf 2>&1 || true"
        ),
        "ls: cannot access '/etc/sysctl.d/60-rampart-forwarding.conf': No such file or directory\n"
    );
    assert!(sudo(h, "ip -br link show tailscale0").starts_with("tailscale0"));
    let ours = sudo(h, "nft -s list table inet rampart");
    assert!(
        ours.contains("iifname \"tailscale0\" tcp dport 22 accept"),
        "{ours}"
    );
    assert!(
        ours.contains("type filter hook forward priority filter; policy accept;"),
        "Docker needs forwarding: {ours}"
    );
    // Debian's nftables.service flushes the whole ruleset when stopped; with the baseline's
    // drop-in a restart (stop, then start) replaces rampart's table only.
    sudo(
        h,
        "systemctl restart nftables && systemctl restart nftables",
    );
    assert_eq!(sudo(h, LIST_FOREIGN), foreign);
    assert_eq!(sudo(h, "nft -s list table inet rampart"), ours);
    // rampart's input chain drops the agent port although the Docker-like INPUT chain
    // accepts it and something listens on the public address: a drop anywhere is final.
    assert!(sudo(h, "ss -ltn").contains(&format!("{}:18789", addr(h))));
    assert!(
        !connects(h, 18789),
        "{h}: the agent port answers from outside"
    );
    // `audit` proves it from outside too.
    let audit = run(dir.path(), &inv, "audit", &site);
    let report: Value =
        serde_json::from_slice(&audit.stdout).unwrap_or_else(|e| panic!("{e}: {}", says(&audit)));
    let outside = host(&report, h)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "outside_probe")
        .cloned()
        .unwrap_or_else(|| panic!("no outside_probe: {report:#}"));
    assert_eq!(outside["status"], "pass", "{outside:#}");
    let firewall = host(&report, h)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "firewall")
        .cloned()
        .unwrap();
    assert_eq!(firewall["status"], "pass", "{firewall:#}");
    sudo(
        h,
        &format!(
            "kill \"$(cat /run/standin.pid)\"\nfor i in $(seq 100); do ss -ltn | grep -qF '{}:18789 ' || exit 0; sleep 0.1; done; exit 1",
            addr(h)
        ),
    );

    // Docker changes its own tables at run time (a container started): not rampart's drift.
    sudo(
        h,
        "nft add rule ip filter DOCKER ip daddr 172.17.0.2 tcp dport 80 accept && \
         nft add element inet f2b-table addr-set-sshd { 198.51.100.9 }",
    );
    let drift = run(dir.path(), &inv, "drift", &site);
    assert_eq!(code(&drift), Some(0), "{}", says(&drift));
    let second = run(dir.path(), &inv, "apply", &site);
    assert_eq!(code(&second), Some(0), "{}", says(&second));
    let j: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(host(&j, h)["status"], "in_line", "{}", stdout(&second));
    assert!(
        sudo(h, "nft -s list table ip filter").contains("ip daddr 172.17.0.2 tcp dport 80 accept")
    );

    // rampart's own table deleted by hand is drift, and comes back without the others moving.
    sudo(h, "nft delete table inet rampart");
    let drift = run(dir.path(), &inv, "drift", &site);
    assert_eq!(code(&drift), Some(2), "{}", says(&drift));
    let third = run(dir.path(), &inv, "apply", &site);
    assert_eq!(code(&third), Some(0), "{}", says(&third));
    assert_eq!(sudo(h, "nft -s list table inet rampart"), ours);
    assert!(sudo(h, "nft -s list table inet f2b-table").contains("198.51.100.9"));
}

#[test]
fn playbooks_install_what_they_configure_and_audit_without_auditd_fails() {
    let h = "h46";
    testbed(&["fresh", h]);
    ssh_root(
        h,
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q auditd nftables >/dev/null 2>&1 \
         && ! command -v auditctl && ! command -v nft",
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), h, "");

    // An audit_rules step on a host without auditd: never in line, and the apply fails
    // plainly, writing nothing.
    let only_audit = dir.path().join("audit.yaml");
    std::fs::write(
        &only_audit,
        "steps:\n  - name: audit rules\n    audit_rules:\n      rules: [\"-w /etc/sudoers -p wa -k sudoers\"]\n",
    )
    .unwrap();
    let plan = run(dir.path(), &inv, "plan", &only_audit);
    assert_eq!(code(&plan), Some(2), "{}", says(&plan));
    assert!(
        stdout(&plan).contains("auditctl is not installed (auditd missing)"),
        "{}",
        says(&plan)
    );
    let failed = run(dir.path(), &inv, "apply", &only_audit);
    assert_eq!(code(&failed), Some(1), "{}", says(&failed));
    assert!(
        says(&failed).contains("auditctl is not installed, so no audit rule can load"),
        "{}",
        says(&failed)
    );
    assert_eq!(
        ssh_root(
            h,
            "test -e /etc/audit/rules.d/60-rampart.rules && echo written || echo absent"
        ),
        "absent\n"
    );

    // The baseline installs nftables and auditd before configuring them, in one apply.
    let baseline = book("baseline.yaml");
    let first = run(dir.path(), &inv, "apply", &baseline);
    assert_eq!(code(&first), Some(0), "{}", says(&first));
    assert_eq!(
        sudo(
            h,
            "dpkg-query -W -f='${db:Status-Abbrev}\\n' auditd nftables"
        ),
        "ii \nii \n"
    );
    assert!(sudo(h, "nft list tables").contains("table inet rampart"));
    assert!(
        sudo(h, "cat /etc/audit/rules.d/60-rampart.rules").contains("-k sudoers"),
        "the rules file"
    );
    let second = run(dir.path(), &inv, "apply", &baseline);
    assert_eq!(code(&second), Some(0), "{}", says(&second));
    let j: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(host(&j, h)["status"], "in_line", "{}", stdout(&second));
}
