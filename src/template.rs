//! template: rendering step parameters and template files with minijinja, per host.
//!
//! Owns the environment (strict undefined, auto-escape off, `templates/` as the loader, the
//! Ansible filters people reach for) and turning a step's located parameters into rendered
//! JSON. Every string in the parameters is a template. A render error names the file, line,
//! column and, for undefined values, the variable. It never touches a host.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value as JValue};
use serde_json::Value;

use crate::yaml::{Loc, Node, NodeValue};

/// A render error, located.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{loc}: {message}")]
pub struct RenderError {
    pub loc: Loc,
    pub message: String,
}

/// The template environment of one run.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// `dirs`: where `template:` names and `{% include %}` are looked up, in order (by default
    /// the playbook's own `templates/` folder and its parent's).
    pub fn new(dirs: Vec<PathBuf>) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files are not HTML: no escaping of any kind, whatever the file name.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.set_loader(move |name| {
            if name.contains("..") {
                return Ok(None);
            }
            for dir in &dirs {
                let path = dir.join(name);
                if let Ok(text) = std::fs::read_to_string(&path) {
                    return Ok(Some(text));
                }
            }
            Ok(None)
        });
        add_filters(&mut env);
        Templates { env }
    }

    /// The text of template `name`, if the loader finds it.
    pub fn source(&self, name: &str) -> Option<String> {
        self.env
            .get_template(name)
            .ok()
            .map(|t| t.source().to_string())
    }

    /// The default look-up folders for a playbook: `<dir>/templates` and `<dir>/../templates`.
    pub fn for_playbook(playbook: &Path) -> Templates {
        let dir = playbook.parent().unwrap_or(Path::new(".")).to_path_buf();
        Templates::new(vec![dir.join("templates"), dir.join("../templates")])
    }

    /// Renders every string inside `node` (keys stay as written).
    pub fn render_node(
        &self,
        node: &Node,
        file: &Path,
        ctx: &JValue,
    ) -> Result<Value, RenderError> {
        let _current = CurrentCtx::set(ctx);
        Ok(match &node.value {
            NodeValue::String(s) => {
                if !s.contains("{{") && !s.contains("{%") && !s.contains("{#") {
                    Value::String(s.clone())
                } else if let Some(expr) = single_expression(s) {
                    // `"{{ x }}"` alone keeps x's type (a list stays a list), as in Ansible.
                    let compiled = self
                        .env
                        .compile_expression(expr)
                        .map_err(|e| located(&self.env, e, node, file, s, ctx))?;
                    let value = compiled
                        .eval(ctx.clone())
                        .map_err(|e| located(&self.env, e, node, file, s, ctx))?;
                    if value.is_undefined() {
                        return Err(located(
                            &self.env,
                            Error::new(ErrorKind::UndefinedError, "undefined value"),
                            node,
                            file,
                            s,
                            ctx,
                        ));
                    }
                    serde_json::to_value(&value).map_err(|e| RenderError {
                        loc: node.loc(file),
                        message: e.to_string(),
                    })?
                } else {
                    let rendered = self
                        .render_str(s, ctx)
                        .map_err(|e| located(&self.env, e, node, file, s, ctx))?;
                    Value::String(rendered)
                }
            }
            NodeValue::Seq(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_node(i, file, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            NodeValue::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k.to_json() {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    map.insert(key, self.render_node(v, file, ctx)?);
                }
                Value::Object(map)
            }
            _ => node.to_json(),
        })
    }

    fn render_str(&self, source: &str, ctx: &JValue) -> Result<String, Error> {
        self.env.render_str(source, ctx.clone())
    }

    /// Renders the template file `name` (looked up in the template folders).
    pub fn render_file(
        &self,
        name: &str,
        ctx: &JValue,
        at: &Node,
        file: &Path,
    ) -> Result<String, RenderError> {
        let _current = CurrentCtx::set(ctx);
        let template = self.env.get_template(name).map_err(|e| {
            let message = if e.kind() == ErrorKind::TemplateNotFound {
                format!("template `{name}` not found")
            } else {
                describe(&e)
            };
            RenderError {
                loc: at.loc(file),
                message,
            }
        })?;
        template.render(ctx.clone()).map_err(|e| {
            let line = e.line().unwrap_or(0) as u32;
            let mut message = describe(&e);
            if e.kind() == ErrorKind::UndefinedError {
                let missing = missing_variables(&template.undeclared_variables(true), ctx);
                if !missing.is_empty() {
                    message = format!("undefined variable `{}`", missing.join("`, `"));
                }
            }
            RenderError {
                loc: Loc {
                    file: PathBuf::from(format!("{} (template {name})", at.loc(file))),
                    line,
                    column: 0,
                },
                message,
            }
        })
    }

    /// Evaluates a `when` expression: true or false.
    pub fn eval_when(&self, node: &Node, file: &Path, ctx: &JValue) -> Result<bool, RenderError> {
        let text = match &node.value {
            NodeValue::Bool(b) => return Ok(*b),
            NodeValue::String(s) => s.trim(),
            _ => {
                return Err(RenderError {
                    loc: node.loc(file),
                    message: format!("`when` must be an expression, found {}", node.kind()),
                });
            }
        };
        // Ansible writes `when: x` without braces; tolerate `{{ x }}` too.
        let text = text
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .map(str::trim)
            .unwrap_or(text);
        let expr = self
            .env
            .compile_expression(text)
            .map_err(|e| located(&self.env, e, node, file, text, ctx))?;
        let value = expr.eval(ctx.clone()).map_err(|e| {
            let undefined = e.kind() == ErrorKind::UndefinedError;
            let mut err = located(&self.env, e, node, file, text, ctx);
            if undefined {
                let missing = missing_variables(&expr.undeclared_variables(true), ctx);
                if !missing.is_empty() {
                    err.message =
                        format!("undefined variable `{}` in `when`", missing.join("`, `"));
                }
            }
            err
        })?;
        Ok(value.is_true())
    }
}

