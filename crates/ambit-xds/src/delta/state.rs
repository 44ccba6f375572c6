//! The sans-IO core of one type URL on a delta xDS stream: which names the node is subscribed to, which resource
//! versions it accepted, and the request to send for each event (stream start, response, subscription change).

use std::collections::{BTreeMap, BTreeSet};

use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use ambit_api::google::rpc::Status;

use super::{Handler, Rejection, Update};

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// One type URL's subscription and accepted resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaState {
    type_url: String,
    subscription: Subscription,
    /// Resource name → the version of it the handler applied.
    accepted: BTreeMap<String, String>,
    /// No response of this type has arrived yet on the current stream.
    awaiting_first: bool,
}

/// What the node asks the control plane for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Every resource of the type (an empty subscribe list on the stream's first request).
    Wildcard,
    /// Only these names (on-demand lookups: resource names or aliases). Empty subscribes to nothing.
    Names(BTreeSet<String>),
    /// What the control plane deems this node needs (its workloads and every service, for a stream whose node
    /// metadata asks for the node scope) plus these names, looked up on demand. The first request is a wildcard;
    /// whatever the control plane sends is kept, named or not, and it sends the removals when the node's set
    /// changes.
    NodeScoped(BTreeSet<String>),
}

/// What to answer a response with.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The ACK or NACK to send: `response_nonce` set, and `error_detail` for a NACK.
    pub request: DeltaDiscoveryRequest,
    pub verdict: Verdict,
    /// The response was the first of its type on the stream.
    pub initial: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Applied; its versions are recorded.
    Ack,
    /// Refused as a whole, for this reason (also sent as `error_detail.message`); nothing was recorded.
    Nack(String),
}

// === impl DeltaState ===

impl DeltaState {
    /// A wildcard subscription: the control plane sends every resource of the type.
    pub fn wildcard(type_url: impl Into<String>) -> Self {
        Self::new(type_url.into(), Subscription::Wildcard)
    }

    /// An on-demand subscription, starting with no names: resources come only once [`subscribe`](Self::subscribe)d.
    pub fn on_demand(type_url: impl Into<String>) -> Self {
        Self::new(type_url.into(), Subscription::Names(BTreeSet::new()))
    }

    /// A node-scoped subscription: the control plane's set for this node, plus the names
    /// [`subscribe`](Self::subscribe)d later. Only meaningful with the node metadata that asks for the node scope
    /// (see [`XdsClient::with_scope`](super::XdsClient::with_scope)); without it the control plane treats the
    /// stream as a wildcard.
    pub fn node_scoped(type_url: impl Into<String>) -> Self {
        Self::new(type_url.into(), Subscription::NodeScoped(BTreeSet::new()))
    }

    fn new(type_url: String, subscription: Subscription) -> Self {
        Self {
            type_url,
            subscription,
            accepted: BTreeMap::new(),
            awaiting_first: true,
        }
    }

    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// Resource name → accepted version: what the handler holds, as far as the protocol knows.
    pub fn accepted(&self) -> &BTreeMap<String, String> {
        &self.accepted
    }

