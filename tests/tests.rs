//! Integration tests: the real binary against real Debian hosts over real SSH.
//!
//! The hosts come from the testbed (`tests/testbed/testbed up`); `scripts/test` starts them
//! and tears them down. Run by hand: `tests/testbed/testbed up 4 --vms 1 && cargo test`.

mod integration;
