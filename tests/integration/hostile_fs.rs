//! The agent's account as the attacker, on its own folders (issue 9, items 1-3): it plants
//! symbolic links where rampart manages a folder or on the way to a file, races the temporary
//! files of rampart's atomic writes from a tight loop, and names folders with newlines for the
//! quarantine step. Each attack runs against the real binary on a real host, and each must
//! fail: nothing under /etc or /usr/local changes owner, mode or content (every entry's owner,
//! group, mode and link target, and every file's SHA-256, compared before and after), and the
//! run says so (a refused step, a finding).
//!
//! Hosts: h29 (the planted links, then the temp-file race; one test, run in order) and h30
//! (the quarantine step of playbooks/agent-gateway.yaml), h41 (the drift scan's reads in the
//! agent's folders). Each test recreates the agent's account `openclaw` first, so they can run
//! again on the same hosts.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::common::*;

const LINK_HOST: &str = "h29";
const QUARANTINE_HOST: &str = "h30";
const STATE: &str = "/home/openclaw/.openclaw";

/// The agent's folders, config, SOUL.md and .gitignore, as agent-gateway.yaml writes them.
const PLAYBOOK: &str = r#"steps:
  - name: agent home
    directory: {path: /home/openclaw, owner: openclaw, group: openclaw, mode: "0700"}
  - name: state folder
    directory: {path: /home/openclaw/.openclaw, owner: openclaw, group: openclaw, mode: "0700"}
  - name: logs
    directory: {path: /home/openclaw/.openclaw/logs, owner: openclaw, group: openclaw, mode: "0700"}
  - name: workspace
    directory: {path: /home/openclaw/.openclaw/workspace, owner: openclaw, group: openclaw, mode: "0700"}
  - name: config
    json_config:
      path: /home/openclaw/.openclaw/openclaw.json
      owner: openclaw
      group: openclaw
      mode: "0600"
      settings: {gateway: {bind: loopback, port: 18789}}
  - name: soul
    file:
      path: /home/openclaw/.openclaw/workspace/SOUL.md
      content: "Never reveal secrets.\n"
      owner: openclaw
      group: openclaw
      mode: "0600"
  - name: gitignore
    lines:
      path: /home/openclaw/.openclaw/workspace/.gitignore
      present: [".env", "*.key"]
      owner: openclaw
      group: openclaw
      mode: "0600"
"#;

/// A new, empty agent account on `host` (its processes, home and old quarantine gone).
fn reset_agent(host: &str) {
    ssh_root(
        host,
        "pkill -KILL -u openclaw 2>/dev/null; sleep 0.2; userdel -r openclaw >/dev/null 2>&1; \
         rm -rf /home/openclaw /etc/openclaw /var/lib/rampart/quarantine /etc/rampart-victim \
         /tmp/rampart-race.sh; useradd -m -U -s /bin/sh openclaw",
    );
}

/// Runs `script` as the agent on `host`.
fn as_agent(host: &str, script: &str) -> String {
    ssh_root(
        host,
        &format!(
            "runuser -u openclaw -- sh -c {}",
            rampart::remote::quote(script).unwrap()
        ),
    )
}

/// Every entry under /etc and /usr/local with owner, group, mode and link target, then every
/// file's SHA-256: what no attack may change.
fn system_state(host: &str) -> String {
    ssh_root(
        host,
        "find /etc /usr/local -xdev -printf '%p %U %G %m %l\\n' | sort; \
         find /etc /usr/local -xdev -type f -exec sha256sum {} + | sort",
    )
}

/// Fails with the lines that differ.
fn assert_same_state(before: &str, after: &str, what: &str) {
    if before == after {
        return;
    }
    let old: std::collections::BTreeSet<&str> = before.lines().collect();
    let new: std::collections::BTreeSet<&str> = after.lines().collect();
    let gone: Vec<&&str> = old.difference(&new).take(20).collect();
    let came: Vec<&&str> = new.difference(&old).take(20).collect();
    panic!("{what} changed /etc or /usr/local:\n  before: {gone:#?}\n  after: {came:#?}");
}

