//! shard: one of N copies of a run (`--shard i/n`) and the merge of their JSON reports.
//!
//! A host belongs to shard `1 + fnv1a64(name) % n` (1-based; FNV-1a, 64 bits, of the host's
//! inventory name as UTF-8): fixed by the name alone, the same on every machine and every run,
//! never Rust's randomized hasher. A Kubernetes Indexed Job gives `JOB_COMPLETION_INDEX`
//! (0-based): shard `JOB_COMPLETION_INDEX + 1` of `--shards N` / `RAMPART_SHARDS`.
//!
//! A sharded run's JSON report carries a `shard` record (index, count, digests of the playbook
//! and inventory, and each host's position in the unsharded run) so that `rampart report
//! merge` can refuse an incomplete or mixed set and put the hosts back in inventory order.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::summary::FleetSummary;

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The most shards a run may be split into.
pub const MAX_SHARDS: u32 = 10_000;

/// FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Shard {
    /// The shard (1-based) a host of this name belongs to, of `count`.
    pub fn of(name: &str, count: u32) -> u32 {
        (fnv1a64(name.as_bytes()) % u64::from(count.max(1))) as u32 + 1
    }

    pub fn contains(&self, name: &str) -> bool {
        Shard::of(name, self.count) == self.index
    }

    /// `i/n`, 1 <= i <= n <= [`MAX_SHARDS`].
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || {
            format!(
                "--shard {text:?}: expected I/N, shard I (counted from 1) of N, e.g. 2/4, \
                 with 1 <= I <= N <= {MAX_SHARDS}"
            )
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard of a run: `--shard i/n`, else `JOB_COMPLETION_INDEX` (0-based, a Kubernetes
    /// Indexed Job's) with `--shards`/`RAMPART_SHARDS`, else none (the whole fleet).
    /// `job_index` is the variable's value; `shards` the flag's or RAMPART_SHARDS's.
    pub fn resolve(
        flag: Option<Shard>,
        shards: Option<u32>,
        job_index: Option<&str>,
    ) -> Result<Option<Shard>, String> {
        match (flag, shards) {
            (Some(s), Some(n)) if n != s.count => Err(format!(
                "--shard {}/{} and --shards {n} (or RAMPART_SHARDS) disagree on the number of \
                 shards\nhint: give one of them",
                s.index, s.count
            )),
            (Some(s), _) => Ok(Some(s)),
            (None, None) => Ok(None),
            (None, Some(n)) => {
                if n == 0 || n > MAX_SHARDS {
                    return Err(format!(
                        "--shards {n}: the number of shards must be 1 to {MAX_SHARDS}"
                    ));
                }
                let Some(raw) = job_index else {
                    return Err(format!(
                        "--shards {n} (or RAMPART_SHARDS) without a shard index\nhint: give \
                         --shard I/{n}, or run as a Kubernetes Indexed Job, which sets \
                         JOB_COMPLETION_INDEX"
                    ));
                };
                let index: u32 = raw
                    .trim()
                    .parse()
                    .map_err(|_| format!("JOB_COMPLETION_INDEX={raw:?} is not a whole number"))?;
                if index >= n {
                    return Err(format!(
                        "JOB_COMPLETION_INDEX={index} is out of range for {n} shards (0 to {})\n\
                         hint: the Job's completions must equal --shards/RAMPART_SHARDS",
                        n - 1
                    ));
                }
                Ok(Some(Shard {
                    index: index + 1,
                    count: n,
                }))
            }
        }
    }
}

/// What a sharded report records of its shard, for the merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// 1-based.
    pub index: u32,
    pub count: u32,
    /// SHA-256 (hex) of the playbook file's bytes, then of `--tags` and `--skip-tags`.
    pub playbook_digest: String,
    /// SHA-256 (hex) of the inventory file's bytes, then of `--limit`.
    pub inventory_digest: String,
    /// How many hosts the unsharded run has (after `--limit`).
    pub fleet_hosts: usize,
    /// Each host's position (0-based) in the unsharded run, in this report's order.
    pub positions: Vec<usize>,
}

