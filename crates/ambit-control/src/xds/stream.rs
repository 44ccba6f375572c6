//! The state of one delta xDS stream, without IO: per type URL, what the client subscribed to and which version of
//! each resource it holds, and from that, what to send it after a request or a new snapshot.
//!
//! The driver ([`super::service`]) feeds every request to [`StreamState::on_request`], answers at once when the
//! [`Outcome`] says so, and calls [`StreamState::respond_all`] whenever the store publishes a snapshot.
//!
//! Protocol (Envoy's delta xDS as ztunnel uses it, ambient §3.1):
//! - A type's first request with an empty subscribe list is a wildcard: every resource of the type. A first request
//!   with `*` in both lists subscribes to nothing (on-demand); later requests subscribe to names or `<network>/<ip>`
//!   aliases, and unsubscribe from them.
//! - The client holds what it acknowledged plus what is in flight; a response sends the resources whose version
//!   differs from that and removes the names that no longer exist. Every resource a client holds is kept up to date,
//!   whether it came from the wildcard, a name, an alias or the client's `initial_resource_versions`.
//! - A NACK drops its response's changes: the client keeps its last good versions, so the next response sends them
//!   again with whatever changed. No response follows a NACK at once (it would be refused again).
//! - A subscribed key that matches nothing is answered in `removed_resources`, so an on-demand lookup completes.
//!
//! The node scope (an ambit extension, [`Scope::Node`], declared in the node metadata `AMBIT_XDS_SCOPE`): the
//! `istio.workload.Address` wildcard of such a stream covers only the workloads of the stream's node and every
//! service; names and aliases subscribed on top are added, and a subscribed service brings its endpoints (the
//! workloads that list it in their `services`). Membership follows every snapshot: what enters the set is sent,
//! what leaves it is removed. Other types, and streams without the scope, are unaffected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ambit_api::WORKLOAD_ADDRESS_TYPE_URL;
use ambit_api::envoy::config::core::v3::Node;
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use ambit_api::prost_types::value::Kind;
use ambit_xds::delta::XdsScope;

use super::resources::{Entry, EntryKind, Resources};

/// The subscription key that stands for every resource of a type.
pub const WILDCARD: &str = "*";

/// The most resources one response carries: an initial sync of a large mesh goes out in several responses, so no
/// single message (and no encode buffer, which keeps the capacity of the largest message it held) is the size of
/// the whole mesh.
pub const MAX_RESOURCES_PER_RESPONSE: usize = 1000;

/// How many unanswered responses a subscription remembers; older ones are taken as applied.
const MAX_IN_FLIGHT: usize = 32;

/// Every subscription of one stream, and its nonce counter (shared by the types).
#[derive(Debug, Default)]
pub struct StreamState {
    node_id: Option<String>,
    /// `None` until the driver decides it from the first `Node` (see [`scope_of`]).
    scope: Option<Scope>,
    subscriptions: BTreeMap<String, Subscription>,
    next_nonce: u64,
}

/// What a stream's `istio.workload.Address` wildcard covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every address (istiod's behaviour).
    #[default]
    All,
    /// The workloads on this node and every service.
    Node(String),
}

/// What a request asked of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What the request said about an earlier response, if it named one.
    pub reply: Option<Reply>,
    /// Answer now: the type's first request, or newly subscribed names.
    pub respond: bool,
}

/// A client's answer to a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Applied: its versions are confirmed.
    Ack,
    /// Refused, with the client's reason: its versions are forgotten.
    Nack { reason: String },
    /// A nonce this stream never sent or already saw answered (for example from before a reconnect).
    Stale,
}

/// One type URL of a stream: the subscription and what the client holds.
#[derive(Debug)]
pub struct Subscription {
    type_url: String,
    started: bool,
    wildcard: bool,
    /// The node whose workloads the wildcard covers; `None`: every resource of the type.
    node_scope: Option<String>,
    /// Names and aliases subscribed explicitly.
    keys: BTreeSet<String>,
    /// Keys subscribed since the last response: answered even when the client holds them.
    fresh: BTreeSet<String>,
    /// What the client confirmed (or reported holding when it reconnected).
    acked: BTreeMap<Arc<str>, Held>,
    /// Responses not answered yet, oldest first: their nonce and what they changed.
    in_flight: Vec<(String, Changes)>,
    /// `acked` with `in_flight` applied: what the client holds once it applied everything sent.
    sent: BTreeMap<Arc<str>, Held>,
    must_respond: bool,
}

