//! What an operator installing rampart gets besides the binary: shell completions that the
//! shell accepts, and a manual page that covers every command.

use std::process::Command;

use super::common::*;

#[test]
fn bash_loads_the_completions_and_the_man_page_names_every_command() {
    let home = tempfile::tempdir().unwrap();
    let out = rampart(home.path())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = home.path().join("rampart.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p rampart",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains("_rampart"), "{}", stdout(&check));

    let out = rampart(home.path()).arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH rampart 1"),
        "{page}"
    );
    for cmd in [
        "plan",
        "apply",
        "drift",
        "audit",
        "facts",
        "schedule",
        "tunnel",
        "completions",
    ] {
        assert!(page.contains(cmd), "the man page does not name `{cmd}`");
    }
    // A shell rampart does not know is an error (exit 1, as every bad argument).
    let out = rampart(home.path())
        .args(["completions", "nosh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// `rampart.toml` supplies what users would repeat: the inventory (from the user's file), the
/// known_hosts and forks (from the one beside the inventory); the command line beats both.
#[test]
fn rampart_toml_supplies_inventory_known_hosts_and_forks() {
    let _hosts = super::ssh_config::hosts_lock();
    let home = tempfile::tempdir().unwrap();
    let fleet = home.path().join("fleet");
    std::fs::create_dir_all(home.path().join("xdg/rampart")).unwrap();
    std::fs::create_dir_all(&fleet).unwrap();
    std::fs::write(
        fleet.join("hosts.ini"),
        format!(
            "h50 ansible_host={} ansible_user=root ansible_ssh_private_key_file={}\n",
            addr("h50"),
            test_key().display()
        ),
    )
    .unwrap();
    std::fs::copy(known_hosts(), fleet.join("known")).unwrap();
    std::fs::write(
        home.path().join("xdg/rampart/rampart.toml"),
        "inventory = \"../../fleet/hosts.ini\"\nknown_hosts = \"/nonexistent\"\n",
    )
    .unwrap();
    std::fs::write(
        fleet.join("rampart.toml"),
        "known_hosts = \"known\"\nforks = 3\n",
    )
    .unwrap();
    let out = rampart(home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg"))
        .args(["facts", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(json(&out)["hosts"][0]["status"], "ok");
    // The command line beats the file: a known_hosts without h50 refuses it.
    let empty = home.path().join("empty_known");
    std::fs::write(&empty, "").unwrap();
    let out = rampart(home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg"))
        .args(["facts", "--format", "json", "--known-hosts"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["hosts"][0]["status"], "host key");
    // An unknown key is an error naming the file.
    std::fs::write(fleet.join("rampart.toml"), "forkz = 3\n").unwrap();
    let out = rampart(home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg"))
        .args(["facts"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rampart.toml") && stderr(&out).contains("forkz"),
        "{}",
        stderr(&out)
    );
}

/// `facts` writes files like the other commands: `-o x.json`, `-o text:FILE`, and `-q`.
#[test]
fn facts_writes_its_report_files() {
    let _hosts = super::ssh_config::hosts_lock();
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(
        dir.path(),
        &[("h50", &format!("ansible_host: {}", addr("h50")))],
    );
    let json_file = dir.path().join("facts.json");
    let text_file = dir.path().join("facts.out");
    let out = rampart(dir.path())
        .args(["facts", "-q", "--format", "json", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg("-o")
        .arg(&json_file)
        .arg("-o")
        .arg(format!("text:{}", text_file.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(written["hosts"][0]["status"], "ok");
    assert_eq!(written["hosts"][0]["name"], json(&out)["hosts"][0]["name"]);
    let text = std::fs::read_to_string(&text_file).unwrap();
    assert!(
        text.contains("h50") && !text.trim_start().starts_with('{'),
        "{text}"
    );
    // A file that cannot be opened fails the run before any host is touched.
    let out = rampart(dir.path())
        .args(["facts", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .args(["-o", "/nonexistent/dir/facts.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

/// `schedule --format json`: the job and its files, for tools that install them their way.
#[test]
fn schedule_prints_its_job_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("hosts.ini");
    let book = dir.path().join("site.yaml");
    std::fs::write(&inv, "w1\n").unwrap();
    std::fs::write(&book, "steps: []\n").unwrap();
    for (extra, scheduler, file) in [
        (None, "systemd", "/etc/systemd/system/rampart-drift.service"),
        (Some("--cron"), "cron", "/etc/cron.d/rampart-drift"),
    ] {
        let mut cmd = rampart(dir.path());
        cmd.args(["schedule", "--format", "json", "-i"])
            .arg(&inv)
            .arg(&book);
        if let Some(e) = extra {
            cmd.arg(e);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let job = json(&out);
        assert_eq!(job["scheduler"], scheduler);
        assert_eq!(job["files"][0]["path"], file);
        let command: Vec<&str> = job["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(command.contains(&"drift"), "{command:?}");
        let content = job["files"][0]["content"].as_str().unwrap();
        assert!(content.contains(inv.to_str().unwrap()), "{content}");
    }
}
