//! The `json_config` and `audit_rules` resources on real hosts, through the library over a
//! real SSH session: json_config on the container h13, audit_rules on the VM vm1 (whose kernel
//! audits) and on h13 (which cannot). Every name carries the test process's id; the audit
//! test removes its rules file and reloads at the end, leaving vm1's rules as it found them.
//! The audit tests on vm1 share one test function: `augenrules --load` reloads every rule,
//! so two of them at once would undo each other.

use rampart::resource::audit_rules::AUDIT_RULES;
use rampart::resource::json_config::JSON_CONFIG;
use rampart::resource::{ApplyContext, Change, Resource, TypeInfo, Verdict, converge_one};
use rampart::transport::ssh::SshSession;
use serde_json::{Value, json};

use super::common::*;

const CONTAINER: &str = "h13";
const VM: &str = "vm1";

async fn root(host: &str) -> SshSession {
    root_session(host).await
}

fn build(info: &TypeInfo, v: Value) -> Box<dyn Resource> {
    (info.build)(v).unwrap_or_else(|e| panic!("{}: {e}", info.name))
}

/// Probe, apply if needed, verify: the verdict before; the one after must be in line.
async fn converge(s: &SshSession, r: &dyn Resource, ctx: &ApplyContext) -> (Verdict, Verdict) {
    let (before, after) = converge_one(s, r, ctx)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", r.id()));
    assert!(after.is_in_line(), "{} after its apply: {after:?}", r.id());
    (before, after)
}

fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
    Change::new(field, before.map(String::from), after.map(String::from))
}

#[tokio::test]
async fn json_config_creates_merges_and_puts_back_drift() {
    let name = format!("rampart-json-{}", std::process::id());
    let base = format!("/tmp/{name}");
    let ctx = ApplyContext::new(name.clone());
    ssh_root(
        CONTAINER,
        &format!("rm -rf {base} /var/lib/rampart/backups/{name}; mkdir {base}; chmod 0755 {base}"),
    );
    let s = root(CONTAINER).await;

    // Created, with its owner and mode; a hostile token survives byte for byte.
    let path = format!("{base}/openclaw.json");
    let token = "t0k\"en'$(touch /tmp/pwned)\\n`id`";
    let settings =
        json!({"gateway": {"bind": "loopback", "auth": {"mode": "token", "token": token}}});
    let r = build(
        &JSON_CONFIG,
        json!({"path": path, "settings": settings, "owner": "daemon", "group": "daemon",
               "mode": "0600"}),
    );
    let (before, after) = converge(&s, &*r, &ctx).await;
    assert_eq!(
        before,
        Verdict::Create(vec![
            change("gateway.bind", None, Some("loopback")),
            change("gateway.auth.mode", None, Some("token")),
            change("gateway.auth.token", None, Some(token)),
            change("file owner", None, Some("daemon")),
            change("file group", None, Some("daemon")),
            change("file mode", None, Some("0600")),
        ])
    );
    assert_eq!(
        after,
        Verdict::InLine(format!("json_config {path} is in line"))
    );
    let listing = ssh_root(
        CONTAINER,
        &format!("stat -c '%U %G %a' {path}; ls -A {base}; test -e /tmp/pwned || echo clean"),
    );
    assert_eq!(listing, "daemon daemon 600\nopenclaw.json\nclean\n");
    let doc: Value = serde_json::from_str(&ssh_root(CONTAINER, &format!("cat {path}"))).unwrap();
    assert_eq!(doc, settings);
    assert!(converge(&s, &*r, &ctx).await.0.is_in_line());

    // Merged into an existing JSON5 file: every other key stays.
    let agent = format!("{base}/agent.json5");
    ssh_root(
        CONTAINER,
        &format!(
            "cat > {agent} <<'EOF'\n// written by the agent\n{{\n  gateway: {{ bind: '0.0.0.0', port: 18789, }},\n  \
             skills: {{ enabled: true }},\n  channels: ['telegram'],\n}}\nEOF\nchmod 0640 {agent}"
        ),
    );
    let r = build(
        &JSON_CONFIG,
        json!({"path": agent, "format": "json5",
               "settings": {"gateway": {"bind": "loopback", "auth": {"token": token}},
                            "skills": {"enabled": false}}}),
    );
    let (before, _) = converge(&s, &*r, &ctx).await;
    assert_eq!(
        before,
        Verdict::Modify(vec![
            change("gateway.bind", Some("0.0.0.0"), Some("loopback")),
            change("gateway.auth.token", None, Some(token)),
            change("skills.enabled", Some("true"), Some("false")),
        ])
    );
    let doc: Value = serde_json::from_str(&ssh_root(CONTAINER, &format!("cat {agent}"))).unwrap();
    assert_eq!(
        doc,
        json!({"gateway": {"bind": "loopback", "port": 18789, "auth": {"token": token}},
               "skills": {"enabled": false}, "channels": ["telegram"]})
    );
    assert_eq!(
        ssh_root(
            CONTAINER,
            &format!(
                "stat -c %a {agent}; head -n 1 /var/lib/rampart/backups/{name}{agent}; ls -A {base}"
            )
        ),
        "640\n// written by the agent\nagent.json5\nopenclaw.json\n"
    );

    // Drift by hand is exactly that change, and is put back.
    ssh_root(
        CONTAINER,
        &format!("sed -i 's/\"loopback\"/\"lan\"/' {agent}"),
    );
    let (before, after) = converge(&s, &*r, &ctx).await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change("gateway.bind", Some("lan"), Some("loopback"))])
    );
    assert_eq!(
        after,
        Verdict::InLine(format!("json_config {agent} is in line"))
    );
    assert!(converge(&s, &*r, &ctx).await.0.is_in_line());
    ssh_root(
        CONTAINER,
        &format!("rm -rf {base} /var/lib/rampart/backups/{name}"),
    );
}

