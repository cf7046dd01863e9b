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
