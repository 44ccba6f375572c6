//! The data-plane drivers of the node proxy: `inbound` terminates HBONE for a local pod, `outbound` carries a pod's
//! captured connections to their destination. Decisions come from `state` and `ambit_policy`; these modules only
//! move bytes, keep timers and record telemetry. `netns` holds a pod's network namespace, where their sockets are
//! made.

pub mod inbound;
pub mod netns;
pub mod outbound;
pub mod plaintext;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ambit_hbone::drain::DrainWatch;
use ambit_telemetry::{ServiceInfo, WorkloadInfo};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, warn};

use crate::state::{ServiceKey, Snapshot, Workload};

/// Telemetry's view of a workload: its workload name (else the pod name), canonical service and revision from the
/// workload API when set, else from its labels, and its pod name.
pub fn workload_info(workload: &Workload) -> WorkloadInfo {
    let name = if workload.workload_name.is_empty() {
        &workload.name
    } else {
        &workload.workload_name
    };
    let mut info = WorkloadInfo::from_labels(
        name,
        workload.namespace.as_str(),
        &workload.labels,
        &workload.cluster_id,
    );
    if !workload.canonical_name.is_empty() {
        info.canonical_service = workload.canonical_name.as_str().into();
    }
    if !workload.canonical_revision.is_empty() {
        info.canonical_revision = workload.canonical_revision.as_str().into();
    }
    // The workload API carries no labels: app and version are then the canonical service and revision, as ztunnel
    // reports them.
    if workload.labels.is_empty() {
        info.app = info.canonical_service.clone();
        info.version = info.canonical_revision.clone();
    }
    if !workload.name.is_empty() {
        info = info.with_pod(&workload.name);
    }
    info
}

/// Telemetry's view of a tunnel's source the snapshot does not hold (with node-scoped xDS, a pod of another node),
/// from the `baggage` header its node proxy sent ([`outbound::baggage`]): namespace, workload name, canonical
/// service and revision, cluster. The baggage is the client's word, so it is used only when its namespace is the
/// one of the peer's verified identity; otherwise, or without baggage, the source stays unknown.
pub(crate) fn source_from_baggage(baggage: Option<&str>, peer: Option<&ambit_types::Identity>) -> Option<WorkloadInfo> {
    let (baggage, peer) = (baggage?, peer?);
    let mut fields = std::collections::BTreeMap::new();
    for member in baggage.split(',') {
        // A member may carry properties after ';' (W3C baggage); only key=value is read.
        let member = member.split(';').next().unwrap_or_default();
        if let Some((key, value)) = member.split_once('=') {
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            fields.insert(key.trim().to_string(), value.into_owned());
        }
    }
    let namespace = fields.get("k8s.namespace.name")?;
    if namespace != peer.namespace() {
        return None;
    }
    let kinds = [
        "deployment",
        "pod",
        "job",
        "cronjob",
        "statefulset",
        "daemonset",
        "replicaset",
    ];
    let name = kinds.iter().find_map(|kind| fields.get(&format!("k8s.{kind}.name")))?;
    let cluster = fields.get("k8s.cluster.name").map_or("", String::as_str);
    let mut info = WorkloadInfo::from_labels(name, namespace, &Default::default(), cluster);
    if let Some(service) = fields.get("service.name").filter(|s| !s.is_empty()) {
        info.canonical_service = service.as_str().into();
    }
    if let Some(version) = fields.get("service.version").filter(|s| !s.is_empty()) {
        info.canonical_revision = version.as_str().into();
    }
    info.app = info.canonical_service.clone();
    info.version = info.canonical_revision.clone();
    Some(info)
}

/// Telemetry's view of a service of the snapshot.
pub fn service_info(snapshot: &Snapshot, key: &ServiceKey) -> Option<ServiceInfo> {
    let service = snapshot.service(key)?;
    Some(ServiceInfo {
        hostname: service.hostname.as_str().into(),
        name: service.name.as_str().into(),
        namespace: service.namespace.as_str().into(),
    })
}

