//! Placeholder: being written.
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;

fn build(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError(
        "the `unit` resource type is not written yet".into(),
    ))
}

pub const UNIT: TypeInfo = TypeInfo {
    name: "unit",
    params: &[],
    build,
};
