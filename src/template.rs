//! template: rendering step parameters and template files with minijinja, per host.
//!
//! Owns the environment (strict undefined, auto-escape off, `templates/` as the loader, the
//! Ansible filters people reach for) and turning a step's located parameters into rendered
//! JSON. Every string in the parameters is a template. A render error names the file, line,
//! column and, for undefined values, the variable. It never touches a host.
//!
//! Secrets reach a render only as opaque values (`secrets::SecretValue`), never as template
//! text; every filter is guarded so that what it derives from a secret stays a secret or is
//! refused ([`guarded`]).

use std::path::{Path, PathBuf};

use minijinja::value::{Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value as JValue};
use serde_json::Value;

use crate::secrets::{self, SecretValue};
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
        // Every filter runs in `inner`, through a guard that keeps what it derives from a
        // secret a secret (see [`guarded`]).
        let mut inner = Environment::new();
        inner.set_undefined_behavior(UndefinedBehavior::Strict);
        inner.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        add_filters(&mut inner);
        let inner = std::sync::Arc::new(inner);
        for name in BUILTIN_FILTERS.iter().chain(OWN_FILTERS) {
            env.add_filter(*name, guarded(inner.clone(), name));
        }
        env.add_function("lookup", lookup);
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

/// minijinja's own filters (3.1, with the `builtins` and `json` features). Each is replaced by a
/// guarded one; the test `every_filter_is_guarded` fails when minijinja gains one.
pub const BUILTIN_FILTERS: &[&str] = &[
    "safe",
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "length",
    "count",
    "dictsort",
    "items",
    "reverse",
    "trim",
    "join",
    "split",
    "lines",
    "default",
    "d",
    "round",
    "abs",
    "int",
    "float",
    "attr",
    "first",
    "last",
    "min",
    "max",
    "sort",
    "list",
    "string",
    "bool",
    "batch",
    "slice",
    "sum",
    "indent",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "map",
    "groupby",
    "unique",
    "chain",
    "zip",
    "pprint",
    "format",
    "tojson",
];

/// rampart's filters ([`add_filters`]).
pub const OWN_FILTERS: &[&str] = &[
    "ip_host",
    "quote",
    "index_of",
    "from_json",
    "to_json",
    "to_nice_json",
    "mandatory",
    "combine",
    "regex_replace",
    "b64encode",
    "b64decode",
];

/// Filter `name` of `inner`, guarded: when an input is a secret (a [`SecretValue`], or text
/// that holds a secret or a form of one), the result must stay a secret. A string result of
/// at least [`secrets::MIN_LEN`] characters becomes a derived secret (masked wherever it
/// shows); a result that only rearranges its inputs (`first` of a list, `default`) passes;
/// anything else (a slice, a character, a number, a list of pieces) is refused, since masking
/// could not follow it. The inner filter's own error is withheld too: it may quote its input.
fn guarded(
    inner: std::sync::Arc<Environment<'static>>,
    name: &'static str,
) -> impl Fn(Rest<JValue>) -> Result<JValue, Error> + Send + Sync + 'static {
    move |args: Rest<JValue>| {
        let taint = Taint::of(&args);
        if taint.names.is_empty() {
            return inner.empty_state().apply_filter(name, &args);
        }
        secrets::touch();
        let secret_name = taint.names[0].clone();
        if let ("length" | "count", Some(s)) = (
            name,
            args.first()
                .and_then(|v| v.downcast_object_ref::<SecretValue>()),
        ) {
            return Ok(JValue::from(s.secret.value.chars().count()));
        }
        // The filter sees a secret as the text it is (`reverse`, `split` want a string); the
        // result is confined below.
        let args: Vec<JValue> = args
            .iter()
            .map(|a| match a.downcast_object_ref::<SecretValue>() {
                Some(s) => JValue::from(s.secret.value.as_str()),
                None => a.clone(),
            })
            .collect();
        let result = inner.empty_state().apply_filter(name, &args).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "the filter `{name}` failed on secret `{secret_name}` (its message is \
                     withheld: it may quote the secret)"
                ),
            )
        })?;
        taint.confine(name, result)
    }
}

/// What the inputs of one filter call hold: the secrets among them, and the values that are
/// not secret (a result may pass them on).
#[derive(Default)]
struct Taint {
    /// Names of the secrets found (the first names a derived result).
    names: Vec<String>,
    secrets: Option<secrets::Secrets>,
    /// Values that hold no secret, as `kind:text`.
    plain: std::collections::HashSet<String>,
    /// Texts that are or hold a secret.
    tainted: std::collections::HashSet<String>,
    /// Values looked at, bounded.
    seen: usize,
}

