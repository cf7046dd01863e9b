//! `plan` and `apply` on testbed hosts, driving the real binary: converge, verify, drift,
//! backups, bad input, an unreachable host, secrets never shown.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::common::*;

/// The secret of these tests: `scripts/test` makes a fresh one per run and greps the whole
/// suite's output for it afterwards.
fn token() -> String {
    std::env::var("RAMPART_TEST_SECRET_VALUE")
        .unwrap_or_else(|_| "tok-3b1f9e07c2a64d51-secret".into())
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine/site.yaml")
}

/// An inventory of testbed hosts with the variables the fixture playbook needs.
fn inventory(dir: &Path, hosts: &[&str], tag: &str) -> PathBuf {
    let key = std::fs::read_to_string(test_key().with_extension("pub")).unwrap();
    let mut text = format!(
        "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n    tag: '{tag}'\n    deploy_key: '{}'\n    app_token: {{secret: {{env: RAMPART_TEST_APP_TOKEN}}}}\n  hosts:\n",
        test_key().display(),
        key.trim()
    );
    for h in hosts {
        if *h == "ghost" {
            text.push_str("    ghost: {ansible_host: 127.0.0.1, ansible_port: 1}\n");
        } else {
            text.push_str(&format!("    {h}: {{ansible_host: {}}}\n", addr(h)));
        }
    }
    let p = dir.join("inventory.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(dir: &Path, inv: &Path, cmd: &str, playbook: &Path, extra: &[&str]) -> Output {
    let out = rampart(dir)
        .env("RAMPART_TEST_APP_TOKEN", token())
        .args([cmd, "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(playbook)
        .args(extra)
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains(&token()),
        "the secret leaked into the output:\n{all}"
    );
    out
}

/// The names of the steps of `host` that are not in line.
fn drifted(j: &Value, name: &str) -> Vec<String> {
    host(j, name)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] != "in_line" && s["status"] != "skipped")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn tag() -> String {
    format!("{}", std::process::id() % 100_000)
}

#[test]
fn plan_apply_verify_drift_and_backups_on_three_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let tag = tag();
    let hosts = ["h1", "h2", "h3"];
    let inv = inventory(dir.path(), &hosts, &tag);
    let book = fixture();

    // Fresh hosts: everything differs, shown as diffs; exit 2.
    let plan = run(dir.path(), &inv, "plan", &book, &["--stats"]);
    assert_eq!(
        plan.status.code(),
        exit_code(Outcome::Differs),
        "{}{}",
        stdout(&plan),
        stderr(&plan)
    );
    let text = stdout(&plan);
    assert!(
        text.contains(&format!("~ deploy user (user dep{tag}) [create]")),
        "{text}"
    );
    assert!(
        text.contains("+This host is managed by rampart"),
        "a unified diff of the motd: {text}"
    );
    // The env file is sensitive (mode 0600, and it uses a secret): its content shows as size
    // and sha256, never as text (r9).
    assert!(
        text.contains("content: (absent) -> <") && text.contains(" bytes, sha256 "),
        "the env file's content as size and hash: {text}"
    );
    assert!(!text.contains("APP_TOKEN="), "the env file's text: {text}");
    assert_eq!(
        text.matches("stats: 1 round trips").count(),
        3,
        "one round trip per host: {text}"
    );

    // Apply converges; exit 0; the handler ran once per host.
    let apply = run(dir.path(), &inv, "apply", &book, &["--format", "json"]);
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    let j = json(&apply);
    for h in hosts {
        assert_eq!(host(&j, h)["status"], "changed", "{j:#}");
        assert_eq!(host(&j, h)["handlers"][0]["status"], "changed", "{j:#}");
        // probe + apply + verify
        assert_eq!(host(&j, h)["stats"]["round_trips"], 3, "{j:#}");
    }
    assert_eq!(
        ssh_root("h1", &format!("cat /srv/t{tag}/app.env")),
        format!("APP_TOKEN={}\n", token())
    );
    assert_eq!(
        ssh_root("h1", &format!("stat -c %a /srv/t{tag}/app.env")),
        "600\n"
    );
    assert_eq!(
        ssh_root("h2", &format!("cat /srv/t{tag}/.gitignore")),
        ".env\n*.key\nsecrets/\n"
    );
    let config: Value =
        serde_json::from_str(&ssh_root("h3", &format!("cat /srv/t{tag}/app.json"))).unwrap();
    assert_eq!(config["gateway"]["port"], 18789);
    assert_eq!(config["host"], "h3");

    // Converged: plan exits 0 with no diff.
    let again = run(dir.path(), &inv, "plan", &book, &[]);
    assert_eq!(
        again.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&again)
    );
    assert!(!stdout(&again).contains('~'), "{}", stdout(&again));

    // Drift by hand: a file on h1, a user's shell on h2.
    ssh_root("h1", &format!("echo 'edited by hand' >> /srv/t{tag}/motd"));
    ssh_root("h2", &format!("usermod -s /bin/sh dep{tag}"));
    let drift = run(dir.path(), &inv, "plan", &book, &["--format", "json"]);
    assert_eq!(drift.status.code(), exit_code(Outcome::Differs));
    let j = json(&drift);
    assert_eq!(drifted(&j, "h1"), ["motd"]);
    assert_eq!(drifted(&j, "h2"), ["deploy user"]);
    assert_eq!(drifted(&j, "h3"), Vec::<String>::new());
    let shell = &host(&j, "h2")["steps"][0]["changes"];
    assert_eq!(shell.as_array().unwrap().len(), 1, "{shell:#}");
    assert_eq!(shell[0]["field"], "shell");
    assert_eq!(
        (shell[0]["before"].as_str(), shell[0]["after"].as_str()),
        (Some("/bin/sh"), Some("/bin/bash"))
    );

    // Apply fixes both; the backup holds the hand-edited content.
    let fix = run(dir.path(), &inv, "apply", &book, &["--format", "json"]);
    assert_eq!(
        fix.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&fix)
    );
    let j = json(&fix);
    let run_id = j["run_id"].as_str().unwrap();
    assert_eq!(host(&j, "h3")["status"], "in_line");
    let backup = ssh_root(
        "h1",
        &format!("cat /var/lib/rampart/backups/{run_id}/srv/t{tag}/motd"),
    );
    assert!(backup.ends_with("edited by hand\n"), "{backup}");
    assert_eq!(
        ssh_root("h2", &format!("getent passwd dep{tag} | cut -d: -f7")),
        "/bin/bash\n"
    );
    let clean = run(dir.path(), &inv, "plan", &book, &[]);
    assert_eq!(
        clean.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&clean)
    );
}