/// Pause after a failed `accept` (out of file descriptors, typically) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a connection waits for the proxy to hold its own workload. A pod's listeners are bound when the node
/// agent hands the pod over, which for a new instance beside an old one (an upgrade) or a restarted one can be before
/// its first xDS answer: the kernel already spreads connections onto them, and they wait here for the state instead
/// of failing.
pub const LOCAL_WAIT: Duration = Duration::from_secs(5);

/// Returns once `snapshot` holds `local`, or after [`LOCAL_WAIT`] (the caller then refuses as for an unknown
/// workload). At once when it is already there.
pub async fn local_known(
    snapshot: &tokio::sync::watch::Receiver<std::sync::Arc<Snapshot>>,
    local: &crate::state::WorkloadUid,
) {
    if snapshot.borrow().workload(local).is_some() {
        return;
    }
    let mut snapshot = snapshot.clone();
    let known = tokio::time::timeout(LOCAL_WAIT, snapshot.wait_for(|s| s.workload(local).is_some())).await;
    if known.is_err() {
        debug!(workload = %local, "the local workload did not arrive in time");
    }
}

/// Accepts connections on `listener` until draining starts. `start` turns each into the future that serves it
/// (or `None` to drop it at once); that future runs on its own task in `start`'s span, holding a clone of `drain`
/// until it ends, and is dropped, closing its sockets, at the drain deadline. `what` names the listener in logs.
pub(crate) async fn serve_until_drained<F, Fut>(listener: TcpListener, drain: DrainWatch, what: &'static str, start: F)
where
    F: Fn(TcpStream, SocketAddr) -> Option<(Fut, tracing::Span)>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut signal = drain.clone();
    let mut draining = std::pin::pin!(signal.signaled());
    loop {
        let accepted = tokio::select! {
            _ = &mut draining => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some((serve, span)) = start(stream, peer) else {
                    continue;
                };
                let mut watch = drain.clone();
                let task = async move {
                    tokio::select! {
                        () = serve => {}
                        () = async { tokio::time::sleep_until(watch.signaled().await).await } => {
                            debug!(listener = what, "closing a connection at the drain deadline");
                        }
                    }
                };
                tokio::spawn(task.instrument(span));
            }
            Err(error) => {
                warn!(%error, listener = what, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::pod;

    #[test]
    fn without_labels_app_and_version_are_the_canonical_service_and_revision() {
        let mut workload = pod("cart-7d9f", "10.0.0.1");
        workload.workload_name = "cart-v2".into();
        workload.canonical_name = "cart".into();
        workload.canonical_revision = "v2".into();
        let info = workload_info(&workload);
        assert_eq!((&*info.app, &*info.version), ("cart", "v2"));
        workload.labels.insert("app".into(), "shop".into());
        let info = workload_info(&workload);
        assert_eq!((&*info.app, &*info.canonical_service), ("shop", "cart"));
    }

    #[test]
    fn an_unknown_source_is_named_by_its_baggage_only_in_its_verified_namespace() {
        let td = ambit_types::TrustDomain::new("cluster.local").unwrap();
        let client = ambit_types::Identity::new(td, "web", "client").unwrap();
        let full = "k8s.cluster.name=Kubernetes,k8s.namespace.name=web,k8s.deployment.name=client,\
                    service.name=client-app,service.version=v2";
        let info = source_from_baggage(Some(full), Some(&client)).expect("named");
        let got = (
            &*info.name,
            &*info.namespace,
            &*info.canonical_service,
            &*info.canonical_revision,
        );
        assert_eq!(got, ("client", "web", "client-app", "v2"));
        assert_eq!(
            (&*info.app, &*info.version, &*info.cluster),
            ("client-app", "v2", "Kubernetes")
        );
        let cases = [
            (Some("k8s.namespace.name=other,k8s.pod.name=x"), Some(&client), false),
            (Some("k8s.namespace.name=web"), Some(&client), false),
            (
                Some("k8s.namespace.name=web;p=1, k8s.pod.name = solo"),
                Some(&client),
                true,
            ),
            (Some(full), None, false),
            (None, Some(&client), false),
            (Some("garbage"), Some(&client), false),
        ];
        for (baggage, peer, named) in cases {
            assert_eq!(
                source_from_baggage(baggage, peer).is_some(),
                named,
                "{baggage:?} {peer:?}"
            );
        }
    }
}
