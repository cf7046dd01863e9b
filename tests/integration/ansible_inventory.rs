//! "An existing Ansible inventory works as it is", tested: inventories written in the styles
//! Ansible's docs show (INI and YAML, ranges, `:vars`, `:children`, group_vars/ and
//! host_vars/ files and folders) resolve to exactly the hosts, groups and variables that
//! Ansible's own `ansible-inventory --list` gives (ansible-core from PyPI, installed by
//! scripts/setup), and an INI inventory of testbed hosts h50..h53 converges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rampart::inventory::Inventory;
use serde_json::Value;

use super::common::*;

fn ansible_inventory() -> PathBuf {
    let path = PathBuf::from("/var/cache/rampart-ansible/bin/ansible-inventory");
    assert!(
        path.exists(),
        "no {}: run scripts/setup (it installs the pinned ansible-core into a venv)",
        path.display()
    );
    path
}

/// Ansible's answer: group -> every host in it (through children too), host -> its vars.
/// Group -> every host in it; host -> its variables.
type Groups = BTreeMap<String, BTreeSet<String>>;
type HostVars = BTreeMap<String, BTreeMap<String, Value>>;

fn ansible_view(inventory: &Path) -> (Groups, HostVars) {
    let out = Command::new(ansible_inventory())
        .env("ANSIBLE_LOCALHOST_WARNING", "false")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
        .env("PYTHONWARNINGS", "ignore")
        .args(["--list", "-i"])
        .arg(inventory)
        .output()
        .unwrap();
    assert!(out.status.success(), "ansible-inventory: {}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = json.as_object().unwrap();
    fn members(obj: &serde_json::Map<String, Value>, g: &str, out: &mut BTreeSet<String>) {
        let Some(group) = obj.get(g) else { return };
        for h in group["hosts"].as_array().into_iter().flatten() {
            out.insert(h.as_str().unwrap().to_string());
        }
        for c in group["children"].as_array().into_iter().flatten() {
            members(obj, c.as_str().unwrap(), out);
        }
    }
    let mut groups = BTreeMap::new();
    for g in obj.keys().filter(|k| *k != "_meta") {
        let mut m = BTreeSet::new();
        members(obj, g, &mut m);
        groups.insert(g.clone(), m);
    }
    let mut vars = BTreeMap::new();
    for (h, v) in json["_meta"]["hostvars"].as_object().into_iter().flatten() {
        let map: BTreeMap<String, Value> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.insert(h.clone(), map);
    }
    // Hosts without variables are not in _meta: they have none.
    for m in groups.get("all").into_iter().flatten() {
        vars.entry(m.clone()).or_default();
    }
    (groups, vars)
}

/// rampart's answer, in Ansible's names (rampart reads `ansible_host` as `address`, …).
fn rampart_view(inventory: &Path) -> (Groups, HostVars, Inventory) {
    let inv = Inventory::load(inventory).unwrap_or_else(|e| panic!("{e}"));
    let mut groups: BTreeMap<String, BTreeSet<String>> = inv
        .groups
        .iter()
        .map(|(g, m)| (g.clone(), m.iter().cloned().collect()))
        .collect();
    groups.insert(
        "all".into(),
        inv.hosts.iter().map(|h| h.name.clone()).collect(),
    );
    let mut vars = BTreeMap::new();
    for h in &inv.hosts {
        let map: BTreeMap<String, Value> = h
            .vars
            .iter()
            .map(|(k, v)| {
                let k = match k.as_str() {
                    "address" => "ansible_host",
                    "port" => "ansible_port",
                    "user" => "ansible_user",
                    "identity" => "ansible_ssh_private_key_file",
                    "become" => "ansible_become",
                    other => other,
                };
                (k.to_string(), v.value.clone())
            })
            .collect();
        vars.insert(h.name.clone(), map);
    }
    (groups, vars, inv)
}

fn same_as_ansible(inventory: &Path) -> Inventory {
    let (mut a_groups, a_vars) = ansible_view(inventory);
    let (mut r_groups, r_vars, inv) = rampart_view(inventory);
    // An empty `ungrouped` is nothing either way.
    for groups in [&mut a_groups, &mut r_groups] {
        if groups.get("ungrouped").is_some_and(BTreeSet::is_empty) {
            groups.remove("ungrouped");
        }
    }
    assert_eq!(r_groups, a_groups, "groups of {}", inventory.display());
    assert_eq!(r_vars, a_vars, "variables of {}", inventory.display());
    inv
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn ini_and_yaml_inventories_in_the_docs_styles_resolve_as_ansible_inventory_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The docs' first INI example.
    write(
        d,
        "simple/hosts",
        "mail.example.com\n\n[webservers]\nfoo.example.com\nbar.example.com\n\n[dbservers]\none.example.com\ntwo.example.com\nthree.example.com\n",
    );
    same_as_ansible(&d.join("simple/hosts"));

    // Vars on host lines and in sections, children, ranges, ports, group_vars/ and host_vars/
    // (a file, a folder of files), values of every literal kind.
    write(
        d,
        "site/inventory.ini",
        "; a comment\n\
         [atlanta]\n\
         host1 http_port=80 maxRequestsPerChild=808 ansible_host=192.0.2.1\n\
         host2 http_port=303 maxRequestsPerChild=909 quoted='80' flag=True none=None list=\"[1, 'a']\"  # trailing\n\
         [atlanta:vars]\n\
         ntp_server=ntp.atlanta.example.com\n\
         proxy = proxy.atlanta.example.com\n\
         [raleigh]\n\
         www[01:03].example.com\n\
         db-[a:c].example.com:2222\n\
         [southeast:children]\n\
         atlanta\n\
         raleigh\n\
         [southeast:vars]\n\
         some_server=foo.southeast.example.com\n\
         halon_system_timeout=30\n\
         escape_pods=2\n\
         [usa:children]\n\
         southeast\n\
         [all:vars]\n\
         ansible_user=admin\n",
    );
    write(
        d,
        "site/group_vars/all.yml",
        "---\nntp_server: ntp.global.example.com\nshared: {a: 1, b: [x, z]}\n",
    );
    write(
        d,
        "site/group_vars/raleigh/main.yml",
        "ntp_server: ntp.raleigh.example.com\nescape_pods: 4\n",
    );
    write(
        d,
        "site/group_vars/raleigh/zz_more.yaml",
        "escape_pods: 5\n",
    );
    write(
        d,
        "site/host_vars/host1.yml",
        "http_port: 8080\nansible_port: 2200\n",
    );
    write(d, "site/host_vars/www02.example.com", "role: canary\n");
    let inv = same_as_ansible(&d.join("site/inventory.ini"));
    let host1 = inv.hosts.iter().find(|h| h.name == "host1").unwrap();
    assert_eq!(
        (host1.address.as_str(), host1.port, host1.user.as_str()),
        ("192.0.2.1", 2200, "admin")
    );
    let db = inv
        .hosts
        .iter()
        .find(|h| h.name == "db-b.example.com")
        .unwrap();
    assert_eq!(db.port, 2222);

    // The docs' YAML example with the same group_vars layout.
    write(
        d,
        "yaml/inventory.yml",
        "ungrouped:\n  hosts:\n    mail.example.com:\nwebservers:\n  hosts:\n    foo.example.com:\n    bar.example.com:\n  vars:\n    http_port: 80\ndbservers:\n  hosts:\n    one.example.com:\n      ansible_port: 5555\nprod:\n  children:\n    webservers:\n    dbservers:\n",
    );
    write(
        d,
        "yaml/group_vars/prod.yml",
        "http_port: 8000\nstage: prod\n",
    );
    same_as_ansible(&d.join("yaml/inventory.yml"));
}

#[test]
fn ansible_keys_that_change_behaviour_are_errors_and_unknown_ones_warn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "a/hosts",
        "[web]\nw1 ansible_ssh_common_args='-o ProxyJump=b'\n",
    );
    let err = Inventory::load(&d.join("a/hosts")).unwrap_err().to_string();
    assert!(err.contains("hosts:2:") && err.contains("jump"), "{err}");
    write(d, "b/hosts", "[web]\nw1\n");
    write(
        d,
        "b/group_vars/web.yml",
        "ansible_become_password: hunter2\n",
    );
    let err = Inventory::load(&d.join("b/hosts")).unwrap_err().to_string();
    assert!(
        err.contains("group_vars/web.yml:1:") && err.contains("NOPASSWD"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password is not printed: {err}"
    );
    write(d, "c/hosts", "w1 ansible_shell_type=sh\n");
    let inv = Inventory::load(&d.join("c/hosts")).unwrap();
    assert_eq!(inv.warnings.len(), 1);
    assert!(
        inv.warnings[0].contains("`ansible_shell_type`"),
        "{:?}",
        inv.warnings
    );
}

