//! kvroute-epp: kvroute as a Gateway API Inference Extension endpoint picker.
//!
//! Gateways that run an `InferencePool` (Envoy Gateway, Istio, kgateway, GKE, ...) ask an
//! endpoint picker for every request over Envoy's external processing protocol (ext_proc
//! v3, gRPC). `kvroute serve --epp-listen ADDR` answers it with the indexer's own router:
//! the body is tokenized and hashed as `POST /v1/route/prompt` does, the pod chosen as
//! `POST /v1/route` does, and the answer follows the endpoint picker protocol
//! ([`protocol::PROTOCOL_VERSION`]): `x-gateway-destination-endpoint` header and
//! `envoy.lb` dynamic metadata, subset hint honoured, fail-open otherwise.
//!
//! `protocol` is the wire contract, `exchange` the per-request state machine (pure),
//! `picker` the bridge to the indexer, `service` the gRPC server.

pub mod exchange;
pub mod picker;
pub mod protocol;
pub mod service;

pub use service::{serve, EppConfig};
