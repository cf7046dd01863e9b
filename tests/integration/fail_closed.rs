//! Failing closed (issue 9, item 9): bad arguments, a run over no host, a report that cannot
//! be written, a host without `flock`, and backups that pile up.
//!
//! Host: h34 only (its flock is moved away and put back, its backups are pruned). The tests
//! that change it hold [`H34`], so they never run on it at once.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

use assert_cmd::Command as Cmd;
use rampart::exit::Outcome;

use super::common::*;

const HOST: &str = "h34";

/// One test at a time on h34: the lock test holds the host's apply lock on purpose.
static H34: Mutex<()> = Mutex::new(());

fn h34() -> std::sync::MutexGuard<'static, ()> {
    H34.lock().unwrap_or_else(|e| e.into_inner())
}

fn code(out: &Output) -> u8 {
    out.status.code().expect("exited") as u8
}

fn inventory_h34(dir: &Path, extra: &str) -> PathBuf {
    write_inventory(
        dir,
        &[(HOST, &format!("ansible_host: {}{extra}", addr(HOST)))],
    )
}

fn playbook(dir: &Path, name: &str, steps: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("steps:\n{steps}")).unwrap();
    p
}

fn apply(dir: &Path, inv: &Path, book: &Path, extra: &[&str]) -> Output {
    rampart(dir)
        .args(["apply", "--format", "json", "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(book)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn arguments_out_of_range_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &[("nowhere", "ansible_host: 127.0.0.1")]);
    let book = playbook(dir.path(), "p.yaml", "  - command: {run: 'true'}\n");
    let cases: &[(&[&str], &str)] = &[
        (&["--forks", "0"], "1..=4096"),
        (&["--forks", "2305843009213693952"], "1..=4096"),
        (&["--timeout", "0"], "1..=604800"),
        (&["--connect-timeout", "0"], "1..=3600"),
        (&["--deadman-seconds", "0"], "5..=86400"),
        (&["--keep-backups", "0"], "1..=100000"),
    ];
    for (args, range) in cases {
        let out = Cmd::cargo_bin("rampart")
            .unwrap()
            .env("HOME", dir.path())
            .args(["plan", "-i"])
            .arg(&inv)
            .arg(&book)
            .args(*args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), Outcome::FAILED, "{args:?}: {err}");
        assert!(
            err.contains(range) && err.contains(args[0]),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn no_host_to_run_on_is_an_error_and_writes_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let book = playbook(dir.path(), "p.yaml", "  - command: {run: 'true'}\n");
    let prom = dir.path().join("rampart.prom");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "all:\n  hosts: {}\n").unwrap();
    // h34 is named, but the group the limit picks has no hosts: nothing connects to it.
    let grouped = dir.path().join("grouped.yaml");
    std::fs::write(
        &grouped,
        format!(
            "all:\n  hosts:\n    {HOST}: {{ansible_host: {}}}\n  children:\n    nobody:\n      hosts: {{}}\n",
            addr(HOST)
        ),
    )
    .unwrap();
    let cases: &[(&Path, &[&str], &str)] = &[
        (&empty, &[], "lists no host"),
        (&grouped, &["--limit", "nobody"], "selects no host"),
        (&grouped, &["--limit", ""], "--limit names no pattern"),
        (&grouped, &["--limit", "web-*"], "matches no host or group"),
    ];
    for (inv, extra, says) in cases {
        for cmd in ["drift", "plan", "apply", "audit"] {
            let out = rampart(dir.path())
                .args([cmd, "-q", "-o"])
                .arg(&prom)
                .arg("-i")
                .arg(inv)
                .arg("--known-hosts")
                .arg(known_hosts())
                .arg(&book)
                .args(*extra)
                .output()
                .unwrap();
            let err = stderr(&out);
            assert_eq!(code(&out), Outcome::FAILED, "{cmd} {extra:?}: {err}");
            assert!(err.contains(says) && err.contains("hint:"), "{err}");
            assert!(!prom.exists(), "{cmd} {extra:?} wrote a report");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().contains("rampart.prom"))
                .collect();
            assert!(left.is_empty(), "temporary reports left: {left:?}");
        }
        let out = rampart(dir.path())
            .args(["facts", "-i"])
            .arg(inv)
            .arg("--known-hosts")
            .arg(known_hosts())
            .args(*extra)
            .output()
            .unwrap();
        assert_eq!(code(&out), Outcome::FAILED, "facts {extra:?}");
    }
}

#[test]
fn an_unwritable_report_is_refused_before_any_host_is_touched() {
    let _h = h34();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("/tmp/rampart-unwritable-{}", std::process::id());
    ssh_root(HOST, &format!("rm -f {marker}"));
    let inv = inventory_h34(dir.path(), "");
    let book = playbook(
        dir.path(),
        "p.yaml",
        &format!("  - command: {{run: 'touch {marker}', creates: '{marker}'}}\n"),
    );
    // A folder where the report should be, and a folder no file can be made in (root can).
    let folder = dir.path().join("report.json");
    std::fs::create_dir(&folder).unwrap();
    for target in [folder.display().to_string(), "/proc/rampart.prom".into()] {
        let out = apply(dir.path(), &inv, &book, &["-o", &target]);
        let err = stderr(&out);
        assert_eq!(code(&out), Outcome::FAILED, "{err}");
        assert!(
            err.contains(&format!("--output {target}: cannot write there"))
                && err.contains("hint:"),
            "{err}"
        );
        assert_eq!(
            ssh_root(
                HOST,
                &format!("[ -e {marker} ] && echo applied || echo untouched")
            ),
            "untouched\n",
            "-o {target}: the host was changed before the report was found unwritable"
        );
    }
}

/// However the lock test ends: lets its run A finish (`go`) and puts /usr/bin/flock back.
struct Cleanup {
    go: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Failed midway, run A may still wait on h34: let it go. Else A is done: tidy up.
        let go = if std::thread::panicking() {
            format!("touch {}", self.go)
        } else {
            format!("rm -f {}", self.go)
        };
        ssh_root(
            HOST,
            &format!("{go}; [ ! -e /usr/bin/flock.away ] || mv /usr/bin/flock.away /usr/bin/flock"),
        );
    }
}