fn write_playbook(dir: &Path) -> PathBuf {
    let p = dir.join("agent.yaml");
    std::fs::write(&p, PLAYBOOK).unwrap();
    p
}

fn run(dir: &Path, inv: &Path, cmd: &str, playbook: &Path, extra: &[&str]) -> Output {
    rampart(dir)
        .args([cmd, "--format", "json", "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .args(extra)
        .arg(playbook)
        .output()
        .unwrap()
}

/// `(name, status, detail)` of every step of `name` in a JSON report.
fn steps(report: &Value, name: &str) -> Vec<(String, String, String)> {
    host(report, name)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
                s["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn failed_detail(report: &Value, host_name: &str, step: &str) -> String {
    let all = steps(report, host_name);
    let (_, status, detail) = all
        .iter()
        .find(|(n, _, _)| n == step)
        .unwrap_or_else(|| panic!("no step {step} in {all:?}"));
    assert_eq!(status, "failed", "step {step}: {all:#?}");
    detail.clone()
}

#[test]
fn planted_links_and_temp_file_races_gain_the_agent_nothing() {
    let h = LINK_HOST;
    reset_agent(h);
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &[(h, &format!("address: {}", addr(h)))]);
    let pb = write_playbook(dir.path());

    let first = run(dir.path(), &inv, "apply", &pb, &[]);
    assert_eq!(
        first.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stderr(&first)
    );
    assert_eq!(
        ssh_root(h, &format!("stat -c '%U %a' {STATE}/workspace/SOUL.md")),
        "openclaw 600\n"
    );

    // 1. The agent swaps its logs folder for a link to systemd's units, and its workspace
    //    (a folder on the way to SOUL.md and .gitignore) for a link to /etc.
    as_agent(
        h,
        &format!(
            "rm -rf {STATE}/logs && ln -s /etc/systemd/system {STATE}/logs && \
             mv {STATE}/workspace {STATE}/ws.old && ln -s /etc {STATE}/workspace"
        ),
    );
    let before = system_state(h);

    let apply = run(dir.path(), &inv, "apply", &pb, &[]);
    assert_same_state(&before, &system_state(h), "the apply through planted links");
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Failed),
        "{}",
        stdout(&apply)
    );
    let report = json(&apply);
    let logs = failed_detail(&report, h, "logs");
    assert!(
        logs.contains("refusing to follow /home/openclaw/.openclaw/logs")
            && logs.contains("/etc/systemd/system")
            && logs.contains("openclaw (uid"),
        "{logs}"
    );
    for step in ["workspace", "soul", "gitignore"] {
        let d = failed_detail(&report, h, step);
        assert!(
            d.contains("refusing to follow /home/openclaw/.openclaw/workspace"),
            "{step}: {d}"
        );
    }

    let drift = run(dir.path(), &inv, "drift", &pb, &[]);
    let report = json(&drift);
    let planted: Vec<(String, String)> = host(&report, h)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "fs.symlink")
        .map(|f| {
            (
                f["subject"].as_str().unwrap().to_string(),
                f["evidence"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let subjects: Vec<&str> = planted.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        subjects.contains(&"/home/openclaw/.openclaw/logs")
            && subjects.contains(&"/home/openclaw/.openclaw/workspace"),
        "drift names both planted links: {planted:#?}\n{}",
        stdout(&drift)
    );
    assert!(
        planted
            .iter()
            .any(|(_, e)| e.contains("-> /etc/systemd/system")),
        "{planted:#?}"
    );
    assert_ne!(
        drift.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&drift)
    );

    // 2. The agent races the temporary files of the atomic writes: a tight loop, as the
    //    agent, swaps every `.rampart.*` file in its folders for a link to a root file while
    //    three applies rewrite its config, SOUL.md and .gitignore.
    as_agent(
        h,
        &format!(
            "rm -f {STATE}/logs {STATE}/workspace && mv {STATE}/ws.old {STATE}/workspace && \
             mkdir {STATE}/logs"
        ),
    );
    ssh_root(
        h,
        "printf 'untouched\\n' >/etc/rampart-victim && chmod 0644 /etc/rampart-victim",
    );
    let again = run(dir.path(), &inv, "apply", &pb, &[]);
    assert_eq!(
        again.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&again)
    );
    let before = system_state(h);
    let race = format!(
        r#"n=0
while [ ! -e /home/openclaw/stop ]; do
  for t in {STATE}/.rampart.* {STATE}/workspace/.rampart.*; do
    [ -f "$t" ] && [ ! -L "$t" ] || continue
    if rm -f "$t" 2>/dev/null && ln -s /etc/rampart-victim "$t" 2>/dev/null; then
      n=$((n + 1)); echo "$n" >/home/openclaw/swaps
    fi
  done
done
"#
    );
    as_agent(h, "rm -f /home/openclaw/stop /home/openclaw/swaps");
    ssh_root(
        h,
        &format!(
            "printf '%s' {} >/tmp/rampart-race.sh\n\
             nohup timeout 300 runuser -u openclaw -- sh /tmp/rampart-race.sh >/dev/null 2>&1 </dev/null &",
            rampart::remote::quote(&race).unwrap()
        ),
    );
    let mut outcomes = Vec::new();
    for i in 0..3 {
        as_agent(
            h,
            &format!(
                "cd {STATE} && printf '{{\"gateway\": {{\"bind\": \"lan\", \"port\": {i}}}}}' \
                 >openclaw.json && echo tampered >>workspace/SOUL.md && \
                 printf 'target/\\n' >workspace/.gitignore"
            ),
        );
        let out = run(dir.path(), &inv, "apply", &pb, &[]);
        let failed: Vec<(String, String, String)> = steps(&json(&out), h)
            .into_iter()
            .filter(|(_, s, _)| s == "failed")
            .collect();
        outcomes.push((out.status.code(), failed));
    }
    as_agent(h, "touch /home/openclaw/stop");
    ssh_root(h, "sleep 0.5; pkill -KILL -u openclaw 2>/dev/null; true");
    let swaps: u32 = ssh_root(h, "cat /home/openclaw/swaps 2>/dev/null || echo 0")
        .trim()
        .parse()
        .unwrap();
    assert!(
        swaps > 0,
        "the loop never swapped a temporary file: {outcomes:#?}"
    );
    assert_same_state(&before, &system_state(h), "the temp-file race");
    assert_eq!(
        ssh_root(
            h,
            "stat -c '%U %G %a' /etc/rampart-victim && cat /etc/rampart-victim"
        ),
        "root root 644\nuntouched\n"
    );
    // Each won swap made the agent's own write fail: refused steps, never a root write.
    assert!(
        outcomes
            .iter()
            .any(|(code, failed)| *code == exit_code(Outcome::Failed) && !failed.is_empty()),
        "{swaps} swaps, yet no apply reported a refused step: {outcomes:#?}"
    );
    reset_agent(h);
}

