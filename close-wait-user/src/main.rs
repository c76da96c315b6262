//! close-wait: parse the command line, set up logging, dispatch.

use clap::Parser as _;
use close_wait::{
    cli::{Cli, Command},
    record, snapshot,
};

fn main() {
    let cli = Cli::parse();
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
        Some(Command::Snapshot(a)) => snapshot::run(&a),
        Some(Command::Report(a)) => close_wait::export::offline::report(&a.files, a.merge)
            .map(|text| {
                print!("{text}");
                0
            })
            .map_err(anyhow::Error::from),
        Some(Command::Record(a)) => run_record(a),
        None => run_record(cli.record),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("close-wait: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run_record(args: close_wait::cli::RecordArgs) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(record::run(args))
}
