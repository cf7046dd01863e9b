//! Placeholder: being written.
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;

fn build(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError(
        "the `service` resource type is not written yet".into(),
    ))
}

pub const SERVICE: TypeInfo = TypeInfo {
    name: "service",
    params: &[],
    build,
};
