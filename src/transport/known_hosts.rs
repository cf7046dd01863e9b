//! known_hosts: rampart's own reader and writer for OpenSSH `known_hosts` files.
//!
//! Owns the answer to "what does this file say about the key this host presented?"
//! ([`KnownHostsFile::check`] → [`HostKeyStatus`]) and the one way rampart writes to the file
//! ([`KnownHostsFile::append_hashed`], used for `--accept-new`). Line parsing (markers, host
//! patterns, keys) is left to `ssh_key::known_hosts`. Matching is done here, because russh's
//! own `check_known_hosts` ignores `@revoked` lines. [`KnownHosts`] reads the user's file
//! and the system's (`/etc/ssh/ssh_known_hosts`) together, as OpenSSH does. A line that
//! cannot be parsed is skipped, as OpenSSH skips it, with a `tracing` warning naming the
//! file and line. This module never prints otherwise and never asks the user anything.
//! Deciding to refuse, accept or write is `transport::ssh`'s job.
//!
//! Matching follows OpenSSH (`hostfile.c`, `match.c`):
//!
//! - A host is looked up as `host` on port 22 and as `[host]:port` on any other port, in
//!   lowercase. The plain form never matches a `[host]:22` line, the same as in OpenSSH.
//! - A line's host field is a comma-separated list of patterns with `*` and `?` wildcards,
//!   matched case-insensitively against the whole lookup string. If a `!pattern` matches, the
//!   line is excluded, even when another pattern matches too.
//! - A hashed field `|1|salt|hash` matches when `HMAC-SHA1(key = salt, lookup) == hash`.
//! - Keys are compared by their key data. Comments are ignored.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{self, HashAlg, PublicKey};
use sha1::Sha1;

use crate::glob::{Syntax, glob_match};

type HmacSha1 = Hmac<Sha1>;

/// The length in bytes of the salt of a hashed host name: the length of a SHA-1 digest, which is
/// the only salt length OpenSSH writes or accepts.
const SALT_LEN: usize = 20;

/// What the known_hosts file says about the key a host presented.
///
/// Precedence, strongest first: `Revoked`, `Trusted`, `Changed`, `CertAuthorityOnly`,
/// `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A matching line holds this very key.
    Trusted,
    /// No line names this host (at this port).
    Unknown,
    /// Lines name this host but with other keys: the recorded fingerprints (SHA256, as OpenSSH
    /// prints them) and the line of each (the file is [`KnownHostsFile::path`]).
    ///
    /// This includes keys of a different type than the presented one. For example, only an
    /// `ecdsa-sha2-nistp256` key is recorded and the host now presents an `ssh-ed25519` key.
    /// OpenSSH's own check (`check_hostkeys_by_key_or_type`) does the same. For a hardening tool,
    /// a host that suddenly shows a key we have never seen for it is a changed host, whatever the
    /// key type.
    Changed { recorded: Vec<RecordedKey> },
    /// An `@revoked` line holds this key.
    ///
    /// This is stricter than OpenSSH, which only honours `@revoked` lines whose host patterns
    /// match the host. Here a revoked key is refused whatever host the line names, so
    /// `@revoked somehost KEY` also blocks another host that presents `KEY`.
    Revoked { line: usize },
    /// The only lines naming this host are `@cert-authority` lines (the first one is `line`).
    /// rampart does not support host certificates. The caller refuses with "host certificates
    /// are not supported" rather than calling the host unknown.
    CertAuthorityOnly { line: usize },
}

/// One key recorded for a host, as reported in [`HostKeyStatus::Changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey {
    /// `SHA256:…` without padding, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key type, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// 1-based line number in the file.
    pub line: usize,
}

impl fmt::Display for RecordedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (line {})",
            self.algorithm, self.fingerprint, self.line
        )
    }
}

