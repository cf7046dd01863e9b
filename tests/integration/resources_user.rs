//! The `user` and `group` resources on a real Debian host (testbed h6), through the library:
//! probe, diff, apply and verify with `converge_one` over a real SSH session. Every test uses
//! its own user and group names, so they run in parallel; each starts by removing what an
//! earlier, failed run may have left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rampart::resource::user::{GROUP, USER};
use rampart::resource::{ApplyContext, Change, Resource, Verdict, converge_one};
use rampart::transport::Session;
use rampart::transport::ssh::SshSession;
use serde_json::{Value, json};

use super::common::*;

const HOST: &str = "h6";

async fn connect(user: &str, identity: &Path) -> SshSession {
    session_as(HOST, user, identity).await
}

async fn root() -> SshSession {
    connect("root", &test_key()).await
}

fn user(params: Value) -> Box<dyn Resource> {
    (USER.build)(params).unwrap()
}

fn group(params: Value) -> Box<dyn Resource> {
    (GROUP.build)(params).unwrap()
}

fn ctx(test: &str) -> ApplyContext {
    ApplyContext::new(format!("test-{test}-{}", std::process::id()))
}

/// Probe, apply if needed, verify: the verdicts before and after.
async fn converge(s: &SshSession, r: &dyn Resource, test: &str) -> (Verdict, Verdict) {
    converge_one(s, r, &ctx(test))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", r.id()))
}

/// Removes users (with their homes) and groups left by an earlier run.
fn clean(users: &[&str], groups: &[&str]) {
    let mut script = String::new();
    for u in users {
        script.push_str(&format!(
            "if getent passwd {u} >/dev/null; then pkill -u {u}; userdel -r {u} 2>/dev/null; fi; rm -rf /home/{u}; "
        ));
    }
    for g in groups {
        script.push_str(&format!("groupdel {g} 2>/dev/null; "));
    }
    script.push_str("true");
    ssh_root(HOST, &script);
}

/// A new ed25519 key pair: (private key path, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("{name}@test"))
        .arg("-f")
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let line = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, line.trim().to_string())
}

fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
    Change::new(field, before.map(String::from), after.map(String::from))
}

#[tokio::test]
async fn a_user_is_created_with_groups_shell_and_key_then_stays_in_line() {
    let (name, g1, g2) = ("rut_create", "rut_create_a", "rut_create_b");
    clean(&[name], &[g1, g2]);
    let dir = tempfile::tempdir().unwrap();
    let (key, line) = keygen(dir.path(), "create");
    let s = root().await;
    for g in [g1, g2] {
        let (before, after) = converge(&s, &*group(json!({ "name": g })), "create").await;
        assert_eq!(before.action(), "create");
        assert!(after.is_in_line(), "{after:?}");
    }
    let hostile = "it's $(touch /tmp/pwned) `id`; rm -rf / #";
    let r = user(json!({
        "name": name, "groups": [g1, g2], "shell": "/bin/bash", "comment": hostile,
        "authorized_keys": [line],
    }));
    let (before, after) = converge(&s, &*r, "create").await;
    assert_eq!(before.action(), "create", "{before:?}");
    assert_eq!(after, Verdict::InLine(format!("user {name} is in line")));

    let facts = ssh_root(
        HOST,
        &format!(
            "getent passwd {name} | cut -d: -f5,7; id -Gn {name}; getent shadow {name} | cut -d: -f2; \
             stat -c '%a %U %G' /home/{name}/.ssh /home/{name}/.ssh/authorized_keys; \
             cat /home/{name}/.ssh/authorized_keys; ls -A /home/{name}/.ssh; test -e /tmp/pwned || echo clean"
        ),
    );
    assert_eq!(
        facts,
        format!(
            "{hostile}:/bin/bash\n{name} {g1} {g2}\n!\n700 {name} {name}\n600 {name} {name}\n{line}\nauthorized_keys\nclean\n"
        )
    );

    // The key logs in: sshd accepts the folder's and the file's owner and modes.
    let as_user = connect(name, &key).await;
    let out = as_user
        .exec("id -un", b"", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{name}\n"));

    let (before, after) = converge(&s, &*r, "create").await;
    assert_eq!(before, Verdict::InLine(format!("user {name} is in line")));
    assert_eq!(after, before);
    clean(&[name], &[g1, g2]);
}

#[tokio::test]
async fn changing_the_shell_is_exactly_that_change() {
    let name = "rut_shell";
    clean(&[name], &[]);
    let s = root().await;
    let (_, after) = converge(
        &s,
        &*user(json!({"name": name, "shell": "/bin/sh", "comment": "shell test"})),
        "shell",
    )
    .await;
    assert!(after.is_in_line(), "{after:?}");
    let (before, after) = converge(
        &s,
        &*user(json!({"name": name, "shell": "/bin/bash", "comment": "shell test"})),
        "shell",
    )
    .await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change("shell", Some("/bin/sh"), Some("/bin/bash"))])
    );
    assert!(after.is_in_line(), "{after:?}");
    assert_eq!(
        ssh_root(HOST, &format!("getent passwd {name} | cut -d: -f7")),
        "/bin/bash\n"
    );
    clean(&[name], &[]);
}

