//! yaml: YAML read into a tree whose every node knows its line and column.
//!
//! Owns turning YAML text into [`Node`]s (through serde-saphyr, which reports syntax errors
//! with a snippet) and the located error type that playbooks and parameters use to say
//! exactly where a value is wrong. It knows nothing of what the keys mean.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A YAML value and where it stands in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Node>),
    /// Keys in file order.
    Map(Vec<(Node, Node)>),
}

impl From<Spanned<NodeValue>> for Node {
    fn from(s: Spanned<NodeValue>) -> Node {
        Node {
            value: s.value,
            line: s.referenced.line() as u32,
            column: s.referenced.column() as u32,
        }
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<NodeValue, E> {
                Ok(NodeValue::Null)
            }
            fn visit_none<E>(self) -> Result<NodeValue, E> {
                Ok(NodeValue::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
                NodeValue::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<NodeValue, E> {
                Ok(NodeValue::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<NodeValue, E> {
                Ok(NodeValue::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<NodeValue, E> {
                Ok(NodeValue::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<NodeValue, E> {
                serde_json::Number::from_f64(n)
                    .map(NodeValue::Number)
                    .ok_or_else(|| E::custom("a number that is not finite"))
            }
            fn visit_str<E>(self, s: &str) -> Result<NodeValue, E> {
                Ok(NodeValue::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<NodeValue, E> {
                Ok(NodeValue::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
                    items.push(item.into());
                }
                Ok(NodeValue::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<NodeValue>>()? {
                    let value = map.next_value::<Spanned<NodeValue>>()?;
                    entries.push((Node::from(key), Node::from(value)));
                }
                Ok(NodeValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where something is: `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A problem in a YAML file, at a place, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{loc}: {message}{}", .hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct YamlError {
    pub loc: Loc,
    pub message: String,
    pub hint: Option<String>,
}

/// Parses a whole file into a located tree. Syntax errors carry serde-saphyr's snippet.
pub fn parse(file: &Path, text: &str) -> Result<Node, YamlError> {
    if text.trim().is_empty() {
        return Ok(Node {
            value: NodeValue::Null,
            line: 1,
            column: 1,
        });
    }
    let spanned: Spanned<NodeValue> = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() as u32, l.column() as u32))
            .unwrap_or((1, 1));
        YamlError {
            loc: Loc {
                file: file.to_path_buf(),
                line,
                column,
            },
            message: format!("invalid YAML: {e}"),
            hint: None,
        }
    })?;
    Ok(spanned.into())
}

impl Node {
    pub fn loc(&self, file: &Path) -> Loc {
        Loc {
            file: file.to_path_buf(),
            line: self.line,
            column: self.column,
        }
    }

    /// An error at this node.
    pub fn error(&self, file: &Path, message: impl Into<String>) -> YamlError {
        YamlError {
            loc: self.loc(file),
            message: message.into(),
            hint: None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A short name of the node's kind, for messages: `a string`, `a list`, ...
    pub fn kind(&self) -> &'static str {
        match &self.value {
            NodeValue::Null => "nothing (null)",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Number(_) => "a number",
            NodeValue::String(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    /// The value as JSON (locations dropped). Map keys that are not strings are written as
    /// their YAML text.
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => Value::Number(n.clone()),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k.to_json() {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }

    /// The entry under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_knows_its_place() {
        let text = "steps:\n  - name: one\n    file: {path: /etc/x, mode: '0644'}\n";
        let root = parse(Path::new("p.yaml"), text).unwrap();
        let steps = root.get("steps").unwrap();
        let NodeValue::Seq(items) = &steps.value else {
            panic!("{steps:?}")
        };
        let file = items[0].get("file").unwrap();
        assert_eq!((file.line, file.column), (3, 11));
        let mode = file.get("mode").unwrap();
        assert_eq!(mode.as_str(), Some("0644"));
        assert_eq!((mode.line, mode.column), (3, 32));
        let key_line = file.as_map().unwrap()[1].0.line;
        assert_eq!(key_line, 3);
        assert_eq!(
            root.to_json(),
            serde_json::json!({"steps": [{"name": "one", "file": {"path": "/etc/x", "mode": "0644"}}]})
        );
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err = parse(Path::new("p.yaml"), "a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.loc.file, Path::new("p.yaml"));
        assert!(err.loc.line >= 1, "{err}");
        assert!(err.to_string().starts_with("p.yaml:"), "{err}");
    }
}
