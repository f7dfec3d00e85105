//! `kvroute serve`: the indexer daemon. Flags are the indexer's `ServeConfig`; this file
//! only sets up logging and the runtime.

use std::process::ExitCode;

pub use kvroute_indexer::serve::ServeConfig;

pub fn run(config: ServeConfig) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvroute serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kvroute_indexer::serve::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvroute serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}
