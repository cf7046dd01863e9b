//! A hostile host's output cannot hurt the controller (issue 9, items 6-8): a crafted
//! `authorized_keys` line fails no other host, huge output is cut off with bounded memory,
//! and terminal escapes from a host never reach the operator's terminal raw.
//!
//! Hosts: h32 and h33, made fresh by each test (the tests take turns through [`TURN`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

use super::common::*;

/// The tests here share h32 and h33: one at a time.
static TURN: Mutex<()> = Mutex::new(());

fn fresh(hosts: &[&str]) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
        .arg("fresh")
        .args(hosts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed fresh {hosts:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn inventory_of(dir: &Path, hosts: &[(&str, &str)]) -> PathBuf {
    let entries: Vec<(String, String)> = hosts
        .iter()
        .map(|(h, extra)| {
            let mut vars = format!("address: {}", addr(h));
            if !extra.is_empty() {
                vars.push_str(", ");
                vars.push_str(extra);
            }
            (h.to_string(), vars)
        })
        .collect();
    let refs: Vec<(&str, &str)> = entries
        .iter()
        .map(|(h, v)| (h.as_str(), v.as_str()))
        .collect();
    write_inventory(dir, &refs)
}

fn playbook(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("playbook.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `rampart CMD -i INV --known-hosts .. ARGS PLAYBOOK` under GNU time: the output and the
/// peak resident memory in KiB.
fn timed(dir: &Path, cmd: &str, inv: &Path, args: &[&str], book: &Path) -> (Output, u64) {
    let report = dir.join("time.txt");
    let probe = rampart(dir);
    let mut time = Command::new("/usr/bin/time");
    time.args(["-v", "-o"])
        .arg(&report)
        .arg(probe.get_program());
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => time.env(k, v),
            None => time.env_remove(k),
        };
    }
    let out = time
        .args([cmd, "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .args(args)
        .arg(book)
        .output()
        .expect("/usr/bin/time runs (Debian package `time`)");
    let text = std::fs::read_to_string(&report).unwrap();
    let kib = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {text}"));
    (out, kib)
}

fn run(dir: &Path, args: &[&str]) -> Output {
    rampart(dir)
        .args(args)
        .arg("--known-hosts")
        .arg(known_hosts())
        .output()
        .unwrap()
}

fn no_panic(out: &Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
}

/// Every byte the terminal would take as a control: C0 other than newline and tab, DEL, and
/// the C1 range (as UTF-8 characters).
fn raw_controls(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .char_indices()
        .filter(|(_, c)| c.is_control() && *c != '\n' && *c != '\t')
        .map(|(i, c)| format!("{c:?} at {i}"))
        .collect()
}

fn assert_clean_terminal_text(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let raw = raw_controls(bytes);
        assert!(
            raw.is_empty(),
            "{what}: raw control characters on {stream}: {raw:?}\n{}",
            String::from_utf8_lossy(bytes).escape_debug()
        );
    }
}

/// Item 6: before the fix this line panicked the whole run (byte 12 of the key data is
/// inside `é`): no host's report, no report file, exit 101.
#[test]
fn a_crafted_key_line_on_one_host_leaves_the_others_reports_whole() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    fresh(&["h32", "h33"]);
    ssh_root(
        "h32",
        "printf 'ssh-ed25519 AAAAAAAAAAA\\303\\251\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254 evil@host\\n\
         ssh-rsa !!junk-key-data!! x\\n' >> /root/.ssh/authorized_keys",
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_of(dir.path(), &[("h32", ""), ("h33", "")]);
    let book = playbook(
        dir.path(),
        "steps:\n  - name: marker\n    command: {run: \"true\", creates: /etc}\n",
    );
    let (json_file, prom_file) = (dir.path().join("r.json"), dir.path().join("r.prom"));
    let out = rampart(dir.path())
        .args(["drift", "-q", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg("-o")
        .arg(&json_file)
        .arg("-o")
        .arg(&prom_file)
        .arg(&book)
        .output()
        .unwrap();
    no_panic(&out);
    // h32's findings make it drift; nothing failed.
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Differs),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    let clean = host(&report, "h33");
    assert_eq!(clean["status"], "in_line", "{clean:#}");
    assert_eq!(clean["findings"], serde_json::json!([]), "{clean:#}");
    assert_eq!(clean["steps"][0]["status"], "in_line", "{clean:#}");
    let crafted = host(&report, "h32");
    let found: Vec<(&str, &str)> = crafted["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("ssh.malformed_key", "/root/.ssh/authorized_keys:2"),
            ("ssh.malformed_key", "/root/.ssh/authorized_keys:3"),
        ],
        "{crafted:#}"
    );
    let prom = std::fs::read_to_string(&prom_file).unwrap();
    for h in ["h32", "h33"] {
        assert!(prom.contains(&format!("host=\"{h}\"")), "{prom}");
    }
    assert!(stdout(&out).contains("h33 (") && stdout(&out).contains("h32 ("));
}

/// Item 7: a sparse 1 GB agent config made the scan send 1 GB (and the controller hold it);
/// a command printing 100 MB put all of it into memory, the error and the report.
#[test]
fn huge_output_is_cut_off_with_bounded_memory() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    fresh(&["h32", "h33"]);
    ssh_root(
        "h32",
        "useradd -m agent && su agent -c 'mkdir -p ~/.openclaw && truncate -s 1G ~/.openclaw/openclaw.json'",
    );
    let dir = tempfile::tempdir().unwrap();
    let bound_kib = 300 * 1024;

    let inv = inventory_of(dir.path(), &[("h32", "agent_user: agent")]);
    let book = playbook(
        dir.path(),
        "steps:\n  - name: marker\n    command: {run: \"true\", creates: /etc}\n",
    );
    let (out, peak) = timed(dir.path(), "drift", &inv, &["--format", "json"], &book);
    no_panic(&out);
    eprintln!(
        "drift with a 1 GB config: peak RSS {peak} KiB, stdout {} bytes",
        out.stdout.len()
    );
    assert!(peak < bound_kib, "peak RSS {peak} KiB");
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Differs),
        "{}",
        stderr(&out)
    );
    let report = json(&out);
    let h = host(&report, "h32");
    let big = h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "scan.file_too_large")
        .unwrap_or_else(|| panic!("{h:#}"));
    assert_eq!(big["subject"], "/home/agent/.openclaw/openclaw.json");
    assert!(
        big["evidence"][0]
            .as_str()
            .unwrap()
            .contains("is 1073741824 bytes"),
        "{big:#}"
    );
    assert!(out.stdout.len() < 64 * 1024, "{} bytes", out.stdout.len());

    let inv = inventory_of(dir.path(), &[("h33", "")]);
    let book = playbook(
        dir.path(),
        "steps:\n  - name: loud\n    command:\n      run: \"head -c 100000000 /dev/zero | tr '\\\\0' x; echo\"\n",
    );
    let (out, peak) = timed(dir.path(), "apply", &inv, &["--format", "json"], &book);
    no_panic(&out);
    eprintln!(
        "apply printing 100 MB: peak RSS {peak} KiB, stdout {} bytes",
        out.stdout.len()
    );
    assert!(peak < bound_kib, "peak RSS {peak} KiB");
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Failed),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.len() < 64 * 1024, "{} bytes", out.stdout.len());
    let report = json(&out);
    let h = host(&report, "h33");
    assert_eq!(h["status"], "failed", "{h:#}");
    let error = h["error"].as_str().unwrap();
    assert!(
        error.contains("h33 sent more than 64 MiB of output for one command"),
        "{error}"
    );
}

