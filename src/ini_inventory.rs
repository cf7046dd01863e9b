//! ini_inventory: Ansible's INI inventory layout and the `group_vars/` and `host_vars/`
//! beside an inventory, read into the same groups as the YAML layout.
//!
//! Owns `[group]`, `[group:vars]`, `[group:children]`, `host key=value` lines (split like
//! Python's shlex, values read like `ast.literal_eval` as Ansible does), host ranges
//! (`www[01:50]`, `db-[a:f]`, strides `[1:9:2]`), `host:port`, and the vars files. The tests
//! compare what it resolves with `ansible-inventory --list` on the same files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::inventory::{Group, InventoryError, Var, Vars};

/// Whether a file is in the INI layout: its first line that says something is a `[section]`
/// or a host line (the YAML layout starts with `all:` or `name:`).
pub fn looks_like_ini(text: &str) -> bool {
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') || t == "---" {
            continue;
        }
        if t.starts_with('[') {
            return true;
        }
        // `name:` (a YAML key) vs `name key=value` or a bare `name` / `name:22`.
        let first = t.split_whitespace().next().unwrap_or("");
        return !first.ends_with(':') && !t.contains(": ") && !t.starts_with('{');
    }
    false
}

#[derive(Default)]
struct Decl {
    hosts: IndexMap<String, Vars>,
    vars: Vars,
    children: Vec<String>,
}

fn syntax(path: &Path, line: usize, message: String) -> InventoryError {
    InventoryError::Syntax {
        path: path.to_path_buf(),
        message: format!(
            "line {line}: {message}\nhint: the INI layout is `[group]`, `[group:vars]`, `[group:children]` sections of `host key=value` lines"
        ),
    }
}

pub fn parse(path: &Path, text: &str) -> Result<Group, InventoryError> {
    let mut decls: IndexMap<String, Decl> = IndexMap::new();
    decls.insert("all".into(), Decl::default());
    decls.insert("ungrouped".into(), Decl::default());
    let mut group = "ungrouped".to_string();
    let mut state = "hosts";
    let mut child_of: HashMap<String, Vec<String>> = HashMap::new();
    // Groups seen only in `[name:vars]` so far (with the line), and groups defined.
    let mut vars_only: IndexMap<String, usize> = IndexMap::new();
    let mut defined: std::collections::HashSet<String> =
        ["all".to_string(), "ungrouped".to_string()].into();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let (name, kind) = match section.split_once(':') {
                Some((g, k)) => (g, k),
                None => (section, "hosts"),
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(syntax(
                    path,
                    n,
                    format!("`[{section}]` is not a group name"),
                ));
            }
            state = match kind {
                "hosts" => "hosts",
                "vars" => "vars",
                "children" => "children",
                other => {
                    return Err(syntax(
                        path,
                        n,
                        format!("section `[{section}]` has unknown type `{other}`"),
                    ));
                }
            };
            group = name.to_string();
            decls.entry(group.clone()).or_default();
            if state == "vars" {
                vars_only.entry(group.clone()).or_insert(n);
            } else {
                vars_only.shift_remove(&group);
                defined.insert(group.clone());
            }
            continue;
        }
        let at = |col: usize, value: Value| Var {
            value,
            line: n as u64,
            column: col as u64,
            file: None,
        };
        let column = raw.len() - raw.trim_start().len() + 1;
        match state {
            "hosts" => {
                let words = shlex(line).map_err(|m| syntax(path, n, m))?;
                let Some((pattern, rest)) = words.split_first() else {
                    continue;
                };
                let (names, port) = expand(pattern).map_err(|m| syntax(path, n, m))?;
                let mut vars = Vars::new();
                if let Some(port) = port {
                    vars.insert("ansible_port".into(), at(column, Value::from(port)));
                }
                for word in rest {
                    let Some((k, v)) = word.split_once('=') else {
                        return Err(syntax(
                            path,
                            n,
                            format!("expected `key=value` after the host, found `{word}`"),
                        ));
                    };
                    let col = raw.find(word.as_str()).map(|c| c + 1).unwrap_or(column);
                    vars.insert(k.to_string(), at(col, literal(v)));
                }
                let decl = decls.entry(group.clone()).or_default();
                for name in names {
                    decl.hosts.entry(name).or_default().extend(vars.clone());
                }
            }
            "vars" => {
                let Some((k, v)) = line.split_once('=') else {
                    return Err(syntax(
                        path,
                        n,
                        format!("expected `key=value`, found `{line}`"),
                    ));
                };
                let decl = decls.entry(group.clone()).or_default();
                decl.vars
                    .insert(k.trim().to_string(), at(column, literal(v.trim())));
            }
            _ => {
                let child = line.split_whitespace().next().unwrap_or(line).to_string();
                child_of
                    .entry(child.clone())
                    .or_default()
                    .push(group.clone());
                let decl = decls.entry(group.clone()).or_default();
                if !decl.children.contains(&child) {
                    decl.children.push(child);
                }
            }
        }
    }
    // As Ansible: `[name:vars]` for a group nothing defines is an error (a typo).
    for (g, line) in &vars_only {
        if !defined.contains(g) && !child_of.contains_key(g) {
            return Err(syntax(
                path,
                *line,
                format!("`[{g}:vars]` is for a group that no `[{g}]` or `[…:children]` defines"),
            ));
        }
    }
    for (child, parents) in &child_of {
        if !decls.contains_key(child) {
            return Err(syntax(
                path,
                0,
                format!(
                    "`[{}:children]` names the group `{child}`, which is never defined",
                    parents[0]
                ),
            ));
        }
    }
    // A host that is only under the top of the file is `ungrouped`, as in Ansible.
    let mut all = Group {
        vars: decls.get("all").map(|d| d.vars.clone()).unwrap_or_default(),
        hosts: decls
            .get("all")
            .map(|d| d.hosts.clone())
            .unwrap_or_default(),
        children: IndexMap::new(),
    };
    for name in decls.keys() {
        if name == "all"
            || child_of.contains_key(name)
            || (name == "ungrouped" && decls[name].hosts.is_empty())
        {
            continue;
        }
        let g = build(name, &decls, &mut Vec::new(), path)?;
        all.children.insert(name.clone(), g);
    }
    Ok(all)
}