/// How many values [`Taint`] looks at in the inputs or a result of one filter call.
const TAINT_LIMIT: usize = 100_000;

fn leaf_key(v: &JValue) -> String {
    format!("{}:{v}", v.kind())
}

impl Taint {
    fn of(args: &[JValue]) -> Taint {
        let mut t = Taint {
            secrets: secrets::active(),
            ..Taint::default()
        };
        for a in args {
            t.walk(a, 0);
        }
        t
    }

    fn walk(&mut self, v: &JValue, depth: usize) {
        self.seen += 1;
        if self.seen > TAINT_LIMIT || depth > 32 {
            return;
        }
        if let Some(s) = v.downcast_object_ref::<SecretValue>() {
            self.names.push(s.secret.name.clone());
            self.tainted.insert(s.secret.value.clone());
            self.secrets.get_or_insert_with(|| s.secrets.clone());
            return;
        }
        match v.kind() {
            ValueKind::String => {
                let text = v.as_str().unwrap_or_default();
                match self.secrets.as_ref().and_then(|s| s.contains_any(text)) {
                    Some(name) => {
                        self.names.push(name);
                        self.tainted.insert(text.to_string());
                    }
                    None => {
                        self.plain.insert(leaf_key(v));
                    }
                }
            }
            ValueKind::Seq | ValueKind::Iterable => {
                if let Ok(items) = v.try_iter() {
                    for item in items.take(TAINT_LIMIT) {
                        self.walk(&item, depth + 1);
                    }
                }
            }
            ValueKind::Map => {
                if let Ok(keys) = v.try_iter() {
                    for key in keys.take(TAINT_LIMIT) {
                        self.walk(&key, depth + 1);
                        if let Ok(item) = v.get_item(&key) {
                            self.walk(&item, depth + 1);
                        }
                    }
                }
            }
            ValueKind::Plain => {
                // An object rampart does not know: its text is all a template can get of it.
                let text = v.to_string();
                if let Some(name) = self.secrets.as_ref().and_then(|s| s.contains_any(&text)) {
                    self.names.push(name);
                    self.tainted.insert(text);
                }
            }
            _ => {
                self.plain.insert(leaf_key(v));
            }
        }
    }

