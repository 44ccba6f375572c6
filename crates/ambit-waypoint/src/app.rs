//! The `ambit waypoint` process: its certificate from the control plane's CA (with the node's credential; the CA
//! checks that the waypoint's pod runs on that node), the workload state and L7 config over one delta xDS stream,
//! the HBONE listener, and the admin (`/config_dump`), metrics (`/metrics`) and readiness (`/healthz/ready`)
//! endpoints. SIGTERM stops accepting, sends GOAWAY on every tunnel connection and exits once they end (at most
//! [`DRAIN_DEADLINE`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_hbone::{HboneServer, ServerSettings, drain};
use ambit_identity::cert::TrustBundle;
use ambit_identity::manager::{CertificateManager, ManagerConfig, SystemClock};
use ambit_identity::tls;
use ambit_telemetry::http::RequestMetrics;
use ambit_telemetry::prometheus_client::registry::Registry;
use ambit_types::{Identity, TrustDomain};
use ambit_xds::delta::{ConnectionState, Transport, XdsClient, XdsConfig, XdsScope};
use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{ConfigHandler, L7Config};
use crate::inbound::WaypointHandler;
use crate::proxy::Shared;
use crate::state::L7State;
use crate::target::WaypointId;
use crate::upstream::Upstreams;

/// The longest a stopping waypoint waits for its tunnels to end.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// How often closed upstream HTTP connections are dropped from the pools.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Everything `ambit waypoint` needs.
#[derive(Clone, Debug)]
pub struct WaypointConfig {
    /// The waypoint Gateway's namespace and name.
    pub namespace: String,
    pub gateway: String,
    /// The service account whose identity the waypoint presents.
    pub service_account: String,
    /// The node the waypoint's pod runs on (its credential gets the certificate).
    pub node: String,
    /// The waypoint pod's IP, when known (a binding may name the waypoint by address).
    pub pod_ip: Option<IpAddr>,
    pub trust_domain: TrustDomain,
    pub root_namespace: String,
    /// The control plane: CA and xDS, `host:port`.
    pub ca_address: String,
    pub ca_root: PathBuf,
    pub token_file: PathBuf,
    pub listen: SocketAddr,
    pub admin_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub readiness_address: SocketAddr,
    pub worker_threads: usize,
}

/// What the admin endpoints read.
#[derive(Clone)]
struct Admin {
    shared: Arc<Shared>,
    ready: watch::Receiver<bool>,
    registry: Arc<Registry>,
}

/// Runs the waypoint until SIGTERM or SIGINT.
pub fn run(config: WaypointConfig) -> anyhow::Result<()> {
    let (bundle, token) = ambit_node::app::load_credentials(&config.ca_root, &config.token_file)?;
    let identity = Identity::new(config.trust_domain.clone(), &config.namespace, &config.service_account)
        .with_context(|| {
            format!(
                "{}/{} does not make a SPIFFE identity",
                config.namespace, config.service_account
            )
        })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .thread_name("ambit-waypoint")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(config, bundle, token, identity))
}