#[test]
fn an_unreachable_host_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("u{}", tag());
    let inv = inventory(dir.path(), &["h7", "ghost"], &tag);
    let out = run(dir.path(), &inv, "apply", &fixture(), &[]);
    assert_eq!(out.status.code(), exit_code(Outcome::Failed));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("h7 ({}:22): changed", addr("h7"))),
        "{text}"
    );
    assert!(text.contains("ghost (127.0.0.1:1): UNREACHABLE"), "{text}");
    assert!(
        text.contains("apply: 2 hosts: 1 changed, 1 unreachable"),
        "{text}"
    );
}

/// Writes a playbook whose first step would create a marker: after a refused run, no host
/// may have it.
fn bad_playbook(dir: &Path, tag: &str, bad_step: &str) -> PathBuf {
    let p = dir.join("bad.yaml");
    std::fs::write(
        &p,
        format!("steps:\n  - name: marker\n    file: {{path: /root/marker-{tag}, content: x}}\n{bad_step}"),
    )
    .unwrap();
    p
}

fn assert_nothing_applied(tag: &str) {
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            ssh_root(
                h,
                &format!("test -e /root/marker-{tag} && echo applied || echo clean")
            ),
            "clean\n"
        );
    }
}

#[test]
fn bad_input_is_a_located_error_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("b{}", tag());
    let inv = inventory(dir.path(), &["h1", "h2", "h3"], &tag);
    let cases: &[(&str, &str)] = &[
        // malformed YAML
        ("  - file: {path: /x\n", "bad.yaml:4:11: invalid YAML"),
        // unknown resource type
        (
            "  - fiel: {path: /x}\n",
            "bad.yaml:4:5: unknown resource type or step key `fiel`",
        ),
        // unknown parameter
        (
            "  - file: {path: /x, contnet: y}\n",
            "bad.yaml:4:22: unknown key `contnet` in `file` parameters",
        ),
        // undefined variable, inline
        (
            "  - file: {path: /x, content: '{{ nope }}'}\n",
            "bad.yaml:4:31: undefined variable `nope`",
        ),
        // a value no shell argument can hold
        (
            "  - file: {path: \"/root/nul\\0byte\", content: x}\n",
            "contains a NUL byte",
        ),
        // undefined variable in a template file
        (
            "  - file: {path: /x, template: missing-var.j2}\n",
            "(template missing-var.j2):2:0: undefined variable `undefined_thing`",
        ),
    ];
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/missing-var.j2"),
        "ok\n{{ undefined_thing }}\n",
    )
    .unwrap();
    for (step, expected) in cases {
        let book = bad_playbook(dir.path(), &tag, step);
        let out = run(dir.path(), &inv, "apply", &book, &[]);
        assert_eq!(
            out.status.code(),
            exit_code(Outcome::Failed),
            "{step}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains(expected),
            "{step}: expected `{expected}` in:\n{all}"
        );
        assert!(
            all.contains(&format!("{}", book.display())),
            "{step}: names the file:\n{all}"
        );
    }
    assert_nothing_applied(&tag);
}

