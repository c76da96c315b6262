//! `close-wait report`: the summary of saved JSON reports and `.hlog` files,
//! offline and without privileges.

use std::process::ExitCode;

use crate::{cli::ReportArgs, export::offline};

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let text = offline::report_listing(&args.files, args.merge, args.all)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
