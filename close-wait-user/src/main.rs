use clap::Parser as _;
use close_wait::cli::Cli;

fn main() {
    let cli = Cli::parse();
    println!("{cli:?}");
}
