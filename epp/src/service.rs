//! The gRPC server: Envoy's `ExternalProcessor` service (one bidirectional stream per HTTP
//! request, driven through an [`Exchange`]) and the gRPC health services the endpoint
//! picker protocol asks for (`liveness`, `readiness`, and the ext_proc service's own name).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use kvroute_indexer::http::AppState;
use kvroute_indexer::metrics::ReasonLabel;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;

use crate::exchange::{Exchange, Outcome};
use crate::picker::IndexerPicker;

/// Largest body the picker holds to route on (16 MiB, as the wasm path's buffer).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Endpoints named after the chosen one, for the data plane's retries.
pub const DEFAULT_FALLBACK_ENDPOINTS: usize = 2;
/// How often readiness follows the indexer (ready once it knows an engine).
const READINESS_POLL: Duration = Duration::from_secs(1);
/// gRPC health service names of the protocol.
const LIVENESS: &str = "liveness";
const READINESS: &str = "readiness";

#[derive(Debug, Clone, clap::Args)]
pub struct EppConfig {
    /// Also serve the Gateway API Inference Extension endpoint picker protocol (Envoy
    /// ext_proc v3, gRPC) on this address (off when absent).
    #[arg(long, value_name = "ADDR")]
    pub epp_listen: Option<SocketAddr>,
    /// Largest request body the picker holds to route on; larger ones fail open.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub epp_max_body_bytes: usize,
    /// Endpoints named after the chosen one (`ip:port,ip:port,...`), tried in turn by the
    /// data plane when the chosen pod refuses the connection.
    #[arg(long, default_value_t = DEFAULT_FALLBACK_ENDPOINTS)]
    pub epp_fallback_endpoints: usize,
}

struct EppService {
    picker: Arc<IndexerPicker>,
    max_body_bytes: usize,
}

fn outcome_label(outcome: Option<&Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Routed(_)) => "routed",
        Some(Outcome::FailOpen(why)) => why.label(),
        Some(Outcome::NoEligible) => "no_eligible_endpoint",
        // The stream closed before a decision (Envoy's timeout, client gone).
        None => "undecided",
    }
}

type ProcessStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for EppService {
    type ProcessStream = ProcessStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let picker = self.picker.clone();
        let max_body_bytes = self.max_body_bytes;
        tokio::spawn(async move {
            let mut exchange = Exchange::new(max_body_bytes);
            let mut decided = false;
            // Ends when Envoy closes the stream (the HTTP request is over), resets it, or
            // stops reading our answers.
            'stream: while let Some(Ok(msg)) = inbound.next().await {
                let answers = exchange.on_message(msg, picker.as_ref());
                if !decided && exchange.outcome().is_some() {
                    decided = true;
                    count(&picker, outcome_label(exchange.outcome()));
                }
                for answer in answers {
                    if tx.send(Ok(answer)).await.is_err() {
                        break 'stream;
                    }
                }
            }
            if !decided {
                count(&picker, outcome_label(None));
            }
            if let (Some(Outcome::Routed(picked)), Some(served)) =
                (exchange.outcome(), exchange.served())
            {
                if picked.first().map(String::as_str) != Some(served) {
                    count(&picker, "served_by_fallback");
                }
            }
            exchange.finish(picker.as_ref());
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn count(picker: &IndexerPicker, outcome: &str) {
    picker
        .state
        .router
        .metrics
        .epp_requests
        .get_or_create(&ReasonLabel {
            reason: outcome.to_owned(),
        })
        .inc();
}

/// Serve the endpoint picker on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    config: EppConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let readiness_state = state.clone();
    let mut readiness_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ready = !readiness_state.router.registry.all().is_empty();
            if last != Some(ready) {
                let status = if ready {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health.set_service_status(READINESS, status).await;
                health
                    .set_service_status(
                        <ExternalProcessorServer<EppService> as tonic::server::NamedService>::NAME,
                        status,
                    )
                    .await;
                last = Some(ready);
            }
            tokio::select! {
                _ = tokio::time::sleep(READINESS_POLL) => {}
                _ = readiness_stop.changed() => break,
            }
        }
    });
    let service = EppService {
        picker: Arc::new(IndexerPicker {
            state,
            fallback_endpoints: config.epp_fallback_endpoints,
        }),
        max_body_bytes: config.epp_max_body_bytes,
    };
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        protocol = crate::protocol::PROTOCOL_VERSION,
        "kvroute endpoint picker up"
    );
    // Every answer is a few small HTTP/2 frames: without TCP_NODELAY, Nagle's algorithm
    // holds them until the gateway's delayed ACK (~40 ms a request, measured by
    // scripts/bench_paths.sh). tonic sets it only on listeners it binds itself.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ExternalProcessorServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.changed().await;
        })
        .await?;
    Ok(())
}
