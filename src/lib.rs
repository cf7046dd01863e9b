//! rampart: a declarative hardening provisioner and fleet controller over SSH.
//!
//! `cli` parses arguments and prints; `inventory` reads hosts; `transport` reaches them;
//! `facts` learns what they are; `engine` runs one host, `fleet` dispatches many; `summary` is
//! what reports render. See docs/design.md, "Layout".

pub mod cli;
pub mod connector;
pub mod engine;
pub mod event;
pub mod exit;
pub mod facts;
pub mod fleet;
pub mod glob;
#[cfg(test)]
mod hostile_output;
pub mod hostvars;
pub mod incident;
pub mod ini_inventory;
pub mod inspect;
pub mod inventory;
pub mod kubernetes;
#[cfg(test)]
mod leaks;
pub mod localfs;
pub mod playbook;
pub mod progress;
pub mod remote;
pub mod report;
pub mod resource;
pub mod schedule;
pub mod secrets;
pub mod shard;
pub mod summary;
pub mod template;
#[cfg(test)]
mod testkit;
pub mod transport;
pub mod tunnel;
pub mod untrusted;
pub mod yaml;