const PLAYBOOK: &str = "steps:\n  - name: marker folder\n    directory: {path: /srv/w6-ini, mode: \"0755\"}\n  - name: marker\n    lines: {path: /srv/w6-ini/note, present: [\"{{ note }}\"]}\n";

#[test]
fn an_ini_inventory_of_a_host_range_with_group_and_host_vars_converges() {
    let _hosts = super::ssh_config::hosts_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = addr("h50");
    let (net, last) = first.rsplit_once('.').unwrap();
    let start: u32 = last.parse().unwrap();
    write(
        d,
        "inv/hosts.ini",
        &format!(
            "[fleet]\n{net}.[{start}:{end}]\n\n[fleet:vars]\nnote=from the group\n",
            end = start + 3
        ),
    );
    write(
        d,
        "inv/group_vars/all.yml",
        &format!(
            "ansible_user: root\nansible_ssh_private_key_file: {}\n",
            test_key().display()
        ),
    );
    write(
        d,
        &format!("inv/host_vars/{net}.{}.yml", start + 1),
        "note: from host_vars\n",
    );
    let inv_path = d.join("inv/hosts.ini");
    let inv = same_as_ansible(&inv_path);
    assert_eq!(inv.hosts.len(), 4);
    let book = d.join("book.yaml");
    std::fs::write(&book, PLAYBOOK).unwrap();
    let home = tempfile::tempdir().unwrap();
    for cmd in ["apply", "plan"] {
        let out = rampart(home.path())
            .args([cmd, "-q", "-i"])
            .arg(&inv_path)
            .arg("--known-hosts")
            .arg(known_hosts())
            .arg(&book)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cmd}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    for (i, h) in ["h50", "h51", "h52", "h53"].iter().enumerate() {
        let want = if i == 1 {
            "from host_vars"
        } else {
            "from the group"
        };
        assert_eq!(ssh_root(h, "cat /srv/w6-ini/note").trim(), want, "{h}");
    }
}