/// The expression of a string that is one `{{ ... }}` and nothing else.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// Top-level names (and dotted paths) a template uses that the context does not define.
fn missing_variables(used: &std::collections::HashSet<String>, ctx: &JValue) -> Vec<String> {
    let mut missing: Vec<String> = used
        .iter()
        .filter(|path| {
            let mut value = ctx.clone();
            for part in path.split('.') {
                match value.get_attr(part) {
                    Ok(v) if !v.is_undefined() => value = v,
                    _ => return true,
                }
            }
            false
        })
        .cloned()
        .collect();
    missing.sort();
    // `a` and `a.b` both missing: name the shorter.
    let shortest: Vec<String> = missing
        .iter()
        .filter(|m| {
            !missing
                .iter()
                .any(|o| o != *m && m.starts_with(&format!("{o}.")))
        })
        .cloned()
        .collect();
    shortest
}

fn describe(e: &Error) -> String {
    let mut text = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if text.is_empty() {
        text = e.to_string();
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn located(
    env: &Environment,
    e: Error,
    node: &Node,
    file: &Path,
    source: &str,
    ctx: &JValue,
) -> RenderError {
    let mut message = describe(&e);
    if e.kind() == ErrorKind::UndefinedError
        && let Ok(t) = Environment::new().template_from_str(source)
    {
        let mut missing = missing_variables(&t.undeclared_variables(true), ctx);
        missing.retain(|m| {
            !env.globals()
                .any(|(g, _)| m == g || m.starts_with(&format!("{g}.")))
        });
        if !missing.is_empty() {
            message = format!("undefined variable `{}`", missing.join("`, `"));
        }
    }
    RenderError {
        loc: node.loc(file),
        message,
    }
}

thread_local! {
    /// The variables of the render in progress on this thread, for `lookup('template')`.
    /// Renders are synchronous, so a thread runs one at a time.
    static CURRENT: std::cell::RefCell<Option<JValue>> = const { std::cell::RefCell::new(None) };
}

/// Makes `ctx` the current render's variables until dropped.
struct CurrentCtx(Option<JValue>);

impl CurrentCtx {
    fn set(ctx: &JValue) -> CurrentCtx {
        CurrentCtx(CURRENT.with(|c| c.replace(Some(ctx.clone()))))
    }
}

impl Drop for CurrentCtx {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// `lookup('template', NAME)`: NAME rendered with the caller's variables; `lookup('file',
/// NAME)`: NAME's text as is. Both look in the template folders, as Ansible's lookups do.
fn lookup(state: &minijinja::State, kind: String, name: String) -> Result<JValue, Error> {
    let template = state.get_template(&name)?;
    match kind.as_str() {
        "file" => Ok(JValue::from(template.source().to_string())),
        "template" => {
            let ctx = CURRENT.with(|c| c.borrow().clone()).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "lookup('template') outside a render",
                )
            })?;
            Ok(JValue::from(template.render(ctx)?))
        }
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("lookup kind `{other}` is not supported (use `template` or `file`)"),
        )),
    }
}

