//! secrets: values that come from the operator's side, never from playbook text.
//!
//! A value written `{ secret: { env: NAME } }`, `{ secret: { file: PATH } }` or
//! `{ secret: { command: "op read ...", name: LABEL } }` is resolved on the controller, once
//! per run. Owns three things:
//! - resolving (and refusing a secret shorter than [`MIN_LEN`]: masking `22` would hide every
//!   port and address);
//! - [`SecretValue`], the opaque form a secret takes inside the template engine: it is never
//!   rendered as a template, and `template` keeps whatever a filter derives from it a secret;
//! - masking: every value, and every form derived from it (base64, upper, lower, JSON-escaped,
//!   and what filters made of it), is replaced by `<secret:NAME>` in anything rampart prints
//!   or writes ([`Secrets::mask`]).
//!
//! On the way to a host, secrets only travel inside scripts, which go over the channel's stdin
//! (see `remote::exec_command`). Which steps are sensitive (hashes instead of content) is the
//! engine's business; it asks [`touched`] and [`Secrets::contains_any`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::Value as JValue;
use minijinja::value::{Object, ObjectRepr};
use serde_json::Value;

/// The shortest secret rampart accepts: a shorter one would mask ordinary text.
pub const MIN_LEN: usize = 8;

/// The key of the internal spec that names an already registered (possibly derived) secret.
const REGISTERED: &str = "rampart_registered";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}`: environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("secret `{name}`: cannot read {path}: {message}")]
    File {
        name: String,
        path: String,
        message: String,
    },
    #[error("secret `{name}`: the command failed ({status}): {stderr}")]
    Command {
        name: String,
        status: String,
        stderr: String,
    },
    #[error("secret `{name}` is empty")]
    Empty { name: String },
    #[error(
        "secret `{name}` (from {origin}) is {len} characters long; a secret needs at least {min}, \
         or masking it would hide ordinary text such as ports and addresses\n  hint: use a longer \
         secret (rotate it), or if the value is not secret, write it as a plain variable",
        min = MIN_LEN
    )]
    TooShort {
        name: String,
        origin: String,
        len: usize,
    },
    #[error(
        "a secret must be `{{secret: {{env: NAME}}}}`, `{{secret: {{file: PATH}}}}` or `{{secret: {{command: CMD, name: LABEL}}}}`, found {0}"
    )]
    Shape(String),
}

/// One secret: its name in masks (`<secret:NAME>`) and its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<secret:{}>", self.name)
    }
}

#[derive(Default)]
struct Inner {
    /// Source spec -> index into `entries`.
    by_spec: HashMap<String, usize>,
    /// Every secret, resolved or derived (a derived one keeps its source's name).
    entries: Vec<Secret>,
    /// Text to mask -> name, every form of every entry.
    patterns: HashMap<String, String>,
    /// The patterns as one automaton, with their names (built on first use after a change):
    /// masking is one pass over the text however many forms there are.
    matcher: Option<std::sync::Arc<(aho_corasick::AhoCorasick, Vec<String>)>>,
    /// Patterns added since the automaton was built (pattern, `<secret:NAME>`), searched one
    /// by one until there are enough to build it again: renders add derived secrets one at a
    /// time, and each filter call looks for secrets in its inputs.
    pending: Vec<(String, String)>,
}

/// How many patterns wait before the automaton is built again.
const PENDING_MAX: usize = 64;

impl Inner {
    fn matcher(&mut self) -> std::sync::Arc<(aho_corasick::AhoCorasick, Vec<String>)> {
        if let Some(m) = &self.matcher
            && self.pending.len() <= PENDING_MAX
        {
            return m.clone();
        }
        self.pending.clear();
        let mut pairs: Vec<(&String, &String)> = self.patterns.iter().collect();
        // Longest first: at one place, a secret that contains another is masked whole.
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(b.0)));
        let ac = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(p, _)| p.as_str()))
            .expect("patterns of bounded size build");
        let names = pairs.iter().map(|(_, n)| format!("<secret:{n}>")).collect();
        let m = std::sync::Arc::new((ac, names));
        self.matcher = Some(m.clone());
        m
    }
}

/// The secrets of one run: resolved once, masked everywhere. A cheap handle: clones share.
#[derive(Clone, Default)]
pub struct Secrets {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} entries)", self.lock().entries.len())
    }
}

thread_local! {
    /// Set when a render read a secret (see [`touched`]).
    static TOUCHED: Cell<bool> = const { Cell::new(false) };
    /// The run's secrets while a render is in progress on this thread ([`Secrets::activate`]).
    static ACTIVE: RefCell<Option<Secrets>> = const { RefCell::new(None) };
}

/// Marks the render in progress as having read a secret.
pub fn touch() {
    TOUCHED.with(|t| t.set(true));
}

/// Whether a secret was read on this thread since the last call (and resets).
pub fn touched() -> bool {
    TOUCHED.with(|t| t.replace(false))
}

/// The secrets made active on this thread by [`Secrets::activate`], if any.
pub fn active() -> Option<Secrets> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// Keeps [`Secrets::activate`] in force until dropped.
pub struct Active(Option<Secrets>);

impl Drop for Active {
    fn drop(&mut self) {
        let previous = self.0.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

/// `<N bytes, sha256 HEX>`: what a sensitive value shows instead of itself.
pub fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("<{} bytes, sha256 {hex}>", text.len())
}

/// `text` is what [`fingerprint`] makes (a resource may fingerprint a value itself).
pub fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .and_then(|t| t.split_once(" bytes, sha256 "))
        .is_some_and(|(n, h)| {
            n.bytes().all(|b| b.is_ascii_digit())
                && h.len() == 64
                && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

impl Secrets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes these secrets the ones template filters check their inputs against on this
    /// thread, until the guard is dropped.
    pub fn activate(&self) -> Active {
        Active(ACTIVE.with(|a| a.replace(Some(self.clone()))))
    }

    /// Replaces every `{secret: ...}` object inside `value` by the secret's text (step
    /// parameters, after rendering). Returns whether it replaced any.
    pub fn resolve_in(&self, value: &mut Value) -> Result<bool, SecretError> {
        match value {
            Value::Object(map) if is_spec(map) => {
                let secret = self.resolve(&map["secret"])?;
                *value = Value::String(secret.value);
                Ok(true)
            }
            Value::Object(map) => {
                let mut any = false;
                for v in map.values_mut() {
                    any |= self.resolve_in(v)?;
                }
                Ok(any)
            }
            Value::Array(items) => {
                let mut any = false;
                for v in items {
                    any |= self.resolve_in(v)?;
                }
                Ok(any)
            }
            _ => Ok(false),
        }
    }

    /// Resolves every `{secret: ...}` inside `value` (to find bad ones early), leaving them in
    /// place: [`Secrets::to_jinja`] turns them into opaque values.
    pub fn check_in(&self, value: &Value) -> Result<(), SecretError> {
        match value {
            Value::Object(map) if is_spec(map) => self.resolve(&map["secret"]).map(|_| ()),
            Value::Object(map) => map.values().try_for_each(|v| self.check_in(v)),
            Value::Array(items) => items.iter().try_for_each(|v| self.check_in(v)),
            _ => Ok(()),
        }
    }

    /// `value` as a template value, every `{secret: ...}` in it a [`SecretValue`].
    pub fn to_jinja(&self, value: &Value) -> Result<JValue, SecretError> {
        Ok(match value {
            Value::Object(map) if is_spec(map) => {
                let secret = self.resolve(&map["secret"])?;
                JValue::from_object(SecretValue {
                    secret,
                    secrets: self.clone(),
                })
            }
            Value::Object(map) => {
                let mut out = indexmap::IndexMap::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(JValue::from(k.as_str()), self.to_jinja(v)?);
                }
                JValue::from_object(out)
            }
            Value::Array(items) => JValue::from(
                items
                    .iter()
                    .map(|v| self.to_jinja(v))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            other => crate::template::to_jinja(other),
        })
    }

    /// The spec object that stands for `text` in variables when `text` is exactly a known
    /// secret (resolved or derived), so that it stays opaque in later renders.
    pub fn spec_of(&self, text: &str) -> Option<Value> {
        let inner = self.lock();
        let i = inner.entries.iter().position(|e| e.value == text)?;
        Some(serde_json::json!({"secret": {REGISTERED: i}}))
    }

    fn resolve(&self, spec: &Value) -> Result<Secret, SecretError> {
        if let Some(i) = spec.get(REGISTERED).and_then(Value::as_u64)
            && let Some(s) = self.lock().entries.get(i as usize)
        {
            return Ok(s.clone());
        }
        let key = spec.to_string();
        {
            let inner = self.lock();
            if let Some(&i) = inner.by_spec.get(&key) {
                return Ok(inner.entries[i].clone());
            }
        }
        let field = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
        let (name, source, value) = if let Some(env) = field("env") {
            let name = field("name").unwrap_or_else(|| env.clone());
            let v =
                std::env::var(&env).map_err(|_| SecretError::EnvMissing { name: env.clone() })?;
            (name, format!("environment variable {env}"), v)
        } else if let Some(path) = field("file") {
            let name = field("name").unwrap_or_else(|| {
                std::path::Path::new(&path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.clone())
            });
            let v = std::fs::read_to_string(&path).map_err(|e| SecretError::File {
                name: name.clone(),
                path: path.clone(),
                message: e.to_string(),
            })?;
            (
                name,
                format!("file {path}"),
                v.trim_end_matches(['\n', '\r']).to_string(),
            )
        } else if let Some(command) = field("command") {
            let name = field("name").unwrap_or_else(|| "command".to_string());
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| SecretError::Command {
                    name: name.clone(),
                    status: "not started".into(),
                    stderr: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(SecretError::Command {
                    name,
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            let v = String::from_utf8_lossy(&out.stdout);
            (
                name,
                format!("command `{command}`"),
                v.trim_end_matches(['\n', '\r']).to_string(),
            )
        } else {
            return Err(SecretError::Shape(spec.to_string()));
        };
        if value.is_empty() {
            return Err(SecretError::Empty { name });
        }
        let len = value.chars().count();
        if len < MIN_LEN {
            return Err(SecretError::TooShort {
                name,
                origin: source,
                len,
            });
        }
        let secret = Secret { name, value };
        let i = self.register(secret.clone(), true);
        self.lock().by_spec.insert(key, i);
        Ok(secret)
    }

    /// Remembers `value`, derived from secret `name` by a filter, as a secret too; returns it.
    pub fn register_derived(&self, name: &str, value: String) -> Secret {
        let secret = Secret {
            name: name.to_string(),
            value,
        };
        self.register(secret.clone(), false);
        secret
    }

    /// Adds `secret` and its forms to the masks; `lines`: mask each long line of a multi-line
    /// value too (it may reach output line by line, in a diff).
    fn register(&self, secret: Secret, lines: bool) -> usize {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| *e == secret) {
            return i;
        }
        let mut forms = forms(&secret.value);
        if lines {
            forms.extend(
                secret
                    .value
                    .lines()
                    .filter(|l| l.trim().chars().count() >= MIN_LEN)
                    .map(str::to_string),
            );
        }
        for form in forms {
            if form.chars().count() >= MIN_LEN && !inner.patterns.contains_key(&form) {
                inner
                    .pending
                    .push((form.clone(), format!("<secret:{}>", secret.name)));
                inner.patterns.insert(form, secret.name.clone());
            }
        }
        inner.entries.push(secret);
        inner.entries.len() - 1
    }

    /// `text` with every secret, and every form of one, replaced by `<secret:NAME>` (longest
    /// first, so that a secret that contains another is masked whole).
    pub fn mask(&self, text: &str) -> String {
        let (matcher, mut pending) = {
            let mut inner = self.lock();
            if inner.patterns.is_empty() {
                return text.to_string();
            }
            (inner.matcher(), inner.pending.clone())
        };
        let (ac, names) = &*matcher;
        let mut out = ac.replace_all(text, names);
        pending.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        for (pattern, masked) in pending {
            if out.contains(pattern.as_str()) {
                out = out.replace(pattern.as_str(), &masked);
            }
        }
        out
    }

    /// The name of a secret whose value (or a form of it) `text` contains.
    pub fn contains_any(&self, text: &str) -> Option<String> {
        let matcher = {
            let mut inner = self.lock();
            if inner.patterns.is_empty() {
                return None;
            }
            inner.matcher()
        };
        let (ac, names) = &*matcher;
        let masked = match ac.find(text) {
            Some(m) => names[m.pattern().as_usize()].clone(),
            None => {
                let inner = self.lock();
                let (_, masked) = inner
                    .pending
                    .iter()
                    .find(|(p, _)| text.contains(p.as_str()))?;
                masked.clone()
            }
        };
        Some(masked["<secret:".len()..masked.len() - 1].to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().patterns.is_empty()
    }
}

fn is_spec(map: &serde_json::Map<String, Value>) -> bool {
    map.len() == 1 && map.contains_key("secret")
}

/// The forms of a value that masking hides: itself, upper and lower case, base64 (padded
/// and not), and JSON-escaped (a JSON report writes `"` as `\"`).
fn forms(value: &str) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    let b64_url = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
    let json = serde_json::to_string(value).expect("a string serializes");
    let mut out = vec![
        value.to_string(),
        value.to_uppercase(),
        value.to_lowercase(),
        b64.trim_end_matches('=').to_string(),
        b64,
        b64_url.trim_end_matches('=').to_string(),
        json[1..json.len() - 1].to_string(),
    ];
    // The HTML and XML reports escape these characters.
    let xml = value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    out.push(xml.clone());
    out.push(xml.replace("&#39;", "&apos;"));
    out.push(xml.replace("&#39;", "&#x27;"));
    out.sort();
    out.dedup();
    out
}