/// A resource as the client holds it: the entry that was sent (shared with the snapshot, so a stream costs a
/// pointer per resource, not a copy of its name, version and aliases), or only the version a reconnecting client
/// reported.
#[derive(Clone, Debug)]
enum Held {
    Sent(Arc<Entry>),
    Reported(Arc<str>),
}

/// What one response changed, by resource name (`None`: removed).
type Changes = BTreeMap<Arc<str>, Option<Held>>;

// === impl StreamState ===

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The xDS node id the client sent (`ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`), once it sent one.
    pub fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    /// The scope decided for the stream, once decided.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// Fixes the stream's scope, normally from its first `Node` ([`scope_of`]); the first decision stands. A type
    /// whose subscription starts before it is decided is served as [`Scope::All`].
    pub fn set_scope(&mut self, scope: Scope) {
        self.scope.get_or_insert(scope);
    }

    /// Records a request for its type URL (the first request of a type starts its subscription).
    pub fn on_request(&mut self, request: &DeltaDiscoveryRequest) -> Outcome {
        if let Some(node) = request.node.as_ref().filter(|node| !node.id.is_empty()) {
            self.node_id = Some(node.id.clone());
        }
        let type_url = &request.type_url;
        let scope = self.scope.as_ref();
        let subscription = (self.subscriptions.entry(type_url.clone())).or_insert_with(|| match scope {
            Some(Scope::Node(node)) if type_url == WORKLOAD_ADDRESS_TYPE_URL => Subscription::for_node(type_url, node),
            _ => Subscription::new(type_url),
        });
        subscription.on_request(request)
    }

    /// The response for `type_url` against `resources`, if there is anything to say; it is recorded as sent.
    pub fn respond(&mut self, type_url: &str, resources: &Resources) -> Option<DeltaDiscoveryResponse> {
        let subscription = self.subscriptions.get_mut(type_url)?;
        let (response, changes) = subscription.diff(resources, &self.next_nonce.to_string())?;
        self.next_nonce += 1;
        subscription.record(&response.nonce, changes);
        Some(response)
    }

    /// The responses of every subscribed type against a new snapshot (several per type when it has more than
    /// [`MAX_RESOURCES_PER_RESPONSE`] to send).
    pub fn respond_all(&mut self, resources: &Resources) -> Vec<DeltaDiscoveryResponse> {
        let types: Vec<String> = self.subscriptions.keys().cloned().collect();
        let mut responses = Vec::new();
        for type_url in &types {
            while let Some(response) = self.respond(type_url, resources) {
                responses.push(response);
            }
        }
        responses
    }
}

// === impl Subscription ===

impl Subscription {
    /// A type nothing was requested of yet.
    pub fn new(type_url: &str) -> Self {
        Self {
            type_url: type_url.to_string(),
            started: false,
            wildcard: false,
            node_scope: None,
            keys: BTreeSet::new(),
            fresh: BTreeSet::new(),
            acked: BTreeMap::new(),
            in_flight: Vec::new(),
            sent: BTreeMap::new(),
            must_respond: false,
        }
    }

    /// A type nothing was requested of yet, whose wildcard covers only `node`'s workloads and every service.
    pub fn for_node(type_url: &str, node: &str) -> Self {
        Self {
            node_scope: Some(node.to_string()),
            ..Self::new(type_url)
        }
    }

