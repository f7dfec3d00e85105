//! `kvroute serve`: the indexer daemon. Flags are the indexer's `ServeConfig`; this file
//! binds the API's socket and turns termination signals into the daemon's shutdown.

use std::process::ExitCode;

use anyhow::Context;
pub use kvroute_indexer::serve::ServeConfig;

pub fn run(config: ServeConfig) -> ExitCode {
    kvroute_runtime::run("kvroute serve", None, async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        kvroute_indexer::serve::serve(config, listener, kvroute_runtime::shutdown_signal()).await
    })
}
