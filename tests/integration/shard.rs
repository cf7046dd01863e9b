//! `--shard I/N` and `rampart report merge` over real SSH: a 20-host fleet (20 inventory
//! entries that alias the testbed hosts h57 and h58, so the shards really connect) planned
//! once whole and once as 4 shards in 4 separate processes; the merged report equals the whole
//! run's, timings and run ids aside. Read-only `plan`, so the hosts do not change between runs.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::common::*;
use rampart::exit::Outcome;

const SHARDS: u32 = 4;
/// Few connections at once per process: the 20 hosts are 2 sshds, whose MaxStartups (10 by
/// default) drops new connections beyond 10 unauthenticated ones, and both tests (4 shard
/// processes among them) may run at once.
const FORKS: &str = "2";

fn plan(dir: &Path, inv: &Path, book: &Path, extra: &[&str]) -> Output {
    rampart(dir)
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("RAMPART_SHARDS")
        .args(["plan", "-q", "--forks", FORKS, "--format", "json", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .args(extra)
        .arg(book)
        .output()
        .unwrap()
}

/// The report without what differs from run to run: ids, times, and byte counts (the
/// probe's output carries times).
fn stable(mut report: Value) -> Value {
    let o = report.as_object_mut().unwrap();
    for key in ["run_id", "started", "seconds"] {
        assert!(o.remove(key).is_some(), "no {key} in the report");
    }
    for h in o["hosts"].as_array_mut().unwrap() {
        let h = h.as_object_mut().unwrap();
        h.remove("seconds");
        h.remove("stats");
    }
    report
}

fn fleet(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let hosts: Vec<(String, String)> = (1..=20)
        .map(|i| {
            let target = if i % 2 == 0 { "h57" } else { "h58" };
            (
                format!("gw-{i:02}"),
                format!("ansible_host: {}", addr(target)),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = hosts
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_str()))
        .collect();
    let inv = write_inventory(dir, &refs);
    let book = dir.join("book.yaml");
    std::fs::write(
        &book,
        "steps:\n  - name: banner\n    file: {path: /etc/rampart-shard-test, content: \"hi\\n\"}\n",
    )
    .unwrap();
    (inv, book)
}

#[test]
fn four_shards_merged_equal_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let (inv, book) = fleet(dir.path());

    let whole = plan(dir.path(), &inv, &book, &[]);
    let whole_code = whole.status.code();
    assert_eq!(
        whole_code,
        exit_code(Outcome::Differs),
        "{}{}",
        stdout(&whole),
        stderr(&whole)
    );
    let whole = json(&whole);
    assert!(
        whole.get("shard").is_none(),
        "an unsharded run has no shard"
    );
    assert_eq!(whole["hosts"].as_array().unwrap().len(), 20);

    // Four separate processes at once, as an Indexed Job's pods would be: two with
    // --shard I/N, two with JOB_COMPLETION_INDEX and RAMPART_SHARDS.
    let children: Vec<_> = (1..=SHARDS)
        .map(|i| {
            let out = dir.path().join(format!("shard-{i}.json"));
            let mut cmd = rampart(dir.path());
            cmd.args(["plan", "-q", "--forks", FORKS, "-i"])
                .arg(&inv)
                .arg("--known-hosts")
                .arg(known_hosts())
                .arg("-o")
                .arg(&out)
                .arg(&book)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            if i <= 2 {
                cmd.env_remove("JOB_COMPLETION_INDEX")
                    .env_remove("RAMPART_SHARDS")
                    .arg(format!("--shard={i}/{SHARDS}"));
            } else {
                cmd.env("JOB_COMPLETION_INDEX", (i - 1).to_string())
                    .env("RAMPART_SHARDS", SHARDS.to_string());
            }
            (out, cmd.spawn().unwrap())
        })
        .collect();
    let mut files = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, (out, child)) in children.into_iter().enumerate() {
        let done = child.wait_with_output().unwrap();
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap())
            .unwrap_or_else(|e| panic!("shard {}: {e}: {}", i + 1, stderr(&done)));
        assert_eq!(report["shard"]["index"], i + 1);
        assert_eq!(report["shard"]["count"], SHARDS);
        let names: Vec<String> = report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.len() < 20, "shard {} ran the whole fleet", i + 1);
        for n in names {
            // Each host in one shard only: the others did not connect to it.
            assert!(seen.insert(n.clone()), "{n} in two shards");
            assert_eq!(
                rampart::shard::Shard::of(&n, SHARDS),
                i as u32 + 1,
                "{n} in the wrong shard"
            );
        }
        assert_eq!(
            report["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["stats"]["round_trips"].as_u64().unwrap())
                .filter(|r| *r == 0)
                .count(),
            0,
            "every host of the shard was probed"
        );
        files.push(out);
    }
    assert_eq!(seen.len(), 20);

    let merged_json = dir.path().join("fleet.json");
    let merged_prom = dir.path().join("fleet.prom");
    let merge = rampart(dir.path())
        .args(["report", "merge"])
        .args(&files)
        .arg("-o")
        .arg(&merged_json)
        .arg("-o")
        .arg(&merged_prom)
        .output()
        .unwrap();
    assert_eq!(merge.status.code(), whole_code, "{}", stderr(&merge));
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(&merged_json).unwrap()).unwrap();
    assert!(merged.get("shard").is_none());
    assert_eq!(stable(merged), stable(whole));
    let prom = std::fs::read_to_string(&merged_prom).unwrap();
    assert!(prom.contains("gw-01") && prom.contains("gw-20"), "{prom}");

    // Without shard 3, the merge refuses and writes nothing.
    let partial = dir.path().join("partial.json");
    let out = rampart(dir.path())
        .args(["report", "merge"])
        .args([&files[0], &files[1], &files[3]])
        .arg("-o")
        .arg(&partial)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), exit_code(Outcome::Failed));
    assert!(
        stderr(&out).contains("shard(s) 3 of 4 missing"),
        "{}",
        stderr(&out)
    );
    assert!(!partial.exists());
}

#[test]
fn hosts_of_other_shards_are_not_contacted() {
    // The hosts of shards 2..4 point at a closed loopback port: the whole run finds them
    // unreachable; shard 1, which must not touch them, sees only its own hosts, all up.
    let dir = tempfile::tempdir().unwrap();
    let (_, book) = fleet(dir.path());
    let hosts: Vec<(String, String)> = (1..=20)
        .map(|i| {
            let name = format!("gw-{i:02}");
            let extra = if rampart::shard::Shard::of(&name, SHARDS) == 1 {
                format!("ansible_host: {}", addr("h57"))
            } else {
                "ansible_host: 127.0.0.1, ansible_port: 1".to_string()
            };
            (name, extra)
        })
        .collect();
    let refs: Vec<(&str, &str)> = hosts
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_str()))
        .collect();
    let inv = write_inventory(dir.path(), &refs);

    let whole = plan(dir.path(), &inv, &book, &[]);
    assert_eq!(whole.status.code(), exit_code(Outcome::Failed));
    let unreachable = json(&whole)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["status"] == "unreachable")
        .count();
    assert!(unreachable > 0 && unreachable < 20, "{unreachable}");

    let one = plan(dir.path(), &inv, &book, &[&format!("--shard=1/{SHARDS}")]);
    assert_eq!(
        one.status.code(),
        exit_code(Outcome::Differs),
        "{}{}",
        stdout(&one),
        stderr(&one)
    );
    let report = json(&one);
    let statuses: Vec<&str> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 20 - unreachable, "{report:#}");
    assert!(statuses.iter().all(|s| *s == "differs"), "{statuses:?}");
}