fn build(
    name: &str,
    decls: &IndexMap<String, Decl>,
    stack: &mut Vec<String>,
    path: &Path,
) -> Result<Group, InventoryError> {
    if stack.iter().any(|s| s == name) {
        return Err(InventoryError::Structure {
            path: path.to_path_buf(),
            message: format!(
                "group `{name}` is its own ancestor ({} -> {name})",
                stack.join(" -> ")
            ),
        });
    }
    let decl = &decls[name];
    stack.push(name.to_string());
    let mut children = IndexMap::new();
    for c in &decl.children {
        children.insert(c.clone(), build(c, decls, stack, path)?);
    }
    stack.pop();
    Ok(Group {
        hosts: decl.hosts.clone(),
        vars: decl.vars.clone(),
        children,
    })
}

/// Python's `shlex.split(line, comments=True)`, enough for host lines.
fn shlex(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("an unclosed quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c)
                            }
                            None => return Err("an unclosed quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("an unclosed quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c)
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A value as `ast.literal_eval` reads it, else the text itself (Ansible's `_parse_value`).
pub fn literal(v: &str) -> Value {
    let t = v.trim();
    match t {
        "True" => return Value::Bool(true),
        "False" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = t.replace('_', "").parse::<i64>()
        && !t.starts_with('_')
        && !t.ends_with('_')
        && !(t.len() > 1 && t.starts_with('0'))
    {
        return Value::from(i);
    }
    if t.contains(['.', 'e', 'E'])
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.')
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    if t.len() >= 2
        && ((t.starts_with('\'') && t.ends_with('\'')) || (t.starts_with('"') && t.ends_with('"')))
    {
        return Value::String(t[1..t.len() - 1].to_string());
    }
    if (t.starts_with('[') && t.ends_with(']')) || (t.starts_with('{') && t.ends_with('}')) {
        let json = t
            .replace("True", "true")
            .replace("False", "false")
            .replace("None", "null");
        if let Ok(v) = json5::from_str::<Value>(&json) {
            return v;
        }
    }
    Value::String(v.to_string())
}

/// `www[01:50].example.com:2222` -> the names and the port. Ranges: numbers (leading zeros
/// keep the width) or letters, with an optional stride.
fn expand(pattern: &str) -> Result<(Vec<String>, Option<u16>), String> {
    // The port follows the last `]` (or the name, when it has one colon: not IPv6).
    let after = pattern.rfind(']').map(|i| i + 1).unwrap_or(0);
    let split = match pattern[after..].rfind(':') {
        Some(i) if after > 0 || pattern.matches(':').count() == 1 => Some(after + i),
        _ => None,
    };
    let (host, port) = match split {
        Some(i) => {
            let p = &pattern[i + 1..];
            let port: u16 = p
                .parse()
                .map_err(|_| format!("`{pattern}`: the port `{p}` is not a number"))?;
            (&pattern[..i], Some(port))
        }
        None => (pattern, None),
    };
    let Some(open) = host.find('[') else {
        return Ok((vec![host.to_string()], port));
    };
    let close = host[open..]
        .find(']')
        .map(|c| c + open)
        .ok_or_else(|| format!("`{pattern}`: an unclosed `[`"))?;
    let (head, range, tail) = (&host[..open], &host[open + 1..close], &host[close + 1..]);
    let parts: Vec<&str> = range.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(format!(
            "`{pattern}`: a range is `[start:end]` or `[start:end:step]`"
        ));
    }
    let step: usize = match parts.get(2) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| format!("`{pattern}`: the step must be a positive number"))?,
        None => 1,
    };
    let (a, b) = (parts[0], parts[1]);
    let items: Vec<String> = if let (Ok(x), Ok(y)) = (a.parse::<u64>(), b.parse::<u64>()) {
        if x > y {
            return Err(format!("`{pattern}`: the range runs backwards"));
        }
        let width = if a.starts_with('0') && a.len() > 1 {
            a.len()
        } else {
            0
        };
        (x..=y)
            .step_by(step)
            .map(|i| format!("{i:0width$}"))
            .collect()
    } else if a.len() == 1 && b.len() == 1 && a <= b {
        let (x, y) = (a.as_bytes()[0], b.as_bytes()[0]);
        (x..=y)
            .step_by(step)
            .map(|c| (c as char).to_string())
            .collect()
    } else {
        return Err(format!(
            "`{pattern}`: `[{range}]` is not a range of numbers or letters"
        ));
    };
    if items.len() > 100_000 {
        return Err(format!(
            "`{pattern}`: the range names more than 100000 hosts"
        ));
    }
    let mut names = Vec::new();
    for item in items {
        let (more, _) = expand(&format!("{head}{item}{tail}"))?;
        names.extend(more);
    }
    Ok((names, port))
}

