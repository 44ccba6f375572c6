//! The waypoint's side of HBONE (ambient §5.3 `connect_terminate` and `main_internal`): a CONNECT is accepted only
//! for a Service or workload bound to this waypoint; after the 200 the tunnel is served as HTTP (HTTP/1.1 or HTTP/2
//! prior knowledge, gRPC included) when the port says so or its first bytes look like HTTP, else relayed as TCP to
//! an endpoint chosen per connection.
//!
//! The tunnel reaches its session through an in-memory pipe: the HBONE server relays the stream into one end, and
//! hyper (or the TCP relay) serves the other, on its own task.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ambit_hbone::{ConnectHandler, InboundRequest, Refusal, StreamStats};
use ambit_l7::balance::Sample;
use ambit_l7::route::ServiceRef;
use ambit_telemetry::{ConnectionAddrs, ConnectionContext, ConnectionResult, Reporter, ResponseFlags};
use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, DuplexStream};
use tracing::{Instrument, debug};

use crate::proxy::{self, Shared, Tunnel};
use crate::sniff::{Prefixed, Sniffed, sniff};
use crate::target::{self, Destination};

/// Bytes buffered in each direction of the pipe between the HBONE stream and the session.
const PIPE_BUFFER: usize = 256 * 1024;
/// How long an undeclared port waits for the client's first bytes before taking the connection as TCP (a protocol
/// where the server speaks first).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(1);
/// The most bytes read to tell HTTP from TCP (the HTTP/2 preface is 24).
const SNIFF_LIMIT: usize = 64;
/// HTTP/1.1 request heads up to this size are read; a larger one is answered 431.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// A client must send a complete request head within this time (slow clients are cut off).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides tunnels into the waypoint.
pub struct WaypointHandler {
    shared: Arc<Shared>,
}

// === impl WaypointHandler ===

impl WaypointHandler {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl ConnectHandler for WaypointHandler {
    type Upstream = DuplexStream;

    async fn connect(&self, request: InboundRequest) -> Result<DuplexStream, Refusal> {
        let shared = &self.shared;
        let state = Arc::clone(&shared.state.borrow());
        let destination = target::resolve(&state.snapshot, &shared.me, &request.authority)
            .map_err(|error| Refusal::BadRequest(error.to_string().into()))?;
        let client = forwarded_for(&request.headers).unwrap_or(request.peer_addr);
        let mut ctx = ConnectionContext::new(Reporter::Waypoint);
        ctx.mtls = true;
        ctx.source_principal = request.peer_identity.clone();
        ctx.source = state
            .snapshot
            .workload_by_ip(client.ip())
            .map(ambit_node::proxy::workload_info);
        if let Some(service) = destination.service() {
            ctx.destination_service = ambit_node::proxy::service_info(&state.snapshot, &service.key());
        }
        let declares_http = destination.declares_http();
        let tunnel = Arc::new(Tunnel {
            authority: request.authority,
            peer_identity: request.peer_identity,
            client,
            ctx,
        });
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        let span = tracing::debug_span!("tunnel", authority = %tunnel.authority, client = %tunnel.client);
        tokio::spawn(serve_tunnel(Arc::clone(shared), tunnel, declares_http, theirs).instrument(span));
        Ok(ours)
    }

    fn completed(&self, _upstream: DuplexStream, stats: StreamStats) {
        debug!(?stats, "tunnel ended");
    }
}

/// Serves one tunnel (after its 200): as HTTP when `declares_http` says so or, when it is `None`, when the client's
/// first bytes look like HTTP; as TCP otherwise.
pub async fn serve_tunnel(shared: Arc<Shared>, tunnel: Arc<Tunnel>, declares_http: Option<bool>, io: DuplexStream) {
    let (http, io) = match declares_http {
        Some(http) => (http, Prefixed::new(Bytes::new(), io)),
        None => sniffed(io).await,
    };
    if http {
        serve_http(shared, tunnel, io).await;
    } else {
        relay_tcp(&shared, &tunnel, io).await;
    }
}

/// Reads the client's first bytes to tell HTTP from TCP; the bytes read are replayed to whoever serves.
async fn sniffed(mut io: DuplexStream) -> (bool, Prefixed<DuplexStream>) {
    let mut prefix = BytesMut::with_capacity(SNIFF_LIMIT);
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let verdict = loop {
        match sniff(&prefix) {
            Sniffed::NeedMore if prefix.len() < SNIFF_LIMIT => {}
            Sniffed::Http => break true,
            _ => break false,
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut prefix)).await {
            Ok(Ok(n)) if n > 0 => {}
            // EOF, an error, or silence: not HTTP.
            _ => break false,
        }
    };
    (verdict, Prefixed::new(prefix.freeze(), io))
}

