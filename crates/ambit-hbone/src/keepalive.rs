//! HTTP/2 keepalive: a PING every interval, and a failure when one goes unanswered for the timeout.

use std::future;

use h2::{Ping, PingPong};
use tokio::time::{self, Instant, MissedTickBehavior};

use crate::settings::H2Settings;

/// Why keepalive gave up on a connection.
#[derive(Debug)]
pub(crate) enum KeepaliveFailure {
    /// No PONG within the timeout.
    Timeout,
    /// Sending the PING failed: the connection is already broken.
    Failed(h2::Error),
}

/// Resolves only on failure. Must be polled alongside the connection (the PONG is read by the connection's poll).
pub(crate) async fn run(ping_pong: Option<PingPong>, settings: &H2Settings) -> KeepaliveFailure {
    let (Some(mut ping_pong), Some(interval)) = (ping_pong, settings.keepalive_interval) else {
        return future::pending().await;
    };
    let mut ticks = time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match time::timeout(settings.keepalive_timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(error)) => return KeepaliveFailure::Failed(error),
            Err(_elapsed) => return KeepaliveFailure::Timeout,
        }
    }
}
