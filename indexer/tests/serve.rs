//! The daemon's entry as tests and benches use it (tokio's mini-redis `tests/server.rs`):
//! `serve(config, listener, shutdown)` on a socket the test bound, stopped by a future the
//! test owns; the API answers while it runs, and the call returns once shutdown completes.

use std::time::Duration;

use kvroute_indexer::ingest::IngestConfig;
use kvroute_indexer::serve::{serve, ServeConfig};

#[tokio::test]
async fn serves_on_the_given_listener_until_the_given_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        // Nothing listens on port 1: ingestion retries quietly in the background. Nothing
        // answers on port 9 either: without health checks the engine is routable, so ready.
        ingest: IngestConfig {
            health_interval_ms: 0,
            ..IngestConfig::with_engines(["127.0.0.1:1=9"])
        },
        ..ServeConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let pods = client
        .get(format!("http://{addr}/v1/pods"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pods.contains("\"127.0.0.1:9\""), "{pods}");

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), daemon)
        .await
        .expect("serve returns once shutdown completes")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the API socket is closed after shutdown"
    );
}

#[tokio::test]
async fn a_configuration_that_cannot_work_is_refused_before_serving() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServeConfig {
        ingest: IngestConfig::with_engines(["10.0.0.5:notaport"]),
        ..ServeConfig::default()
    };
    let err = serve(config, listener, std::future::pending())
        .await
        .expect_err("a bad --engine stops the start");
    assert!(format!("{err:#}").contains("bad ZeroMQ port"), "{err:#}");
}