/// `"10.99.0.0/24" | ip_host(5)` -> `"10.99.0.5/24"`: the Nth address of an IPv4 network.
fn ip_host(cidr: String, n: u32) -> Result<String, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("ip_host: `{cidr}` is no IPv4 network like 10.99.0.0/24"),
        )
    };
    let (net, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    let base: std::net::Ipv4Addr = net.parse().map_err(|_| bad())?;
    if prefix > 30 {
        return Err(bad());
    }
    let size = 1u64 << (32 - prefix);
    if n == 0 || u64::from(n) >= size - 1 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("ip_host: {n} is outside {cidr}"),
        ));
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let addr = std::net::Ipv4Addr::from((u32::from(base) & mask) + n);
    Ok(format!("{addr}/{prefix}"))
}

fn add_filters(env: &mut Environment<'static>) {
    env.add_filter("ip_host", ip_host);
    // For values a `command` step puts into shell code: one quoted word, through the same
    // quoting function as every value rampart sends (Ansible's `quote`).
    env.add_filter("quote", |s: String| -> Result<String, Error> {
        crate::remote::quote(&s)
            .map_err(|e| Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_filter(
        "index_of",
        |list: Vec<JValue>, item: JValue| -> Result<usize, Error> {
            list.iter().position(|v| v == &item).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("index_of: {item} is not in the list"),
                )
            })
        },
    );
    env.add_function("lookup", lookup);
    env.add_filter("from_json", |s: String| -> Result<JValue, Error> {
        let v: Value = serde_json::from_str(&s)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("from_json: {e}")))?;
        Ok(to_jinja(v))
    });
    env.add_filter("to_json", |v: JValue| -> Result<String, Error> {
        serde_json::to_string(&v)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_filter("to_nice_json", |v: JValue| -> Result<String, Error> {
        serde_json::to_string_pretty(&v)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_filter(
        "mandatory",
        |v: JValue, msg: Option<String>| -> Result<JValue, Error> {
            if v.is_undefined() || v.is_none() {
                Err(Error::new(
                    ErrorKind::UndefinedError,
                    msg.unwrap_or_else(|| "a mandatory variable is not defined".to_string()),
                ))
            } else {
                Ok(v)
            }
        },
    );
    env.add_filter("combine", |a: JValue, b: JValue| -> Result<JValue, Error> {
        let mut left: Value = serde_json::to_value(&a)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        let right: Value = serde_json::to_value(&b)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        if !left.is_object() || !right.is_object() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "combine needs two mappings",
            ));
        }
        deep_merge(&mut left, right);
        Ok(to_jinja(&left))
    });
    env.add_filter(
        "regex_replace",
        |s: String, pattern: String, replacement: String| -> Result<String, Error> {
            let re = regex::Regex::new(&pattern)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("bad regex: {e}")))?;
            // Ansible's `\1` backreferences become regex's `${1}`.
            let replacement = regex::Regex::new(r"\\(\d+)")
                .expect("valid")
                .replace_all(&replacement, "$${$1}")
                .into_owned();
            Ok(re.replace_all(&s, replacement.as_str()).into_owned())
        },
    );
    env.add_filter("b64encode", |s: String| -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    });
    env.add_filter("b64decode", |s: String| -> Result<String, Error> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
}

/// Any serializable value as a template value (a context, a variable).
pub fn to_jinja<T: serde::Serialize>(value: T) -> JValue {
    JValue::from(minijinja::value::Serde(value))
}