#[test]
fn quarantine_moves_only_the_agents_own_files() {
    let h = QUARANTINE_HOST;
    reset_agent(h);
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &[(h, &format!("address: {}", addr(h)))]);
    let pb = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/agent-gateway.yaml");
    let first = run(dir.path(), &inv, "apply", &pb, &["--tags", "secrets"]);
    assert_eq!(
        first.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&first)
    );

    // A file with a key in a folder named "x\n" (in it, etc/shadow): read line by line,
    // find's output names /home/openclaw/x (a decoy file, so that a move succeeds first) and
    // then /etc/shadow.
    let key = "sk-ant-api03-QuArAnTiNeMe0123456789abcdef";
    as_agent(
        h,
        &format!(
            "mkdir -p \"$HOME/x\n/etc\" && printf 'k=%s\\n' {key} >\"$HOME/x\n/etc/shadow\" && \
             printf 'k=%s\\n' {key} >\"$HOME/notes.txt\" && echo decoy >\"$HOME/x\""
        ),
    );
    let before = system_state(h);
    let out = run(dir.path(), &inv, "apply", &pb, &["--tags", "secrets"]);
    assert_same_state(&before, &system_state(h), "the quarantine step");
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&out)
    );
    let step = steps(&json(&out), h)
        .into_iter()
        .find(|(n, _, _)| n.starts_with("no plaintext secrets"))
        .unwrap();
    assert_eq!(step.1, "changed", "{step:?}");
    // Both of the agent's files went to quarantine, under their own names; its folder stays.
    let listing = ssh_root(
        h,
        "cd /var/lib/rampart/quarantine/*/home/openclaw && find . -type f -print0 | sort -z | \
         tr '\\0' '|'; echo; find \"/home/openclaw/x\n\" | tr '\\n' '|'; echo; \
         stat -c '%a' /var/lib/rampart/quarantine/*; cat /home/openclaw/x",
    );
    assert_eq!(
        listing,
        "./notes.txt|./x\n/etc/shadow|\n/home/openclaw/x||/home/openclaw/x|/etc|\n700\ndecoy\n",
        "{listing:?}"
    );
    reset_agent(h);
}

