//! `ambit app relay`: a plain TCP relay, the least any proxy on a connection's path can cost.
//!
//! Each `--route LISTEN=TARGET` accepts on LISTEN and, per accepted connection,
//! connects to TARGET and copies bytes both ways until each side has
//! half-closed (a FIN is passed on as a FIN). No TLS, no protocol, no policy:
//! one thread, 64 KiB copies, `TCP_NODELAY` on both sockets, the same runtime
//! the node proxy uses. `make bench` puts a pair of them (one in the client's
//! pod, one in the server's) on the direct path: the same TCP hops as the mesh
//! with nothing else, so the floor under any node-proxy design on this machine
//! is measured beside the mesh.

use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Size of each direction's copy buffer.
pub const COPY_BUFFER: usize = 64 * 1024;

/// One `LISTEN=TARGET` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Address to accept on.
    pub listen: SocketAddr,
    /// Address each accepted connection is relayed to.
    pub target: SocketAddr,
}

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (listen, target) = s
            .split_once('=')
            .ok_or_else(|| format!("route {s:?}: expected LISTEN=TARGET, e.g. 127.0.0.1:7000=10.0.0.2:8080"))?;
        let addr = |what: &str, v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("route {s:?}: {what} {v:?} is not an IP:port address: {e}"))
        };
        Ok(Route {
            listen: addr("listen address", listen)?,
            target: addr("target", target)?,
        })
    }
}

/// Command-line options of `ambit app relay`.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// LISTEN=TARGET: accept on LISTEN, relay each connection to TARGET; repeatable.
    #[arg(long = "route", value_name = "LISTEN=TARGET", required = true)]
    pub routes: Vec<Route>,
}

/// Runs the relay on one thread until SIGTERM or SIGINT.
pub fn main(args: RelayArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime(1)?;
    runtime.block_on(async {
        let mut listeners = Vec::with_capacity(args.routes.len());
        for route in &args.routes {
            let listener = TcpListener::bind(route.listen)
                .await
                .map_err(|e| anyhow::anyhow!("route {}={}: cannot listen: {e}", route.listen, route.target))?;
            tracing::info!(listen = %route.listen, target = %route.target, "relay listening");
            listeners.push((listener, route.target));
        }
        let tasks: Vec<_> = listeners
            .into_iter()
            .map(|(l, target)| tokio::spawn(serve(l, target)))
            .collect();
        crate::shutdown_signal()?.await;
        for task in tasks {
            task.abort();
        }
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Accepts on `listener` forever, relaying each connection to `target` on a task of its own.
pub async fn serve(listener: TcpListener, target: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((inbound, peer)) => {
                tokio::spawn(async move {
                    if let Err(e) = relay(inbound, target).await {
                        tracing::debug!(%peer, %target, error = %e, "relay ended with an error");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Connects to `target` and copies both ways until both directions have ended; returns the bytes relayed each way
/// (inbound to target, target to inbound).
pub async fn relay(mut inbound: TcpStream, target: SocketAddr) -> io::Result<(u64, u64)> {
    let mut outbound = TcpStream::connect(target).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, COPY_BUFFER, COPY_BUFFER).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn routes_parse_or_name_the_bad_part() {
        let r: Route = "127.0.0.1:7000=10.0.0.2:8080".parse().unwrap();
        assert_eq!(r.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(r.target, "10.0.0.2:8080".parse().unwrap());
        let e = "127.0.0.1:7000".parse::<Route>().unwrap_err();
        assert!(e.contains("LISTEN=TARGET"), "{e}");
        let e = "127.0.0.1:7000=server:80".parse::<Route>().unwrap_err();
        assert!(e.contains("target \"server:80\""), "{e}");
        let e = "7000=10.0.0.2:80".parse::<Route>().unwrap_err();
        assert!(e.contains("listen address \"7000\""), "{e}");
    }

    /// Bytes cross both ways unchanged, and a half-close on either side reaches the other while the opposite
    /// direction keeps flowing.
    #[tokio::test]
    async fn relays_both_ways_and_passes_half_closes_on() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let relay = tokio::spawn(serve(front, backend_addr));

        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // ends at the client's FIN, relayed
            assert_eq!(got, expected);
            s.write_all(b"after your FIN").await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap(); // ends at the server's FIN, relayed
        assert_eq!(reply, b"after your FIN");
        server.await.unwrap();
        relay.abort();
    }

    /// A target that refuses closes the accepted connection instead of leaving it open.
    #[tokio::test]
    async fn an_unreachable_target_closes_the_client() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let relay = tokio::spawn(serve(front, target));
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        relay.abort();
    }
}