/// Variables from `group_vars/` and `host_vars/` beside an inventory.
#[derive(Debug, Default)]
pub struct VarsDirs {
    pub groups: HashMap<String, Vars>,
    pub hosts: HashMap<String, Vars>,
}

/// Reads `DIR/group_vars/NAME` and `DIR/host_vars/NAME`: a YAML or JSON file (no extension,
/// `.yml`, `.yaml`, `.json`) or a folder of them (read in name order, later files win).
pub fn vars_dirs(dir: &Path) -> Result<VarsDirs, InventoryError> {
    let mut out = VarsDirs::default();
    for (sub, map) in [
        ("group_vars", &mut out.groups),
        ("host_vars", &mut out.hosts),
    ] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for entry in entries {
            let Some(file_name) = entry.file_name().map(|n| n.to_string_lossy().to_string()) else {
                continue;
            };
            if file_name.starts_with('.') {
                continue;
            }
            let files = if entry.is_dir() {
                let mut inner = Vec::new();
                collect_files(&entry, &mut inner);
                inner.sort();
                (file_name.clone(), inner)
            } else {
                let stem = ["yml", "yaml", "json"]
                    .iter()
                    .find_map(|ext| file_name.strip_suffix(&format!(".{ext}")))
                    .unwrap_or(&file_name)
                    .to_string();
                (stem, vec![entry.clone()])
            };
            let (name, files) = files;
            let vars = map.entry(name).or_default();
            for f in files {
                vars.extend(read_vars_file(&f)?);
            }
        }
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out);
        } else if name.ends_with(".yml")
            || name.ends_with(".yaml")
            || name.ends_with(".json")
            || !name.contains('.')
        {
            out.push(p);
        }
    }
}

