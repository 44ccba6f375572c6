//! Test helpers: a minimal `tracing_subscriber::Layer` that records every event's level, target and fields, so
//! tests can assert on access logs without parsing formatted output; and the connection fixtures the tests share.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::tcp::Reporter;
use crate::workload::{ConnectionContext, ServiceInfo, WorkloadInfo};

/// One recorded event. `fields` holds every field but the message, rendered as text.
#[derive(Clone, Debug)]
pub struct Captured {
    pub level: Level,
    pub target: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

/// The layer; clones share the recorded events.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let meta = event.metadata();
        let captured = Captured {
            level: *meta.level(),
            target: meta.target().to_string(),
            message: fields.remove("message").unwrap_or_default(),
            fields,
        };
        self.0.lock().unwrap().push(captured);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// Runs `f` with a capturing subscriber as this thread's default and returns its result and the events.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Captured>) {
    let layer = Capture::default();
    let subscriber = tracing_subscriber::registry().with(layer.clone());
    let result = tracing::subscriber::with_default(subscriber, f);
    let events = std::mem::take(&mut *layer.0.lock().unwrap());
    (result, events)
}

impl Captured {
    /// The field's text, panicking with the event if it is missing.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("no field {name} in {self:#?}"))
    }
}

// === fixtures ===

pub const SOURCE_ID: &str = "spiffe://cluster.local/ns/a/sa/b";
pub const DESTINATION_ID: &str = "spiffe://cluster.local/ns/demo/sa/echo";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `client` (pod `client-7c9f-abcde`) in `a` calling service `echo.demo` backed by workload `echo` in `demo`,
/// over mTLS, with both identities known.
pub fn context(reporter: Reporter) -> ConnectionContext {
    let client = labels(&[("app", "client"), ("version", "v1")]);
    let echo = labels(&[("app", "echo"), ("version", "v2")]);
    ConnectionContext {
        reporter,
        source: Some(WorkloadInfo::from_labels("client", "a", &client, "Kubernetes").with_pod("client-7c9f-abcde")),
        destination: Some(WorkloadInfo::from_labels("echo", "demo", &echo, "Kubernetes")),
        destination_service: Some(ServiceInfo {
            hostname: "echo.demo.svc.cluster.local".into(),
            name: "echo".into(),
            namespace: "demo".into(),
        }),
        source_principal: Some(SOURCE_ID.parse().unwrap()),
        destination_principal: Some(DESTINATION_ID.parse().unwrap()),
        mtls: true,
    }
}

/// A context where nothing but the reporter is known, in plaintext.
pub fn bare_context(reporter: Reporter) -> ConnectionContext {
    ConnectionContext::new(reporter)
}
