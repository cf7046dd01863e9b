//! The operator's OpenSSH setup carried over: an inventory that names hosts only by
//! `~/.ssh/config` aliases converges (HostName, User, Port, IdentityFile, a two-hop
//! ProxyJump), many targets behind one bastion share ONE connection to it, and the resolved
//! settings agree with `ssh -G`. Hosts h50..h53 (made fresh here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rampart::transport::ssh_config::SshConfig;

use super::common::*;

const HOSTS: &[&str] = &["h50", "h51", "h52", "h53"];

/// h50..h53 are shared by the tests of ssh_config, ansible_inventory and install: one at a
/// time (one of them makes them fresh).
pub static HOSTS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn hosts_lock() -> std::sync::MutexGuard<'static, ()> {
    HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn testbed(args: &[&str]) {
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "testbed {args:?} failed");
}

/// A HOME whose `.ssh/config` is `config`, with the testbed key under a name OpenSSH would
/// not try by itself (only IdentityFile leads to it) and the testbed's known_hosts.
fn home_with(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(home.path().join("keys")).unwrap();
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::copy(test_key(), home.path().join("keys/fleet")).unwrap();
    // The testbed's known_hosts, and the same keys for sshd's second port on h51 and h52.
    let mut known = std::fs::read_to_string(known_hosts()).unwrap();
    for h in ["h51", "h52"] {
        let a = addr(h);
        let extra: String = known
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{a} ")))
            .map(|rest| format!("[{a}]:2222 {rest}\n"))
            .collect();
        known.push_str(&extra);
    }
    std::fs::write(ssh.join("fleet_known_hosts"), known).unwrap();
    std::fs::write(ssh.join("config"), config).unwrap();
    home
}

fn run(home: &Path, args: &[&str]) -> Output {
    rampart(home)
        .env("USER", "root")
        .args(args)
        .output()
        .unwrap()
}

fn accepted(host: &str, from: &str, user: &str) -> usize {
    ssh_root(
        host,
        &format!(
            "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey for {user} from {from} ' || true"
        ),
    )
    .trim()
    .parse()
    .unwrap()
}

/// The controller's address as the testbed hosts see it.
fn controller_addr() -> String {
    let addr = addr("h50");
    let out = Command::new("ip")
        .args(["-o", "route", "get", &addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next().unwrap().to_string();
        }
    }
    panic!("no source address to {addr}: {text}")
}

fn config_for_aliases() -> String {
    format!(
        "# names only: the inventory has no addresses\n\
         Host bastion-a\n  HostName {h50}\n\
         Host bastion-b\n  HostName {h51}\n  Port 2222\n\
         Host app\n  HostName {h52}\n  User ops\n  Port 2222\n\
         Host deep\n  HostName {h53}\n  ProxyJump bastion-a,bastion-b\n\
         Host *\n  User root\n  IdentityFile ~/keys/fleet\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile ~/.ssh/fleet_known_hosts\n  StrictHostKeyChecking yes\n\
         Match originalhost deep\n  User nobody-first-value-wins\n",
        h50 = addr("h50"),
        h51 = addr("h51"),
        h52 = addr("h52"),
        h53 = addr("h53"),
    )
}

/// sshd on a second port, and a sudo login `ops` with the testbed key.
fn prepare_hosts() {
    let key = std::fs::read_to_string(format!("{}.pub", test_key().display())).unwrap();
    for h in ["h51", "h52"] {
        ssh_root(
            h,
            "grep -q '^Port 2222' /etc/ssh/sshd_config || { printf 'Port 22\\nPort 2222\\n' >> /etc/ssh/sshd_config; systemctl restart ssh; }",
        );
    }
    ssh_root(
        "h52",
        &format!(
            "id ops >/dev/null 2>&1 || useradd -m -s /bin/bash ops; \
             install -d -m 700 -o ops -g ops ~ops/.ssh; \
             printf '%s\\n' '{}' > ~ops/.ssh/authorized_keys; chown ops:ops ~ops/.ssh/authorized_keys; \
             echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops; chmod 440 /etc/sudoers.d/ops",
            key.trim()
        ),
    );
}

const PLAYBOOK: &str = "steps:\n  - name: marker folder\n    directory: {path: /srv/w6-sshcfg, mode: \"0755\"}\n  - name: marker\n    lines: {path: /srv/w6-sshcfg/note, present: [\"reached by alias\"]}\n";

