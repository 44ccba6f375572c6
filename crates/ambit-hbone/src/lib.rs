//! HBONE, Istio ambient's tunnel: TCP streams carried as HTTP/2 `CONNECT` streams inside SPIFFE mTLS on port 15008,
//! wire-compatible with ztunnel. [`HboneServer`] is the inbound side, [`HbonePool`] the outbound side; both are
//! shared by the node proxy and the waypoint.
//!
//! # Wire
//!
//! TLS 1.3 with ALPN `h2` and no SNI (configurations from [`ambit_identity::tls`]); then HTTP/2 with large windows
//! ([`H2Settings`]). A tunnel is a classic `CONNECT` whose `:authority` is the target ([`Authority`]), with the
//! `forwarded`, `baggage` and `traceparent` headers ([`ConnectHeaders`]). The server answers 200 only once its
//! [`ConnectHandler`] has connected to the application (and authorized the client); otherwise 400 (not CONNECT, bad
//! authority, or [`Refusal::BadRequest`]), 401 ([`Refusal::Denied`]) or 503. After the 200 each side's END_STREAM is
//! the other side's TCP half-close, and an application connection that fails resets the stream with CONNECT_ERROR.
//!
//! # Tasks
//!
//! Crossing from one task to another costs a wake-up, and from one thread to another 9–20 µs here, so the data path
//! has as few crossings as HTTP/2 multiplexing allows:
//!
//! * **Server: one task per connection, and nothing else.** [`HboneServer::serve_connection`] runs on the task that
//!   accepted the socket ([`HboneServer::serve_listener`] spawns one per accepted connection). It polls the h2
//!   connection (TLS reads and writes), the keepalive timer, the drain signal, and every stream of the connection as
//!   a future in a `FuturesUnordered`: the handler's `connect`, then the relay between the h2 stream and the
//!   application socket. Bytes from the application are read, framed, encrypted and written by one poll of one task.
//!   The cost: all streams of one connection share one core, which the connection's single TLS session imposes
//!   anyway.
//! * **Pool: one task per connection.** It dials (TCP through the [`Dialer`], TLS, h2 handshake), publishes the
//!   connection to the pool, then drives it: h2 I/O, keepalive PINGs, the idle check. Concurrent callers for one key
//!   wait for that single dial. An [`HboneStream`] lives on the caller's task (the node proxy's per-connection
//!   `copy_bidirectional`); its reads and writes reach the connection task through h2's shared stream state, the one
//!   hand-off per direction that multiplexing streams from many callers onto one connection needs.
//!
//! # Defaults
//!
//! HTTP/2: stream window 4 MiB, connection window 16 MiB, frames up to 256 KiB, 1 MiB queued per stream, PING every
//! 10 s with a 20 s timeout ([`H2Settings`]). Server: 1000 concurrent streams per connection, 64 KiB of headers, a
//! 10 s handshake timeout ([`ServerSettings`]). Pool: 100 streams per connection, idle connections released after
//! 5 min, 10 s to connect, 16 KiB of headers ([`PoolSettings`]). Each field documents its reason.
//!
//! # Drain
//!
//! [`drain::channel`] gives a trigger and a watch. When draining starts, listeners stop accepting, each connection
//! sends GOAWAY (h2's graceful two-step: new streams are refused, open ones continue), and at the deadline streams
//! still open are reset and the connection is closed.

pub mod authority;
mod blame;
mod client;
pub mod drain;
pub mod headers;
mod keepalive;
mod pool;
mod relay;
mod server;
pub mod settings;

pub use authority::{Authority, AuthorityError};

/// The TCP side of an HBONE connection: reads go through a 64 KiB buffer, because rustls asks for at most 4 KiB
/// per read and a bulk transfer would otherwise cost one `recv` per 4 KiB. Writes pass straight through.
pub(crate) type Wire = tokio::io::BufReader<tokio::net::TcpStream>;

/// Wraps an established TCP connection for TLS (see [`Wire`]).
pub(crate) fn wire(tcp: tokio::net::TcpStream) -> Wire {
    tokio::io::BufReader::with_capacity(WIRE_READ_BUFFER, tcp)
}

const WIRE_READ_BUFFER: usize = 64 * 1024;

/// Most encrypted bytes rustls may hold for the socket: **512 KiB**. Its default (64 KiB) splits any h2 write above
/// that into one `writev` per 64 KiB, the last carrying only the frame's tail (often a 9-byte DATA header in a record
/// of its own): a system call, and a packet through every hop, for a few bytes. Above h2's largest frame (256 KiB)
/// and its header, one h2 flush is one `writev`. The buffer only fills while the socket pushes back, and then stops
/// h2 as the default did.
const TLS_SEND_BUFFER: usize = 512 * 1024;

pub use blame::Blame;
pub use client::{ConnectError, DialError, Dialer, HboneStream, PlainDialer, relay};
pub use headers::{ConnectHeaders, TraceParent, forwarded_host};
pub use pool::{HbonePool, PoolKey};
pub use relay::{RelayError, StreamStats};
pub use server::{ConnectHandler, HboneServer, InboundRequest, Refusal, ServeError};
pub use settings::{H2Settings, PoolSettings, ServerSettings};