#[tokio::test]
async fn additive_keys_keep_a_hand_added_key_and_exclusive_keys_remove_it() {
    let name = "rut_keys";
    clean(&[name], &[]);
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = keygen(dir.path(), "a");
    let (_, by_hand) = keygen(dir.path(), "by-hand");
    let (_, c) = keygen(dir.path(), "c");
    let file = format!("/home/{name}/.ssh/authorized_keys");
    let s = root().await;
    let (_, after) = converge(
        &s,
        &*user(json!({"name": name, "authorized_keys": [a]})),
        "keys",
    )
    .await;
    assert!(after.is_in_line(), "{after:?}");
    ssh_root(HOST, &format!("echo '{by_hand}' >> {file}"));

    // Additive: c is added, the hand-added key stays.
    let additive = user(json!({
        "name": name, "authorized_keys": [a, c], "authorized_keys_exclusive": false,
    }));
    let (before, after) = converge(&s, &*additive, "keys").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change("authorized_keys", None, Some(&c))])
    );
    assert!(after.is_in_line(), "{after:?}");
    assert_eq!(
        ssh_root(HOST, &format!("cat {file}")),
        format!("{a}\n{by_hand}\n{c}\n")
    );

    // Exclusive: the hand-added key goes, the old file is kept as a backup.
    let exclusive = user(json!({"name": name, "authorized_keys": [a, c]}));
    let (before, after) = converge(&s, &*exclusive, "keys").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change("authorized_keys", Some(&by_hand), None)])
    );
    assert!(after.is_in_line(), "{after:?}");
    assert_eq!(
        ssh_root(
            HOST,
            &format!("cat {file}; stat -c '%a %U' {file}; ls -A /home/{name}/.ssh")
        ),
        format!("{a}\n{c}\n600 {name}\nauthorized_keys\n")
    );
    let backup = format!("{}{file}", ctx("keys").backup_dir());
    assert_eq!(
        ssh_root(HOST, &format!("cat {backup}")),
        format!("{a}\n{by_hand}\n{c}\n")
    );
    ssh_root(HOST, &format!("rm -rf {}", ctx("keys").backup_dir()));

    // A loosened mode is drift, and converges.
    ssh_root(HOST, &format!("chmod 0644 {file}"));
    let (before, after) = converge(&s, &*exclusive, "keys").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change(
            "authorized_keys_file",
            Some(&format!("0644 owned by {name}")),
            Some(&format!("0600 owned by {name}"))
        )])
    );
    assert!(after.is_in_line(), "{after:?}");
    ssh_root(HOST, &format!("rm -rf {}", ctx("keys").backup_dir()));
    clean(&[name], &[]);
}

