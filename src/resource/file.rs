//! Placeholder: being written (file, directory, absent, lines).
use super::{ParamError, Resource, TypeInfo};
use serde_json::Value;
fn todo(_: Value) -> Result<Box<dyn Resource>, ParamError> {
    Err(ParamError("not yet implemented".into()))
}
pub const FILE: TypeInfo = TypeInfo {
    name: "file",
    params: &[],
    build: todo,
};
pub const DIRECTORY: TypeInfo = TypeInfo {
    name: "directory",
    params: &[],
    build: todo,
};
pub const ABSENT: TypeInfo = TypeInfo {
    name: "absent",
    params: &[],
    build: todo,
};
pub const LINES: TypeInfo = TypeInfo {
    name: "lines",
    params: &[],
    build: todo,
};