/// `-e/--extra-vars` values as Ansible reads them: `key=value ...` (values are strings), a
/// YAML or JSON mapping (`{"k": 1}`), or `@FILE` holding one.
pub fn extra_vars(args: &[String]) -> Result<Vars, InventoryError> {
    let mut out = Vars::new();
    for arg in args {
        let arg = arg.trim();
        if let Some(file) = arg.strip_prefix('@') {
            out.extend(read_vars_file(Path::new(file))?);
        } else if arg.starts_with('{') || arg.starts_with('[') {
            let raw: IndexMap<String, Value> =
                serde_saphyr::from_str(arg).map_err(|e| InventoryError::Syntax {
                    path: PathBuf::from("-e"),
                    message: format!("{e}\nhint: -e takes key=value, a YAML/JSON mapping or @FILE"),
                })?;
            for (k, v) in raw {
                out.insert(
                    k,
                    Var {
                        value: v,
                        line: 1,
                        column: 1,
                        file: Some(PathBuf::from("-e")),
                    },
                );
            }
        } else {
            for word in shlex(arg).map_err(|m| InventoryError::Syntax {
                path: PathBuf::from("-e"),
                message: m,
            })? {
                let Some((k, v)) = word.split_once('=') else {
                    return Err(InventoryError::Syntax {
                        path: PathBuf::from("-e"),
                        message: format!(
                            "`{word}` is not key=value\nhint: -e takes key=value, a YAML/JSON mapping or @FILE"
                        ),
                    });
                };
                out.insert(
                    k.to_string(),
                    Var {
                        value: Value::String(v.to_string()),
                        line: 1,
                        column: 1,
                        file: Some(PathBuf::from("-e")),
                    },
                );
            }
        }
    }
    Ok(out)
}

fn read_vars_file(path: &Path) -> Result<Vars, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() || text.trim() == "---" {
        return Ok(Vars::new());
    }
    let raw: Option<IndexMap<String, serde_saphyr::Spanned<Value>>> = serde_saphyr::from_str(&text)
        .map_err(|e| InventoryError::Syntax {
            path: path.to_path_buf(),
            message: format!(
                "{e}\nhint: a vars file is a YAML (or JSON) mapping of names to values"
            ),
        })?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let var = Var {
                value: v.value,
                line: v.referenced.line(),
                column: v.referenced.column(),
                file: Some(path.to_path_buf()),
            };
            (k, var)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_like_ansible() {
        assert_eq!(
            expand("www[01:03].example.com").unwrap().0,
            vec![
                "www01.example.com",
                "www02.example.com",
                "www03.example.com"
            ]
        );
        assert_eq!(expand("db-[a:c]").unwrap().0, vec!["db-a", "db-b", "db-c"]);
        assert_eq!(
            expand("n[1:9:4]:2222").unwrap(),
            (vec!["n1".into(), "n5".into(), "n9".into()], Some(2222))
        );
        assert!(expand("x[3:1]").is_err());
    }

    #[test]
    fn values_read_like_literal_eval() {
        assert_eq!(literal("5"), Value::from(5));
        assert_eq!(literal("'5'"), Value::from("5"));
        assert_eq!(literal("True"), Value::Bool(true));
        assert_eq!(literal("yes"), Value::from("yes"));
        assert_eq!(literal("[1, 'a']"), serde_json::json!([1, "a"]));
        assert_eq!(literal("010"), Value::from("010"));
    }

    #[test]
    fn sections_and_children() {
        let g = parse(
            Path::new("hosts"),
            "loose\n[web]\nw[1:2] http_port=80\n[db:vars]\nx=1\n[db]\nd1\n[prod:children]\nweb\ndb\n",
        )
        .unwrap();
        assert!(g.children["ungrouped"].hosts.contains_key("loose"));
        let prod = &g.children["prod"];
        assert_eq!(prod.children["web"].hosts.len(), 2);
        assert_eq!(prod.children["db"].vars["x"].value, Value::from(1));
        assert!(!g.children.contains_key("web"), "web is under prod only");
        assert!(parse(Path::new("h"), "[a:children]\nnope\n").is_err());
        assert!(parse(Path::new("h"), "[web]\nw1\n[wbe:vars]\nx=1\n").is_err());
        assert!(parse(Path::new("h"), "[web:vars]\nx=1\n[web]\nw1\n").is_ok());
        assert!(parse(Path::new("h"), "[all:vars]\nx=1\n").is_ok());
    }
}
