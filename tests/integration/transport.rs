//! The SSH transport on testbed hosts: host key checking, authentication, jump hosts,
//! timeouts. Each test that changes a host uses its own: h3 gets extra authorized keys,
//! h4 gets new host keys.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rampart::transport::Session;
use rampart::transport::ssh::{self, ConnectOptions, Endpoint, Target};

use super::common::*;

fn facts(home: &Path, inv: &Path, known: &Path, extra: &[&str]) -> std::process::Output {
    rampart(home)
        .args(["facts", "--format", "json", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known)
        .args(extra)
        .output()
        .unwrap()
}

fn status_of(out: &std::process::Output, name: &str) -> (String, String) {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)));
    let h = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap()
        .clone();
    (
        h["status"].as_str().unwrap().to_string(),
        h["error"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn unknown_host_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(
        dir.path(),
        &[("h1", &format!("ansible_host: {}", addr("h1")))],
    );
    let known = dir.path().join("known_hosts");
    let out = facts(dir.path(), &inv, &known, &[]);
    assert_eq!(out.status.code(), exit_code(Outcome::Failed));
    let (status, error) = status_of(&out, "h1");
    assert_eq!(status, "host key");
    let fp = fingerprint_of(&host_pub("h1"), "ssh-ed25519");
    assert_eq!(
        error,
        format!(
            "host key of {} is not known ({fp}); refusing to connect",
            addr("h1")
        )
    );
    assert!(!known.exists(), "nothing is recorded without --accept-new");
}

#[test]
fn accept_new_records_hashed_and_then_connects() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(
        dir.path(),
        &[
            ("h1", &format!("ansible_host: {}", addr("h1"))),
            ("h2", &format!("ansible_host: {}", addr("h2"))),
        ],
    );
    let known = dir.path().join("kh/known_hosts");
    let out = facts(dir.path(), &inv, &known, &["--accept-new"]);
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = std::fs::read_to_string(&known).unwrap();
    assert_eq!(text.lines().count(), 2, "one line per host: {text}");
    assert!(text.lines().all(|l| l.starts_with("|1|")), "hashed: {text}");
    assert!(!text.contains(&addr("h1")), "no address in clear: {text}");
    // OpenSSH itself finds the recorded entry.
    let found = Command::new("ssh-keygen")
        .arg("-F")
        .arg(addr("h1"))
        .arg("-f")
        .arg(&known)
        .output()
        .unwrap();
    assert!(found.status.success(), "{}", stderr(&found));
    // And without --accept-new the recorded keys are now enough.
    let again = facts(dir.path(), &inv, &known, &[]);
    assert_eq!(
        again.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        text,
        "nothing recorded twice"
    );
}

