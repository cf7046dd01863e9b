//! incident: the commands for after a compromise (issue 13): `collect` (read-only evidence,
//! one archive per host), `quarantine` and `release`, and the integrity listing a later
//! baseline can reuse. Each works on one host at a time over rampart's own transport (host key
//! checked, the inventory's logins); the fleet runs them host by host with `--forks`.

pub mod collect;
pub mod integrity;
pub mod quarantine;
pub mod tar;
