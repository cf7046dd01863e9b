//! The `file`, `directory`, `absent` and `lines` resources on a real Debian host (testbed h5),
//! through the library over a real SSH session. Everything happens under
//! `/tmp/rampart-file-<test>-<pid>`; backups go to the real backup root under a run id of the
//! same name, removed at the end.

use rampart::resource::file::{ABSENT, DIRECTORY, FILE, LINES};
use rampart::resource::{ApplyContext, Change, Resource, TypeInfo, Verdict, converge_one};
use rampart::transport::ssh::SshSession;
use serde_json::{Value, json};

use super::common::*;

const HOST: &str = "h5";

async fn root() -> SshSession {
    root_session(HOST).await
}

fn build(info: &TypeInfo, v: Value) -> Box<dyn Resource> {
    (info.build)(v).unwrap()
}

async fn converge(s: &SshSession, r: &dyn Resource, ctx: &ApplyContext) -> Verdict {
    let (before, after) = converge_one(s, r, ctx)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", r.id()));
    assert!(after.is_in_line(), "{after:?}");
    before
}

#[tokio::test]
async fn file_types_on_debian() {
    let name = format!("rampart-file-{}", std::process::id());
    let base = format!("/tmp/{name}");
    let ctx = ApplyContext::new(name.clone());
    ssh_root(
        HOST,
        &format!("rm -rf {base} /var/lib/rampart/backups/{name}"),
    );
    let s = root().await;

    let dir = format!("{base}/it's $(id) a\nb");
    let d = build(
        &DIRECTORY,
        json!({"path": dir, "mode": "0750", "owner": "root", "group": "adm"}),
    );
    assert_eq!(converge(&s, &*d, &ctx).await.action(), "create");
    assert!(converge(&s, &*d, &ctx).await.is_in_line());

    let path = format!("{dir}/motd '`x`'");
    let f = |c: &str, mode: &str, owner: &str| {
        build(
            &FILE,
            json!({"path": path, "content": c, "mode": mode, "owner": owner, "group": "nogroup"}),
        )
    };
    assert_eq!(
        converge(&s, &*f("one\n", "0644", "nobody"), &ctx)
            .await
            .action(),
        "create"
    );
    assert!(
        converge(&s, &*f("one\n", "0644", "nobody"), &ctx)
            .await
            .is_in_line()
    );
    let v = converge(&s, &*f("two\n", "0644", "nobody"), &ctx).await;
    assert_eq!(
        v,
        Verdict::Modify(vec![Change::new(
            "content",
            Some("one\n".into()),
            Some("two\n".into())
        )])
    );
    let v = converge(&s, &*f("two\n", "4755", "daemon"), &ctx).await;
    assert_eq!(
        v.changes()
            .iter()
            .map(|c| c.field.as_str())
            .collect::<Vec<_>>(),
        ["owner", "mode"]
    );
    let listing = ssh_root(
        HOST,
        &format!(
            "cd {base}/it* && stat -c '%U %G %a' motd* && cat /var/lib/rampart/backups/{name}{base}/it*/motd*"
        ),
    );
    assert_eq!(listing, "daemon nogroup 4755\none\n");

    let gi = format!("{base}/.gitignore");
    ssh_root(HOST, &format!("printf 'target/\\nsecrets\\n# x' > {gi}"));
    let l = build(
        &LINES,
        json!({"path": gi, "present": [".env", "target/"], "absent": ["secrets"]}),
    );
    assert_eq!(converge(&s, &*l, &ctx).await.action(), "modify");
    assert_eq!(ssh_root(HOST, &format!("cat {gi}")), "target/\n# x\n.env\n");
    // Tamper: the drift is exactly that line.
    ssh_root(HOST, &format!("echo secrets >> {gi}"));
    let v = converge(&s, &*l, &ctx).await;
    assert_eq!(
        v.changes()[0].after.as_deref(),
        Some("target/\n# x\n.env\n")
    );

    let a = build(&ABSENT, json!({"path": base}));
    assert_eq!(converge(&s, &*a, &ctx).await.action(), "remove");
    assert!(converge(&s, &*a, &ctx).await.is_in_line());
    assert_eq!(
        ssh_root(
            HOST,
            &format!("cat /var/lib/rampart/backups/{name}{base}/.gitignore")
        ),
        "target/\nsecrets\n# x"
    );
    // The folder's backup holds what no earlier step had backed up.
    assert_eq!(
        ssh_root(
            HOST,
            &format!(
                "cd /var/lib/rampart/backups/{name}{base}/it* && stat -c '%U %G %a' . && ls -A"
            )
        ),
        "root adm 750\nmotd '`x`'\n"
    );
    ssh_root(
        HOST,
        &format!("rm -rf {base} /var/lib/rampart/backups/{name}"),
    );
}