/// Why a known_hosts file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("could not read known_hosts file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: not a valid known_hosts line: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
        // Boxed, like `Encode`, to keep this error (and the errors that wrap it) small.
        #[source]
        source: Option<Box<ssh_key::Error>>,
    },
    #[error("could not write known_hosts file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not read random bytes for the host name salt from /dev/urandom")]
    Random(#[source] io::Error),
    #[error("could not encode the host key for the known_hosts file")]
    Encode(#[source] Box<ssh_key::Error>),
}

impl KnownHostsError {
    /// How to fix it, for the `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Read { path, .. } => Some(format!(
                "check the permissions of {} (it should be readable by you, mode 0600)",
                path.display()
            )),
            Self::Malformed { path, line, .. } => Some(format!(
                "fix or delete line {line} of {}; it is skipped, so the host it names is \
                 unknown until then",
                path.display()
            )),
            Self::Write { path, .. } => Some(format!(
                "check that {} and its folder are writable by you",
                path.display()
            )),
            Self::Random(_) | Self::Encode(_) => None,
        }
    }
}

/// One parsed line, with its 1-based line number.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    entry: Entry,
}

/// A parsed known_hosts file: its path (for messages) and its entries with their line numbers.
#[derive(Debug)]
pub struct KnownHostsFile {
    path: PathBuf,
    lines: Vec<Line>,
    /// Lines that are not valid known_hosts lines: skipped, as OpenSSH skips them, so that one
    /// broken line does not block every host. Each is a [`KnownHostsError::Malformed`].
    skipped: Vec<KnownHostsError>,
}

impl KnownHostsFile {
    /// Reads the file. A missing file is an empty list. A malformed line is skipped and kept
    /// in [`KnownHostsFile::skipped`], naming `path:line`.
    pub fn load(path: &Path) -> Result<Self, KnownHostsError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self {
                path: path.to_path_buf(),
                lines: Vec::new(),
                skipped: Vec::new(),
            }),
            Err(source) => Err(KnownHostsError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses `text` as the content of `path`. `path` is only used in messages.
    ///
    /// Blank lines and lines starting with `#` (after leading whitespace) are skipped. Fields
    /// may be separated by any run of spaces or tabs, as OpenSSH allows. A line that is not
    /// a valid known_hosts line is skipped too, and listed in [`KnownHostsFile::skipped`]:
    /// the host it meant to name is then unknown (refused), never trusted.
    pub fn parse(path: &Path, text: &str) -> Result<Self, KnownHostsError> {
        let mut lines = Vec::new();
        let mut skipped = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let malformed =
                |reason: String, source: Option<Box<ssh_key::Error>>| KnownHostsError::Malformed {
                    path: path.to_path_buf(),
                    line: number,
                    reason,
                    source,
                };
            // ssh_key splits fields on single spaces only.
            let normalized = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
            let entry: Entry = match normalized.parse() {
                Ok(entry) => entry,
                Err(e) => {
                    skipped.push(malformed(
                        "expected `[@marker] hosts keytype base64 [comment]`".to_string(),
                        Some(Box::new(e)),
                    ));
                    continue;
                }
            };
            if let HostPatterns::HashedName { salt, .. } = entry.host_patterns()
                && salt.len() != SALT_LEN
            {
                skipped.push(malformed(
                    format!(
                        "the hashed host name has a {}-byte salt, OpenSSH uses {SALT_LEN}",
                        salt.len()
                    ),
                    None,
                ));
                continue;
            }
            lines.push(Line { number, entry });
        }
        Ok(Self {
            path: path.to_path_buf(),
            lines,
            skipped,
        })
    }

    /// The lines skipped as malformed, each a [`KnownHostsError::Malformed`] naming its line.
    pub fn skipped(&self) -> &[KnownHostsError] {
        &self.skipped
    }

    /// The file this list was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of entries (not counting blank and comment lines).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when the file is missing or has no entries.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// What the file says about `key`, presented by `host` on `port`.
    ///
    /// `host` is what the user wrote and rampart connected to (a name or an IP address). On port
    /// 22 it is looked up plainly, on any other port as `[host]:port` (see [`lookup_name`]).
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
        // `@revoked` beats everything, whatever host the line names (see `Revoked`).
        if let Some(line) = self.lines.iter().find(|l| {
            l.entry.marker() == Some(&Marker::Revoked)
                && l.entry.public_key().key_data() == key.key_data()
        }) {
            return HostKeyStatus::Revoked { line: line.number };
        }

        let lookup = lookup_name(host, port);
        let mut recorded = Vec::new();
        let mut cert_authority = None;
        for line in self
            .lines
            .iter()
            .filter(|l| host_matches(l.entry.host_patterns(), &lookup))
        {
            let recorded_key = line.entry.public_key();
            match line.entry.marker() {
                Some(Marker::Revoked) => {}
                Some(Marker::CertAuthority) => {
                    cert_authority.get_or_insert(line.number);
                }
                None if recorded_key.key_data() == key.key_data() => {
                    return HostKeyStatus::Trusted;
                }
                None => recorded.push(RecordedKey {
                    fingerprint: fingerprint(recorded_key),
                    algorithm: recorded_key.algorithm().as_str().to_string(),
                    line: line.number,
                }),
            }
        }

        match cert_authority {
            _ if !recorded.is_empty() => HostKeyStatus::Changed { recorded },
            Some(line) => HostKeyStatus::CertAuthorityOnly { line },
            None => HostKeyStatus::Unknown,
        }
    }

    /// Appends a hashed entry (`|1|salt|hash keytype base64`) for `host` on `port`, the way
    /// `ssh` does with `HashKnownHosts yes`. The salt is 20 random bytes. The key is written
    /// without its comment.
    ///
    /// A missing file is created with mode 0600, and a missing parent folder with mode 0700. If
    /// the file does not end in a newline, one is written before the entry.
    pub fn append_hashed(
        path: &Path,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<(), KnownHostsError> {
        let mut salt = [0u8; SALT_LEN];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut salt))
            .map_err(KnownHostsError::Random)?;
        let mut bare = key.clone();
        bare.set_comment("");
        let key_text = bare
            .to_openssh()
            .map_err(|e| KnownHostsError::Encode(Box::new(e)))?;
        let entry = format!(
            "{} {key_text}\n",
            hashed_host(&lookup_name(host, port), &salt)
        );

        let write_error = |source| KnownHostsError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(write_error)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(write_error)?;
        let mut text = String::new();
        if !ends_in_newline(&mut file).map_err(write_error)? {
            text.push('\n');
        }
        text.push_str(&entry);
        // One write, so that the entry is not split if two rampart runs append at once.
        file.write_all(text.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)
    }
}

