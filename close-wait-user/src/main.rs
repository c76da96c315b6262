//! close-wait: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser as _;
use close_wait::{
    cli::{Cli, Command},
    commands,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_usage_error(e),
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .target(env_logger::Target::Stderr)
        .init();
    let result = match cli.command {
        Some(Command::Record(a)) => commands::record::run(a),
        None => commands::record::run(cli.record),
        Some(Command::Snapshot(a)) => commands::snapshot::run(a),
        Some(Command::Report(a)) => commands::report::run(a),
        Some(Command::Demo(a)) => commands::demo::run(a),
        Some(Command::DemoChild(a)) => commands::demo::run_child(a),
    };
    result.unwrap_or_else(|e| {
        close_wait::output::stdout::say(&format!("close-wait: error: {e:#}"));
        ExitCode::FAILURE
    })
}

/// Help and version print as clap renders them; a usage error prints as one
/// line (its first paragraph), exit status 2.
fn exit_on_usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    // The message is the first paragraph; tips and usage follow a blank line.
    let para: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = para.join(" ");
    let first = joined.strip_prefix("error: ").unwrap_or(&joined);
    close_wait::output::stdout::say(&format!(
        "close-wait: error: {first} (see close-wait --help)"
    ));
    std::process::exit(2);
}
