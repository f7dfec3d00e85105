//! `kvroute serve`: the indexer daemon, and beside it the endpoint picker when
//! `--epp-listen` is given. Flags are the indexer's `ServeConfig` and the picker's
//! `EppConfig`; this file binds their sockets, runs the picker on the daemon's router, and
//! turns termination signals into the shutdown of both.

use std::process::ExitCode;

use anyhow::Context;
use kvroute_epp::EppConfig;
use kvroute_indexer::serve::ServeConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub indexer: ServeConfig,
    #[command(flatten)]
    pub epp: EppConfig,
}

pub fn run(args: ServeArgs) -> ExitCode {
    kvroute_runtime::run("kvroute serve", None, async move {
        let config = args.indexer;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let daemon = kvroute_indexer::serve::build(&config)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let picker = match args.epp.epp_listen {
            Some(addr) => {
                // Bound before anything runs: a taken port is an error at start.
                let epp_listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding --epp-listen {addr}"))?;
                let state = daemon.state.clone();
                let epp = args.epp.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = kvroute_epp::serve(epp_listener, state, epp, stopped).await {
                        tracing::error!(error = %e, "endpoint picker stopped");
                    }
                }))
            }
            None => None,
        };
        let result = daemon
            .run(listener, kvroute_runtime::shutdown_signal())
            .await;
        let _ = stop.send(true);
        if let Some(task) = picker {
            let _ = task.await;
        }
        result
    })
}