    /// The first request of this type on a new stream: the subscription, and the versions already held
    /// (`initial_resource_versions`) so that after a reconnect the control plane sends only what changed. The caller
    /// sets `node`. A wildcard subscribes with an empty list; an on-demand subscription without names lists `*` in
    /// both subscribe and unsubscribe, the way to subscribe to nothing (as ztunnel does). A node-scoped one is a
    /// wildcard, with `*` first when it also names resources (an explicit wildcard, so the names do not replace it).
    pub fn initial_request(&mut self) -> DeltaDiscoveryRequest {
        self.awaiting_first = true;
        let (subscribe, unsubscribe) = match &self.subscription {
            Subscription::Wildcard => (Vec::new(), Vec::new()),
            Subscription::Names(names) if names.is_empty() => (vec!["*".to_string()], vec!["*".to_string()]),
            Subscription::Names(names) => (names.iter().cloned().collect(), Vec::new()),
            Subscription::NodeScoped(names) if names.is_empty() => (Vec::new(), Vec::new()),
            Subscription::NodeScoped(names) => {
                let subscribe = std::iter::once("*".to_string()).chain(names.iter().cloned()).collect();
                (subscribe, Vec::new())
            }
        };
        DeltaDiscoveryRequest {
            type_url: self.type_url.clone(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            initial_resource_versions: self.accepted.clone(),
            ..Default::default()
        }
    }

    /// Adds names to an on-demand or node-scoped subscription; the request to send if any is new. A wildcard
    /// already receives everything: nothing changes and nothing is sent. Names stay subscribed across reconnects.
    pub fn subscribe(&mut self, names: impl IntoIterator<Item = String>) -> Option<DeltaDiscoveryRequest> {
        let (Subscription::Names(subscribed) | Subscription::NodeScoped(subscribed)) = &mut self.subscription else {
            return None;
        };
        let new: Vec<String> = names.into_iter().filter(|n| subscribed.insert(n.clone())).collect();
        (!new.is_empty()).then(|| DeltaDiscoveryRequest {
            type_url: self.type_url.clone(),
            resource_names_subscribe: new,
            ..Default::default()
        })
    }

    /// Removes names from an on-demand subscription and forgets the versions accepted under them; the request to
    /// send if any was subscribed. The control plane sends no removal for them: dropping what the handler holds
    /// under those names is the caller's business. A wildcard is left unchanged. A node-scoped subscription keeps
    /// its versions: the control plane removes what falls out of the node's set, and the removal says so.
    pub fn unsubscribe(&mut self, names: impl IntoIterator<Item = String>) -> Option<DeltaDiscoveryRequest> {
        let (subscribed, forget) = match &mut self.subscription {
            Subscription::Wildcard => return None,
            Subscription::Names(subscribed) => (subscribed, true),
            Subscription::NodeScoped(subscribed) => (subscribed, false),
        };
        let gone: Vec<String> = names.into_iter().filter(|n| subscribed.remove(n)).collect();
        for name in gone.iter().filter(|_| forget) {
            self.accepted.remove(name);
        }
        (!gone.is_empty()).then(|| DeltaDiscoveryRequest {
            type_url: self.type_url.clone(),
            resource_names_unsubscribe: gone,
            ..Default::default()
        })
    }

    /// Checks a response of this type, hands it to `handler` and records the versions it applied. A response the
    /// protocol checks refuse (no name, no body, another type, a name twice) is NACKed without calling the handler.
    pub fn handle_response(&mut self, response: DeltaDiscoveryResponse, handler: &mut dyn Handler) -> Reply {
        let initial = std::mem::replace(&mut self.awaiting_first, false);
        let nonce = response.nonce.clone();
        let result = match self.check(&response) {
            Err(rejections) => Err(rejections),
            Ok(()) => {
                let versions: Vec<(String, String)> = response
                    .resources
                    .iter()
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect();
                let removed = response.removed_resources.clone();
                let update = Update {
                    added: response.resources,
                    removed: response.removed_resources,
                    initial,
                };
                handler.apply(update).map(|()| (versions, removed))
            }
        };
        let verdict = match result {
            Ok((versions, removed)) => {
                for name in removed {
                    self.accepted.remove(&name);
                }
                self.accepted.extend(versions);
                Verdict::Ack
            }
            Err(rejections) => Verdict::Nack(nack_message(&rejections)),
        };
        Reply {
            request: answer(&self.type_url, nonce, &verdict),
            verdict,
            initial,
        }
    }

    /// The protocol's own checks, before the handler sees anything.
    fn check(&self, response: &DeltaDiscoveryResponse) -> Result<(), Vec<Rejection>> {
        let mut rejections = Vec::new();
        let mut names = BTreeSet::new();
        for resource in &response.resources {
            let reason = match &resource.resource {
                _ if resource.name.is_empty() => Some("resource without a name".to_string()),
                _ if !names.insert(resource.name.as_str()) => Some("sent twice in one response".to_string()),
                None => Some("resource without a body".to_string()),
                Some(any) if any.type_url != self.type_url => Some(format!("body of type {}", any.type_url)),
                Some(_) => None,
            };
            rejections.extend(reason.map(|reason| Rejection::new(resource.name.clone(), reason)));
        }
        for name in &response.removed_resources {
            if names.contains(name.as_str()) {
                rejections.push(Rejection::new(name.clone(), "both added and removed"));
            }
        }
        if rejections.is_empty() { Ok(()) } else { Err(rejections) }
    }
}

/// The NACK for a response of a type URL nobody handles.
pub fn reject_unknown_type(response: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    let reason = format!("no handler for type URL {:?}", response.type_url);
    answer(&response.type_url, response.nonce.clone(), &Verdict::Nack(reason))
}

fn answer(type_url: &str, nonce: String, verdict: &Verdict) -> DeltaDiscoveryRequest {
    let error_detail = match verdict {
        Verdict::Ack => None,
        Verdict::Nack(reason) => Some(Status {
            code: INVALID_ARGUMENT,
            message: reason.clone(),
            details: Vec::new(),
        }),
    };
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        response_nonce: nonce,
        error_detail,
        ..Default::default()
    }
}

fn nack_message(rejections: &[Rejection]) -> String {
    if rejections.is_empty() {
        return "rejected without a reason".to_string();
    }
    let reasons: Vec<String> = rejections.iter().map(Rejection::to_string).collect();
    reasons.join("; ")
}

#[cfg(test)]
mod tests;
