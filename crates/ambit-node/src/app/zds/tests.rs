//! The ZDS handler over the real pod manager, with the test's own network namespace (`/proc/self/ns/net`) as every
//! pod's and free ports: called directly, and driven by the real agent (`ambit_zds::serve_agent`) over a unix
//! socket.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use ambit_netns::SeqpacketListener;
use ambit_zds::{AgentEvent, Netns, Pod, PodSet, RequestKind};
use tokio::sync::mpsc;

use super::*;
use crate::app::Readiness;
use crate::app::pods::{ListenerPorts, PodDump, PodManager};
use crate::app::test_support::{FREE_PORTS, OWN_NETNS, TestNode, WAIT, eventually};
use crate::state::fixtures;

fn own_netns() -> OwnedFd {
    File::open(OWN_NETNS).unwrap().into()
}

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        namespace: "demo".into(),
        service_account: name.into(),
    }
}

fn pod_uid(name: &str) -> PodUid {
    PodUid::new(format!("uid-{name}"))
}

/// The manager's pods by Kubernetes uid.
fn pods(manager: &PodManager) -> BTreeMap<String, PodDump> {
    manager
        .dump()
        .into_iter()
        .map(|pod| (pod.pod_uid.clone().unwrap_or_default(), pod))
        .collect()
}

/// A handler over a manager on `ports`, and the receiver of its `synced` signal.
fn handler(node: &TestNode, ports: ListenerPorts) -> (ZdsHandler, PodManager, watch::Receiver<bool>) {
    let manager = node.manager(ports);
    let (synced_tx, synced) = watch::channel(false);
    (
        ZdsHandler::new(manager.clone(), DEFAULT_CLUSTER_ID, synced_tx),
        manager,
        synced,
    )
}

/// Whether something accepts TCP connections on `addr` (a pod listener on 0.0.0.0 is reached on 127.0.0.1).
fn accepts(addr: SocketAddr) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok()
}

