//! One file per subcommand, each with one `run(args) -> anyhow::Result<ExitCode>`.
//! `main.rs` dispatches to them; nothing else here.

pub mod demo;
pub mod record;
pub mod report;
pub mod snapshot;
