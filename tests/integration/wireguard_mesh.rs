//! playbooks/wireguard.yaml on two fresh hosts: each makes its own key, the fleet shares the
//! public keys, and the hosts reach each other over their WireGuard addresses.

use std::path::Path;

use super::common::*;

#[test]
fn two_hosts_ping_each_other_over_wireguard_and_keys_stay_home() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    ansible_user: root\n    identity: {}\n  hosts:\n    h19: {{address: {}}}\n    h20: {{address: {}}}\n",
            test_key().display(),
            addr("h19"),
            addr("h20")
        ),
    )
    .unwrap();
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/wireguard.yaml");
    let run = |cmd: &str| {
        rampart(dir.path())
            .args([cmd, "-q", "-i"])
            .arg(&inv)
            .arg("--known-hosts")
            .arg(known_hosts())
            .arg(&book)
            .output()
            .unwrap()
    };
    let apply = run("apply");
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    let plan = run("plan");
    assert_eq!(
        plan.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stdout(&plan)
    );

    // h19 is the group's first host (10.99.0.1), h20 the second (10.99.0.2).
    let ping = ssh_root(
        "h19",
        "ping -c1 -W2 10.99.0.2 >/dev/null && echo ok || (sleep 2; ping -c1 -W2 10.99.0.2 >/dev/null && echo ok)",
    );
    assert_eq!(ping, "ok\n");
    assert_eq!(
        ssh_root("h20", "ping -c1 -W2 10.99.0.1 >/dev/null && echo ok"),
        "ok\n"
    );
    // The private keys never reached the controller's output.
    let all = format!(
        "{}{}{}{}",
        stdout(&apply),
        stderr(&apply),
        stdout(&plan),
        stderr(&plan)
    );
    for h in ["h19", "h20"] {
        let private = ssh_root(h, "cat /etc/wireguard/wg0.key");
        assert!(!private.trim().is_empty());
        assert!(
            !all.contains(private.trim()),
            "{h}'s private key appeared in rampart's output"
        );
        assert_eq!(ssh_root(h, "stat -c %a /etc/wireguard/wg0.key"), "600\n");
    }
}

#[test]
fn spokes_reach_each_other_through_the_hub() {
    // h22 is the hub (10.99.0.1), h23 and h24 spokes (.2, .3) that peer only with the hub.
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    ansible_user: root\n    identity: {}\n    wireguard_hub: h22\n  hosts:\n    h22: {{address: {}}}\n    h23: {{address: {}}}\n    h24: {{address: {}}}\n",
            test_key().display(),
            addr("h22"),
            addr("h23"),
            addr("h24")
        ),
    )
    .unwrap();
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/wireguard.yaml");
    let apply = rampart(dir.path())
        .args(["apply", "-q", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(&book)
        .output()
        .unwrap();
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    // A spoke knows only the hub...
    assert_eq!(ssh_root("h23", "wg show wg0 peers | wc -l"), "1\n");
    assert_eq!(ssh_root("h22", "wg show wg0 peers | wc -l"), "2\n");
    // ...and still reaches the other spoke, through it.
    let ping = ssh_root(
        "h23",
        "ping -c1 -W3 10.99.0.3 >/dev/null && echo ok || (sleep 2; ping -c1 -W3 10.99.0.3 >/dev/null && echo ok)",
    );
    assert_eq!(ping, "ok\n");
}