#[test]
fn workload_uids_are_made_from_namespace_and_name() {
    let cases = [
        ("demo", "web-1", Ok("Kubernetes//Pod/demo/web-1")),
        ("", "web-1", Err("workload_info.namespace")),
        ("Demo", "web-1", Err("workload_info.namespace")),
        ("demo", "", Err("workload_info.name \"\": empty")),
        ("demo", "a/b", Err("workload_info.name \"a/b\": contains '/'")),
    ];
    for (namespace, name, want) in cases {
        let info = WorkloadInfo {
            name: name.into(),
            namespace: namespace.into(),
            service_account: "sa".into(),
        };
        let got = workload_uid(DEFAULT_CLUSTER_ID, &info).map(|uid| uid.to_string());
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.starts_with(want), "{namespace}/{name}: {got}"),
            (got, want) => panic!("{namespace}/{name}: got {got:?}, want {want:?}"),
        }
    }
    let uid = workload_uid("east", &info("web-1")).unwrap();
    assert_eq!(uid.as_str(), "east//Pod/demo/web-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_binds_before_it_returns_and_the_same_namespace_again_changes_nothing() {
    let node = TestNode::new(vec![]);
    let (mut handler, manager, _synced) = handler(&node, FREE_PORTS);
    handler.add(&pod_uid("a"), info("a"), own_netns()).unwrap();
    let first = pods(&manager).remove("uid-a").expect("pod a is served");
    assert_eq!(first.uid, "Kubernetes//Pod/demo/a");
    assert_eq!(first.status.listeners.len(), 3, "{first:?}");
    assert!(first.status.listeners.iter().all(|addr| accepts(*addr)), "{first:?}");

    handler.add(&pod_uid("a"), info("a"), own_netns()).unwrap();
    let again = pods(&manager).remove("uid-a").unwrap();
    assert_eq!(again.status.listeners, first.status.listeners, "the same listeners");
    assert_eq!(node.metric("workload_manager_proxies_started_total"), 1);

    // Another workload name for the same pod uid: a new proxy replaces the first.
    handler.add(&pod_uid("a"), info("renamed"), own_netns()).unwrap();
    let renamed = pods(&manager).remove("uid-a").unwrap();
    assert_eq!(renamed.uid, "Kubernetes//Pod/demo/renamed");
    assert_ne!(renamed.status.listeners, first.status.listeners);
    assert_eq!(node.metric("workload_manager_proxies_started_total"), 2);
    eventually("the first proxy's listeners to close", || {
        !first.status.listeners.iter().any(|addr| accepts(*addr))
    })
    .await;
    eventually("the first proxy to stop", || {
        node.metric("workload_manager_proxies_stopped_total") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_and_stale_pods_drain_and_keep_changes_nothing() {
    let node = TestNode::new(vec![]);
    let (mut handler, manager, synced) = handler(&node, FREE_PORTS);
    for name in ["a", "b", "c"] {
        handler.add(&pod_uid(name), info(name), own_netns()).unwrap();
    }
    let listeners = |name: &str| pods(&manager)[&format!("uid-{name}")].status.listeners.clone();
    let (a, b) = (listeners("a"), listeners("b"));

    handler.keep(&pod_uid("c"));
    handler.keep(&pod_uid("unknown"));
    assert_eq!(pods(&manager).len(), 3);

    handler.del(&pod_uid("a"));
    handler.del(&pod_uid("unknown"));
    assert_eq!(pods(&manager).keys().collect::<Vec<_>>(), ["uid-b", "uid-c"]);
    assert!(!*synced.borrow());

    handler.snapshot_done(vec![pod_uid("b"), pod_uid("gone")]);
    assert_eq!(pods(&manager).keys().collect::<Vec<_>>(), ["uid-c"]);
    assert!(*synced.borrow(), "the first snapshot is applied");
    eventually("the drained proxies' listeners to close", || {
        !a.iter().chain(&b).any(|addr| accepts(*addr))
    })
    .await;
    eventually("both proxies to stop", || {
        node.metric("workload_manager_proxies_stopped_total") == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_that_cannot_bind_is_acked_with_the_reason_and_retried() {
    let node = TestNode::new(vec![]);
    // A listener without SO_REUSEPORT holds the outbound port.
    let blocker = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let ports = ListenerPorts {
        outbound: port,
        ..FREE_PORTS
    };
    let (mut handler, manager, _synced) = handler(&node, ports);
    let error = handler.add(&pod_uid("a"), info("a"), own_netns()).unwrap_err();
    for part in ["uid-a", "Kubernetes//Pod/demo/a", &format!("0.0.0.0:{port}"), "inode"] {
        assert!(error.contains(part), "{part} in {error}");
    }
    let pod = pods(&manager).remove("uid-a").expect("the pod is held, retrying");
    assert!(pod.status.listeners.is_empty(), "{pod:?}");
    assert!(pod.status.error.is_some(), "{pod:?}");

    // The agent retries at once: the port is still taken.
    assert!(handler.add(&pod_uid("a"), info("a"), own_netns()).is_err());
    drop(blocker);
    // The proxy's own retry binds once the port is free; the agent's next Add then finds it served.
    eventually("the retry to bind", || {
        pods(&manager)["uid-a"].status.listeners.len() == 3
    })
    .await;
    handler.add(&pod_uid("a"), info("a"), own_netns()).unwrap();

    let bad = WorkloadInfo {
        name: String::new(),
        ..info("x")
    };
    let error = handler.add(&pod_uid("x"), bad, own_netns()).unwrap_err();
    assert!(error.starts_with("add uid-x: workload_info.name"), "{error}");
    assert!(!manager.serves(&pod_uid("x")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_snapshot_and_every_pod() {
    let node = TestNode::new(vec![fixtures::pod("a", "10.0.0.1")]);
    let (mut handler, manager, synced) = handler(&node, FREE_PORTS);
    let readiness = Readiness {
        xds: None,
        pods_synced: synced,
        manager: manager.clone(),
    };
    assert!(!readiness.ready(), "no snapshot yet");
    handler.add(&pod_uid("a"), info("a"), own_netns()).unwrap();
    eventually("pod a to serve HBONE", || manager.all_ready()).await;
    assert!(!readiness.ready(), "pods serve, but the snapshot is not complete");
    handler.snapshot_done(vec![]);
    assert!(readiness.ready());

    // A pod the mesh state does not know waits for its workload, and the node with it.
    handler.add(&pod_uid("b"), info("b"), own_netns()).unwrap();
    assert!(!readiness.ready(), "pod b has no workload");
    handler.del(&pod_uid("b"));
    assert!(readiness.ready());
}

/// The agent's side: a real `serve_agent` on a temporary socket, whose pods can be changed.
struct Agent {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    pods: watch::Sender<Arc<PodSet<Netns>>>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
}

impl Agent {
    fn start(pods: PodSet<Netns>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zds.sock");
        let listener = SeqpacketListener::bind(&path).unwrap();
        let (pods_tx, pods_rx) = watch::channel(Arc::new(pods));
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(ambit_zds::serve_agent(listener, pods_rx, events_tx));
        Self {
            _dir: dir,
            path,
            pods: pods_tx,
            events,
        }
    }

    /// The next ack, skipping connection events.
    async fn ack(&mut self) -> ambit_zds::Acked {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await.unwrap().unwrap() {
                AgentEvent::Acked { ack, .. } => return ack,
                AgentEvent::Connected { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn agent_pod(name: &str) -> (PodUid, Pod<Netns>) {
    let netns = Netns::open(std::path::Path::new(OWN_NETNS)).unwrap();
    (
        pod_uid(name),
        Pod {
            info: info(name),
            netns: Some(netns),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_gets_its_ack_once_the_listeners_are_bound() {
    let node = TestNode::new(vec![fixtures::pod("a", "10.0.0.1")]);
    let (handler, manager, mut synced) = handler(&node, FREE_PORTS);
    let mut agent = Agent::start(PodSet::from([agent_pod("a")]));
    let path = agent.path.clone();
    let proxy = tokio::spawn(async move { ambit_zds::connect_proxy(&path, handler).await });

    let ack = agent.ack().await;
    assert_eq!(
        (ack.kind, ack.uid.clone(), ack.error.clone()),
        (RequestKind::Add, Some(pod_uid("a")), None)
    );
    // Acked means bound: no waiting here.
    let listeners = pods(&manager)["uid-a"].status.listeners.clone();
    assert!(listeners.iter().all(|addr| accepts(*addr)), "{listeners:?}");
    assert_eq!(agent.ack().await.kind, RequestKind::SnapshotSent);
    tokio::time::timeout(WAIT, synced.wait_for(|synced| *synced))
        .await
        .unwrap()
        .unwrap();

    // Unenrolled: a Del, and the pod's listeners close.
    agent.pods.send_replace(Arc::new(PodSet::new()));
    let ack = agent.ack().await;
    assert_eq!((ack.kind, ack.error), (RequestKind::Del, None));
    assert!(manager.is_empty());
    eventually("the pod's listeners to close", || {
        !listeners.iter().any(|addr| accepts(*addr))
    })
    .await;

    // The proxy going away (dropping the driver) closes its connection: the agent sees it leave.
    proxy.abort();
    let event = tokio::time::timeout(WAIT, agent.events.recv()).await.unwrap().unwrap();
    assert!(matches!(event, AgentEvent::Disconnected { .. }), "{event:?}");
}

/// A pod re-created in a new sandbox: the same uid handed over with another network namespace. Creating one needs
/// root, hence the feature.
#[cfg(feature = "netns-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_namespace_for_the_same_pod_replaces_its_proxy() {
    use std::os::fd::AsFd;
    let fresh: OwnedFd = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace (root)");
        OwnedFd::from(File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap();
    let fresh_inode = File::from(fresh.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    let fresh_inode = std::os::unix::fs::MetadataExt::ino(&fresh_inode);

    let node = TestNode::new(vec![]);
    let (mut handler, manager, _synced) = handler(&node, FREE_PORTS);
    handler.add(&pod_uid("a"), info("a"), own_netns()).unwrap();
    let first = pods(&manager).remove("uid-a").unwrap();
    assert!(first.status.listeners.iter().all(|addr| accepts(*addr)));

    handler.add(&pod_uid("a"), info("a"), fresh).unwrap();
    let replaced = pods(&manager).remove("uid-a").unwrap();
    assert_eq!(replaced.netns, format!("net:[{fresh_inode}]"));
    assert_eq!(replaced.status.listeners.len(), 3, "bound in the new namespace");
    assert_eq!(node.metric("workload_manager_proxies_started_total"), 2);
    eventually("the old namespace's listeners to close", || {
        !first.status.listeners.iter().any(|addr| accepts(*addr))
    })
    .await;
}