async fn serve(config: WaypointConfig, bundle: TrustBundle, token: String, identity: Identity) -> anyhow::Result<()> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({what})"))
    };
    let hbone_listener = bind(config.listen, "HBONE").await?;
    let admin_listener = bind(config.admin_address, "admin").await?;
    let metrics_listener = bind(config.metrics_address, "metrics").await?;
    let readiness_listener = bind(config.readiness_address, "readiness").await?;

    let source = ambit_node::app::ca::LazyCaClient::new(
        config.ca_address.clone(),
        bundle.clone(),
        token.clone(),
        &config.trust_domain,
    );
    let certificates = CertificateManager::new(Arc::new(source), Arc::new(SystemClock), ManagerConfig::default());

    // State: workloads and policies as the node proxy follows them (every node's), plus the L7 config.
    let (addresses, authorizations, snapshot) = ambit_node::state::xds::handlers();
    let (config_handler, l7_config) = ConfigHandler::new();
    let xds = XdsConfig {
        address: config.ca_address.clone(),
        transport: Transport::Tls {
            bundle: bundle.clone(),
            server: ambit_xds::ca::control_identity(&config.trust_domain),
        },
        token,
        node_name: config.node.clone(),
        node_ip: config.pod_ip,
        on_demand: Vec::new(),
    };
    let client = XdsClient::new(
        xds,
        vec![Box::new(addresses), Box::new(authorizations), Box::new(config_handler)],
    )
    .context("cannot configure the xDS client")?
    .with_scope(XdsScope::All);
    let xds_state = client.state();
    let (stop_xds_tx, mut stop_xds_rx) = watch::channel(false);
    let xds_task = tokio::spawn(client.run(async move {
        let _ = stop_xds_rx.wait_for(|stop| *stop).await;
    }));

    let me = WaypointId {
        namespace: config.namespace.clone(),
        name: config.gateway.clone(),
        addresses: config.pod_ip.into_iter().collect(),
    };
    let state = compile_state(snapshot, l7_config, me.clone(), config.root_namespace.clone());

    let mut registry = Registry::default();
    let metrics = Arc::new(RequestMetrics::register(&mut registry));
    let tcp_metrics = Arc::new(ambit_telemetry::TcpMetrics::register(&mut registry));
    let (_bundle_tx, bundle_rx) = watch::channel(bundle);
    let upstreams = Upstreams::new(identity.clone(), certificates.clone(), bundle_rx.clone());
    let shared = Arc::new(Shared::new(me, state, upstreams.clone(), metrics, tcp_metrics));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            every.tick().await;
            upstreams.prune();
        }
    });

    // The HBONE server, with the waypoint's certificate (kept current as it rotates).
    let (drain_trigger, drain_watch) = drain::channel();
    let server = HboneServer::new(
        WaypointHandler::new(Arc::clone(&shared)),
        ServerSettings::default(),
        drain_watch,
    );
    let (tls_tx, tls_rx) = watch::channel(None::<Arc<rustls::ServerConfig>>);
    tokio::spawn(keep_server_tls(
        certificates.clone(),
        identity.clone(),
        bundle_rx,
        tls_tx,
    ));

    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(track_readiness(xds_state, tls_rx.clone(), ready_tx));
    let admin = Admin {
        shared: Arc::clone(&shared),
        ready: ready_rx,
        registry: Arc::new(registry),
    };
    let (stop_http_tx, stop_http_rx) = watch::channel(false);
    for (listener, route) in [
        (admin_listener, Endpoint::Admin),
        (metrics_listener, Endpoint::Metrics),
        (readiness_listener, Endpoint::Readiness),
    ] {
        tokio::spawn(serve_endpoint(listener, route, admin.clone(), stop_http_rx.clone()));
    }

    info!(%identity, listen = %config.listen, gateway = %format!("{}/{}", config.namespace, config.gateway),
        "waypoint starting");
    let tls = wait_for_tls(tls_rx).await;
    let serving = {
        let server = server.clone();
        tokio::spawn(async move {
            if let Some(tls) = tls {
                server.serve_listener(hbone_listener, tls).await;
            }
        })
    };

    shutdown_signal().await;
    info!("stopping: draining tunnels");
    let _ = stop_http_tx.send(true);
    drain_trigger.start(DRAIN_DEADLINE);
    drop(server);
    let _ = serving.await;
    tokio::time::timeout(DRAIN_DEADLINE + Duration::from_secs(1), drain_trigger.drained())
        .await
        .ok();
    let _ = stop_xds_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), xds_task).await;
    Ok(())
}

/// Rebuilds the [`L7State`] whenever the workload state or the L7 config changes.
fn compile_state(
    mut snapshot: watch::Receiver<Arc<ambit_node::state::Snapshot>>,
    mut config: watch::Receiver<Arc<L7Config>>,
    me: WaypointId,
    root_namespace: String,
) -> watch::Receiver<Arc<L7State>> {
    let build = |snapshot: &watch::Receiver<Arc<ambit_node::state::Snapshot>>,
                 config: &watch::Receiver<Arc<L7Config>>,
                 me: &WaypointId,
                 root: &str| {
        let state = L7State::build(Arc::clone(&snapshot.borrow()), Arc::clone(&config.borrow()), me, root);
        for problem in &state.problems {
            warn!(%problem, "L7 config not enforced as written");
        }
        Arc::new(state)
    };
    let (tx, rx) = watch::channel(build(&snapshot, &config, &me, &root_namespace));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = snapshot.changed() => if changed.is_err() { return },
                changed = config.changed() => if changed.is_err() { return },
            }
            snapshot.mark_unchanged();
            config.mark_unchanged();
            tx.send_replace(build(&snapshot, &config, &me, &root_namespace));
        }
    });
    rx
}

