//! Tunables of the HTTP/2 layer, the inbound server and the outbound pool, with their defaults and the reasons for them.

use std::time::Duration;

const KIB: u32 = 1024;
const MIB: u32 = 1024 * KIB;
/// HTTP/2's bounds (RFC 9113 §6.5.2): frames of 16 KiB to 16 MiB - 1, windows up to 2^31 - 1.
const MIN_FRAME: u32 = 16 * KIB;
const MAX_FRAME: u32 = 16 * MIB - 1;
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// HTTP/2 settings shared by both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// Initial per-stream receive window: **4 MiB** (ztunnel's). One stream can keep 4 MiB in flight, enough for a
    /// single tunnel to fill a 10 Gbit/s path at a 3 ms round trip.
    pub stream_window: u32,
    /// Connection receive window: **16 MiB** (ztunnel's), four times the stream window so that one busy stream does not
    /// starve the others sharing the connection.
    pub connection_window: u32,
    /// Largest DATA frame accepted (and so, from a peer of ours, sent): **256 KiB** (kept within 16 KiB..16 MiB). Large frames cut per-frame work, but
    /// a receiver hands a frame's bytes on only once the whole frame arrived, so ztunnel's 1 MiB adds latency to bulk
    /// transfers for no measurable gain over 256 KiB (TLS records are 16 KiB either way).
    pub max_frame_size: u32,
    /// Most bytes one stream may have queued in h2 waiting for the socket: **1 MiB**. Bounds memory per stream while
    /// letting a 256 KiB read be queued behind the one being written.
    pub max_send_buffer: usize,
    /// Interval between keepalive PINGs, sent whether or not streams are open (an idle pooled connection to a dead peer
    /// is found before it is handed out): **10 s**. `None` turns keepalive off.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed: **20 s** (ztunnel's).
    pub keepalive_timeout: Duration,
}

/// Inbound server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub h2: H2Settings,
    /// Concurrent streams one client connection may open (SETTINGS_MAX_CONCURRENT_STREAMS): **1000**. Above the pool's
    /// 100 so that other clients (Envoy waypoints) are not throttled; each stream costs one application socket.
    pub max_concurrent_streams: u32,
    /// Largest request header block: **64 KiB** (ztunnel's).
    pub max_header_list_size: u32,
    /// Time from TCP accept to the end of the TLS and HTTP/2 handshakes: **10 s**. A client that sends nothing is
    /// closed after it; the handshake normally takes one or two round trips.
    pub handshake_timeout: Duration,
    /// After the drain deadline, how long streams that were reset get to report before the connection is dropped:
    /// **1 s**.
    pub force_close_grace: Duration,
}

/// Outbound pool settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub h2: H2Settings,
    /// Streams multiplexed on one connection before another is opened to the same key: **100** (ztunnel's
    /// `POOL_MAX_STREAMS_PER_CONNECTION`), or the server's SETTINGS_MAX_CONCURRENT_STREAMS if lower.
    pub max_streams_per_connection: usize,
    /// A connection with no open stream for this long is released: **5 min** (ztunnel's
    /// `POOL_UNUSED_RELEASE_TIMEOUT`). An idle connection costs tens of KiB and a PING every 10 s; a new one costs a
    /// TLS handshake (≈220 µs of server CPU) and a round trip on the request path.
    pub idle_timeout: Duration,
    /// Bound on TCP connect, TLS and HTTP/2 handshakes of a new connection: **10 s** (ztunnel's connect timeout).
    pub connect_timeout: Duration,
    /// Largest response header block: **16 KiB** (ztunnel's).
    pub max_header_list_size: u32,
}

// === impl H2Settings ===

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            stream_window: 4 * MIB,
            connection_window: 16 * MIB,
            max_frame_size: 256 * KIB,
            max_send_buffer: MIB as usize,
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl H2Settings {
    /// `max_frame_size` within HTTP/2's bounds (h2 panics outside them).
    fn frame_size(&self) -> u32 {
        self.max_frame_size.clamp(MIN_FRAME, MAX_FRAME)
    }

    fn stream_window(&self) -> u32 {
        self.stream_window.min(MAX_WINDOW)
    }

    fn connection_window(&self) -> u32 {
        self.connection_window.min(MAX_WINDOW)
    }
}

// === impl ServerSettings ===

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            h2: H2Settings::default(),
            max_concurrent_streams: 1000,
            max_header_list_size: 64 * KIB,
            handshake_timeout: Duration::from_secs(10),
            force_close_grace: Duration::from_secs(1),
        }
    }
}

impl ServerSettings {
    pub(crate) fn builder(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(self.h2.stream_window())
            .initial_connection_window_size(self.h2.connection_window())
            .max_frame_size(self.h2.frame_size())
            .max_send_buffer_size(self.h2.max_send_buffer)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size);
        builder
    }
}

// === impl PoolSettings ===

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            h2: H2Settings::default(),
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_header_list_size: 16 * KIB,
        }
    }
}

impl PoolSettings {
    pub(crate) fn builder(&self) -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(self.h2.stream_window())
            .initial_connection_window_size(self.h2.connection_window())
            .max_frame_size(self.h2.frame_size())
            .max_send_buffer_size(self.h2.max_send_buffer)
            .max_header_list_size(self.max_header_list_size)
            .enable_push(false);
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_clamped_not_fatal() {
        let h2 = H2Settings {
            max_frame_size: 1,
            stream_window: u32::MAX,
            connection_window: u32::MAX,
            ..H2Settings::default()
        };
        assert_eq!(
            (h2.frame_size(), h2.stream_window(), h2.connection_window()),
            (MIN_FRAME, MAX_WINDOW, MAX_WINDOW)
        );
        let big = H2Settings {
            max_frame_size: u32::MAX,
            ..H2Settings::default()
        };
        assert_eq!(big.frame_size(), MAX_FRAME);
        ServerSettings {
            h2: h2.clone(),
            ..ServerSettings::default()
        }
        .builder();
        PoolSettings {
            h2,
            ..PoolSettings::default()
        }
        .builder();
    }
}