/// The system-wide known_hosts file OpenSSH reads after the user's (`GlobalKnownHostsFile`).
pub const GLOBAL_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

/// The user's known_hosts file and the system-wide one, read together as OpenSSH reads them.
///
/// The user's file decides for every host it names; the system file is asked only about
/// hosts the user's file does not name. A key revoked in either file is refused, and so is
/// a changed key in either (a key the deciding file holds for the host is not the one shown).
#[derive(Debug)]
pub struct KnownHosts {
    pub user: KnownHostsFile,
    pub global: KnownHostsFile,
}

impl KnownHosts {
    /// Reads both files (a missing one is empty) and logs a warning, once per process, for
    /// each malformed line skipped.
    pub fn load(user: &Path, global: &Path) -> Result<KnownHosts, KnownHostsError> {
        let both = KnownHosts {
            user: KnownHostsFile::load(user)?,
            global: KnownHostsFile::load(global)?,
        };
        both.warn_skipped();
        Ok(both)
    }

    fn warn_skipped(&self) {
        static WARNED: std::sync::Mutex<Vec<(PathBuf, usize)>> = std::sync::Mutex::new(Vec::new());
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        for e in self.user.skipped().iter().chain(self.global.skipped()) {
            if let KnownHostsError::Malformed { path, line, .. } = e {
                let at = (path.clone(), *line);
                if !warned.contains(&at) {
                    warned.push(at);
                    let hint = e.hint().unwrap_or_default();
                    tracing::warn!("{e}; skipped\nhint: {hint}");
                }
            }
        }
    }

    /// What the two files say about `key`, presented by `host` on `port`, and the file that
    /// says it (the user's for an unknown host: that is where `--accept-new` records it).
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> (HostKeyStatus, &Path) {
        let user = self.user.check(host, port, key);
        let global = self.global.check(host, port, key);
        match (user, global) {
            (revoked @ HostKeyStatus::Revoked { .. }, _) => (revoked, self.user.path()),
            (_, revoked @ HostKeyStatus::Revoked { .. }) => (revoked, self.global.path()),
            (HostKeyStatus::Unknown, HostKeyStatus::Unknown) => {
                (HostKeyStatus::Unknown, self.user.path())
            }
            (HostKeyStatus::Unknown, global) => (global, self.global.path()),
            (user, _) => (user, self.user.path()),
        }
    }
}

