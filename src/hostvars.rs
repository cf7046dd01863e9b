//! hostvars: what every host knows of the others (`hostvars`: their variables and facts),
//! and the controller's cache of each host's last facts. Gathering them is a pass of its own
//! over every host, before the run's probe; the connections it opens serve that probe.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::connector::{Connected, Connector};
use crate::engine::{self, host::Known};
use crate::facts::Facts;
use crate::fleet::{Run, for_each_host_or};
use crate::inventory::Host;
use crate::transport::ssh::ConnectError;
use crate::untrusted::panic_error;

/// What every host knows of the others (`hostvars`): their variables and facts. The
/// connections the gathering opened stay open for the run's own probe: one SSH handshake per
/// host, whatever the number of passes over it.
pub struct FleetFacts<S> {
    hostvars: Value,
    facts: HashMap<String, Facts>,
    /// Each host's connection (or why there is none), taken by its probe.
    connections: std::sync::Mutex<HashMap<String, Result<Connected<S>, ConnectError>>>,
}

impl<S> FleetFacts<S> {
    /// The facts of `host` as fact: every host's `hostvars`, its own facts, and the
    /// connection that gathered them (taken: the probe uses it once).
    pub fn known(&self, host: &str) -> Known<S> {
        Known {
            hostvars: Some(self.hostvars.clone()),
            facts: self.facts.get(host).cloned(),
            connection: self.connections.lock().expect("not poisoned").remove(host),
        }
    }

    /// The facts gathered (or cached) for `host`.
    pub fn facts(&self, host: &str) -> Option<&Facts> {
        self.facts.get(host)
    }
}

/// Whether a step (or a template it looks up) uses `hostvars`: then every host's facts are
/// gathered before any host is rendered, over one extra connection per host.
pub fn uses_hostvars(run: &Run) -> bool {
    let text: String = run
        .playbook
        .steps
        .iter()
        .chain(&run.playbook.handlers)
        .map(|s| {
            format!(
                "{} {}",
                s.params.to_json(),
                s.when
                    .as_ref()
                    .map(|w| w.to_json().to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    if text.contains("hostvars") {
        return true;
    }
    let lookups =
        regex::Regex::new(r#"lookup\(\s*'template'\s*,\s*'([^']+)'\s*\)|"template":"([^"]+)""#)
            .expect("valid");
    lookups.captures_iter(&text).any(|c| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .map(|m| m.as_str())
            .unwrap_or("");
        run.templates
            .source(name)
            .is_some_and(|t| t.contains("hostvars"))
    })
}

/// Connects to every host for its facts, then builds `hostvars`. A host that cannot be
/// reached lends the facts it had last time (the controller's fact cache): its WireGuard peers
/// keep it while it is down, and a drift check does not report them as drift.
pub async fn gather<C: Connector + 'static>(
    run: &Arc<Run>,
    connector: &Arc<C>,
) -> FleetFacts<C::Session> {
    let on_panic = |host: &Host, message: String| {
        let bug = ConnectError::Bug {
            message: panic_error(&message),
        };
        (host.name.clone(), None, Err(bug))
    };
    let gathered = for_each_host_or(&run.hosts, run.forks, on_panic, |host| {
        let run = run.clone();
        let connector = connector.clone();
        async move {
            let c = match connector.connect(&host).await {
                Ok(c) => c,
                Err(e) => return (host.name.clone(), None, Err(e)),
            };
            let become_root =
                run.playbook.become_root.unwrap_or(host.become_root) && c.login != "root";
            let f = engine::probe(&c.session, become_root, &[], run.settings.timeout)
                .await
                .ok()
                .map(|(f, _)| f);
            (host.name.clone(), f, Ok(c))
        }
    })
    .await;
    let cache = FactCache::new();
    let mut facts = HashMap::new();
    let mut connections = HashMap::new();
    for ((name, f, c), host) in gathered.into_iter().zip(&run.hosts) {
        if let Some(f) = f {
            cache.save(host, &f);
            facts.insert(name.clone(), f);
        }
        connections.insert(name, c);
    }
    with_hostvars(run, facts, connections)
}

/// Every host's cached facts, when the cache has them all.
pub fn cached<S>(run: &Run) -> Option<FleetFacts<S>> {
    let cache = FactCache::new();
    let facts = run
        .hosts
        .iter()
        .map(|h| Some((h.name.clone(), cache.load(h)?)))
        .collect::<Option<HashMap<_, _>>>()?;
    Some(with_hostvars(run, facts, HashMap::new()))
}

/// `hostvars` of every host of the inventory (`--limit` or not): its variables, and its
/// facts as gathered, else as cached.
fn with_hostvars<S>(
    run: &Run,
    mut facts: HashMap<String, Facts>,
    connections: HashMap<String, Result<Connected<S>, ConnectError>>,
) -> FleetFacts<S> {
    let cache = FactCache::new();
    let all = run.inventory.limit(&[]).unwrap_or_default();
    for host in &all {
        if !facts.contains_key(&host.name)
            && let Some(f) = cache.load(host)
        {
            tracing::info!("{}: facts from the cache", host.name);
            facts.insert(host.name.clone(), f);
        }
    }
    let mut hostvars = serde_json::Map::new();
    for host in all {
        let mut vars = engine::host_vars(
            host,
            &run.inventory,
            &run.playbook,
            &run.secrets,
            &run.templates,
        )
        .unwrap_or_default();
        vars.insert("address".into(), Value::String(host.address.clone()));
        if let Some(f) = facts.get(&host.name) {
            vars.insert(
                "facts".into(),
                serde_json::to_value(f).expect("facts serialize"),
            );
        }
        hostvars.insert(host.name.clone(), Value::Object(vars));
    }
    FleetFacts {
        hostvars: Value::Object(hostvars),
        facts,
        connections: std::sync::Mutex::new(connections),
    }
}

/// The controller's cache of each host's last facts, for `hostvars` of hosts that are down:
/// `$XDG_CACHE_HOME/rampart/facts/` (or `~/.cache/...`), one JSON file per host and address.
/// Facts hold no secret (WireGuard public keys, the OS); a cache that cannot be written or
/// read is skipped.
struct FactCache(Option<PathBuf>);

impl FactCache {
    fn new() -> FactCache {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        FactCache(base.map(|b| b.join("rampart/facts")))
    }

    fn path(&self, host: &Host) -> Option<PathBuf> {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        Some(self.0.as_ref()?.join(format!(
            "{}@{}_{}.json",
            safe(&host.name),
            safe(&host.address),
            host.port
        )))
    }

    fn save(&self, host: &Host, facts: &Facts) {
        let Some(path) = self.path(host) else { return };
        let write = || -> std::io::Result<()> {
            crate::localfs::create_private_dir_all(path.parent().expect("in the cache folder"))?;
            crate::localfs::write_atomically(&path, &serde_json::to_vec(facts)?)
        };
        if let Err(e) = write() {
            tracing::debug!("cannot cache the facts of {}: {e}", host.name);
        }
    }

    fn load(&self, host: &Host) -> Option<Facts> {
        let text = std::fs::read(self.path(host)?).ok()?;
        serde_json::from_slice(&text).ok()
    }
}