#[test]
fn ssh_config_aliases_two_hop_jump_and_one_bastion_connection_for_twenty_targets() {
    let _hosts = hosts_lock();
    testbed(&["fresh", "h50", "h51", "h52", "h53"]);
    prepare_hosts();
    let config = config_for_aliases();
    let home = home_with(&config);
    let dir = tempfile::tempdir().unwrap();

    // 1. The resolved settings agree with `ssh -G` for each alias.
    let parsed = SshConfig::parse_str(&home.path().join(".ssh/config"), &config).unwrap();
    for alias in ["bastion-a", "bastion-b", "app", "deep"] {
        let out = Command::new("ssh")
            .env("HOME", home.path())
            .env("USER", "root")
            .args(["-F"])
            .arg(home.path().join(".ssh/config"))
            .args(["-G", alias])
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh -G {alias}: {}", stderr(&out));
        let g = String::from_utf8_lossy(&out.stdout).to_string();
        let get = |k: &str| -> Vec<String> {
            g.lines()
                .filter_map(|l| l.strip_prefix(&format!("{k} ")))
                .map(str::to_string)
                .collect()
        };
        let r = parsed.resolve(alias, None).unwrap();
        assert_eq!(
            get("hostname"),
            vec![r.hostname.clone().unwrap()],
            "{alias}"
        );
        assert_eq!(get("user"), vec![r.user.clone().unwrap()], "{alias}");
        assert_eq!(
            get("port"),
            vec![r.port.unwrap_or(22).to_string()],
            "{alias}"
        );
        // ssh -G prints `~` unexpanded; the parser here expands it with this process's HOME.
        let home_now = std::env::var("HOME").unwrap();
        assert_eq!(
            get("identityfile")
                .iter()
                .map(|f| f.replacen('~', &home_now, 1))
                .collect::<Vec<_>>(),
            r.identity_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
            "{alias}"
        );
        assert_eq!(get("identitiesonly"), vec!["yes".to_string()]);
        let jump = get("proxyjump");
        assert_eq!(
            jump,
            r.proxy_jump
                .clone()
                .map(|j| vec![j.join(",")])
                .unwrap_or_default(),
            "{alias}"
        );
    }

    // 2. An inventory of aliases only converges: apply, then plan finds nothing to change.
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    bastion-a:\n    app:\n    deep:\n",
    )
    .unwrap();
    let book = dir.path().join("book.yaml");
    std::fs::write(&book, PLAYBOOK).unwrap();
    let from_h51 = accepted("h53", &addr("h51"), "root");
    let out = run(
        home.path(),
        &[
            "apply",
            "-q",
            "-i",
            inv.to_str().unwrap(),
            book.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = run(
        home.path(),
        &[
            "plan",
            "-q",
            "-i",
            inv.to_str().unwrap(),
            book.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "not converged: {}{}",
        stdout(&out),
        stderr(&out)
    );
    for h in ["h50", "h52", "h53"] {
        assert_eq!(
            ssh_root(h, "cat /srv/w6-sshcfg/note").trim(),
            "reached by alias",
            "{h}"
        );
    }
    // `app` logged in as ops (the config's User) on port 2222; `deep` came through h51.
    assert!(accepted("h52", &controller_addr(), "ops") >= 2);
    assert!(accepted("h53", &addr("h51"), "root") >= from_h51 + 2);

    // 3. Twenty targets behind one bastion: ONE connection to the bastion for the run.
    let mut cfg = config.clone();
    let mut inv_text = String::from("all:\n  hosts:\n");
    for i in 1..=20 {
        cfg = format!(
            "Host t{i:02}\n  HostName {}\n  ProxyJump bastion-a\n{cfg}",
            addr(HOSTS[1 + i % 3])
        );
        inv_text.push_str(&format!("    t{i:02}:\n"));
    }
    std::fs::write(home.path().join(".ssh/config"), &cfg).unwrap();
    std::fs::write(&inv, &inv_text).unwrap();
    let controller = controller_addr();
    let before = accepted("h50", &controller, "root");
    let behind: Vec<usize> = HOSTS[1..]
        .iter()
        .map(|h| accepted(h, &addr("h50"), "root"))
        .collect();
    let out = run(
        home.path(),
        &[
            "facts",
            "--format",
            "json",
            "--forks",
            "64",
            "-i",
            inv.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = json(&out);
    assert_eq!(report["hosts"].as_array().unwrap().len(), 20);
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "ok", "{h}");
    }
    // The count itself logs in once from the controller (ssh_root): that is the +1.
    let after = accepted("h50", &controller, "root");
    assert_eq!(
        after - before,
        2,
        "the bastion saw {} logins from the controller for 20 targets",
        after - before - 1
    );
    let through: usize = HOSTS[1..]
        .iter()
        .zip(&behind)
        .map(|(h, b)| accepted(h, &addr("h50"), "root") - b)
        .sum();
    assert_eq!(through, 20, "every target was reached through the bastion");
}

/// `-F FILE` is read instead of ~/.ssh/config, a bad line names file and line, and an
/// unsupported `Match` is an error, not ignored.
#[test]
fn dash_f_replaces_the_user_config_and_bad_lines_are_named() {
    let home = home_with("Host app\n  HostName 192.0.2.1\n");
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "all:\n  hosts:\n    app:\n").unwrap();
    let other: PathBuf = dir.path().join("other_config");
    std::fs::write(&other, "Host app\n  Port banana\n").unwrap();
    let out = run(
        home.path(),
        &[
            "facts",
            "-F",
            other.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:2:", other.display())) && err.contains("Port banana"),
        "{err}"
    );
    std::fs::write(&other, "Match exec \"true\"\n  User x\n").unwrap();
    let out = run(
        home.path(),
        &[
            "facts",
            "-F",
            other.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`Match exec` is not supported"),
        "{}",
        stderr(&out)
    );
}

/// Harder configs, resolved here and by `ssh -G` (which connects nowhere): Include with a
/// glob, negated patterns, Match host/originalhost/user, `Key=value`, quotes, tokens,
/// ProxyJump none, several IdentityFiles, first value wins across files.
#[test]
fn resolution_matches_ssh_dash_g_on_tricky_configs() {
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
    std::fs::write(
        ssh.join("conf.d/10-lab.conf"),
        "Host *.lab !secret.lab\n  User lab\n  Port 2201\nHost secret.lab\n  Port 2299\n",
    )
    .unwrap();
    std::fs::write(
        ssh.join("conf.d/20-more.conf"),
        "Host *.lab\n  User ignored-second\n  IdentityFile ~/.ssh/lab_%r_%h\n",
    )
    .unwrap();
    std::fs::write(ssh.join("conf.d/.hidden"), "Host *\n  User hidden\n").unwrap();
    // An absolute Include: ssh expands `~` and relative paths with the passwd home, not
    // $HOME, so a relative one would read the real ~/.ssh.
    let config = format!(
        "\
# top
Host=pi
  HostName \"10.0.0.%h\"
  Port=2022
Host bastion?
  HostName bastion.example.net
  ProxyJump none
Host *
Include {}/conf.d/*.conf
Match originalhost web* !originalhost web9
  User webber
  ProxyJump bastion1,admin@bastion2:2222
Match host 10.0.0.*
  IdentityFile ~/.ssh/pi_key
Match user lab
  IdentitiesOnly yes
Host *
  User fallback
  IdentityFile ~/.ssh/id_default
  ConnectTimeout 7
",
        ssh.display()
    );
    std::fs::write(ssh.join("config"), config).unwrap();
    let parsed = SshConfig::load(Some(&ssh.join("config"))).unwrap();
    let home_now = std::env::var("HOME").unwrap();
    for host in [
        "pi",
        "bastion1",
        "web1",
        "web9",
        "db.lab",
        "secret.lab",
        "other",
    ] {
        let out = Command::new("ssh")
            .env("HOME", home.path())
            .env("USER", "root")
            .arg("-F")
            .arg(ssh.join("config"))
            .args(["-G", host])
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh -G {host}: {}", stderr(&out));
        let g = String::from_utf8_lossy(&out.stdout).to_string();
        let get = |k: &str| -> Vec<String> {
            g.lines()
                .filter_map(|l| l.strip_prefix(&format!("{k} ")))
                .map(|v| v.replacen('~', &home_now, 1))
                .collect()
        };
        let r = parsed.resolve(host, None).unwrap();
        let ctx = format!("{host}:\n{g}");
        assert_eq!(
            get("hostname"),
            vec![r.hostname.clone().unwrap_or(host.to_string())],
            "{ctx}"
        );
        assert_eq!(
            get("user"),
            vec![r.user.clone().unwrap_or("root".into())],
            "{ctx}"
        );
        assert_eq!(get("port"), vec![r.port.unwrap_or(22).to_string()], "{ctx}");
        let files: Vec<String> = r
            .identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        // ssh -G prints IdentityFile's tokens as written; ssh expands %r and %h with the
        // user and hostname it prints.
        let (user, hostname) = (get("user")[0].clone(), get("hostname")[0].clone());
        let expanded: Vec<String> = get("identityfile")
            .iter()
            .map(|f| f.replace("%r", &user).replace("%h", &hostname))
            .collect();
        assert_eq!(expanded, files, "{ctx}");
        assert_eq!(
            get("identitiesonly"),
            vec![
                if r.identities_only == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_string()
            ],
            "{ctx}"
        );
        let jump = r.proxy_jump.clone().filter(|j| !j.is_empty());
        assert_eq!(
            get("proxyjump"),
            jump.map(|j| vec![j.join(",")]).unwrap_or_default(),
            "{ctx}"
        );
        // The cases say something (so the comparison above cannot pass by both being empty).
        match host {
            "db.lab" => assert_eq!(
                (get("user"), get("port")),
                (vec!["lab".into()], vec!["2201".into()])
            ),
            "secret.lab" => assert_eq!(get("port"), vec!["2299".to_string()]),
            "web1" => assert_eq!(
                get("proxyjump"),
                vec!["bastion1,admin@bastion2:2222".to_string()]
            ),
            "pi" => assert_eq!(get("hostname"), vec!["10.0.0.pi".to_string()]),
            _ => {}
        }
        assert_eq!(
            get("connecttimeout"),
            r.connect_timeout
                .map(|t| vec![t.as_secs().to_string()])
                .unwrap_or_else(|| vec!["none".into()]),
            "{ctx}"
        );
    }
}

fn keygen(args: &[&str]) {
    let out = Command::new("ssh-keygen").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        stderr(&out)
    );
}

/// A user certificate is used, from ssh-agent and from `KEY-cert.pub` beside an identity
/// file: h53 trusts only the CA (the key itself is authorized nowhere), so only the
/// certificate can log in.
#[test]
fn user_certificates_log_in_from_the_agent_and_from_a_cert_file() {
    let _hosts = hosts_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = d.join("ca");
    let user = d.join("user");
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", ca.to_str().unwrap()]);
    keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        user.to_str().unwrap(),
    ]);
    keygen(&[
        "-q",
        "-s",
        ca.to_str().unwrap(),
        "-I",
        "rampart-test",
        "-n",
        "root",
        "-V",
        "+1h",
        &format!("{}.pub", user.display()),
    ]);
    assert!(d.join("user-cert.pub").exists());
    let ca_pub = std::fs::read_to_string(format!("{}.pub", ca.display())).unwrap();
    ssh_root(
        "h53",
        &format!(
            "printf '%s\\n' '{}' > /etc/ssh/rampart_test_ca.pub && \
             (grep -q '^TrustedUserCAKeys' /etc/ssh/sshd_config || echo 'TrustedUserCAKeys /etc/ssh/rampart_test_ca.pub' >> /etc/ssh/sshd_config) && \
             systemctl restart ssh",
            ca_pub.trim()
        ),
    );
    let user_pub = std::fs::read_to_string(format!("{}.pub", user.display())).unwrap();
    let key_b64 = user_pub.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        !ssh_root("h53", "cat /root/.ssh/authorized_keys").contains(&key_b64),
        "the user key itself must not be authorized"
    );
    let home = tempfile::tempdir().unwrap();
    let inv = d.join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  hosts:\n    h53: {{ansible_host: {}, ansible_user: root}}\n",
            addr("h53")
        ),
    )
    .unwrap();

    // 1. From ssh-agent (an agent this test starts, on its own socket).
    let sock = d.join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while !sock.exists() && waited < 500 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    let added = Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &sock)
        .arg(&user)
        .output()
        .unwrap();
    let listed = Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &sock)
        .arg("-l")
        .output()
        .unwrap();
    let facts = |extra_env: Option<&Path>| {
        let mut cmd = rampart(home.path());
        if let Some(sock) = extra_env {
            cmd.env("SSH_AUTH_SOCK", sock);
        }
        cmd.args(["facts", "--format", "json", "-i"])
            .arg(&inv)
            .arg("--known-hosts")
            .arg(known_hosts())
            .output()
            .unwrap()
    };
    let out = facts(Some(&sock));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(added.status.success(), "ssh-add: {}", stderr(&added));
    assert!(
        stdout(&listed).contains("CERT"),
        "the agent holds the certificate: {}",
        stdout(&listed)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(json(&out)["hosts"][0]["status"], "ok");
    let log = ssh_root(
        "h53",
        "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey for root .*ED25519-CERT.*rampart-test' || true",
    );
    assert!(
        log.trim().parse::<u32>().unwrap() >= 1,
        "no certificate login in h53's log: {log}"
    );

    // 2. From `KEY-cert.pub` beside the inventory's identity (no agent).
    std::fs::write(
        &inv,
        format!(
            "all:\n  hosts:\n    h53: {{ansible_host: {}, ansible_user: root, ansible_ssh_private_key_file: {}}}\n",
            addr("h53"),
            user.display()
        ),
    )
    .unwrap();
    let out = facts(None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // Without the certificate file the key alone is refused.
    std::fs::remove_file(d.join("user-cert.pub")).unwrap();
    let out = facts(None);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(json(&out)["hosts"][0]["status"], "auth");
}
