//! Plaintext inbound for one local pod: connections the pod's rules redirected to the inbound port (15006) because
//! they did not come through a tunnel. Each is authorized without a peer identity by the pod's [`InboundHandler`]
//! (PERMISSIVE admits it, STRICT refuses it), then relayed to the application from the client's own address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ambit_hbone::drain::DrainWatch;
use ambit_hbone::{Authority, ConnectHandler, InboundRequest, RelayError, StreamStats};
use ambit_telemetry::{Direction, log_connection_failed};
use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};

use super::inbound::{AppConnector, InboundHandler};
use super::outbound::OriginalDst;

/// Buffer size of each copy direction.
const COPY_BUFFER: usize = 64 * 1024;

/// Accepts redirected plaintext connections until draining starts, each on its own task holding `drain` until it
/// ends; a connection still open at the drain deadline is closed.
pub async fn serve_plaintext<C, O>(
    handler: InboundHandler<C>,
    listener: TcpListener,
    original_dst: O,
    drain: DrainWatch,
) where
    C: AppConnector + Clone,
    O: OriginalDst,
{
    let handler = Arc::new(handler);
    super::serve_until_drained(listener, drain, "inbound plaintext", |client, peer| {
        let dst = match original_dst.original_dst(&client) {
            Ok(dst) => dst,
            Err(error) => {
                let local = client
                    .local_addr()
                    .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
                log_connection_failed(peer, local, Direction::Inbound, &error);
                return None;
            }
        };
        let handler = Arc::clone(&handler);
        let span = tracing::debug_span!("inbound_plaintext", %peer, %dst);
        Some((async move { handle(&handler, client, peer, dst).await }, span))
    })
    .await;
}

/// Authorizes one connection, connects to the application and relays until both sides are done.
async fn handle<C: AppConnector>(
    handler: &InboundHandler<C>,
    mut client: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
) {
    let request = InboundRequest {
        peer_identity: None,
        peer_addr: peer,
        local_addr: dst,
        authority: Authority::Addr(dst),
        headers: HeaderMap::new(),
    };
    // A refusal is recorded (access log, failed counter) by the handler; closing the client is all that is left.
    let Ok(mut upstream) = handler.accept_plaintext(request).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let started = Instant::now();
    let outcome = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER).await;
    let stats = match outcome {
        Ok((from_client, to_client)) => StreamStats {
            bytes_from_downstream: from_client,
            bytes_to_downstream: to_client,
            duration: started.elapsed(),
            result: Ok(()),
        },
        Err(error) => StreamStats {
            bytes_from_downstream: 0,
            bytes_to_downstream: 0,
            duration: started.elapsed(),
            result: Err(RelayError::Upstream(error)),
        },
    };
    handler.completed(upstream, stats);
}
