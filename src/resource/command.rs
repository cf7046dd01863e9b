//! command: shell text written by the playbook's author, for what no resource type covers
//! and for handlers (`systemctl reload ssh`). Idempotent only through `creates` (a path that
//! exists once the command has run) or `unless` (a side-effect-free test that succeeds when
//! nothing is to be done). As a handler it runs whenever it is notified.

use serde::Deserialize;
use serde_json::Value;

use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work,
};
use crate::remote::Script;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    run: String,
    #[serde(default)]
    creates: Option<String>,
    #[serde(default)]
    unless: Option<String>,
}

#[derive(Debug)]
pub struct Command {
    run: String,
    creates: Option<String>,
    unless: Option<String>,
}

pub const COMMAND: TypeInfo = TypeInfo {
    name: "command",
    params: &["run", "creates", "unless"],
    build,
};

fn build(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    let p: Params = super::params(value)?;
    if p.run.trim().is_empty() {
        return Err(ParamError("`run` is empty".into()));
    }
    Ok(Box::new(Command {
        run: p.run,
        creates: p.creates,
        unless: p.unless,
    }))
}

impl Resource for Command {
    fn id(&self) -> String {
        let first = self.run.lines().next().unwrap_or("");
        format!("command `{first}`")
    }

    fn probe(&self) -> Script {
        let mut s = Script::new();
        if let Some(path) = &self.creates {
            s = s
                .raw("if [ -e ")
                .arg(path)
                .raw(" ]; then echo creates=yes; else echo creates=no; fi\n");
        }
        if let Some(test) = &self.unless {
            // The author's test, as written: it is shell by intent, like `run`.
            s = s.raw("if ( ").author_code(test).raw(
                "\n) >/dev/null 2>&1 </dev/null; then echo unless=yes; else echo unless=no; fi\n",
            );
        }
        s.raw("echo done=1\n")
    }
}

crate::fields! {
    /// The field of a `command` step: the command runs.
    pub enum CommandField {
        Run = "run",
    }
}

/// What the probe found: `creates` exists, `unless` passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ran {
    creates: bool,
    unless: bool,
}

impl Typed for Command {
    type Observed<'a> = Ran;
    type Field = CommandField;

    fn parse(&self, out: &str) -> Result<Ran, ProbeError> {
        if !out.lines().any(|l| l == "done=1") {
            return Err(ProbeError::new("no `done=1` line", out));
        }
        Ok(Ran {
            creates: out.lines().any(|l| l == "creates=yes"),
            unless: out.lines().any(|l| l == "unless=yes"),
        })
    }

    fn compare(&self, o: &Ran) -> Result<Verdict<CommandField>, ProbeError> {
        if o.creates {
            return Ok(Verdict::InLine(format!(
                "{} is in line: {} exists",
                self.id(),
                self.creates.as_deref().unwrap_or("")
            )));
        }
        if o.unless {
            return Ok(Verdict::InLine(format!(
                "{} is in line: its `unless` test passes",
                self.id()
            )));
        }
        Ok(Verdict::Modify(vec![Change::of(
            CommandField::Run,
            None,
            Some(self.run.clone()),
        )]))
    }

    /// Runs the command, as a step that differs and as a notified handler alike.
    fn converge(&self, _work: Work<'_, CommandField>, _ctx: &ApplyContext) -> Script {
        Script::new().author_code(&self.run).raw("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::converge_one;
    use crate::transport::local::LocalSession;

    #[tokio::test]
    async fn creates_makes_it_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("it's done");
        let res = build(serde_json::json!({
            "run": format!("touch '{}'", marker.display()).replace("it's", "it'\\''s"),
            "creates": marker.to_str().unwrap(),
        }))
        .unwrap();
        let ctx = ApplyContext::new("t");
        let (before, after) = converge_one(&LocalSession::default(), &*res, &ctx)
            .await
            .unwrap();
        assert_eq!(before.action(), "modify");
        assert!(after.is_in_line(), "{after:?}");
        assert!(marker.exists());
    }

    #[test]
    fn a_probe_without_its_end_line_is_an_error() {
        let res = build(serde_json::json!({"run": "true"})).unwrap();
        assert!(res.diff("garbage").is_err());
        assert_eq!(res.diff("done=1\n").unwrap().action(), "modify");
    }
}