#[tokio::test]
async fn a_symlinked_ssh_folder_is_refused_not_followed() {
    let name = "rut_symlink";
    clean(&[name], &[]);
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = keygen(dir.path(), "a");
    let s = root().await;
    converge(&s, &*user(json!({"name": name})), "symlink").await;
    let target = format!("/tmp/{name}-target");
    ssh_root(
        HOST,
        &format!("rm -rf {target}; mkdir {target}; ln -s {target} /home/{name}/.ssh"),
    );
    let r = user(json!({"name": name, "authorized_keys": [a]}));
    let err = converge_one(&s, &*r, &ctx("symlink")).await.unwrap_err();
    assert!(
        err.contains(&format!(
            "rampart: refusing to write /home/{name}/.ssh/authorized_keys: /home/{name}/.ssh is a symbolic link"
        )),
        "{err}"
    );
    assert_eq!(
        ssh_root(HOST, &format!("ls -A {target}; stat -c %U {target}")),
        "root\n",
        "nothing written through the link, owner unchanged"
    );
    ssh_root(HOST, &format!("rm -rf {target}"));
    clean(&[name], &[]);
}

#[tokio::test]
async fn groups_are_created_renumbered_and_deleted() {
    let name = "rgt_group";
    clean(&[], &[name]);
    let s = root().await;
    let (before, after) = converge(&s, &*group(json!({"name": name, "gid": 23450})), "group").await;
    assert_eq!(before.action(), "create");
    assert_eq!(after, Verdict::InLine(format!("group {name} is in line")));
    assert_eq!(
        ssh_root(HOST, &format!("getent group {name} | cut -d: -f3")),
        "23450\n"
    );
    let (before, after) =
        converge(&s, &*group(json!({"name": name, "gid": "23451"})), "group").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change("gid", Some("23450"), Some("23451"))])
    );
    assert!(after.is_in_line());
    let gone = group(json!({"name": name, "state": "absent"}));
    let (before, after) = converge(&s, &*gone, "group").await;
    assert_eq!(before.action(), "remove");
    assert_eq!(
        after,
        Verdict::InLine(format!("group {name} is absent, in line"))
    );
    assert_eq!(
        ssh_root(HOST, &format!("getent group {name} || echo none")),
        "none\n"
    );
    let (before, _) = converge(&s, &*gone, "group").await;
    assert!(before.is_in_line());
}

#[tokio::test]
async fn an_absent_user_is_removed_keeping_its_home_unless_asked() {
    let name = "rut_gone";
    clean(&[name], &[]);
    let s = root().await;
    converge(&s, &*user(json!({"name": name})), "gone").await;
    let (before, after) =
        converge(&s, &*user(json!({"name": name, "state": "absent"})), "gone").await;
    assert_eq!(
        before,
        Verdict::Remove(vec![change("state", Some("present"), Some("absent"))])
    );
    assert_eq!(
        after,
        Verdict::InLine(format!("user {name} is absent, in line"))
    );
    assert_eq!(
        ssh_root(
            HOST,
            &format!(
                "getent passwd {name} || echo no user; test -d /home/{name} && echo home kept"
            )
        ),
        "no user\nhome kept\n"
    );

    ssh_root(HOST, &format!("rm -rf /home/{name}"));
    converge(&s, &*user(json!({"name": name})), "gone").await;
    let (before, after) = converge(
        &s,
        &*user(json!({"name": name, "state": "absent", "remove_home": true})),
        "gone",
    )
    .await;
    assert_eq!(before.action(), "remove");
    assert!(after.is_in_line());
    assert_eq!(
        ssh_root(HOST, &format!("test -e /home/{name} || echo home removed")),
        "home removed\n"
    );
}

#[tokio::test]
async fn unlocking_a_user_without_a_password_fails_clearly() {
    let name = "rut_unlock";
    clean(&[name], &[]);
    let s = root().await;
    let r = user(json!({"name": name, "password_locked": false}));
    let err = converge_one(&s, &*r, &ctx("unlock")).await.unwrap_err();
    assert!(
        err.contains(&format!(
            "rampart: cannot unlock the password of user {name}: there is no password hash to unlock"
        )),
        "{err}"
    );
    // Locked is what it is, and what the default wants.
    let (before, _) = converge(&s, &*user(json!({ "name": name })), "unlock").await;
    assert!(before.is_in_line(), "{before:?}");
    clean(&[name], &[]);
}
