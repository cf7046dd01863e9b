//! playbook: ordered steps read from YAML, with includes, handlers, tags and conditions.
//!
//! Owns the file format and its validation at load time: every unknown key, unknown resource
//! type and wrong type of value is refused with file:line:column and the valid choices,
//! before any host is contacted. Parameters stay as located YAML nodes: rendering them per
//! host is `template`'s job, building resources from them is `resource`'s.
//!
//! ```yaml
//! vars: { agent_user: moltbot }          # defaults; the inventory overrides them
//! steps:
//!   - name: agent user
//!     user: { name: "{{ agent_user }}", shell: /usr/sbin/nologin }
//!     tags: [users]
//!   - include: agent.yaml
//!   - file: { path: /etc/motd, template: motd.j2 }
//!     when: "facts.os_id == 'debian'"
//!     notify: reload sshd
//! handlers:
//!   - name: reload sshd
//!     command: { run: "systemctl reload ssh" }
//! ```

use std::path::{Path, PathBuf};

use crate::resource;
use crate::yaml::{self, Node, NodeValue, YamlError};

/// Keys a step may carry besides its one resource type.
const STEP_KEYS: &[&str] = &[
    "name",
    "when",
    "tags",
    "notify",
    "risky",
    "sensitive",
    "timeout",
    "include",
];
/// Keys at the top of a playbook file.
const TOP_KEYS: &[&str] = &["vars", "steps", "handlers", "become"];
/// Parameters the engine handles for a type itself, on top of the type's own.
const ENGINE_PARAMS: &[(&str, &str)] = &[("file", "template")];

/// Seconds a step's apply may run unless its `timeout:` says otherwise: generous, for a
/// package install on a slow host.
pub const STEP_TIMEOUT: u64 = 900;
/// The longest `timeout:` a step may ask for: a day.
pub const MAX_STEP_TIMEOUT: u64 = 86_400;

/// One step: a resource type with its parameters (not yet rendered) and its controls.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's `name`, or `<type> <first parameter>` when it has none.
    pub name: String,
    pub kind: &'static resource::TypeInfo,
    /// The parameters as written (a mapping node).
    pub params: Node,
    pub when: Option<Node>,
    pub tags: Vec<String>,
    pub notify: Vec<String>,
    /// `risky: true`: the change can cut the controller off; it runs under the dead-man
    /// switch, restored by the type's own restore (a `file` puts its backup back).
    pub risky: bool,
    /// `sensitive: true`: its values (old and new) show as size and sha256, never as text.
    pub sensitive: bool,
    /// `timeout:` seconds its apply may run (`None`: [`STEP_TIMEOUT`]).
    pub timeout: Option<u64>,
    /// The file the step was written in, for messages and for template look-up.
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

impl Step {
    /// `file:line:col`, where the step starts.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A whole playbook with its includes inlined.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub path: PathBuf,
    /// Default variables, lowest precedence (each file's `vars`, the including file winning).
    pub vars: Vec<(String, Node, PathBuf)>,
    pub steps: Vec<Step>,
    pub handlers: Vec<Step>,
    pub become_root: Option<bool>,
}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, YamlError> {
        let mut book = Playbook {
            path: path.to_path_buf(),
            vars: Vec::new(),
            steps: Vec::new(),
            handlers: Vec::new(),
            become_root: None,
        };
        let mut stack = Vec::new();
        load_file(path, &mut book, &mut stack, None)?;
        book.check_notify()?;
        Ok(book)
    }

    /// Every `notify` names a handler.
    fn check_notify(&self) -> Result<(), YamlError> {
        let names: Vec<&str> = self.handlers.iter().map(|h| h.name.as_str()).collect();
        for step in &self.steps {
            for n in &step.notify {
                if !names.contains(&n.as_str()) {
                    return Err(YamlError {
                        loc: yaml::Loc {
                            file: step.file.clone(),
                            line: step.line,
                            column: step.column,
                        },
                        message: format!(
                            "step `{}` notifies `{n}`, which is no handler",
                            step.name
                        ),
                        hint: Some(if names.is_empty() {
                            "add it under `handlers:`".to_string()
                        } else {
                            format!("handlers: {}", names.join(", "))
                        }),
                    });
                }
            }
        }
        Ok(())
    }
}

fn read(path: &Path, from: Option<&Node>, including: Option<&Path>) -> Result<Node, YamlError> {
    let text = std::fs::read_to_string(path).map_err(|e| match (from, including) {
        (Some(node), Some(file)) => {
            node.error(file, format!("cannot read {}: {e}", path.display()))
        }
        _ => YamlError {
            loc: yaml::Loc {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
            },
            message: format!("cannot read the playbook: {e}"),
            hint: None,
        },
    })?;
    yaml::parse(path, &text)
}