#[test]
fn without_flock_a_second_apply_is_refused_by_the_run_holding_the_lock() {
    let _h = h34();
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("rampart-lock-{}", std::process::id());
    let (go, a_done, b_ran) = (
        format!("/tmp/{tag}-go"),
        format!("/tmp/{tag}-a"),
        format!("/tmp/{tag}-b"),
    );
    ssh_root(
        HOST,
        &format!(
            "rm -rf {go} {a_done} {b_ran} /var/lib/rampart/lock.d; mv /usr/bin/flock /usr/bin/flock.away"
        ),
    );
    let _cleanup = Cleanup { go: go.clone() };
    assert_eq!(ssh_root(HOST, "command -v flock || echo none"), "none\n");
    let inv = inventory_h34(dir.path(), "");
    // Run A holds the lock until the test lets it go; run B only needs the lock.
    let book_a = playbook(
        dir.path(),
        "a.yaml",
        &format!(
            "  - command: {{run: 'while [ ! -e {go} ]; do sleep 0.2; done; touch {a_done}', creates: '{a_done}'}}\n"
        ),
    );
    let book_b = playbook(
        dir.path(),
        "b.yaml",
        &format!("  - command: {{run: 'touch {b_ran}', creates: '{b_ran}'}}\n"),
    );
    let run_a = rampart(dir.path())
        .args(["apply", "--format", "json", "-q", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(&book_a)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until A holds the folder lock, and read the run it names.
    let mut holder = String::new();
    for _ in 0..300 {
        holder = ssh_root(HOST, "cat /var/lib/rampart/lock.d/run 2>/dev/null || true");
        if !holder.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let holder = holder.trim().to_string();
    assert!(!holder.is_empty(), "run A never took the folder lock");

    let out_b = apply(dir.path(), &inv, &book_b, &[]);
    ssh_root(HOST, &format!("touch {go}"));
    let out_a = run_a.wait_with_output().unwrap();

    let report_b = json(&out_b);
    assert_eq!(code(&out_b), Outcome::FAILED, "{report_b:#}");
    let error = host(&report_b, HOST)["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("locked by run {holder}")) && error.contains("lock.d"),
        "{report_b:#}"
    );
    assert_eq!(
        ssh_root(HOST, &format!("[ -e {b_ran} ] && echo ran || echo refused")),
        "refused\n"
    );
    let report_a = json(&out_a);
    assert_eq!(code(&out_a), Outcome::OK, "{report_a:#}");
    assert_eq!(report_a["run_id"], holder.as_str());
    // A's lock is gone with A: the next run takes it.
    assert_eq!(
        ssh_root(
            HOST,
            "[ -e /var/lib/rampart/lock.d ] && echo held || echo free"
        ),
        "free\n"
    );
    let again = apply(dir.path(), &inv, &book_b, &[]);
    assert_eq!(code(&again), Outcome::OK, "{}", stdout(&again));
    ssh_root(HOST, &format!("rm -f {a_done} {b_ran}"));
}

#[test]
fn backups_keep_the_newest_runs_only() {
    let _h = h34();
    let dir = tempfile::tempdir().unwrap();
    let file = "/etc/rampart-prune-test";
    ssh_root(
        HOST,
        &format!("rm -rf /var/lib/rampart/backups; echo old > {file}"),
    );
    let change = |n: usize, inv: &Path, extra: &[&str]| -> String {
        let book = playbook(
            dir.path(),
            "p.yaml",
            &format!("  - file: {{path: {file}, content: \"run {n}\\n\", mode: '0600'}}\n"),
        );
        let out = apply(dir.path(), inv, &book, extra);
        let report = json(&out);
        assert_eq!(code(&out), Outcome::OK, "{report:#}");
        assert_eq!(host(&report, HOST)["status"], "changed", "{report:#}");
        report["run_id"].as_str().unwrap().to_string()
    };
    let backups = || -> Vec<String> {
        let mut names: Vec<String> = ssh_root(HOST, "ls -1 /var/lib/rampart/backups")
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };
    let newest = |runs: &[String], n: usize| -> Vec<String> {
        let mut kept = runs[runs.len() - n..].to_vec();
        kept.sort();
        kept
    };

    let inv = inventory_h34(dir.path(), "");
    let mut runs = Vec::new();
    for n in 0..12 {
        runs.push(change(n, &inv, &[]));
    }
    assert_eq!(backups(), newest(&runs, 10), "runs: {runs:?}");
    // Every kept backup is the file as the run before it left it.
    let oldest_kept = &runs[2];
    assert_eq!(
        ssh_root(
            HOST,
            &format!("cat /var/lib/rampart/backups/{oldest_kept}{file}")
        ),
        "run 1\n"
    );
    assert_eq!(
        ssh_root(HOST, "stat -c '%a %U' /var/lib/rampart/backups"),
        "700 root\n"
    );

    // The inventory's `backup_keep`, and --keep-backups over it.
    let inv3 = inventory_h34(dir.path(), ", backup_keep: 3");
    runs.push(change(12, &inv3, &[]));
    assert_eq!(backups(), newest(&runs, 3));
    runs.push(change(13, &inv3, &["--keep-backups", "2"]));
    assert_eq!(backups(), newest(&runs, 2));
    ssh_root(HOST, &format!("rm -f {file}"));
}
