//! `kvroute-engine-sim`: parses the flags and runs the server until ctrl-c or SIGTERM
//! (logging, runtime and signals as every kvroute binary: `kvroute-runtime`).

use std::process::ExitCode;

use clap::Parser;
use kvroute_engine_sim::server::{self, EngineConfig};

fn main() -> ExitCode {
    let config = EngineConfig::parse();
    kvroute_runtime::run("kvroute-engine-sim", Some(2), async move {
        Ok(server::run(config, kvroute_runtime::shutdown_signal()).await?)
    })
}