/// The drift scan reads the agent's folders too (its config, .gitignore, skills, secrets): as
/// root it used to follow the agent's links there, so a config linked to a root-only file, or
/// a skills folder linked to /root, put what root alone may read into findings
/// (`agent.bind` from the root file's content, `skill.unpinned` naming root's files). Now
/// the scan walks to each folder as the steps do and reads as the agent; a name with a
/// newline is not listed line by line but counted (`fs.odd_name`). Host: h41.
#[test]
fn the_scan_reads_the_agents_folders_as_the_agent_and_follows_none_of_its_links() {
    let host = "h41";
    reset_agent(host);
    ssh_root(
        host,
        &format!(
            "set -e
             install -d -o openclaw -g openclaw -m 700 {STATE} {STATE}/workspace
             umask 077
             printf '{{\"gateway\": {{\"bind\": \"lan\", \"auth\": {{\"mode\": \"none\"}}}}}}\\n' >/root/decoy.json
             : >/root/root-only-name
             runuser -u openclaw -- ln -s /root/decoy.json {STATE}/openclaw.json
             runuser -u openclaw -- ln -s /root {STATE}/skills
             runuser -u openclaw -- sh -c 'printf \"key sk-ant-%s\\n\" AAAAAAAAAAAAAAAAAAAAAAAA >\"{STATE}/workspace/x
y\"'"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &[(host, &format!("address: {}", addr(host)))]);
    let book = dir.path().join("scan.yaml");
    std::fs::write(
        &book,
        "vars: {agent_user: openclaw, agent_flavor: openclaw}\nsteps:\n  - command: {run: 'true', unless: 'true'}\n",
    )
    .unwrap();
    let out = rampart(dir.path())
        .args(["drift", "--format", "json", "-q", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(&book)
        .output()
        .unwrap();
    let report = json(&out);
    let findings = report["hosts"][0]["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<(String, String)> = findings
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let text = serde_json::to_string(&report).unwrap();
    assert!(
        !text.contains("root-only-name") && !text.contains("decoy.json\""),
        "root's files were listed through the agent's link: {ids:?}"
    );
    assert!(
        !ids.iter().any(|(id, _)| id == "agent.bind"),
        "the root-only file's content was read through the agent's link: {ids:?}"
    );
    assert!(
        ids.iter().any(|(id, _)| id == "fs.odd_name"),
        "the newline name is not reported: {ids:?}"
    );
    assert!(
        !ids.iter()
            .any(|(id, s)| id == "secret.plaintext" && s.contains("workspace/x")),
        "a newline name was parsed as lines: {ids:?}"
    );
}
