//! Placeholder: being written.
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;

fn build(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError(
        "the `json_config` resource type is not written yet".into(),
    ))
}

pub const JSON_CONFIG: TypeInfo = TypeInfo {
    name: "json_config",
    params: &[],
    build,
};