/// SHA-256 (hex) of a file's bytes followed by `extra`, each part NUL-terminated.
pub fn digest(path: &Path, extra: &[String]) -> std::io::Result<String> {
    let mut h = Sha256::new();
    h.update(std::fs::read(path)?);
    for e in extra {
        h.update([0u8]);
        h.update(e.as_bytes());
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// A run's JSON report as written: the summary and, for a sharded run, its shard.
#[derive(Debug, Clone, Serialize)]
pub struct ShardedSummary {
    #[serde(flatten)]
    pub summary: FleetSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
}

impl ShardedSummary {
    /// Reads a JSON report back.
    pub fn from_json(text: &[u8]) -> serde_json::Result<ShardedSummary> {
        let mut value: serde_json::Value = serde_json::from_slice(text)?;
        let shard = match value.as_object_mut().and_then(|o| o.remove("shard")) {
            Some(s) => Some(serde_json::from_value(s)?),
            None => None,
        };
        Ok(ShardedSummary {
            summary: serde_json::from_value(value)?,
            shard,
        })
    }
}

/// Why a set of shard reports does not make one fleet report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("no report to merge\nhint: name the JSON report of every shard")]
    Empty,
    #[error(
        "{0}: not a sharded report (no `shard` record)\nhint: merge the JSON reports of runs made with --shard I/N"
    )]
    NotSharded(String),
    #[error(
        "{file}: shard {index}/{count}, but {first} is of {first_count} shards\nhint: merge \
         the reports of one sharded run"
    )]
    CountDiffers {
        file: String,
        index: u32,
        count: u32,
        first: String,
        first_count: u32,
    },
    #[error("{file}: {what} differs from {first}'s\nhint: every shard must run the same {what}")]
    Mixed {
        file: String,
        first: String,
        what: &'static str,
    },
    #[error(
        "shard {index}/{count} is given twice: {a} and {b}\nhint: give each shard's report once"
    )]
    Duplicate {
        index: u32,
        count: u32,
        a: String,
        b: String,
    },
    #[error(
        "shard(s) {missing} of {count} missing\nhint: every shard's report must be given; \
         rerun the missing shard(s)"
    )]
    Missing { missing: String, count: u32 },
    #[error("{0}\nhint: the reports do not come from one sharded run")]
    Positions(String),
}