#[test]
fn a_changed_host_key_is_refused_naming_both_fingerprints() {
    let old_fp = fingerprint_of(&host_pub("h4"), "ssh-ed25519");
    // Keep the old key's record, then give h4 new host keys as a rebuild would.
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::copy(known_hosts(), &known).unwrap();
    let new_pub = ssh_root_unchecked(
        "h4",
        "rm -f /etc/ssh/ssh_host_*; ssh-keygen -q -A; cat /etc/ssh/ssh_host_ed25519_key.pub; systemctl restart ssh",
    );
    let new_fp = fingerprint_of(&new_pub, "ssh-ed25519");
    assert_ne!(old_fp, new_fp);
    let inv = write_inventory(
        dir.path(),
        &[("h4", &format!("ansible_host: {}", addr("h4")))],
    );
    // --accept-new does not accept a changed key.
    let out = facts(dir.path(), &inv, &known, &["--accept-new"]);
    assert_eq!(out.status.code(), exit_code(Outcome::Failed));
    let (status, error) = status_of(&out, "h4");
    assert_eq!(status, "host key");
    assert!(
        error.contains(&format!("HOST KEY OF {} HAS CHANGED", addr("h4"))),
        "{error}"
    );
    assert!(error.contains(&format!("presented: {new_fp}")), "{error}");
    assert!(
        error.contains(&format!("recorded:  ssh-ed25519 {old_fp}")),
        "{error}"
    );
    // The text output carries the remedy.
    let text = rampart(dir.path())
        .args(["facts", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(&known)
        .output()
        .unwrap();
    assert!(
        stdout(&text).contains(&format!(
            "hint: if {} was rebuilt, remove the old key with `ssh-keygen -R",
            addr("h4")
        )),
        "{}",
        stdout(&text)
    );
}

#[test]
fn a_revoked_host_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let ed = host_pub("h1")
        .lines()
        .find(|l| l.starts_with("ssh-ed25519"))
        .unwrap()
        .to_string();
    let mut text = std::fs::read_to_string(known_hosts()).unwrap();
    text.push_str(&format!("@revoked * {ed}\n"));
    std::fs::write(&known, &text).unwrap();
    let inv = write_inventory(
        dir.path(),
        &[("h1", &format!("ansible_host: {}", addr("h1")))],
    );
    let out = facts(dir.path(), &inv, &known, &[]);
    assert_eq!(out.status.code(), exit_code(Outcome::Failed));
    let (status, error) = status_of(&out, "h1");
    assert_eq!(status, "host key");
    let line = text.lines().count();
    assert!(
        error.contains(&format!("is REVOKED in {}:{line}", known.display())),
        "{error}"
    );
}

#[test]
fn jump_host_connection_goes_through_the_bastion() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(
        dir.path(),
        &[
            ("h1", &format!("ansible_host: {}", addr("h1"))),
            ("h2", &format!("ansible_host: {}, jump: h1", addr("h2"))),
        ],
    );
    let out = facts(dir.path(), &inv, &known_hosts(), &["--limit", "h2"]);
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let (status, _) = status_of(&out, "h2");
    assert_eq!(status, "ok");
    // h2's sshd saw the login come from h1's address, not from the controller's.
    let log = ssh_root(
        "h2",
        &format!(
            "journalctl -u ssh --no-pager -o cat | grep 'Accepted publickey for root from {} ' | tail -n 1",
            addr("h1")
        ),
    );
    assert!(
        log.contains("Accepted publickey"),
        "no login from h1 in h2's log: {log:?}"
    );

    // A jump host that refuses the connection is named in the error.
    let inv = write_inventory(
        dir.path(),
        &[(
            "h2",
            &format!("ansible_host: {}, jump: 'root@127.0.0.1:1'", addr("h2")),
        )],
    );
    let out = facts(dir.path(), &inv, &known_hosts(), &[]);
    assert_eq!(out.status.code(), exit_code(Outcome::Failed));
    let (status, error) = status_of(&out, "h2");
    assert_eq!(status, "unreachable");
    assert!(
        error.starts_with("through jump host root@127.0.0.1:1: cannot reach"),
        "{error}"
    );
}

fn options(known: &Path) -> ConnectOptions {
    ConnectOptions::new(known.to_path_buf(), false, Duration::from_secs(10))
}

fn target(host: &str, user: &str, identity: Option<&Path>) -> Target {
    Target {
        endpoint: Endpoint {
            name: host.into(),
            address: addr(host),
            port: 22,
            user: user.into(),
            identity: identity.map(Path::to_path_buf),
        },
        jump: None,
    }
}

