//! Placeholder: being written (user, group).
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;
fn todo(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError("not yet implemented".into()))
}
pub const USER: TypeInfo = TypeInfo {
    name: "user",
    params: &[],
    build: todo,
};
pub const GROUP: TypeInfo = TypeInfo {
    name: "group",
    params: &[],
    build: todo,
};
