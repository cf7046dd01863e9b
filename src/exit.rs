//! exit: rampart's exit codes, in one place.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `plan`/`drift`: every host in line |
//! | 1 | an error: bad input, or a host failed or could not be reached |
//! | 2 | `plan`/`drift`/`audit`: a host differs from the desired state (and nothing failed) |

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything answered and nothing differs.
    Ok,
    /// Something differs (plan, drift, audit), and nothing failed.
    Differs,
    /// A host failed, could not be reached, or the input was bad.
    Failed,
}

impl Outcome {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const DIFFERS: u8 = 2;

    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => Self::OK,
            Outcome::Failed => Self::FAILED,
            Outcome::Differs => Self::DIFFERS,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o.code())
    }
}
