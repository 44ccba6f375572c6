//! The node proxy's main loop ([`serve`]) with pods from a real ZDS agent on a temporary socket, in the test's own
//! network namespace on free ports: readiness, then the shutdown sequence.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use ambit_netns::SeqpacketListener;
use ambit_zds::{AgentEvent, Netns, Pod, PodSet, PodUid, RequestKind, WorkloadInfo};
use tokio::sync::mpsc;

use super::test_support::{FREE_PORTS, OWN_NETNS, TestNode, WAIT};
use super::*;
use crate::state::fixtures;

fn config(zds_socket: PathBuf, drain_deadline: Option<Duration>) -> NodeConfig {
    let unused = PathBuf::from("unused");
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    NodeConfig {
        node: "node-1".into(),
        state: StateSource::File(unused.clone()),
        enrollment_file: unused.clone(),
        zds_socket: Some(zds_socket),
        cluster_id: zds::DEFAULT_CLUSTER_ID.into(),
        poll_interval: Duration::from_millis(10),
        ca_address: String::new(),
        ca_root: unused.clone(),
        token_file: unused,
        trust_domain: TrustDomain::new("cluster.local").unwrap(),
        root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
        admin_address: local,
        metrics_address: local,
        readiness_address: local,
        drain_grace: Duration::from_millis(100),
        drain_deadline,
        ready_file: None,
        worker_threads: 1,
        xds_scope: XdsScope::Node,
    }
}

fn accepts(addr: SocketAddr) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<AgentEvent>) -> AgentEvent {
    tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitting_leaves_the_agent_closes_every_listener_and_returns_once_drained() {
    let node = TestNode::new(vec![fixtures::pod("a", "10.0.0.1")]);
    let manager = node.manager(FREE_PORTS);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("zds.sock");
    let pod = Pod {
        info: WorkloadInfo {
            name: "a".into(),
            namespace: "demo".into(),
            service_account: "a".into(),
        },
        netns: Some(Netns::open(Path::new(OWN_NETNS)).unwrap()),
    };
    let (_pods_tx, pods_rx) = watch::channel(Arc::new(PodSet::from([(PodUid::new("uid-a"), pod)])));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(ambit_zds::serve_agent(
        SeqpacketListener::bind(&socket).unwrap(),
        pods_rx,
        events_tx,
    ));

    let (ready_tx, mut ready) = watch::channel(false);
    let (quit_tx, quit_rx) = watch::channel(false);
    let (stop_http_tx, mut stop_http) = watch::channel(false);
    let serving = tokio::spawn(serve(
        config(socket, None),
        manager.clone(),
        ready_tx,
        quit_rx,
        None,
        stop_http_tx,
    ));
    assert!(matches!(next_event(&mut events).await, AgentEvent::Connected { .. }));
    for kind in [RequestKind::Add, RequestKind::SnapshotSent] {
        match next_event(&mut events).await {
            AgentEvent::Acked { ack, .. } => assert_eq!((ack.kind, ack.error), (kind, None)),
            other => panic!("unexpected {other:?}"),
        }
    }
    tokio::time::timeout(WAIT, ready.wait_for(|ready| *ready))
        .await
        .unwrap()
        .unwrap();
    let listeners = manager.dump()[0].status.listeners.clone();
    assert!(listeners.iter().all(|addr| accepts(*addr)), "{listeners:?}");

    quit_tx.send_replace(true);
    // The agent sees this proxy leave, the endpoints stop, readiness drops, and with no connection open the drain
    // (without a deadline) ends at once.
    assert!(matches!(next_event(&mut events).await, AgentEvent::Disconnected { .. }));
    tokio::time::timeout(WAIT, stop_http.wait_for(|stop| *stop))
        .await
        .unwrap()
        .unwrap();
    assert!(!*ready.borrow());
    tokio::time::timeout(WAIT, serving).await.unwrap().unwrap().unwrap();
    assert!(manager.is_empty());
    assert!(
        !listeners.iter().any(|addr| accepts(*addr)),
        "every in-pod listener is closed"
    );
}
