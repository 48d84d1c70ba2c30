//! The Envoy Rate Limit Service (RLS v3, gRPC) front end: `ShouldRateLimit` over the same
//! engine, limits, store, load manager and metrics as the HTTP API, plus `grpc.health.v1` and
//! server reflection on the same listener.
//!
//! - [`mapping`] — descriptors to keys, limits and costs; answers to descriptor statuses.
//! - [`service`] — the `RateLimitService` implementation.

pub mod mapping;
pub mod service;

use std::future::Future;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::state::AppState;

pub use service::RlsService;

/// Descriptors of `envoy/service/ratelimit/v3/rls.proto` and its imports, for reflection; made by
/// `scripts/rls-descriptor.py` from the descriptor set the envoy-types crate ships, so no protoc
/// is needed.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("rls_descriptor.bin");

/// The gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// Serves RLS, health and reflection on `listener` until `shutdown` resolves. Health answers
/// `NOT_SERVING` from the moment the service begins draining; decisions on open connections are
/// still answered until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    let drain = state.drain_begun();
    tokio::spawn(async move {
        drain.await;
        for name in ["", SERVICE_NAME] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(RlsService::new(state)))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