/// Fetches the waypoint's certificate and publishes its HBONE server configuration, again on every rotation.
async fn keep_server_tls(
    certificates: CertificateManager,
    identity: Identity,
    mut bundle: watch::Receiver<TrustBundle>,
    tx: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
) {
    let mut certs = certificates.subscribe(&identity);
    loop {
        let current = certs.borrow_and_update().clone();
        match current {
            Some(cert) => match tls::server_config(&cert, &bundle.borrow_and_update()) {
                Ok(config) => {
                    tx.send_replace(Some(config));
                }
                Err(error) => warn!(%error, "cannot build the HBONE server TLS"),
            },
            None => {
                if let Err(error) = certificates.fetch(&identity).await {
                    warn!(error = %format!("{:#}", anyhow::Error::new(error)), %identity, "no certificate yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        }
        tokio::select! {
            changed = certs.changed() => if changed.is_err() { return },
            changed = bundle.changed() => if changed.is_err() { return },
        }
    }
}

/// The HBONE server's TLS configurations once the first exists; `None` if the sender went away first.
async fn wait_for_tls(
    mut rx: watch::Receiver<Option<Arc<rustls::ServerConfig>>>,
) -> Option<watch::Receiver<Arc<rustls::ServerConfig>>> {
    let first = rx.wait_for(Option::is_some).await.ok()?.clone()?;
    let (tx, out) = watch::channel(first);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let next = rx.borrow_and_update().clone();
            if let Some(config) = next {
                tx.send_replace(config);
            }
        }
    });
    Some(out)
}

/// Ready once every xDS type has its first response and the certificate is in hand.
async fn track_readiness(
    mut xds: watch::Receiver<ConnectionState>,
    mut tls: watch::Receiver<Option<Arc<rustls::ServerConfig>>>,
    ready: watch::Sender<bool>,
) {
    loop {
        let now = xds.borrow_and_update().is_synced() && tls.borrow_and_update().is_some();
        ready.send_if_modified(|r| std::mem::replace(r, now) != now);
        tokio::select! {
            changed = xds.changed() => if changed.is_err() { return },
            changed = tls.changed() => if changed.is_err() { return },
        }
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Admin,
    Metrics,
    Readiness,
}

async fn serve_endpoint(listener: TcpListener, endpoint: Endpoint, admin: Admin, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(answer(endpoint, &admin, &request)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

fn answer(endpoint: Endpoint, admin: &Admin, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let (status, content_type, body) = match (endpoint, path) {
        (Endpoint::Metrics, "/metrics" | "/stats/prometheus") => {
            let mut text = String::new();
            match ambit_telemetry::prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
                Ok(()) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{error}\n")),
            }
        }
        (Endpoint::Readiness, "/healthz/ready") => match *admin.ready.borrow() {
            true => (StatusCode::OK, "text/plain", "ready\n".to_string()),
            false => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".to_string()),
        },
        (Endpoint::Admin, "/config_dump") => (StatusCode::OK, "application/json", config_dump(&admin.shared)),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// What the waypoint serves: its bound Services and ports, the policies attached to it, and the problems found.
fn config_dump(shared: &Shared) -> String {
    let state = Arc::clone(&shared.state.borrow());
    let bound: Vec<String> = (state.snapshot.services().iter())
        .filter(|s| s.waypoint.as_ref().is_some_and(|gw| shared.me.is(gw)))
        .map(|s| s.key().to_string())
        .collect();
    let dump = serde_json::json!({
        "waypoint": shared.me.to_string(),
        "identity": shared.upstreams.identity().to_string(),
        "boundServices": bound,
        "routeTables": state.table_count(),
        "httpRoutes": state.config.http_routes.keys().collect::<Vec<_>>(),
        "grpcRoutes": state.config.grpc_routes.keys().collect::<Vec<_>>(),
        "policies": state.policies,
        "problems": state.problems,
        "hboneConnections": shared.upstreams.hbone_connections(),
    });
    let mut text = serde_json::to_string_pretty(&dump).unwrap_or_default();
    text.push('\n');
    text
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!("cannot install signal handlers; stopping only when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