fn load_file(
    path: &Path,
    book: &mut Playbook,
    stack: &mut Vec<PathBuf>,
    from: Option<(&Node, &Path)>,
) -> Result<(), YamlError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&canonical) {
        let (node, file) = from.expect("only an include can loop");
        return Err(node.error(
            file,
            format!("include loop: {} includes itself", path.display()),
        ));
    }
    let root = read(path, from.map(|f| f.0), from.map(|f| f.1))?;
    stack.push(canonical);
    let entries = match &root.value {
        NodeValue::Map(entries) => entries.clone(),
        // A bare list of steps is a playbook too.
        NodeValue::Seq(_) => vec![(
            Node {
                value: NodeValue::String("steps".into()),
                line: root.line,
                column: root.column,
            },
            root.clone(),
        )],
        NodeValue::Null => Vec::new(),
        _ => {
            return Err(root.error(
                path,
                format!(
                    "a playbook is a mapping with {}, found {}",
                    TOP_KEYS.join(", "),
                    root.kind()
                ),
            ));
        }
    };
    for (key, value) in &entries {
        match key.as_str() {
            Some("vars") => {
                let Some(map) = value.as_map() else {
                    return Err(value.error(
                        path,
                        format!("`vars` must be a mapping, found {}", value.kind()),
                    ));
                };
                for (k, v) in map {
                    let name = k
                        .as_str()
                        .ok_or_else(|| k.error(path, "a variable name must be a string"))?;
                    book.vars
                        .push((name.to_string(), v.clone(), path.to_path_buf()));
                }
            }
            Some("become") => book.become_root = Some(bool_of(value, path, "become")?),
            Some("steps") => {
                for step in list_of(value, path, "steps")? {
                    load_step(step, path, book, stack, false)?;
                }
            }
            Some("handlers") => {
                for step in list_of(value, path, "handlers")? {
                    load_step(step, path, book, stack, true)?;
                }
            }
            _ => return Err(unknown_key(key, path, "playbook", TOP_KEYS)),
        }
    }
    stack.pop();
    Ok(())
}

fn list_of<'a>(node: &'a Node, file: &Path, what: &str) -> Result<&'a [Node], YamlError> {
    match &node.value {
        NodeValue::Seq(items) => Ok(items),
        NodeValue::Null => Ok(&[]),
        _ => Err(node.error(
            file,
            format!("`{what}` must be a list, found {}", node.kind()),
        )),
    }
}

fn bool_of(node: &Node, file: &Path, what: &str) -> Result<bool, YamlError> {
    match node.value {
        NodeValue::Bool(b) => Ok(b),
        _ => Err(node.error(
            file,
            format!("`{what}` must be true or false, found {}", node.kind()),
        )),
    }
}

/// A step's `timeout:`: whole seconds (`600`), or a number with `s`, `m` or `h` (`10m`),
/// from 1 s to [`MAX_STEP_TIMEOUT`].
fn seconds_of(node: &Node, file: &Path) -> Result<u64, YamlError> {
    let bad = || {
        let mut e = node.error(
            file,
            format!(
                "`timeout` must be a number of seconds from 1 to {MAX_STEP_TIMEOUT}, or one \
                 with s, m or h (`90s`, `10m`, `2h`); found {}",
                match &node.value {
                    NodeValue::String(s) => format!("{s:?}"),
                    NodeValue::Number(n) => n.to_string(),
                    _ => node.kind().to_string(),
                }
            ),
        );
        e.hint = Some(format!(
            "without it, a step's apply may run {STEP_TIMEOUT} s"
        ));
        e
    };
    let secs = match &node.value {
        NodeValue::Number(n) => n.as_u64(),
        NodeValue::String(s) => {
            let s = s.trim();
            let (num, unit) = match s.char_indices().last() {
                Some((i, 's')) => (&s[..i], 1),
                Some((i, 'm')) => (&s[..i], 60),
                Some((i, 'h')) => (&s[..i], 3600),
                _ => (s, 1),
            };
            num.parse::<u64>().ok().and_then(|n| n.checked_mul(unit))
        }
        _ => None,
    };
    secs.filter(|s| (1..=MAX_STEP_TIMEOUT).contains(s))
        .ok_or_else(bad)
}

/// A string or a list of strings.
fn strings_of(node: &Node, file: &Path, what: &str) -> Result<Vec<String>, YamlError> {
    match &node.value {
        NodeValue::String(s) => Ok(vec![s.clone()]),
        NodeValue::Seq(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    i.error(
                        file,
                        format!("`{what}` entries must be strings, found {}", i.kind()),
                    )
                })
            })
            .collect(),
        _ => Err(node.error(
            file,
            format!(
                "`{what}` must be a string or a list of strings, found {}",
                node.kind()
            ),
        )),
    }
}