/// A secret inside the template engine: it renders as its value (the host needs it), marks
/// the render as having read a secret, and is never itself a template. `template` wraps every
/// filter so that what one derives from it is a [`SecretValue`] too, or refused.
pub struct SecretValue {
    pub secret: Secret,
    pub secrets: Secrets,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<secret:{}>", self.secret.name)
    }
}

impl Object for SecretValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        touch();
        f.write_str(&self.secret.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_file_and_command_secrets_resolve_and_mask() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "file-secret-value\n").unwrap();
        // SAFETY: tests in this module set distinct variables.
        unsafe { std::env::set_var("RAMPART_TEST_SECRET_A", "env-secret-value") };
        let s = Secrets::default();
        let mut v = json!({
            "a": {"secret": {"env": "RAMPART_TEST_SECRET_A"}},
            "b": [{"secret": {"file": f.to_str().unwrap()}}],
            "c": {"secret": {"command": "echo cmd-secret-value", "name": "vault"}},
            "d": "plain",
        });
        s.resolve_in(&mut v).unwrap();
        assert_eq!(v["a"], "env-secret-value");
        assert_eq!(v["b"][0], "file-secret-value");
        assert_eq!(v["c"], "cmd-secret-value");
        assert_eq!(
            s.mask("x=env-secret-value y=file-secret-value z=cmd-secret-value plain"),
            "x=<secret:RAMPART_TEST_SECRET_A> y=<secret:token> z=<secret:vault> plain"
        );
    }

    #[test]
    fn secrets_are_masked_in_json_too() {
        // SAFETY: tests in this module set distinct variables.
        unsafe { std::env::set_var("RAMPART_TEST_SECRET_Q", "new\"sec\\ret-xyz\nline2") };
        let s = Secrets::default();
        let mut v = json!({"secret": {"env": "RAMPART_TEST_SECRET_Q"}});
        s.resolve_in(&mut v).unwrap();
        let report = serde_json::to_string(&json!({"after": v})).unwrap();
        assert_eq!(
            s.mask(&report),
            r#"{"after":"<secret:RAMPART_TEST_SECRET_Q>"}"#
        );
    }

    #[test]
    fn a_short_secret_is_refused_naming_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("port");
        std::fs::write(&f, "22\n").unwrap();
        let s = Secrets::default();
        let mut v = json!({"secret": {"file": f.to_str().unwrap()}});
        let err = s.resolve_in(&mut v).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "secret `port` (from file {}) is 2 characters long; a secret needs at least 8",
                f.display()
            )),
            "{err}"
        );
        assert!(err.contains("hint: use a longer secret"), "{err}");
        assert!(s.is_empty(), "nothing of it is kept");
        assert_eq!(s.mask("port 22"), "port 22");
    }

    #[test]
    fn every_form_of_a_secret_is_masked_and_derived_ones_too() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "Tok-3n\"ü'x").unwrap();
        let s = Secrets::default();
        let mut v = json!({"secret": {"file": f.to_str().unwrap()}});
        s.resolve_in(&mut v).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("Tok-3n\"ü'x");
        let text = format!(
            "{} {} {} {b64} {} &quot;ü&#39;",
            "Tok-3n\"ü'x", "TOK-3N\"Ü'X", "tok-3n\"ü'x", "Tok-3n\\\"ü'x"
        );
        assert_eq!(
            s.mask(&text),
            "<secret:tok> <secret:tok> <secret:tok> <secret:tok> <secret:tok> &quot;ü&#39;"
        );
        s.register_derived("tok", "x!Tok-3n-derived".into());
        assert_eq!(s.mask("a X!TOK-3N-DERIVED"), "a <secret:tok>");
        assert_eq!(s.contains_any("..tok-3n\"ü'x.."), Some("tok".into()));
    }

    #[test]
    fn fingerprints_show_size_and_sha256() {
        let f = fingerprint("abc");
        assert_eq!(
            f,
            "<3 bytes, sha256 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad>"
        );
        assert!(is_fingerprint(&f));
        assert!(!is_fingerprint("<3 bytes, sha1 abc>"));
    }

    #[test]
    fn missing_and_malformed_secrets_are_clear_errors() {
        let s = Secrets::default();
        let mut v = json!({"secret": {"env": "RAMPART_TEST_SURELY_UNSET"}});
        assert_eq!(
            s.resolve_in(&mut v).unwrap_err().to_string(),
            "secret `RAMPART_TEST_SURELY_UNSET`: environment variable RAMPART_TEST_SURELY_UNSET is not set"
        );
        let mut v = json!({"secret": {"vault": "x"}});
        assert!(matches!(s.resolve_in(&mut v), Err(SecretError::Shape(_))));
        let mut v = json!({"secret": {"command": "echo oops >&2; exit 3", "name": "op"}});
        let err = s.resolve_in(&mut v).unwrap_err().to_string();
        assert!(
            err.contains("secret `op`: the command failed") && err.contains("oops"),
            "{err}"
        );
    }
}
