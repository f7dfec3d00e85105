//! `kvroute`: the one binary. Each subcommand lives in its own file; `main` only parses
//! the command line and hands over.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod keys;
mod serve;

#[derive(Parser)]
#[command(
    name = "kvroute",
    version,
    about = "Precise prefix-cache-aware routing for vLLM fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a request's prompt tokens and the block hashes vLLM will publish for it.
    Keys(keys::KeysArgs),
    /// Run the indexer: consume vLLM KV events, answer which pod for each request.
    Serve(Box<serve::ServeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys(args) => keys::run(args),
        Command::Serve(config) => serve::run(*config),
    }
}
