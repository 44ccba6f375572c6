//! The agent's HTTP endpoint on `--metrics-address`: `/metrics` (the registry in the OpenMetrics text format) and
//! `/healthz/ready` (200 once the agent applied its first view of the node and serves ZDS, 503 before). Every answer
//! comes from memory; a connection gets one task and a header timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The content type of `/metrics`.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// How long a client may take to send its request's headers (also the idle keep-alive time).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint shows.
#[derive(Clone)]
struct Endpoint {
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
}

/// Serves the endpoint on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, ready: watch::Receiver<bool>) {
    let endpoint = Endpoint { registry, ready };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(%error, "metrics listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = endpoint.answer(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

// === impl Endpoint ===

impl Endpoint {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT_PLAIN, "only GET and HEAD\n".into());
        }
        match req.uri().path() {
            "/metrics" => match crate::encode(&self.registry) {
                Ok(text) => reply(StatusCode::OK, OPENMETRICS_TEXT, text),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT_PLAIN,
                    "cannot encode the metrics\n".into(),
                ),
            },
            "/healthz/ready" if *self.ready.borrow() => reply(StatusCode::OK, TEXT_PLAIN, "ready\n".into()),
            "/healthz/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, "not ready\n".into()),
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT_PLAIN,
                "GET /metrics or /healthz/ready\n".into(),
            ),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}