fn unknown_key(key: &Node, file: &Path, what: &str, valid: &[&str]) -> YamlError {
    let name = key.as_str().unwrap_or("?");
    let mut err = key.error(file, format!("unknown key `{name}` in {what}"));
    err.hint = Some(format!("valid keys: {}", valid.join(", ")));
    err
}

fn load_step(
    node: &Node,
    file: &Path,
    book: &mut Playbook,
    stack: &mut Vec<PathBuf>,
    handler: bool,
) -> Result<(), YamlError> {
    let Some(entries) = node.as_map() else {
        return Err(node.error(
            file,
            format!("a step must be a mapping, found {}", node.kind()),
        ));
    };
    if let Some(include) = node.get("include") {
        if entries.len() > 1 {
            return Err(node.error(file, "an `include` step takes no other keys"));
        }
        let target = include
            .as_str()
            .ok_or_else(|| include.error(file, "`include` must be a file name"))?;
        let base = file.parent().unwrap_or(Path::new("."));
        return load_file(&base.join(target), book, stack, Some((include, file)));
    }
    let mut kind: Option<(&'static resource::TypeInfo, &Node)> = None;
    let mut name = None;
    let mut when = None;
    let mut tags = Vec::new();
    let mut notify = Vec::new();
    let mut risky = false;
    let mut sensitive = false;
    let mut timeout = None;
    for (key, value) in entries {
        let Some(k) = key.as_str() else {
            return Err(key.error(file, "step keys must be strings"));
        };
        match k {
            "name" => {
                name = Some(value.as_str().map(str::to_string).ok_or_else(|| {
                    value.error(
                        file,
                        format!("`name` must be a string, found {}", value.kind()),
                    )
                })?)
            }
            "when" => when = Some(value.clone()),
            "tags" => tags = strings_of(value, file, "tags")?,
            "notify" => notify = strings_of(value, file, "notify")?,
            "risky" => risky = bool_of(value, file, "risky")?,
            "sensitive" => sensitive = bool_of(value, file, "sensitive")?,
            "timeout" => timeout = Some(seconds_of(value, file)?),
            other => match resource::lookup(other) {
                Some(info) => {
                    if let Some((first, _)) = kind {
                        return Err(key.error(
                            file,
                            format!(
                                "a step has one resource type; this one has `{}` and `{other}`",
                                first.name
                            ),
                        ));
                    }
                    kind = Some((info, value));
                }
                None => {
                    let types: Vec<&str> = resource::TYPES.iter().map(|t| t.name).collect();
                    let mut err =
                        key.error(file, format!("unknown resource type or step key `{other}`"));
                    err.hint = Some(format!(
                        "resource types: {}; step keys: {}",
                        types.join(", "),
                        STEP_KEYS.join(", ")
                    ));
                    return Err(err);
                }
            },
        }
    }
    let Some((info, params)) = kind else {
        let types: Vec<&str> = resource::TYPES.iter().map(|t| t.name).collect();
        let mut err = node.error(file, "this step names no resource type");
        err.hint = Some(format!("resource types: {}", types.join(", ")));
        return Err(err);
    };
    check_params(info, params, file)?;
    if handler && name.is_none() {
        return Err(node.error(file, "a handler needs a `name` (steps notify it by name)"));
    }
    let name = name.unwrap_or_else(|| {
        let first = params
            .as_map()
            .and_then(|m| m.first())
            .and_then(|(_, v)| v.as_str().map(str::to_string))
            .unwrap_or_default();
        format!("{} {first}", info.name).trim().to_string()
    });
    let step = Step {
        name,
        kind: info,
        params: params.clone(),
        when,
        tags,
        notify,
        risky,
        sensitive,
        timeout,
        file: file.to_path_buf(),
        line: node.line,
        column: node.column,
    };
    if handler {
        book.handlers.push(step);
    } else {
        book.steps.push(step);
    }
    Ok(())
}

/// Every parameter key is one the type knows.
fn check_params(info: &resource::TypeInfo, params: &Node, file: &Path) -> Result<(), YamlError> {
    let Some(map) = params.as_map() else {
        return Err(params.error(
            file,
            format!(
                "the parameters of `{}` must be a mapping, found {}",
                info.name,
                params.kind()
            ),
        ));
    };
    let mut valid: Vec<&str> = info.params.to_vec();
    valid.extend(
        ENGINE_PARAMS
            .iter()
            .filter(|(t, _)| *t == info.name)
            .map(|(_, p)| *p),
    );
    for (key, _) in map {
        match key.as_str() {
            Some(k) if valid.contains(&k) => {}
            _ => {
                return Err(unknown_key(
                    key,
                    file,
                    &format!("`{}` parameters", info.name),
                    &valid,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load_err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.yaml", text);
        let err = Playbook::load(&p).unwrap_err().to_string();
        err.replace(&dir.path().display().to_string(), "[DIR]")
    }

    #[test]
    fn steps_includes_and_handlers_load_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "inner.yaml",
            "steps:\n  - directory: {path: /b}\n",
        );
        let p = write(
            dir.path(),
            "p.yaml",
            "vars: {x: 1}\nsteps:\n  - name: first\n    file: {path: /a, content: hi}\n    tags: t\n    notify: h\n  - include: inner.yaml\nhandlers:\n  - name: h\n    absent: {path: /c}\n",
        );
        let book = Playbook::load(&p).unwrap();
        let names: Vec<&str> = book.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["first", "directory /b"]);
        assert_eq!(book.steps[0].tags, ["t"]);
        assert_eq!(book.steps[0].notify, ["h"]);
        assert_eq!(
            (
                book.steps[1].line,
                book.steps[1].file.ends_with("inner.yaml")
            ),
            (2, true)
        );
        assert_eq!(book.handlers[0].name, "h");
        assert_eq!(book.vars[0].0, "x");
    }

    #[test]
    fn an_unknown_resource_type_lists_the_types() {
        assert_eq!(
            load_err("steps:\n  - fiel: {path: /a}\n"),
            "[DIR]/p.yaml:2:5: unknown resource type or step key `fiel`\n  hint: resource types: file, directory, absent, lines, user, group, command, package, service, unit, sysctl, sshd, nftables, audit_rules, json_config, wireguard; step keys: name, when, tags, notify, risky, sensitive, timeout, include"
        );
    }

    #[test]
    fn a_step_timeout_is_seconds_or_a_number_with_a_unit_and_bad_ones_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "p.yaml",
            "steps:\n  - file: {path: /a}\n    timeout: 30\n  - file: {path: /b}\n    timeout: 10m\n  - file: {path: /c}\n    timeout: '2h'\n  - file: {path: /d}\n",
        );
        let book = Playbook::load(&p).unwrap();
        let t: Vec<Option<u64>> = book.steps.iter().map(|s| s.timeout).collect();
        assert_eq!(t, [Some(30), Some(600), Some(7200), None]);
        for (bad, shown) in [
            ("0", "0"),
            ("-5", "-5"),
            ("1.5", "1.5"),
            ("ten", "\"ten\""),
            ("5d", "\"5d\""),
            ("25h", "\"25h\""),
            ("true", "a boolean"),
        ] {
            let err = load_err(&format!(
                "steps:\n  - file: {{path: /a}}\n    timeout: {bad}\n"
            ));
            assert!(
                err.starts_with(&format!(
                    "[DIR]/p.yaml:3:14: `timeout` must be a number of seconds from 1 to 86400, or one with s, m or h (`90s`, `10m`, `2h`); found {shown}\n  hint: "
                )),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_unknown_parameter_lists_the_valid_ones() {
        let err = load_err("steps:\n  - directory:\n      path: /a\n      mdoe: '0700'\n");
        assert!(err.starts_with("[DIR]/p.yaml:4:7: unknown key `mdoe` in `directory` parameters\n  hint: valid keys: "), "{err}");
    }

    #[test]
    fn wrong_types_are_located() {
        assert_eq!(
            load_err("steps:\n  - file: {path: /a}\n    tags: {a: 1}\n"),
            "[DIR]/p.yaml:3:11: `tags` must be a string or a list of strings, found a mapping"
        );
        assert_eq!(
            load_err("steps: {a: 1}\n"),
            "[DIR]/p.yaml:1:8: `steps` must be a list, found a mapping"
        );
    }

    #[test]
    fn notify_must_name_a_handler() {
        let err = load_err("steps:\n  - file: {path: /a}\n    notify: nope\n");
        assert_eq!(
            err,
            "[DIR]/p.yaml:2:5: step `file /a` notifies `nope`, which is no handler\n  hint: add it under `handlers:`"
        );
    }

    #[test]
    fn include_loops_are_refused() {
        let err = load_err("steps:\n  - include: p.yaml\n");
        assert!(err.contains("include loop"), "{err}");
    }

    #[test]
    fn malformed_yaml_names_the_place() {
        let err = load_err("steps:\n  - file: {path: /a\n");
        assert!(err.starts_with("[DIR]/p.yaml:"), "{err}");
        assert!(err.contains("invalid YAML"), "{err}");
    }
}