/// Merges `b` into `a`: mappings key by key, anything else replaced.
pub fn deep_merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn ctx() -> JValue {
        to_jinja(serde_json::json!({
            "user": "admin",
            "ports": [22, 443],
            "facts": {"os_id": "debian"},
            "base": {"a": 1, "n": {"x": 1}},
            "extra": {"b": 2, "n": {"y": 2}},
        }))
    }

    fn render(text: &str) -> Result<Value, RenderError> {
        let node = yaml::parse(Path::new("p.yaml"), text).unwrap();
        Templates::new(vec![]).render_node(&node, Path::new("p.yaml"), &ctx())
    }

    #[test]
    fn strings_render_and_other_values_stay() {
        let v = render("a: '{{ user }}'\nb: 3\nc: ['{{ ports | join(\",\") }}', x]\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "admin", "b": 3, "c": ["22,443", "x"]})
        );
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let v = render(
            "a: '{{ ports }}'\nb: '{{ ports[0] }}'\nc: ' {{ base }} '\nd: 'x{{ ports[0] }}'\n",
        )
        .unwrap();
        assert_eq!(v["a"], serde_json::json!([22, 443]));
        assert_eq!(v["b"], 22);
        assert_eq!(v["c"], serde_json::json!({"a": 1, "n": {"x": 1}}));
        assert_eq!(v["d"], "x22");
        let err = render("a: '{{ nope }}'\n").unwrap_err();
        assert_eq!(err.to_string(), "p.yaml:1:4: undefined variable `nope`");
    }

    #[test]
    fn network_filters() {
        let v = render(
            "a: \"{{ '10.99.0.0/24' | ip_host(5) }}\"\nb: \"{{ ports | index_of(443) }}\"\n",
        )
        .unwrap();
        assert_eq!(v["a"], "10.99.0.5/24");
        assert_eq!(v["b"], 1);
        assert!(render("a: \"{{ '10.99.0.0/24' | ip_host(255) }}\"\n").is_err());
    }

    #[test]
    fn ansible_filters() {
        let v = render(concat!(
            "j: '{{ ports | to_json }}'\n",
            "d: '{{ nope | default(\"dflt\") }}'\n",
            "c: '{{ (base | combine(extra)) | to_json }}'\n",
            "r: '{{ \"a-b-c\" | regex_replace(\"-(\\\\w)\", \"_\\\\1\") }}'\n",
            "b: '{{ \"hi\" | b64encode }}'\n",
            "e: '{{ \"<&>\" }}'\n",
            "q: \"{{ \\\"it's $HOME\\\" | quote }}\"\n",
        ))
        .unwrap();
        assert_eq!(v["q"], r#"'it'\''s $HOME'"#);
        assert_eq!(v["j"], "[22,443]");
        assert_eq!(v["d"], "dflt");
        assert_eq!(v["c"], r#"{"a":1,"n":{"x":1,"y":2},"b":2}"#);
        assert_eq!(v["r"], "a_b_c");
        assert_eq!(v["b"], "aGk=");
        assert_eq!(v["e"], "<&>", "no escaping");
    }

    #[test]
    fn undefined_variables_are_named_with_their_place() {
        let err = render("x:\n  y: 'hello {{ usr }}'\n").unwrap_err();
        assert_eq!(err.to_string(), "p.yaml:2:6: undefined variable `usr`");
        let err = render("x: '{{ facts.os_name }}'\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:1:4: undefined variable `facts.os_name`"
        );
        let err = render("x: '{{ nope | mandatory }}'\n").unwrap_err();
        assert!(err.to_string().starts_with("p.yaml:1:4: "), "{err}");
    }

    #[test]
    fn when_expressions() {
        let t = Templates::new(vec![]);
        let node = |s: &str| yaml::parse(Path::new("p.yaml"), s).unwrap();
        let f = Path::new("p.yaml");
        assert!(
            t.eval_when(&node("facts.os_id == 'debian'"), f, &ctx())
                .unwrap()
        );
        assert!(
            !t.eval_when(&node("'{{ 22 not in ports }}'"), f, &ctx())
                .unwrap()
        );
        assert!(t.eval_when(&node("true"), f, &ctx()).unwrap());
        let err = t
            .eval_when(&node("missing_var == 1"), f, &ctx())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:1:1: undefined variable `missing_var` in `when`"
        );
    }

    #[test]
    fn lookup_renders_a_template_with_the_callers_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.json.j2"),
            "{\"u\": {{ user | tojson }}, \"p\": {{ ports[1] }}}",
        )
        .unwrap();
        let t = Templates::new(vec![dir.path().to_path_buf()]);
        let node = yaml::parse(Path::new("p.yaml"), "a: \"{{ lookup('template', 'c.json.j2') | from_json }}\"\nb: \"{{ lookup('file', 'c.json.j2') }}\"\n").unwrap();
        let v = t.render_node(&node, Path::new("p.yaml"), &ctx()).unwrap();
        assert_eq!(v["a"], serde_json::json!({"u": "admin", "p": 443}));
        assert!(v["b"].as_str().unwrap().starts_with("{\"u\": {{"));
    }

    #[test]
    fn template_files_from_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("motd.j2"), "hello {{ user }}\n").unwrap();
        std::fs::write(dir.path().join("bad.j2"), "line1\n{{ nobody }}\n").unwrap();
        let t = Templates::new(vec![dir.path().to_path_buf()]);
        let at = yaml::parse(Path::new("p.yaml"), "x").unwrap();
        assert_eq!(
            t.render_file("motd.j2", &ctx(), &at, Path::new("p.yaml"))
                .unwrap(),
            "hello admin\n"
        );
        let err = t
            .render_file("bad.j2", &ctx(), &at, Path::new("p.yaml"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:1:1 (template bad.j2):2:0: undefined variable `nobody`"
        );
        let err = t
            .render_file("none.j2", &ctx(), &at, Path::new("p.yaml"))
            .unwrap_err();
        assert_eq!(err.to_string(), "p.yaml:1:1: template `none.j2` not found");
    }
}