#[tokio::test]
async fn a_command_that_runs_too_long_times_out_and_the_session_stays_usable() {
    let s = ssh::connect(
        &target("h1", "root", Some(&test_key())),
        &options(&known_hosts()),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = s
        .exec("sleep 30", b"", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(err, rampart::transport::ExecError::Timeout(_)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = s
        .exec("cat; exit 7", b"still here", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.exit_status),
        (&b"still here"[..], Some(7))
    );
    assert_eq!(s.stats().snapshot().round_trips, 2);
    s.close().await;
}

#[tokio::test]
async fn exec_streams_large_stdin_and_separates_stdout_and_stderr() {
    let s = ssh::connect(
        &target("h1", "root", Some(&test_key())),
        &options(&known_hosts()),
    )
    .await
    .unwrap();
    let input: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = s
        .exec(
            "sha256sum; echo to-stderr >&2",
            &input,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    use std::io::Write;
    let mut local = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    local.stdin.take().unwrap().write_all(&input).unwrap();
    let expected = local.wait_with_output().unwrap().stdout;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(out.stderr, b"to-stderr\n");
    assert!(out.success());
    s.close().await;
}

/// Authorizes an extra public key for root on h3.
fn authorize_on_h3(pub_path: &Path) {
    let line = std::fs::read_to_string(pub_path).unwrap();
    ssh_root(
        "h3",
        &format!(
            "grep -qxF '{0}' /root/.ssh/authorized_keys || echo '{0}' >> /root/.ssh/authorized_keys",
            line.trim()
        ),
    );
}

fn keygen(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-C", name, "-f"])
        .arg(&path)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success());
    path
}

#[tokio::test]
async fn an_encrypted_key_is_opened_with_the_passphrase_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "enc", &["-t", "ed25519", "-N", "correct horse"]);
    authorize_on_h3(&key.with_extension("pub"));
    let inv = write_inventory(
        dir.path(),
        &[(
            "h3",
            &format!(
                "ansible_host: {}, ansible_ssh_private_key_file: {}",
                addr("h3"),
                key.display()
            ),
        )],
    );
    let ok = rampart(dir.path())
        .env("RAMPART_KEY_PASSPHRASE", "correct horse")
        .args(["facts", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), exit_code(Outcome::Ok), "{}", stdout(&ok));
    let bad = rampart(dir.path())
        .env("RAMPART_KEY_PASSPHRASE", "wrong")
        .args(["facts", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), exit_code(Outcome::Failed));
    let (status, error) = status_of(&bad, "h3");
    assert_eq!(status, "auth");
    assert_eq!(
        error,
        format!("cannot use identity {}: wrong passphrase", key.display())
    );
}

#[tokio::test]
async fn rsa_keys_sign_with_sha2() {
    // Debian 12's OpenSSH refuses ssh-rsa (SHA-1) signatures: success means SHA-2 was used.
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
    authorize_on_h3(&key.with_extension("pub"));
    let s = ssh::connect(&target("h3", "root", Some(&key)), &options(&known_hosts()))
        .await
        .unwrap();
    let out = s
        .exec("echo ok", b"", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
}

#[test]
fn with_no_identity_the_agent_then_the_default_key_files_are_used() {
    // Agent: a fresh ssh-agent holding the testbed key, a HOME without keys.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let added = Command::new("ssh-add")
        .arg(test_key())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", stderr(&added));
    let inv = dir.path().join("inv.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  hosts:\n    h1: {{ansible_host: {}, ansible_user: root}}\n",
            addr("h1")
        ),
    )
    .unwrap();
    let via_agent = rampart(dir.path())
        .env("SSH_AUTH_SOCK", &sock)
        .args(["facts", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(
        via_agent.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&via_agent)
    );

    // Without agent and keys: refused, saying nothing was found.
    let none = rampart(dir.path())
        .args(["facts", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap();
    assert_eq!(none.status.code(), exit_code(Outcome::Failed));
    let (status, error) = status_of(&none, "h1");
    assert_eq!(
        (status.as_str(), error.as_str()),
        (
            "auth",
            format!(
                "root@{}:22 refused every key offered (tried: none found)",
                addr("h1")
            )
            .as_str()
        )
    );

    // Default key file: ~/.ssh/id_ed25519, as OpenSSH.
    std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
    std::fs::copy(test_key(), dir.path().join(".ssh/id_ed25519")).unwrap();
    let via_file = rampart(dir.path())
        .args(["facts", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap();
    assert_eq!(
        via_file.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&via_file)
    );
}

#[tokio::test]
async fn a_refused_admin_login_falls_back_to_the_bootstrap_user() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(
        dir.path(),
        &[(
            "h1",
            &format!(
                "ansible_host: {}, ansible_user: admin, bootstrap_user: root",
                addr("h1")
            ),
        )],
    );
    let out = facts(dir.path(), &inv, &known_hosts(), &[]);
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&out)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &json["hosts"][0];
    assert_eq!(h["login"], "root");
    assert_eq!(
        h["note"],
        "login as admin refused; logged in as bootstrap user root"
    );
}
