//! Helpers shared by the integration tests: identities, throwaway CAs, fixed clocks, loopback handshakes.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ambit_identity::ca::{CaConfig, CertificateAuthority};
use ambit_identity::tls;
use ambit_types::{Identity, TrustDomain};
use rustls::{ClientConfig, NamedGroup, ProtocolVersion, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The current time truncated to a whole second, so that `not_after - now == ttl` holds exactly (X.509 times are
/// whole seconds). Real time, because rustls checks validity against the system clock during handshakes.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs())
}

pub fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

pub fn trust_domain(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap()
}

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(path)
}

/// A self-signed CA for `domain` in a fresh temporary directory (kept alive by the returned guard).
pub fn new_ca(domain: &str) -> (tempfile::TempDir, CertificateAuthority) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), CaConfig::new(trust_domain(domain)), now()).unwrap();
    (dir, ca)
}

/// What one side of a connection saw.
#[derive(Debug)]
pub struct Session {
    pub peer: Option<Identity>,
    pub alpn: Option<Vec<u8>>,
    pub group: Option<NamedGroup>,
    pub version: Option<ProtocolVersion>,
}

fn session(conn: &rustls::CommonState) -> Session {
    Session {
        peer: tls::peer_identity(conn),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        version: conn.protocol_version(),
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub client: Result<Session, String>,
    pub server: Result<Session, String>,
}

impl Outcome {
    pub fn ok(self) -> (Session, Session) {
        match (self.client, self.server) {
            (Ok(c), Ok(s)) => (c, s),
            (c, s) => panic!("handshake failed: client {c:?}, server {s:?}"),
        }
    }

    /// Both sides failed; returns (client error, server error).
    pub fn failed(self) -> (String, String) {
        match (self.client, self.server) {
            (Err(c), Err(s)) => (c, s),
            (c, s) => panic!("handshake should fail on both sides: client {c:?}, server {s:?}"),
        }
    }
}

/// A TLS connection over loopback, then one ping/pong exchange (so that a server's rejection of the client
/// certificate, which TLS 1.3 reports after the client's handshake, shows on the client too).
pub async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(session(tls.get_ref().1))
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // The client dials an IP; the name is not used for verification and, without SNI, not sent.
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        Ok(session(tls.get_ref().1))
    };
    let deadline = Duration::from_secs(10);
    let client = tokio::time::timeout(deadline, client_side)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(deadline, server_side)
        .await
        .expect("server timed out")
        .unwrap();
    Outcome { client, server }
}