/// Item 8: escapes in /etc/motd (shown in a diff), in os-release (through a template into a
/// diff, and in `rampart facts`) and on a failing command's stderr all reached the terminal
/// raw.
#[test]
fn a_hosts_terminal_escapes_never_reach_the_terminal_raw() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    fresh(&["h33"]);
    // ESC sequences (clear screen, set the window title), a C1 CSI (U+009B), a CR, a BEL.
    ssh_root(
        "h33",
        "printf 'Welcome \\033[2J\\033]0;pwned\\007 \\302\\2336n\\rover\\n' > /etc/motd && \
         sed -e 's/^PRETTY_NAME=.*/PRETTY_NAME=\"Debian \\o033]0;pwned\\o007 12\"/' \
             -e 's/^VERSION_ID=.*/VERSION_ID=\"12\\o033[31m\"/' /usr/lib/os-release > /tmp/os && \
         rm /etc/os-release && mv /tmp/os /etc/os-release && grep -c \"$(printf '\\033')\" /etc/os-release",
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_of(dir.path(), &[("h33", "")]);
    let book = playbook(
        dir.path(),
        "steps:\n\
         \x20 - name: motd\n    file: {path: /etc/motd, content: \"Welcome\\n\"}\n\
         \x20 - name: issue\n    file: {path: /etc/issue.net, content: \"{{ facts.os_name }} {{ facts.os_version }}\\n\"}\n\
         \x20 - name: fails loudly\n    command:\n      run: |\n        printf 'oops \\033[2J\\033]0;pwned\\007 \\302\\2336n\\r\\n' >&2; exit 3\n",
    );
    let inv_s = inv.to_str().unwrap();
    let book_s = book.to_str().unwrap();

    // Progress lines on (no -q): they go to stderr, which is checked too.
    let plan = run(dir.path(), &["plan", "-i", inv_s, book_s]);
    assert_eq!(
        plan.status.code(),
        exit_code(Outcome::Differs),
        "{}{}",
        stdout(&plan),
        stderr(&plan)
    );
    assert_clean_terminal_text("plan", &plan);
    // The escapes are shown, visibly.
    assert!(
        stdout(&plan).contains("-Welcome \\x1b[2J\\x1b]0;pwned\\x07 \\u{9b}6n\\r"),
        "{}",
        stdout(&plan)
    );
    assert!(
        stdout(&plan).contains("+Debian \\x1b]0;pwned\\x07 12 12\\x1b[31m"),
        "{}",
        stdout(&plan)
    );

    let apply = run(dir.path(), &["apply", "-i", inv_s, book_s]);
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Failed),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    assert_clean_terminal_text("apply", &apply);
    assert!(
        stdout(&apply).contains("oops \\x1b[2J\\x1b]0;pwned\\x07"),
        "{}",
        stdout(&apply)
    );

    let facts = run(dir.path(), &["facts", "-i", inv_s]);
    assert_eq!(
        facts.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&facts),
        stderr(&facts)
    );
    assert_clean_terminal_text("facts", &facts);
    assert!(stdout(&facts).contains("12\\x1b[31m"), "{}", stdout(&facts));
}