/// Merges the reports (file name, report) of shards 1..n into the report the unsharded run
/// would have made: hosts in inventory order; started the earliest start, seconds the longest
/// shard; run_id shard 1's; an aborted shard aborts the whole.
pub fn merge(reports: Vec<(String, ShardedSummary)>) -> Result<FleetSummary, MergeError> {
    let mut by_index: BTreeMap<u32, (String, ShardedSummary, ShardRecord)> = BTreeMap::new();
    let mut first: Option<(String, ShardRecord, &'static str)> = None;
    for (file, mut report) in reports {
        let Some(rec) = report.shard.take() else {
            return Err(MergeError::NotSharded(file));
        };
        if let Some((first_file, f, mode)) = &first {
            if rec.count != f.count {
                return Err(MergeError::CountDiffers {
                    file,
                    index: rec.index,
                    count: rec.count,
                    first: first_file.clone(),
                    first_count: f.count,
                });
            }
            let mixed = |what| MergeError::Mixed {
                file: file.clone(),
                first: first_file.clone(),
                what,
            };
            if report.summary.mode != *mode {
                return Err(mixed("mode (plan, apply, drift, audit)"));
            }
            if rec.playbook_digest != f.playbook_digest {
                return Err(mixed("playbook (or --tags/--skip-tags)"));
            }
            if rec.inventory_digest != f.inventory_digest || rec.fleet_hosts != f.fleet_hosts {
                return Err(mixed("inventory (or --limit)"));
            }
        } else {
            first = Some((file.clone(), rec.clone(), report.summary.mode));
        }
        if let Some((a, _, _)) = by_index.get(&rec.index) {
            return Err(MergeError::Duplicate {
                index: rec.index,
                count: rec.count,
                a: a.clone(),
                b: file,
            });
        }
        if rec.index == 0 || rec.index > rec.count {
            return Err(MergeError::Positions(format!(
                "{file}: shard {}/{} is out of range",
                rec.index, rec.count
            )));
        }
        by_index.insert(rec.index, (file, report, rec));
    }
    let Some((_, first, _)) = first else {
        return Err(MergeError::Empty);
    };
    let missing: Vec<String> = (1..=first.count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing {
            missing: missing.join(", "),
            count: first.count,
        });
    }

    let mut slots: Vec<Option<crate::summary::HostReport>> = vec![None; first.fleet_hosts];
    let mut merged: Option<FleetSummary> = None;
    let mut aborted = Vec::new();
    for (index, (file, report, rec)) in by_index {
        let mut s = report.summary;
        if rec.positions.len() != s.hosts.len() {
            return Err(MergeError::Positions(format!(
                "{file}: {} hosts but {} positions",
                s.hosts.len(),
                rec.positions.len()
            )));
        }
        if let Some(a) = s.aborted.take() {
            aborted.push(format!("shard {index}/{}: {a}", rec.count));
        }
        for (host, pos) in std::mem::take(&mut s.hosts).into_iter().zip(&rec.positions) {
            let name = host.name.clone();
            match slots.get_mut(*pos) {
                Some(slot @ None) => *slot = Some(host),
                Some(Some(other)) => {
                    return Err(MergeError::Positions(format!(
                        "{file}: host {name} and {} both at position {pos}",
                        other.name
                    )));
                }
                None => {
                    return Err(MergeError::Positions(format!(
                        "{file}: host {name} at position {pos}, past the fleet's {} hosts",
                        first.fleet_hosts
                    )));
                }
            }
        }
        match &mut merged {
            None => merged = Some(s),
            Some(m) => {
                m.started = m.started.min(s.started);
                m.seconds = m.seconds.max(s.seconds);
            }
        }
    }
    let mut merged = merged.ok_or(MergeError::Empty)?;
    if aborted.is_empty() {
        if let Some(pos) = slots.iter().position(Option::is_none) {
            return Err(MergeError::Positions(format!(
                "no shard reports the host at position {pos} of {}",
                first.fleet_hosts
            )));
        }
    } else {
        merged.aborted = Some(aborted.join("\n"));
    }
    merged.hosts = slots.into_iter().flatten().collect();
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{HostReport, HostStatus};

    #[test]
    fn fnv1a64_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn the_assignment_is_fixed_by_the_name() {
        // Pinned values (computed apart, in Python): a change of hash or of the mapping would
        // move hosts between the shards of a running fleet.
        let got: Vec<u32> = ["gw-1", "gw-2", "pi-kitchen", "vps-fra-03"]
            .iter()
            .map(|n| Shard::of(n, 4))
            .collect();
        assert_eq!(got, [2, 1, 4, 1]);
        assert_eq!(Shard::of("a", 4), (0xaf63dc4c8601ec8c_u64 % 4) as u32 + 1);
        assert_eq!(Shard::of("anything", 1), 1);
    }

    #[test]
    fn every_host_is_in_exactly_one_shard_and_shards_are_roughly_balanced() {
        let names: Vec<String> = (0..10_000).map(|i| format!("host-{i:05}")).collect();
        for n in [1u32, 2, 3, 4, 7, 16] {
            let mut sizes = vec![0usize; n as usize];
            for name in &names {
                let owners: Vec<u32> = (1..=n)
                    .filter(|i| {
                        Shard {
                            index: *i,
                            count: n,
                        }
                        .contains(name)
                    })
                    .collect();
                assert_eq!(owners.len(), 1, "{name} in {owners:?} of {n}");
                sizes[owners[0] as usize - 1] += 1;
            }
            let even = names.len() / n as usize;
            for s in &sizes {
                assert!(
                    s.abs_diff(even) * 10 < even,
                    "{n} shards: sizes {sizes:?} not within 10% of {even}"
                );
            }
        }
    }

    #[test]
    fn shard_arguments_and_the_indexed_job_environment() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", "1/10001", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let s = |i, n| Some(Shard { index: i, count: n });
        assert_eq!(Shard::resolve(None, None, Some("3")), Ok(None));
        assert_eq!(Shard::resolve(s(2, 4), None, Some("0")), Ok(s(2, 4)));
        assert_eq!(Shard::resolve(s(2, 4), Some(4), None), Ok(s(2, 4)));
        assert!(Shard::resolve(s(2, 4), Some(5), None).is_err());
        assert_eq!(Shard::resolve(None, Some(4), Some("0")), Ok(s(1, 4)));
        assert_eq!(Shard::resolve(None, Some(4), Some("3")), Ok(s(4, 4)));
        assert!(Shard::resolve(None, Some(4), Some("4")).is_err());
        assert!(Shard::resolve(None, Some(4), Some("x")).is_err());
        assert!(Shard::resolve(None, Some(4), None).is_err());
        assert!(Shard::resolve(None, Some(0), Some("0")).is_err());
    }

    fn fleet(names: &[&str]) -> Vec<HostReport> {
        names
            .iter()
            .map(|n| HostReport::new(&crate::testkit::host(n)))
            .collect()
    }

    /// The reports of `count` shards of a run over `names`, as JSON would carry them.
    fn shard_reports(names: &[&str], count: u32) -> Vec<(String, ShardedSummary)> {
        let hosts = fleet(names);
        (1..=count)
            .map(|index| {
                let shard = Shard { index, count };
                let mut s = crate::report::sample_summary("plan");
                let mut positions = Vec::new();
                s.hosts = hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| shard.contains(&h.name))
                    .map(|(i, h)| {
                        positions.push(i);
                        h.clone()
                    })
                    .collect();
                let report = ShardedSummary {
                    summary: s,
                    shard: Some(ShardRecord {
                        index,
                        count,
                        playbook_digest: "p".into(),
                        inventory_digest: "i".into(),
                        fleet_hosts: hosts.len(),
                        positions,
                    }),
                };
                // Through JSON and back, as the merge reads it.
                let text = serde_json::to_string(&report).unwrap();
                (
                    format!("shard-{index}.json"),
                    ShardedSummary::from_json(text.as_bytes()).unwrap(),
                )
            })
            .collect()
    }

    const NAMES: [&str; 9] = ["a", "b", "c", "gw-1", "gw-2", "gw-3", "pi", "vps", "z"];

    #[test]
    fn merged_shards_are_the_fleet_in_inventory_order() {
        let mut reports = shard_reports(&NAMES, 3);
        reports.reverse();
        let merged = merge(reports).unwrap();
        let names: Vec<&str> = merged.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, NAMES);
        assert_eq!(merged.outcome(), crate::exit::Outcome::Ok);
    }

    #[test]
    fn the_merged_outcome_is_the_worst_shard_host() {
        let mut reports = shard_reports(&NAMES, 3);
        let victim = reports
            .iter_mut()
            .find(|(_, r)| !r.summary.hosts.is_empty())
            .unwrap();
        victim.1.summary.hosts[0].status = HostStatus::Unreachable;
        assert_eq!(
            merge(reports).unwrap().outcome(),
            crate::exit::Outcome::Failed
        );
    }

    #[test]
    fn a_missing_shard_is_an_error() {
        let mut reports = shard_reports(&NAMES, 4);
        reports.remove(2);
        let err = merge(reports).unwrap_err();
        assert_eq!(
            err,
            MergeError::Missing {
                missing: "3".into(),
                count: 4
            }
        );
        assert!(err.to_string().contains("hint: "), "{err}");
    }

    #[test]
    fn a_shard_given_twice_is_an_error() {
        let mut reports = shard_reports(&NAMES, 3);
        let again = reports[1].clone();
        reports.push(("copy.json".into(), again.1));
        let err = merge(reports).unwrap_err();
        assert!(
            matches!(&err, MergeError::Duplicate { index: 2, b, .. } if b == "copy.json"),
            "{err}"
        );
    }

    #[test]
    fn mixed_playbooks_inventories_modes_or_counts_are_errors() {
        let mut r = shard_reports(&NAMES, 3);
        r[2].1.shard.as_mut().unwrap().playbook_digest = "other".into();
        assert!(matches!(
            merge(r).unwrap_err(),
            MergeError::Mixed { what, .. } if what.starts_with("playbook")
        ));
        let mut r = shard_reports(&NAMES, 3);
        r[1].1.shard.as_mut().unwrap().inventory_digest = "other".into();
        assert!(matches!(
            merge(r).unwrap_err(),
            MergeError::Mixed { what, .. } if what.starts_with("inventory")
        ));
        let mut r = shard_reports(&NAMES, 3);
        r[1].1.summary.mode = "apply";
        assert!(matches!(
            merge(r).unwrap_err(),
            MergeError::Mixed { what, .. } if what.starts_with("mode")
        ));
        let mut r = shard_reports(&NAMES, 3);
        r.extend(shard_reports(&NAMES, 4).into_iter().take(1));
        assert!(matches!(
            merge(r).unwrap_err(),
            MergeError::CountDiffers { count: 4, .. }
        ));
        let mut r = shard_reports(&NAMES, 3);
        r[0].1.shard = None;
        assert!(matches!(merge(r).unwrap_err(), MergeError::NotSharded(_)));
        assert_eq!(merge(vec![]).unwrap_err(), MergeError::Empty);
    }

    #[test]
    fn positions_that_do_not_tile_the_fleet_are_errors() {
        let mut r = shard_reports(&NAMES, 3);
        let rec = r
            .iter_mut()
            .map(|(_, x)| x.shard.as_mut().unwrap())
            .find(|s| !s.positions.is_empty())
            .unwrap();
        rec.positions[0] = 999;
        assert!(matches!(merge(r).unwrap_err(), MergeError::Positions(_)));
        let mut r = shard_reports(&NAMES, 3);
        for (_, x) in &mut r {
            x.shard.as_mut().unwrap().fleet_hosts += 1;
        }
        assert!(matches!(merge(r).unwrap_err(), MergeError::Positions(_)));
    }
}