#[tokio::test]
async fn audit_rules_in_a_container_are_written_and_said_unavailable() {
    let name = format!("rampart-audit-{}", std::process::id());
    let file = format!("/etc/audit/rules.d/61-{name}.rules");
    let ctx = ApplyContext::new(name.clone());
    ssh_root(
        CONTAINER,
        &format!("rm -rf {file} /var/lib/rampart/backups/{name}"),
    );
    let s = root(CONTAINER).await;
    let rules = [
        format!("-w /tmp/{name} -p wa -k {name}"),
        format!("-a always,exit -F arch=b64 -S execve -F uid=daemon -k {name}-exec"),
    ];
    let r = build(&AUDIT_RULES, json!({"rules": rules, "file": file}));
    let (before, after) = converge(&s, &*r, &ctx).await;
    assert_eq!(before.action(), "create");
    assert_eq!(
        before.changes()[1],
        change(
            "loaded",
            Some("unavailable (no kernel audit in this container)"),
            Some(&format!("not loaded: rules written to {file} only"))
        )
    );
    let sentence = format!(
        "audit_rules {file}: audit unavailable here (no kernel audit in this container): \
         rules written to {file}, not loaded"
    );
    assert_eq!(after, Verdict::InLine(sentence.clone()));
    let (before, _) = converge(&s, &*r, &ctx).await;
    assert_eq!(before, Verdict::InLine(sentence), "no drift forever");
    assert_eq!(
        ssh_root(CONTAINER, &format!("stat -c %a {file}; tail -n 2 {file}")),
        format!("640\n{}\n{}\n", rules[0], rules[1])
    );
    ssh_root(
        CONTAINER,
        &format!("rm -rf {file} /var/lib/rampart/backups/{name}"),
    );
}

#[tokio::test]
async fn audit_rules_on_a_vm_are_loaded_checked_and_reloaded() {
    let name = format!("rampart-audit-{}", std::process::id());
    let file = format!("/etc/audit/rules.d/61-{name}.rules");
    let watched = format!("/var/tmp/{name}");
    let ctx = ApplyContext::new(name.clone());
    // What an earlier, failed run may have left (its own pid-named files only).
    ssh_root(
        VM,
        &format!(
            "rm -f /etc/audit/rules.d/61-rampart-audit-*.rules /var/tmp/rampart-audit-*.rules; \
             augenrules --load >/dev/null; rm -rf /var/tmp/rampart-audit-* \
             /var/lib/rampart/backups/rampart-audit-*; mkdir {watched}"
        ),
    );
    let s = root(VM).await;
    let watch = format!("-w {watched} -p aw -k {name}");
    let exec = format!("-a exit,always -F arch=b64 -S execve -F uid=daemon -k {name}-exec");
    let r = build(
        &AUDIT_RULES,
        json!({"rules": [format!("# {name}"), watch, exec], "file": file}),
    );
    let (before, after) = converge(&s, &*r, &ctx).await;
    assert_eq!(
        before.changes()[1],
        change("loaded", None, Some(&format!("{watch}\n{exec}\n")))
    );
    assert_eq!(
        after,
        Verdict::InLine(format!("audit_rules {file} is in line"))
    );
    let listed = ssh_root(VM, &format!("auditctl -l | grep -e {name}"));
    assert_eq!(
        listed,
        format!(
            "-w {watched} -p wa -k {name}\n\
             -a always,exit -F arch=b64 -S execve -F uid=1 -F key={name}-exec\n"
        )
    );
    assert!(converge(&s, &*r, &ctx).await.0.is_in_line());

    // A rule deleted from the kernel by hand is drift, and is loaded again.
    ssh_root(VM, &format!("auditctl -W {watched} -p wa -k {name}"));
    let (before, _) = converge(&s, &*r, &ctx).await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change(
            "loaded",
            Some(&format!("{exec}\n")),
            Some(&format!("{watch}\n{exec}\n"))
        )])
    );
    assert_eq!(
        ssh_root(VM, &format!("auditctl -l | grep -c -e {name}")),
        "2\n"
    );

    // A file outside rules.d: the missing rules are loaded one by one.
    let other = format!("/var/tmp/{name}.rules");
    let read = format!("-w {watched} -p r -k {name}-read");
    let r2 = build(&AUDIT_RULES, json!({"rules": [read], "file": other}));
    let (before, _) = converge(&s, &*r2, &ctx).await;
    assert_eq!(before.action(), "create");
    assert_eq!(
        ssh_root(VM, &format!("auditctl -l | grep -e {name}-read")),
        format!("-w {watched} -p r -k {name}-read\n")
    );

    // Cleanup: the rules file goes, the reload drops every rule of this test.
    ssh_root(
        VM,
        &format!(
            "rm -f {file} {other}; augenrules --load >/dev/null; rm -rf {watched} \
             /var/lib/rampart/backups/{name}"
        ),
    );
    assert_eq!(
        ssh_root(VM, &format!("auditctl -l | grep -c -e {name} || true")),
        "0\n"
    );
}