    /// Applies a request: its reply to an earlier response, then its subscription changes.
    pub fn on_request(&mut self, request: &DeltaDiscoveryRequest) -> Outcome {
        let reply = (!request.response_nonce.is_empty()).then(|| self.on_reply(request));
        let first = !self.started;
        if first {
            self.started = true;
            // An empty first subscribe list is the legacy wildcard.
            self.wildcard = request.resource_names_subscribe.is_empty();
            for (name, version) in &request.initial_resource_versions {
                let held = Held::Reported(version.as_str().into());
                self.acked.insert(name.as_str().into(), held);
            }
            self.sent = self.acked.clone();
        }
        for key in &request.resource_names_subscribe {
            if key == WILDCARD {
                self.wildcard = true;
            } else {
                self.keys.insert(key.clone());
                self.fresh.insert(key.clone());
            }
        }
        for key in &request.resource_names_unsubscribe {
            if key == WILDCARD {
                self.wildcard = false;
            } else {
                self.unsubscribe(key);
            }
        }
        // Under the node scope an unsubscribed resource may leave the set: the removal is sent at once.
        let removes = self.scoped() && !request.resource_names_unsubscribe.is_empty();
        let respond = first || !request.resource_names_subscribe.is_empty() || removes;
        self.must_respond |= respond;
        Outcome { reply, respond }
    }

    /// The response that brings the client from what it holds to `resources`, with what it changes, or `None` when
    /// there is nothing to send (a type's first request and a subscription are answered even then).
    fn diff(&self, resources: &Resources, nonce: &str) -> Option<(DeltaDiscoveryResponse, Changes)> {
        let type_url = self.type_url.as_str();
        let mut send: BTreeSet<&str> = BTreeSet::new();
        let mut removed: BTreeSet<&str> = BTreeSet::new();
        // Fresh keys are answered whatever the client holds; one that matches nothing is reported removed.
        for key in &self.fresh {
            match resources.resolve(type_url, key) {
                Some(name) => send.insert(name),
                None => removed.insert(key.as_str()),
            };
        }
        let subscribed = self.keys.iter().filter_map(|key| resources.resolve(type_url, key));
        let mut tracked: BTreeSet<&str> = subscribed.collect();
        let scoped = self.node_scope.as_deref().filter(|_| self.wildcard);
        if let Some(node) = scoped {
            let in_scope = |entry: &Entry| node_needs(node, &tracked, entry);
            let implicit: Vec<&str> = (resources.entries(type_url))
                .filter(|(_, entry)| in_scope(entry))
                .map(|(name, _)| name)
                .collect();
            tracked.extend(implicit);
        } else if self.wildcard {
            tracked.extend(resources.entries(type_url).map(|(name, _)| name));
        }
        for (name, held) in &self.sent {
            match resources.entry(type_url, name) {
                // Out of the node's set: the client drops it.
                Some(_) if scoped.is_some() && !tracked.contains(&**name) => _ = removed.insert(&**name),
                Some(entry) if entry.version != held.version() => _ = send.insert(&**name),
                Some(_) => {}
                None => _ = removed.insert(&**name),
            }
        }
        send.extend(tracked.into_iter().filter(|name| !self.sent.contains_key(*name)));
        // The rest goes in the next response: call again after recording this one.
        let send: Vec<&str> = send.into_iter().take(MAX_RESOURCES_PER_RESPONSE).collect();
        if send.is_empty() && removed.is_empty() && !self.must_respond {
            return None;
        }
        let mut changes = Changes::new();
        let sent = (send.into_iter())
            .filter_map(|name| {
                let (name, entry) = resources.named(type_url, name)?;
                changes.insert(name.clone(), Some(Held::Sent(entry.clone())));
                Some(Resource {
                    version: entry.version.clone(),
                    resource: Some(entry.resource.clone()),
                    name: name.to_string(),
                    aliases: entry.aliases.clone(),
                })
            })
            .collect();
        for name in &removed {
            let shared = self.sent.get_key_value(*name).map(|(name, _)| name.clone());
            changes.insert(shared.unwrap_or_else(|| (*name).into()), None);
        }
        let response = DeltaDiscoveryResponse {
            system_version_info: resources.generation().to_string(),
            resources: sent,
            type_url: type_url.to_string(),
            nonce: nonce.to_string(),
            removed_resources: removed.into_iter().map(str::to_string).collect(),
        };
        Some((response, changes))
    }

    /// Records the response `nonce` as sent with its `changes`: the client will hold its resources unless it
    /// refuses them.
    fn record(&mut self, nonce: &str, changes: Changes) {
        apply(&mut self.sent, &changes);
        self.in_flight.push((nonce.to_string(), changes));
        if self.in_flight.len() > MAX_IN_FLIGHT {
            let (_, oldest) = self.in_flight.remove(0);
            apply(&mut self.acked, &oldest);
        }
        self.fresh.clear();
        self.must_respond = false;
    }

