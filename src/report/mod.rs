//! report: turning a run's [`FleetSummary`](crate::fleet::FleetSummary) into what people and
//! machines read. Each output writes into any `io::Write`, so tests write into a `Vec<u8>`.
//! JSON is serde's rendering of the summary (schema in README.md).

pub mod text;
