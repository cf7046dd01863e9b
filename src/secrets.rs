//! secrets: values that come from the operator's side, never from playbook text.
//!
//! A value written `{ secret: { env: NAME } }`, `{ secret: { file: PATH } }` or
//! `{ secret: { command: "op read ...", name: LABEL } }` is resolved on the controller, once
//! per run, and replaced by its text. Every resolved value is remembered so that [`Secrets::mask`]
//! can replace it by `<secret:NAME>` in anything rampart prints or writes. On the way to a
//! host, secrets only travel inside scripts, which go over the channel's stdin
//! (see `remote::exec_command`).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

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
        "a secret must be `{{secret: {{env: NAME}}}}`, `{{secret: {{file: PATH}}}}` or `{{secret: {{command: CMD, name: LABEL}}}}`, found {0}"
    )]
    Shape(String),
}

/// The secrets of one run: resolved once, masked everywhere.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Source spec -> (name, value).
    resolved: Mutex<HashMap<String, (String, String)>>,
}

impl Secrets {
    /// Replaces every `{secret: ...}` object inside `value` by the secret's text.
    pub fn resolve_in(&self, value: &mut Value) -> Result<(), SecretError> {
        match value {
            Value::Object(map) if map.len() == 1 && map.contains_key("secret") => {
                let text = self.resolve(&map["secret"])?;
                *value = Value::String(text);
                Ok(())
            }
            Value::Object(map) => map.values_mut().try_for_each(|v| self.resolve_in(v)),
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.resolve_in(v)),
            _ => Ok(()),
        }
    }

    fn resolve(&self, spec: &Value) -> Result<String, SecretError> {
        let key = spec.to_string();
        if let Some((_, v)) = self.resolved.lock().expect("not poisoned").get(&key) {
            return Ok(v.clone());
        }
        let field = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
        let (name, value) = if let Some(env) = field("env") {
            let name = field("name").unwrap_or_else(|| env.clone());
            let v =
                std::env::var(&env).map_err(|_| SecretError::EnvMissing { name: env.clone() })?;
            (name, v)
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
            (name, v.trim_end_matches(['\n', '\r']).to_string())
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
            (name, v.trim_end_matches(['\n', '\r']).to_string())
        } else {
            return Err(SecretError::Shape(spec.to_string()));
        };
        if value.is_empty() {
            return Err(SecretError::Empty { name });
        }
        self.resolved
            .lock()
            .expect("not poisoned")
            .insert(key, (name, value.clone()));
        Ok(value)
    }

    /// `text` with every secret value replaced by `<secret:NAME>` (longest values first, so a
    /// secret that contains another is masked whole).
    pub fn mask(&self, text: &str) -> String {
        let resolved = self.resolved.lock().expect("not poisoned");
        if resolved.is_empty() {
            return text.to_string();
        }
        let mut pairs: Vec<&(String, String)> = resolved.values().collect();
        pairs.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for (name, value) in pairs {
            out = out.replace(value.as_str(), &format!("<secret:{name}>"));
            // In a JSON report the value is written escaped (`"` as `\"`): mask that form too.
            let escaped = serde_json::to_string(value).expect("a string serializes");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != value {
                out = out.replace(escaped, &format!("<secret:{name}>"));
            }
            // A multi-line secret may reach output line by line (a diff): mask each line too.
            for line in value.lines().filter(|l| l.trim().len() >= 8) {
                out = out.replace(line, &format!("<secret:{name}>"));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.resolved.lock().expect("not poisoned").is_empty()
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