/// SHA256 fingerprint as OpenSSH prints it: `SHA256:` and base64 without padding.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name OpenSSH looks `host` up under: `host` on port 22 (or 0, "unspecified"),
/// `[host]:port` otherwise, in lowercase. This is also the name to give `ssh-keygen -R`/`-F`.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 || port == 0 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// True if the line's host field names `lookup` (already lowercased by [`lookup_name`]).
fn host_matches(patterns: &HostPatterns, lookup: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let mut mac = HmacSha1::new_from_slice(salt).expect("HMAC takes keys of any length");
            mac.update(lookup.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            // OpenSSH `match_pattern_list`: a matching negation excludes the line outright.
            let mut positive = false;
            for pattern in patterns {
                let (negated, pattern) = match pattern.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, pattern.as_str()),
                };
                if glob_match(&pattern.to_ascii_lowercase(), lookup, Syntax::Names) {
                    if negated {
                        return false;
                    }
                    positive = true;
                }
            }
            positive
        }
    }
}

/// `|1|base64(salt)|base64(HMAC-SHA1(key = salt, lookup))`, as OpenSSH's `host_hash` writes it.
fn hashed_host(lookup: &str, salt: &[u8]) -> String {
    let mut mac = HmacSha1::new_from_slice(salt).expect("HMAC takes keys of any length");
    mac.update(lookup.as_bytes());
    let hash = mac.finalize().into_bytes();
    format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(hash))
}

