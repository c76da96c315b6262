//! `close-wait report`: the summary of saved JSON reports and `.hlog` files,
//! offline and without privileges.

use std::process::ExitCode;

use crate::{cli::ReportArgs, export::offline, output::stdout};

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let text = offline::report_listing(&args.files, args.merge, args.all, args.max_bytes)?;
    // A closed stdout (`| head -1`) is not an error.
    let _ = stdout::print(&text);
    Ok(ExitCode::SUCCESS)
}
