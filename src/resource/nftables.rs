//! Placeholder: being written.
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;

fn build(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError(
        "the `nftables` resource type is not written yet".into(),
    ))
}

pub const NFTABLES: TypeInfo = TypeInfo {
    name: "nftables",
    params: &[],
    build,
};