async fn serve_http(shared: Arc<Shared>, tunnel: Arc<Tunnel>, io: Prefixed<DuplexStream>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let service = service_fn(move |request| proxy::handle(Arc::clone(&shared), Arc::clone(&tunnel), request));
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(%error, "HTTP session ended with an error");
    }
}

/// Relays a TCP tunnel to one endpoint of the Service (or the workload), after the L4 checks of the attached
/// policies: a TCP connection has no method, path or headers, so rules that need them do not match (an ALLOW rule
/// with HTTP fields then denies, as Istio's waypoint does for TCP).
async fn relay_tcp(shared: &Shared, tunnel: &Tunnel, mut io: Prefixed<DuplexStream>) {
    let state = Arc::clone(&shared.state.borrow());
    let Ok(destination) = target::resolve(&state.snapshot, &shared.me, &tunnel.authority) else {
        return;
    };
    let addrs = ConnectionAddrs {
        src: tunnel.client,
        dst: destination.addr(),
        hbone: Some(tunnel.authority.to_string()),
    };
    let decision = proxy::authorize(&state, tunnel, &destination, proxy::HttpRequest::TCP);
    if !decision.is_allowed() {
        let mut result = ConnectionResult::open(&shared.tcp_metrics, &tunnel.ctx, addrs);
        result.fail(&TcpRefusal::Denied(decision.to_string()), ResponseFlags::Deny);
        result.finish();
        return;
    }
    let addr = match destination {
        Destination::Workload { addr, .. } => Some(addr),
        Destination::Service { service, port, .. } => {
            let backend = ServiceRef::new(service.namespace.as_str(), service.name.as_str(), port);
            shared.pick_endpoint(&state, &backend, Sample(fastrand::u64(..)))
        }
    };
    let Some(addr) = addr else {
        let mut result = ConnectionResult::open(&shared.tcp_metrics, &tunnel.ctx, addrs);
        result.fail(&TcpRefusal::NoEndpoint(destination.addr()), ResponseFlags::Connect);
        result.finish();
        return;
    };
    let (endpoint, workload) = proxy::endpoint_target(&state.snapshot, addr);
    let mut ctx = tunnel.ctx.clone();
    ctx.destination = workload.map(ambit_node::proxy::workload_info);
    ctx.destination_principal = endpoint.identity.clone();
    let mut result = ConnectionResult::open(&shared.tcp_metrics, &ctx, addrs);
    let headers = ambit_hbone::ConnectHeaders {
        forwarded_for: Some(tunnel.client),
        ..Default::default()
    };
    let mut upstream = match shared.upstreams.connect(&endpoint, &headers).await {
        Ok(upstream) => upstream,
        Err(error) => {
            result.fail(&error, ResponseFlags::Connect);
            result.finish();
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
        Ok((from_client, to_client)) => {
            result.record_received(from_client);
            result.record_sent(to_client);
        }
        Err(error) => result.record_error(&error),
    }
    result.finish();
}

/// Why the waypoint refused a TCP tunnel after accepting it.
#[derive(Debug, thiserror::Error)]
enum TcpRefusal {
    #[error("denied by L7 policy: {0}")]
    Denied(String),
    #[error("{0} has no healthy endpoint")]
    NoEndpoint(SocketAddr),
}

/// The original client's address from the CONNECT's `forwarded: for="<ip:port>"` (ztunnel sends it).
fn forwarded_for(headers: &http::HeaderMap) -> Option<SocketAddr> {
    let value = headers.get(http::header::FORWARDED)?.to_str().ok()?;
    let first = value.split(',').next()?;
    let element = first.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.eq_ignore_ascii_case("for").then_some(value)
    })?;
    let text = element.trim_matches('"');
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = text.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_client_comes_from_forwarded_for() {
        let cases = [
            ("for=\"10.0.0.1:4321\"", Some("10.0.0.1:4321")),
            (
                "for=\"10.0.0.1:4321\";host=web.app.svc.cluster.local",
                Some("10.0.0.1:4321"),
            ),
            ("host=x;For=10.0.0.2", Some("10.0.0.2:0")),
            ("for=\"[fd00::1]:80\"", Some("[fd00::1]:80")),
            ("host=x", None),
            ("for=unknown", None),
        ];
        for (value, expected) in cases {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::FORWARDED, value.parse().unwrap());
            let got = forwarded_for(&headers).map(|a| a.to_string());
            assert_eq!(got.as_deref(), expected, "{value}");
        }
    }
}
