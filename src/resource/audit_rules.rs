//! Placeholder: being written.
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;

fn build(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError(
        "the `audit_rules` resource type is not written yet".into(),
    ))
}

pub const AUDIT_RULES: TypeInfo = TypeInfo {
    name: "audit_rules",
    params: &[],
    build,
};
