//! rampart: a declarative hardening provisioner and fleet controller over SSH.
//!
//! `cli` parses arguments and prints; `inventory` reads hosts; `transport` reaches them;
//! `facts` learns what they are; `fleet` runs many hosts at once. See DESIGN.md.

pub mod cli;
pub mod engine;
pub mod exit;
pub mod facts;
pub mod fleet;
pub mod glob;
#[cfg(test)]
mod hostile_output;
pub mod ini_inventory;
pub mod inspect;
pub mod inventory;
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
pub mod template;
pub mod transport;
pub mod tunnel;
pub mod untrusted;
pub mod yaml;