    /// An ACK or NACK of the response `request.response_nonce`. Clients apply responses in order, so the responses
    /// sent before it, still unanswered, were applied.
    fn on_reply(&mut self, request: &DeltaDiscoveryRequest) -> Reply {
        let nonce = &request.response_nonce;
        let Some(position) = self.in_flight.iter().position(|(sent, _)| sent == nonce) else {
            return Reply::Stale;
        };
        let answered: Vec<_> = self.in_flight.drain(..=position).collect();
        let Some(((_, changes), earlier)) = answered.split_last() else {
            return Reply::Stale;
        };
        for (_, changes) in earlier {
            apply(&mut self.acked, changes);
        }
        match &request.error_detail {
            Some(status) => {
                self.sent = self.acked.clone();
                for (_, changes) in &self.in_flight {
                    apply(&mut self.sent, changes);
                }
                Reply::Nack {
                    reason: status.message.clone(),
                }
            }
            None => {
                apply(&mut self.acked, changes);
                Reply::Ack
            }
        }
    }

    /// A node-scoped wildcard: the set is the node's, and what leaves it is removed.
    fn scoped(&self) -> bool {
        self.wildcard && self.node_scope.is_some()
    }

    /// Drops `key`; unless the wildcard still covers it, the client discards what it got through it, so the server
    /// forgets it too (a later subscription sends it again). Under the node scope the next response removes what
    /// no longer belongs to the set.
    fn unsubscribe(&mut self, key: &str) {
        self.keys.remove(key);
        self.fresh.remove(key);
        if self.wildcard {
            return;
        }
        let matches = |name: &Arc<str>, held: &Held| &**name == key || held.aliases().iter().any(|alias| alias == key);
        self.acked.retain(|name, held| !matches(name, held));
        self.sent.retain(|name, held| !matches(name, held));
        for (_, changes) in &mut self.in_flight {
            changes.retain(|name, held| &**name != key && !held.as_ref().is_some_and(|held| matches(name, held)));
        }
    }
}

/// The stream's scope as its `Node` declares it: [`XdsScope`] from the metadata (`AMBIT_XDS_SCOPE`), and for the
/// node scope the node from `NODE_NAME`. An invalid declaration is an error naming the field, for the driver to log.
pub fn scope_of(node: &Node) -> Result<Scope, String> {
    match XdsScope::of(node)? {
        XdsScope::All => Ok(Scope::All),
        XdsScope::Node => {
            let field = node.metadata.as_ref().and_then(|m| m.fields.get("NODE_NAME"));
            match field.map(|value| &value.kind) {
                Some(Some(Kind::StringValue(name))) if !name.is_empty() => Ok(Scope::Node(name.clone())),
                _ => Err("node.metadata.NODE_NAME: the node scope needs the node's name".to_string()),
            }
        }
    }
}

/// Whether a node-scoped stream of `node` gets `entry` without naming it: a workload of the node, any service, or
/// an endpoint of a service in `subscribed` (the resolved names the stream subscribed to).
fn node_needs(node: &str, subscribed: &BTreeSet<&str>, entry: &Entry) -> bool {
    match entry.kind {
        EntryKind::Service => true,
        EntryKind::Policy | EntryKind::Config => false,
        EntryKind::Workload => {
            entry.node.as_deref() == Some(node) || entry.services.iter().any(|s| subscribed.contains(s.as_str()))
        }
    }
}

// === impl Held ===

impl Held {
    fn version(&self) -> &str {
        match self {
            Held::Sent(entry) => &entry.version,
            Held::Reported(version) => version,
        }
    }

    /// The aliases the client knows the resource by (none for a version it reported: it reports names only).
    fn aliases(&self) -> &[String] {
        match self {
            Held::Sent(entry) => &entry.aliases,
            Held::Reported(_) => &[],
        }
    }
}

/// Applies one response's changes to what a client holds.
fn apply(held: &mut BTreeMap<Arc<str>, Held>, changes: &Changes) {
    for (name, change) in changes {
        match change {
            Some(resource) => _ = held.insert(name.clone(), resource.clone()),
            None => _ = held.remove(name),
        }
    }
}

#[cfg(test)]
mod tests;
