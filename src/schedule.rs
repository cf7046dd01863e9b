//! schedule: (being written) the nightly drift as a systemd timer or a cron line.

use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {}

pub fn run(args: ScheduleArgs) -> anyhow::Result<Outcome> {
    let _ = args;
    anyhow::bail!("`rampart schedule` is not written yet")
}
