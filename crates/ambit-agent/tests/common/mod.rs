//! What the agent's integration tests share: a fake control plane (the node-pods long poll and the patch endpoint
//! on a unix socket), pod and namespace objects, a log of what happened across the fakes, and HTTP helpers for the
//! agent's metrics endpoint. Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(10);
pub const NODE: &str = "node-1";
pub const PORTS: [u16; 3] = [15001, 15006, 15008];

/// What happened, in order, across the fakes.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, entry: &str) -> usize {
        self.entries().iter().filter(|e| *e == entry).count()
    }

    /// Waits until the log holds `entry`, and returns its position.
    pub async fn wait_for(&self, entry: &str) -> usize {
        eventually(entry, || self.entries().iter().position(|e| e == entry)).await
    }
}

/// Polls `f` until it returns something, failing the test after [`WAIT`].
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the control plane ===

/// The pods and namespaces the fake control plane holds; every change bumps the revision.
pub struct Cluster {
    pub revision: u64,
    pub pods: Vec<Value>,
    pub namespaces: Vec<Value>,
}

/// A fake control plane on a unix socket: A1 (long poll) and A2 (annotation patches, logged).
pub struct ControlPlane {
    pub socket: PathBuf,
    cluster: Arc<Mutex<Cluster>>,
    changed: watch::Sender<u64>,
    log: Log,
    server: Option<JoinHandle<()>>,
}

impl ControlPlane {
    pub fn new(socket: PathBuf, pods: Vec<Value>, namespaces: Vec<Value>, log: Log) -> Self {
        let cluster = Cluster {
            revision: 1,
            pods,
            namespaces,
        };
        ControlPlane {
            socket,
            cluster: Arc::new(Mutex::new(cluster)),
            changed: watch::Sender::new(1),
            log,
            server: None,
        }
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = tokio::net::UnixListener::bind(&self.socket).unwrap();
        let (cluster, changed, log) = (self.cluster.clone(), self.changed.clone(), self.log.clone());
        self.server = Some(tokio::spawn(async move {
            // Dropping the set (the server aborted) ends every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (cluster, changed, log) = (cluster.clone(), changed.clone(), log.clone());
                let service = service_fn(move |req| answer(req, cluster.clone(), changed.clone(), log.clone()));
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Stops answering: open long polls break, new connections are refused.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn change(&self, f: impl FnOnce(&mut Cluster)) {
        let mut cluster = self.cluster.lock().unwrap();
        f(&mut cluster);
        cluster.revision += 1;
        self.changed.send_replace(cluster.revision);
    }

    pub fn set_pod_label(&self, name: &str, key: &str, value: &str) {
        self.change(|c| {
            let pod = c.pods.iter_mut().find(|p| p["metadata"]["name"] == name).unwrap();
            pod["metadata"]["labels"][key] = json!(value);
        });
    }

    pub fn pod(&self, name: &str) -> Value {
        let cluster = self.cluster.lock().unwrap();
        cluster
            .pods
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap()
            .clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    req: Request<Incoming>,
    cluster: Arc<Mutex<Cluster>>,
    changed: watch::Sender<u64>,
    log: Log,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if path == format!("/v1/nodes/{NODE}/pods") {
        let mut revisions = changed.subscribe();
        let wait = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(30));
        let asked = query.get("revision").cloned();
        let deadline = tokio::time::Instant::now() + wait;
        while asked.as_deref() == Some(revisions.borrow_and_update().to_string().as_str()) {
            if tokio::time::timeout_at(deadline, revisions.changed()).await.is_err() {
                break;
            }
        }
        let cluster = cluster.lock().unwrap();
        let body = json!({
            "revision": cluster.revision.to_string(),
            "pods": cluster.pods,
            "namespaces": cluster.namespaces,
        });
        return Ok(reply(StatusCode::OK, body));
    }
    if path == "/v1/patch" {
        let body: Value = serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let mut cluster = cluster.lock().unwrap();
        let pod = cluster
            .pods
            .iter_mut()
            .find(|p| p["metadata"]["namespace"] == body["namespace"] && p["metadata"]["name"] == body["name"]);
        let Some(pod) = pod.filter(|p| body["uid"].is_null() || p["metadata"]["uid"] == body["uid"]) else {
            let errors = json!({"errors": [{"message": "pod not found"}]});
            return Ok(reply(StatusCode::NOT_FOUND, errors));
        };
        for (key, value) in body["metadata"]["annotations"].as_object().unwrap() {
            let name = pod["metadata"]["name"].as_str().unwrap().to_string();
            log.push(format!(
                "patch {name} uid={} {key}={value}",
                body["uid"].as_str().unwrap_or("")
            ));
            let annotations = &mut pod["metadata"]["annotations"];
            if annotations.is_null() {
                *annotations = json!({});
            }
            match value {
                Value::Null => {
                    annotations.as_object_mut().unwrap().remove(key);
                }
                value => annotations[key] = value.clone(),
            }
        }
        let pod = pod.clone();
        cluster.revision += 1;
        changed.send_replace(cluster.revision);
        return Ok(reply(StatusCode::OK, pod));
    }
    Ok(reply(
        StatusCode::NOT_FOUND,
        json!({"errors": [{"message": "no such endpoint"}]}),
    ))
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

pub fn pod(name: &str, namespace: &str, ip: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "labels": labels, "annotations": annotations},
        "spec": {"nodeName": NODE, "serviceAccountName": format!("sa-{name}")},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub const ENABLED: &str = "ambient.istio.io/redirection=\"enabled\"";
pub const REMOVED: &str = "ambient.istio.io/redirection=null";

/// `GET path` on `addr`: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until `/healthz/ready` on `addr` answers 200.
pub async fn wait_ready(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(addr, "/healthz/ready").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for readiness"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/metrics` on `addr` has the line `line`.
pub async fn wait_metric(addr: SocketAddr, line: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = http_get(addr, "/metrics").await;
        if body.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {line} in\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