#[test]
fn hostile_values_reach_the_host_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("x{}", tag());
    let hostile = "'; touch /tmp/pwned-TAG #\n$(touch /tmp/pwned-TAG) `id` \\' \"";
    let hostile = hostile.replace("TAG", &tag);
    let inv = dir.path().join("inv.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n    evil: {}\n  hosts:\n    h8: {{ansible_host: {}}}\n",
            test_key().display(),
            serde_json::to_string(&hostile).unwrap(),
            addr("h8")
        ),
    )
    .unwrap();
    let book = dir.path().join("p.yaml");
    std::fs::write(
        &book,
        format!(
            "steps:\n  - file: {{path: \"/root/it's $(x) {tag}\", content: \"{{{{ evil }}}}\"}}\n"
        ),
    )
    .unwrap();
    let out = run(dir.path(), &inv, "apply", &book, &[]);
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let content = ssh_root("h8", &format!("cat \"/root/it's \\$(x) {tag}\""));
    assert_eq!(content, hostile);
    assert_eq!(
        ssh_root(
            "h8",
            &format!("ls /tmp/pwned-{tag} 2>/dev/null || echo none")
        ),
        "none\n"
    );
}

#[test]
fn the_bootstrap_login_is_used_until_the_admin_user_exists() {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("a{}", tag());
    let admin = format!("adm{tag}");
    let inv = dir.path().join("inv.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    user: {admin}\n    admin_user: {admin}\n    bootstrap_user: root\n    become: true\n    identity: {}\n  hosts:\n    h9: {{address: {}}}\n",
            test_key().display(),
            addr("h9")
        ),
    )
    .unwrap();
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bootstrap.yaml");
    // A fresh host: the admin login is refused, root is used, and the run says so.
    let first = run(dir.path(), &inv, "apply", &site, &["--format", "json"]);
    assert_eq!(
        first.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let j = json(&first);
    assert_eq!(host(&j, "h9")["login"], "root");
    assert_eq!(
        host(&j, "h9")["note"],
        format!("login as {admin} refused; logged in as bootstrap user root")
    );
    // Now the admin exists with the login key and sudo: the same inventory logs in as admin,
    // becomes root with sudo, and finds everything in line.
    let second = run(dir.path(), &inv, "plan", &site, &["--format", "json"]);
    assert_eq!(
        second.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&second),
        stderr(&second)
    );
    let j = json(&second);
    assert_eq!(host(&j, "h9")["login"], admin);
    assert!(host(&j, "h9").get("note").is_none(), "{j:#}");
}
