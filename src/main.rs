//! Thin binary: parse, run, map errors to exit codes (0 ok, 1 failure, 2 usage from clap).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = emf_ssh::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match emf_ssh::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emf-ssh: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