/// True if `file` is empty or its last byte is `\n`.
fn ends_in_newline(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    // Generated with `ssh-keygen -t ed25519 -C key-a` (and b, c), `ssh-keygen -t ecdsa -b 256`.
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHVQzB6pjUPgPFjQ4jYJ5bmdlqRl5+pKhKePWoxCuRq key-a";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILkdFPmZPW4tqfpM8e+IlXZNc37h623yZ9SZm0hU74bZ key-b";
    const KEY_C: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPC4UUjl5pOhT9c5HVflhcbZRyfIoeln3dJ87ZkV7wo8 key-c";
    const KEY_E: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDRSBIf0aNjMbIRNS55V4MeMmL0/tJeJbIjbGHwstOw6Nfex+k3cbIUihmoE/w2LMeh665eAgsC2tThq1JkWuP4= key-e";
    // `ssh-keygen -l` output for the keys above.
    const FP_A: &str = "SHA256:czwtEc4cwwv10HVSpCN+gvLc/YpYZK3ChJZgaL6/D20";
    const FP_B: &str = "SHA256:ZOCVozcfQUudiTXtjJFDih7dKgYbCfx40hi02+enOnM";
    const FP_C: &str = "SHA256:8XH54dEuF9BswqpP37OUDUWKhELS4EFzPXeqsAjTZvc";
    const FP_E: &str = "SHA256:Mlit2gciQHY73yYTZJ16KoHfbs+avNtL0cgeA2/088Q";

    /// `ssh-keygen -H` of "web1.example.net KEY_A" and "[web1.example.net]:2222 KEY_A".
    const HASHED_BY_SSH_KEYGEN: &str = "\
|1|02P3H+JPp13pSXTv6ehzs4CoVCk=|EbNevG2K+qXkgudRX3spnmjWGnI= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHVQzB6pjUPgPFjQ4jYJ5bmdlqRl5+pKhKePWoxCuRq
|1|Wjb7lX22ZflBQfEGJ8Y94Z2xuv4=|qC7qbMJhVu+uAqzeqRMlDlNaoTI= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHVQzB6pjUPgPFjQ4jYJ5bmdlqRl5+pKhKePWoxCuRq
";

    const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

    fn key(line: &str) -> PublicKey {
        line.parse().expect("test key parses")
    }

    /// The key part of a public key line, without its comment, as known_hosts holds it.
    fn bare(line: &str) -> String {
        line.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    fn file(text: &str) -> KnownHostsFile {
        KnownHostsFile::parse(Path::new("/test/known_hosts"), text).expect("fixture parses")
    }

    fn check(text: &str, host: &str, port: u16, presented: &str) -> HostKeyStatus {
        file(text).check(host, port, &key(presented))
    }

    #[test]
    fn fingerprint_is_what_ssh_keygen_prints() {
        assert_eq!(fingerprint(&key(KEY_A)), FP_A);
        assert_eq!(fingerprint(&key(KEY_E)), FP_E);
    }

    #[test]
    fn plain_host_and_ip() {
        let text = format!("web1.example.net,10.0.0.5 {}\n", bare(KEY_A));
        assert_eq!(
            check(&text, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(check(&text, "10.0.0.5", 22, KEY_A), HostKeyStatus::Trusted);
        assert_eq!(check(&text, "10.0.0.6", 22, KEY_A), HostKeyStatus::Unknown);
        assert_eq!(
            check(&text, "web2.example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn key_comment_and_field_spacing_do_not_matter() {
        let text = format!(
            "  # a comment line\n\nweb1\t \tssh-ed25519   {}   some other comment\n",
            KEY_A.split(' ').nth(1).unwrap()
        );
        assert_eq!(check(&text, "web1", 22, KEY_A), HostKeyStatus::Trusted);
    }

    #[test]
    fn host_names_match_case_insensitively() {
        let text = format!("Web1.Example.NET {}\n", bare(KEY_A));
        assert_eq!(
            check(&text, "WEB1.example.net", 22, KEY_A),
            HostKeyStatus::Trusted
        );
    }

    #[test]
    fn bracketed_port() {
        let text = format!("[web1.example.net]:2222 {}\n", bare(KEY_A));
        assert_eq!(
            check(&text, "web1.example.net", 2222, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(&text, "web1.example.net", 2200, KEY_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn plain_line_does_not_match_other_ports_and_bracketed_22_does_not_match_22() {
        let plain = format!("web1.example.net {}\n", bare(KEY_A));
        assert_eq!(
            check(&plain, "web1.example.net", 2222, KEY_A),
            HostKeyStatus::Unknown
        );
        // OpenSSH looks up port 22 as plain `host`, which `[host]:22` does not match.
        let bracketed_22 = format!("[web1.example.net]:22 {}\n", bare(KEY_A));
        assert_eq!(
            check(&bracketed_22, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn wildcards() {
        let text = format!(
            "*.example.net {}\nweb?.example.org {}\n[*.lab]:2222 {}\n",
            bare(KEY_A),
            bare(KEY_B),
            bare(KEY_C)
        );
        assert_eq!(
            check(&text, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(&text, "web1.example.org", 22, KEY_B),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "web10.example.org", 22, KEY_B),
            HostKeyStatus::Unknown
        );
        assert_eq!(check(&text, "pi.lab", 2222, KEY_C), HostKeyStatus::Trusted);
        assert_eq!(check(&text, "pi.lab", 22, KEY_C), HostKeyStatus::Unknown);
    }

    #[test]
    fn glob_edge_cases() {
        // OpenSSH `match_pattern`: `*` any run of bytes, `?` one, the rest itself.
        let glob = |t: &str, p: &str| glob_match(p, t, Syntax::Names);
        assert!(glob("", ""));
        assert!(glob("", "*"));
        assert!(!glob("", "?"));
        assert!(glob("abc", "a*c"));
        assert!(glob("abcbc", "*bc"));
        assert!(glob("a.b.c", "*.*"));
        assert!(!glob("abc", "a*d"));
        assert!(!glob("abcd", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("abc", "**?**"));
        assert!(glob("[pi.lab]:2222", "[pi.*]:2222"));
    }

    #[test]
    fn negation_excludes_the_line() {
        let text = format!("*.example.net,!db.example.net {}\n", bare(KEY_A));
        assert_eq!(
            check(&text, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "db.example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
        // Excluded means not named at all: another key is not "changed" either.
        assert_eq!(
            check(&text, "db.example.net", 22, KEY_B),
            HostKeyStatus::Unknown
        );
        // A negation alone names no host.
        let only_negation = format!("!db.example.net {}\n", bare(KEY_A));
        assert_eq!(
            check(&only_negation, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        let text = HASHED_BY_SSH_KEYGEN;
        assert_eq!(
            check(text, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(text, "WEB1.Example.net", 22, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(text, "web1.example.net", 2222, KEY_A),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(text, "web1.example.net", 2200, KEY_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(text, "web2.example.net", 22, KEY_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(text, "web1.example.net", 2222, KEY_B),
            HostKeyStatus::Changed {
                recorded: vec![RecordedKey {
                    fingerprint: FP_A.to_string(),
                    algorithm: "ssh-ed25519".to_string(),
                    line: 2,
                }]
            }
        );
    }

    #[test]
    fn changed_key_lists_every_recorded_key() {
        let text = format!(
            "web1 {}\nother {}\n[web1]:2222,web1 {} c\n",
            bare(KEY_B),
            bare(KEY_A),
            KEY_C
        );
        let HostKeyStatus::Changed { recorded } = check(&text, "web1", 22, KEY_A) else {
            panic!("expected Changed");
        };
        assert_eq!(
            recorded,
            vec![
                RecordedKey {
                    fingerprint: FP_B.to_string(),
                    algorithm: "ssh-ed25519".to_string(),
                    line: 1,
                },
                RecordedKey {
                    fingerprint: FP_C.to_string(),
                    algorithm: "ssh-ed25519".to_string(),
                    line: 3,
                },
            ]
        );
        assert_eq!(
            recorded[0].to_string(),
            format!("ssh-ed25519 {FP_B} (line 1)")
        );
    }

    #[test]
    fn another_key_type_recorded_is_changed() {
        let text = format!("web1 {}\n", bare(KEY_E));
        assert_eq!(
            check(&text, "web1", 22, KEY_A),
            HostKeyStatus::Changed {
                recorded: vec![RecordedKey {
                    fingerprint: FP_E.to_string(),
                    algorithm: "ecdsa-sha2-nistp256".to_string(),
                    line: 1,
                }]
            }
        );
    }

    #[test]
    fn a_matching_line_wins_over_other_recorded_keys() {
        let text = format!("web1 {}\nweb1 {}\n", bare(KEY_E), bare(KEY_A));
        assert_eq!(check(&text, "web1", 22, KEY_A), HostKeyStatus::Trusted);
    }

    #[test]
    fn revoked_beats_everything() {
        let text = format!("web1 {}\n@revoked * {}\n", bare(KEY_A), bare(KEY_A));
        assert_eq!(
            check(&text, "web1", 22, KEY_A),
            HostKeyStatus::Revoked { line: 2 }
        );
        // A revoked line names whatever host; the key itself is revoked.
        let elsewhere = format!("web1 {}\n\n@revoked oldhost {}\n", bare(KEY_A), bare(KEY_A));
        assert_eq!(
            check(&elsewhere, "web1", 2222, KEY_A),
            HostKeyStatus::Revoked { line: 3 }
        );
        // A revoked line for another key changes nothing.
        let other = format!("web1 {}\n@revoked * {}\n", bare(KEY_A), bare(KEY_B));
        assert_eq!(check(&other, "web1", 22, KEY_A), HostKeyStatus::Trusted);
        // ... and does not count as a recorded key for the host.
        assert_eq!(check(&other, "web2", 22, KEY_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn cert_authority_only() {
        let text = format!("# CA\n@cert-authority *.example.net {}\n", bare(KEY_C));
        assert_eq!(
            check(&text, "web1.example.net", 22, KEY_A),
            HostKeyStatus::CertAuthorityOnly { line: 2 }
        );
        // Even the CA key itself is not "trusted" as a plain host key.
        assert_eq!(
            check(&text, "web1.example.net", 22, KEY_C),
            HostKeyStatus::CertAuthorityOnly { line: 2 }
        );
        assert_eq!(check(&text, "web1.lab", 22, KEY_A), HostKeyStatus::Unknown);
        // With a plain line too, the plain line decides.
        let mixed = format!("{text}web1.example.net {}\n", bare(KEY_B));
        assert_eq!(
            check(&mixed, "web1.example.net", 22, KEY_B),
            HostKeyStatus::Trusted
        );
        assert!(matches!(
            check(&mixed, "web1.example.net", 22, KEY_A),
            HostKeyStatus::Changed { .. }
        ));
    }

    #[test]
    fn a_junk_line_is_skipped_with_its_path_and_line_and_blocks_no_host() {
        let text = format!(
            "web1 {}\n\nweb2 ssh-ed25519 not-base64!\nweb3 {}\n",
            bare(KEY_A),
            bare(KEY_B)
        );
        let known = KnownHostsFile::parse(Path::new("/home/u/.ssh/known_hosts"), &text)
            .expect("a junk line does not fail the file");
        assert_eq!(known.len(), 2);
        assert_eq!(known.check("web1", 22, &key(KEY_A)), HostKeyStatus::Trusted);
        assert_eq!(known.check("web3", 22, &key(KEY_B)), HostKeyStatus::Trusted);
        // The host the junk line meant is unknown, so refused: never trusted.
        assert_eq!(known.check("web2", 22, &key(KEY_A)), HostKeyStatus::Unknown);
        let [err] = known.skipped() else {
            panic!("{:?}", known.skipped())
        };
        assert!(
            matches!(err, KnownHostsError::Malformed { line: 3, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("/home/u/.ssh/known_hosts:3: "),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("line 3"));

        for bad in [
            "web1\n",
            "@bogus web1 ssh-ed25519 AAAA\n",
            "|1|c2FsdA==|EbNevG2K+qXkgudRX3spnmjWGnI= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHVQzB6pjUPgPFjQ4jYJ5bmdlqRl5+pKhKePWoxCuRq\n",
        ] {
            let known = KnownHostsFile::parse(Path::new("kh"), bad).unwrap();
            assert!(known.is_empty(), "{bad}");
            assert!(
                matches!(
                    known.skipped(),
                    [KnownHostsError::Malformed { line: 1, .. }]
                ),
                "{bad}: {:?}",
                known.skipped()
            );
        }
    }

    #[test]
    fn the_system_file_answers_for_hosts_the_users_file_does_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("known_hosts");
        let global = dir.path().join("ssh_known_hosts");
        std::fs::write(&user, format!("junk line\nweb1 {}\n", bare(KEY_A))).unwrap();
        std::fs::write(
            &global,
            format!(
                "web1 {}\nweb2 {}\nweb3 {}\n@revoked * {}\n",
                bare(KEY_B),
                bare(KEY_B),
                bare(KEY_C),
                bare(KEY_E)
            ),
        )
        .unwrap();
        let both = KnownHosts::load(&user, &global).unwrap();
        let check = |host: &str, k: &str| {
            let (status, path) = both.check(host, 22, &key(k));
            (status, path.to_path_buf())
        };
        // The user's file decides for web1, whatever the system file says.
        assert_eq!(check("web1", KEY_A), (HostKeyStatus::Trusted, user.clone()));
        assert!(matches!(
            check("web1", KEY_B).0,
            HostKeyStatus::Changed { .. }
        ));
        // web2 only in the system file: trusted there, changed there.
        assert_eq!(
            check("web2", KEY_B),
            (HostKeyStatus::Trusted, global.clone())
        );
        let (changed, path) = check("web2", KEY_A);
        assert!(
            matches!(changed, HostKeyStatus::Changed { .. }),
            "{changed:?}"
        );
        assert_eq!(path, global);
        assert_eq!(check("web9", KEY_A), (HostKeyStatus::Unknown, user.clone()));
        // Revoked in the system file is revoked for every host.
        assert_eq!(
            check("web1", KEY_E),
            (HostKeyStatus::Revoked { line: 4 }, global.clone())
        );
        // A missing system file is empty.
        let alone = KnownHosts::load(&user, &dir.path().join("none")).unwrap();
        assert!(matches!(
            alone.check("web2", 22, &key(KEY_B)).0,
            HostKeyStatus::Unknown
        ));
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHostsFile::load(&dir.path().join("nope")).unwrap();
        assert!(known.is_empty());
        assert_eq!(known.check("web1", 22, &key(KEY_A)), HostKeyStatus::Unknown);
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, HASHED_BY_SSH_KEYGEN).unwrap();
        let known = KnownHostsFile::load(&path).unwrap();
        assert_eq!(known.len(), 2);
        assert_eq!(known.path(), path);
        assert_eq!(
            known.check("web1.example.net", 22, &key(KEY_A)),
            HostKeyStatus::Trusted
        );
    }

    #[test]
    fn append_hashed_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh/.ssh/known_hosts");
        KnownHostsFile::append_hashed(&path, "Web1.example.net", 22, &key(KEY_A)).unwrap();
        KnownHostsFile::append_hashed(&path, "10.0.0.5", 2222, &key(KEY_B)).unwrap();

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(text.ends_with('\n'));
        for (line, k) in lines.iter().zip([KEY_A, KEY_B]) {
            assert!(line.starts_with("|1|"), "{line}");
            assert!(
                line.ends_with(&format!(" {}", bare(k))),
                "no comment: {line}"
            );
            assert!(
                !line.contains("web1") && !line.contains("10.0.0.5"),
                "{line}"
            );
        }

        let known = KnownHostsFile::load(&path).unwrap();
        assert_eq!(
            known.check("web1.example.net", 22, &key(KEY_A)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            known.check("10.0.0.5", 2222, &key(KEY_B)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            known.check("10.0.0.5", 22, &key(KEY_B)),
            HostKeyStatus::Unknown
        );
        assert!(matches!(
            known.check("web1.example.net", 22, &key(KEY_C)),
            HostKeyStatus::Changed { .. }
        ));
    }

    #[test]
    fn append_hashed_adds_missing_final_newline_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, format!("web2 {}", bare(KEY_B))).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        KnownHostsFile::append_hashed(&path, "web1", 22, &key(KEY_A)).unwrap();

        let known = KnownHostsFile::load(&path).unwrap();
        assert_eq!(known.len(), 2);
        assert_eq!(known.check("web2", 22, &key(KEY_B)), HostKeyStatus::Trusted);
        assert_eq!(known.check("web1", 22, &key(KEY_A)), HostKeyStatus::Trusted);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "an existing file keeps its mode");
    }

    #[test]
    fn ssh_keygen_finds_appended_entries() {
        if !Path::new(SSH_KEYGEN).exists() {
            eprintln!("note: {SSH_KEYGEN} not found, skipping the OpenSSH cross-check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        KnownHostsFile::append_hashed(&path, "web1.example.net", 22, &key(KEY_A)).unwrap();
        KnownHostsFile::append_hashed(&path, "web1.example.net", 2222, &key(KEY_B)).unwrap();

        let find = |name: &str| {
            let out = Command::new(SSH_KEYGEN)
                .arg("-F")
                .arg(name)
                .arg("-f")
                .arg(&path)
                .output()
                .expect("ssh-keygen runs");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (found, out) = find("web1.example.net");
        assert!(found, "ssh-keygen -F web1.example.net: {out}");
        assert!(out.contains("found: line 1"), "{out}");
        assert!(out.contains(&bare(KEY_A)), "{out}");

        let (found, out) = find("[web1.example.net]:2222");
        assert!(found, "ssh-keygen -F [web1.example.net]:2222: {out}");
        assert!(out.contains("found: line 2"), "{out}");
        assert!(out.contains(&bare(KEY_B)), "{out}");

        let (found, out) = find("web2.example.net");
        assert!(!found, "{out}");
    }

    #[test]
    fn lookup_names() {
        assert_eq!(lookup_name("Web1.Example.NET", 22), "web1.example.net");
        assert_eq!(lookup_name("web1", 2222), "[web1]:2222");
        assert_eq!(lookup_name("::1", 2222), "[::1]:2222");
        assert_eq!(lookup_name("::1", 22), "::1");
    }

    proptest! {
        #[test]
        fn hashed_host_matches_only_its_own_lookup(
            host in "[a-zA-Z0-9.-]{1,40}",
            other in "[a-zA-Z0-9.-]{1,40}",
            port in 1u16..,
            salt in proptest::array::uniform20(any::<u8>()),
        ) {
            let lookup = lookup_name(&host, port);
            let field: HostPatterns = hashed_host(&lookup, &salt).parse().unwrap();
            prop_assert!(host_matches(&field, &lookup));
            let other_lookup = lookup_name(&other, port);
            prop_assert_eq!(host_matches(&field, &other_lookup), other_lookup == lookup);
        }

        #[test]
        fn literal_patterns_match_themselves_in_any_case(host in "[a-zA-Z0-9.-]{1,40}") {
            let lookup = lookup_name(&host, 22);
            let field = HostPatterns::Patterns(vec![host.to_ascii_uppercase()]);
            prop_assert!(host_matches(&field, &lookup));
            let negated = HostPatterns::Patterns(vec!["*".into(), format!("!{host}")]);
            prop_assert!(!host_matches(&negated, &lookup));
        }
    }
}
