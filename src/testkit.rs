//! testkit: what unit tests of one host's pipeline and of the fleet need without SSH. A
//! [`LocalConnector`] whose "hosts" are folders of the test: each connection is a
//! [`LocalSession`] (a shell on this machine), each host's rampart state lives under the
//! test's folder, and connections can be refused on purpose (a lost confirmation).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::connector::{Connected, Connector};
use crate::engine::RunSettings;
use crate::inventory::{Host, Inventory};
use crate::playbook::Playbook;
use crate::transport::local::LocalSession;
use crate::transport::ssh::ConnectError;

/// Decides, for a host and the number of its connection (0 for the first), whether the
/// connection is refused.
type Refuse = Box<dyn Fn(&str, usize) -> bool + Send + Sync>;

/// Connects every host to a local shell, as root.
pub struct LocalConnector {
    root: PathBuf,
    refuse: Refuse,
    /// Connections asked for, per host.
    calls: Mutex<HashMap<String, usize>>,
}

impl LocalConnector {
    /// Hosts keep their state under `root/<host>/state`.
    pub fn new(root: &Path) -> LocalConnector {
        LocalConnector::refusing(root, |_, _| false)
    }

    pub fn refusing(
        root: &Path,
        refuse: impl Fn(&str, usize) -> bool + Send + Sync + 'static,
    ) -> LocalConnector {
        LocalConnector {
            root: root.to_path_buf(),
            refuse: Box::new(refuse),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// How many connections `host` was asked for.
    pub fn calls(&self, host: &str) -> usize {
        self.calls
            .lock()
            .expect("not poisoned")
            .get(host)
            .copied()
            .unwrap_or(0)
    }
}

impl Connector for LocalConnector {
    type Session = LocalSession;

    async fn connect(&self, host: &Host) -> Result<Connected<LocalSession>, ConnectError> {
        let n = {
            let mut calls = self.calls.lock().expect("not poisoned");
            let n = calls.entry(host.name.clone()).or_default();
            *n += 1;
            *n - 1
        };
        if (self.refuse)(&host.name, n) {
            return Err(ConnectError::AuthRefused {
                login: "root".into(),
                tried: vec!["test key".into()],
            });
        }
        Ok(Connected {
            session: LocalSession::default(),
            login: "root".into(),
            note: None,
        })
    }

    async fn close(&self, _session: LocalSession) {}

    fn backup_root(&self, host: &Host) -> Option<String> {
        Some(
            self.root
                .join(&host.name)
                .join("state/backups")
                .display()
                .to_string(),
        )
    }
}

/// The dead-man folder of a run on a host of `connector`'s.
pub fn deadman_dir(root: &Path, host: &str, run_id: &str) -> PathBuf {
    root.join(host).join("state/deadman").join(run_id)
}

/// A unique run id, so that no two tests share a dead-man switch.
pub fn run_id(name: &str) -> String {
    format!("t-{name}-{}", crate::engine::nonce())
}

pub fn settings(apply: bool, run_id: &str) -> RunSettings {
    RunSettings {
        apply,
        run_id: run_id.to_string(),
        timeout: Duration::from_secs(60),
        tags: vec![],
        skip_tags: vec![],
        deadman_seconds: 2,
        keep_backups: None,
        inspect: None,
    }
}

/// The inventory and playbook written into `dir`, and the inventory's hosts.
pub fn load(dir: &Path, inventory: &str, playbook: &str) -> (Inventory, Vec<Host>, Playbook) {
    let inv = dir.join("inventory.yaml");
    std::fs::write(&inv, inventory).unwrap();
    let book = dir.join("playbook.yaml");
    std::fs::write(&book, playbook).unwrap();
    let inventory = Inventory::load(&inv).unwrap();
    let hosts = inventory.limit(&[]).unwrap().into_iter().cloned().collect();
    (inventory, hosts, Playbook::load(&book).unwrap())
}

/// A host named `name` of a one-host inventory.
pub fn host(name: &str) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let (_, hosts, _) = load(
        dir.path(),
        &format!("all:\n  hosts:\n    {name}: {{}}\n"),
        "steps: []\n",
    );
    hosts.into_iter().next().unwrap()
}