    /// `result` of filter `name`, when an input was secret: a secret, a rearrangement of the
    /// inputs, or refused.
    fn confine(&self, name: &str, result: JValue) -> Result<JValue, Error> {
        let secret_name = &self.names[0];
        if result.downcast_object_ref::<SecretValue>().is_some() {
            return Ok(result);
        }
        let refuse = |what: &str| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the filter `{name}` cannot be applied to secret `{secret_name}`: its result \
                     ({what}) would carry pieces of the secret that masking cannot hide; hint: \
                     derive the value on the operator's side (the secret's `command`), or use \
                     the whole secret"
                ),
            )
        };
        match result.kind() {
            ValueKind::Undefined | ValueKind::None | ValueKind::Bool => Ok(result),
            // A length says nothing worth masking.
            ValueKind::Number if matches!(name, "length" | "count") => Ok(result),
            ValueKind::String => {
                let text = result.as_str().unwrap_or_default();
                if self.plain.contains(&leaf_key(&result)) {
                    Ok(result)
                } else if text.chars().count() >= secrets::MIN_LEN {
                    let secrets = self.secrets.clone().unwrap_or_default();
                    let secret = secrets.register_derived(secret_name, text.to_string());
                    Ok(JValue::from_object(SecretValue { secret, secrets }))
                } else {
                    Err(refuse("a text too short to mask"))
                }
            }
            ValueKind::Number => {
                if self.plain.contains(&leaf_key(&result)) {
                    Ok(result)
                } else {
                    Err(refuse("a number"))
                }
            }
            _ => {
                // A container (or an iterator, made a list here: it is read once more below
                // and must not be consumed) passes when every value in it is a secret or was
                // already an input.
                let result = if result.kind() == ValueKind::Iterable {
                    JValue::from(
                        result
                            .try_iter()
                            .map(|it| it.take(TAINT_LIMIT).collect::<Vec<_>>())
                            .unwrap_or_default(),
                    )
                } else {
                    result
                };
                let mut out = Taint {
                    secrets: self.secrets.clone(),
                    ..Taint::default()
                };
                out.walk(&result, 0);
                let new_plain = out.plain.iter().any(|k| {
                    !self.plain.contains(k)
                        && !["bool:", "none:", "undefined:"]
                            .iter()
                            .any(|p| k.starts_with(p))
                });
                let new_tainted = out.tainted.iter().any(|t| !self.tainted.contains(t));
                if new_plain || new_tainted || result.kind() == ValueKind::Plain {
                    Err(refuse(&format!("a {} of pieces", result.kind())))
                } else {
                    Ok(result)
                }
            }
        }
    }
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

    /// A run's secrets with `pw` (from a file) set to `value`, and a context holding it.
    fn secret_ctx(value: &str) -> (secrets::Secrets, JValue, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, value).unwrap();
        let s = secrets::Secrets::default();
        let ctx = s
            .to_jinja(&serde_json::json!({
                "pw": {"secret": {"file": f.to_str().unwrap(), "name": "pw"}},
                "user": "admin",
            }))
            .unwrap();
        (s, ctx, dir)
    }

    fn render_with(text: &str, ctx: &JValue) -> Result<Value, RenderError> {
        let node = yaml::parse(Path::new("p.yaml"), text).unwrap();
        Templates::new(vec![]).render_node(&node, Path::new("p.yaml"), ctx)
    }

    #[test]
    fn a_secret_is_a_value_never_a_template() {
        let (s, ctx, _dir) = secret_ctx("p4ss{{ 7*7 }}word");
        let _active = s.activate();
        let v = render_with("a: '{{ pw }}'\nb: 'x={{ pw }}'\n", &ctx).unwrap();
        assert_eq!(v["a"], "p4ss{{ 7*7 }}word");
        assert_eq!(v["b"], "x=p4ss{{ 7*7 }}word");
        assert!(secrets::touched(), "reading a secret marks the render");
        assert!(!secrets::touched(), "and the mark is taken once");
    }

    #[test]
    fn what_a_filter_derives_from_a_secret_stays_masked_or_is_refused() {
        let (s, ctx, _dir) = secret_ctx("s3cret-Value");
        let _active = s.activate();
        let v = render_with(
            "u: '{{ pw | upper }}'\nb: '{{ pw | b64encode }}'\nr: '{{ pw | reverse }}'\n\
             c: '{{ (\"k=\" ~ pw) | replace(\"=\", \":\") }}'\nlen: '{{ pw | length }}'\n",
            &ctx,
        )
        .unwrap();
        assert_eq!(v["u"], "S3CRET-VALUE");
        assert_eq!(v["r"], "eulaV-terc3s");
        assert_eq!(v["len"], 12);
        let shown = s.mask(&v.to_string());
        for leak in [
            "s3cret",
            "S3CRET",
            "czNjcmV0LVZhbHVl",
            "eulaV-terc3s",
            "k:s3cret",
        ] {
            assert!(!shown.contains(leak), "{leak} in {shown}");
        }
        for refused in [
            "a: '{{ pw | first }}'",
            "a: '{{ pw | list }}'",
            "a: '{{ pw | split(\"-\") }}'",
            "a: '{{ pw[0:4] }}'",
            "a: '{{ (\"k=\" ~ pw) | batch(2) }}'",
        ] {
            let err = render_with(refused, &ctx).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
            assert!(
                err.contains("secret `pw`") || err.contains("cannot be sliced"),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn every_filter_is_guarded() {
        // Every filter of a bare minijinja environment is in BUILTIN_FILTERS: a filter
        // minijinja adds would otherwise run unguarded.
        let bare = Environment::new();
        for name in BUILTIN_FILTERS {
            let src = format!("{{{{ 'abcdefgh' | {name} }}}}");
            let err = bare.render_str(&src, ()).err();
            assert!(
                err.is_none_or(|e| e.kind() != ErrorKind::UnknownFilter),
                "{name} is no minijinja filter"
            );
        }
        let t = Templates::new(vec![]);
        for probe in [
            "urlencode",
            "wordcount",
            "center",
            "truncate",
            "wordwrap",
            "striptags",
            "filesizeformat",
            "xmlattr",
            "forceescape",
            "random",
        ] {
            let src = format!("{{{{ 'abcdefgh' | {probe} }}}}");
            let known = bare.render_str(&src, ()).map_err(|e| e.kind());
            assert_eq!(
                known.err(),
                Some(ErrorKind::UnknownFilter),
                "minijinja now has `{probe}`: add it to BUILTIN_FILTERS"
            );
            assert!(t.env.render_str(&src, ()).is_err());
        }
    }

    #[test]
    fn every_filter_is_called_by_the_leak_property() {
        let called: Vec<&str> = crate::leaks::FILTER_CALLS.iter().map(|(f, _)| *f).collect();
        for name in BUILTIN_FILTERS.iter().chain(OWN_FILTERS) {
            assert!(called.contains(name), "leaks::FILTER_CALLS lacks `{name}`");
        }
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
