//! `close-wait report`: the summary of saved JSON reports and `.hlog` files,
//! offline and without privileges.

use std::process::ExitCode;

use crate::{
    cli::ReportArgs,
    export::offline,
    output::{stdout, OutputFile},
};

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    // Checked (and locked) before anything is read.
    let html = args
        .html
        .as_deref()
        .map(|p| OutputFile::claim(p, args.mode))
        .transpose()?;
    let text = offline::report_listing(&args.files, args.merge, args.all, args.max_bytes)?;
    if let Some(mut out) = html {
        out.replace(offline::html_page(&args.files, args.max_bytes)?.as_bytes())?;
    }
    stdout::print_report(&text);
    Ok(ExitCode::SUCCESS)
}
