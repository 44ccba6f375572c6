//! The stream protocol as scripts: a client's requests, the store's publications, and the responses expected.

use ambit_api::WORKLOAD_ADDRESS_TYPE_URL;
use ambit_api::envoy::config::core::v3::Node;
use ambit_api::google::rpc::Status;
use ambit_api::istio::workload as pb;

use super::*;
use crate::xds::resources::ResourceStore;

/// Workloads as (uid, last octet of the address 10.0.0.x); changing the octet changes the version.
type Workloads = &'static [(&'static str, u8)];

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The store publishes exactly these workloads.
    Publish(Workloads),
    /// The first request: a wildcard.
    Wildcard,
    /// The first request: `*` subscribed and unsubscribed (on-demand).
    OnDemand,
    /// The first request of a reconnecting wildcard client that holds these workloads (`initial_resource_versions`).
    Reconnect(Workloads),
    Subscribe(&'static [&'static str]),
    Unsubscribe(&'static [&'static str]),
    /// Acknowledges the last response taken by `Expect`.
    Ack,
    /// Refuses the last response taken by `Expect`.
    Nack,
    /// The next response: the names sent, then the names removed.
    Expect(&'static [&'static str], &'static [&'static str]),
    /// No response is pending.
    Quiet,
}

use Step::*;

fn workload(uid: &str, octet: u8) -> pb::Workload {
    pb::Workload {
        uid: uid.to_string(),
        namespace: "demo".to_string(),
        addresses: vec![vec![10, 0, 0, octet]],
        ..pb::Workload::default()
    }
}

fn resources(workloads: Workloads) -> Resources {
    let workloads = workloads.iter().map(|(uid, octet)| workload(uid, *octet)).collect();
    Resources::from_protos(workloads, Vec::new(), Vec::new())
}

fn version(uid: &str, octet: u8) -> String {
    let resources = Resources::from_protos(vec![workload(uid, octet)], Vec::new(), Vec::new());
    resources.entry(WORKLOAD_ADDRESS_TYPE_URL, uid).unwrap().version.clone()
}

fn request() -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: WORKLOAD_ADDRESS_TYPE_URL.to_string(),
        ..DeltaDiscoveryRequest::default()
    }
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// Plays `steps` against one stream; panics naming the case and the step that went wrong.
fn play(case: &str, steps: &[Step]) {
    let store = ResourceStore::new();
    let mut state = StreamState::new();
    let mut pending: Vec<DeltaDiscoveryResponse> = Vec::new();
    let mut last_nonce = String::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{case}, step {i} {step:?}");
        let client = match *step {
            Publish(workloads) => {
                store.publish(resources(workloads));
                pending.extend(state.respond_all(&store.current()));
                None
            }
            Wildcard => Some(request()),
            OnDemand => Some(DeltaDiscoveryRequest {
                resource_names_subscribe: names(&[WILDCARD]),
                resource_names_unsubscribe: names(&[WILDCARD]),
                ..request()
            }),
            Reconnect(held) => Some(DeltaDiscoveryRequest {
                initial_resource_versions: held
                    .iter()
                    .map(|(uid, o)| (uid.to_string(), version(uid, *o)))
                    .collect(),
                ..request()
            }),
            Subscribe(keys) => Some(DeltaDiscoveryRequest {
                resource_names_subscribe: names(keys),
                ..request()
            }),
            Unsubscribe(keys) => Some(DeltaDiscoveryRequest {
                resource_names_unsubscribe: names(keys),
                ..request()
            }),
            Ack | Nack => Some(DeltaDiscoveryRequest {
                response_nonce: last_nonce.clone(),
                error_detail: matches!(step, Nack).then(|| Status {
                    code: 3,
                    message: "refused".to_string(),
                    details: Vec::new(),
                }),
                ..request()
            }),
            Expect(sent, removed) => {
                assert!(!pending.is_empty(), "{at}: no response");
                let response = pending.remove(0);
                let got: Vec<&str> = response.resources.iter().map(|r| r.name.as_str()).collect();
                assert_eq!(
                    (got.as_slice(), response.removed_resources.as_slice()),
                    (sent, &names(removed)[..]),
                    "{at}"
                );
                last_nonce = response.nonce;
                None
            }
            Quiet => {
                assert!(pending.is_empty(), "{at}: unexpected {pending:?}");
                None
            }
        };
        if let Some(request) = client {
            let outcome = state.on_request(&request);
            if outcome.respond {
                pending.extend(state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()));
            }
        }
    }
}

#[test]
fn scripts() {
    let cases: &[(&str, &[Step])] = &[
        (
            "the first wildcard request gets everything",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                Wildcard,
                Expect(&["a", "b"], &[]),
                Ack,
                Quiet,
            ],
        ),
        (
            "an empty store still answers the first request",
            &[Wildcard, Expect(&[], &[]), Quiet],
        ),
        (
            "after an ACK a change sends only the change",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                Wildcard,
                Expect(&["a", "b"], &[]),
                Ack,
                Publish(&[("a", 1), ("b", 3), ("c", 4)]),
                Expect(&["b", "c"], &[]),
                Ack,
                Publish(&[("a", 1), ("b", 3), ("c", 4)]),
                Quiet,
            ],
        ),
        (
            "what is in flight is not sent twice",
            &[
                Publish(&[("a", 1)]),
                Wildcard,
                Expect(&["a"], &[]),
                Publish(&[("a", 1), ("b", 2)]),
                Expect(&["b"], &[]),
            ],
        ),
        (
            "a removal",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                Wildcard,
                Expect(&["a", "b"], &[]),
                Ack,
                Publish(&[("a", 1)]),
                Expect(&[], &["b"]),
                Ack,
                Publish(&[("a", 1)]),
                Quiet,
            ],
        ),
        (
            "a NACK keeps the last good versions, so the next change sends the refused one again",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                Wildcard,
                Expect(&["a", "b"], &[]),
                Ack,
                Publish(&[("a", 5), ("b", 2)]),
                Expect(&["a"], &[]),
                Nack,
                Quiet,
                Publish(&[("a", 5), ("b", 6)]),
                Expect(&["a", "b"], &[]),
            ],
        ),
        (
            "a NACKed removal is sent again",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                Wildcard,
                Expect(&["a", "b"], &[]),
                Ack,
                Publish(&[("a", 1)]),
                Expect(&[], &["b"]),
                Nack,
                Publish(&[("a", 3)]),
                Expect(&["a"], &["b"]),
            ],
        ),
        (
            "a reconnect with initial versions gets only the differences",
            &[
                Publish(&[("a", 1), ("b", 2), ("c", 3)]),
                Reconnect(&[("a", 1), ("b", 9), ("gone", 4)]),
                Expect(&["b", "c"], &["gone"]),
            ],
        ),
        (
            "on demand by name",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                OnDemand,
                Expect(&[], &[]),
                Subscribe(&["a"]),
                Expect(&["a"], &[]),
                Ack,
                Publish(&[("a", 1), ("b", 7)]),
                Quiet,
                Publish(&[("a", 5), ("b", 7)]),
                Expect(&["a"], &[]),
                Ack,
                Publish(&[("b", 7)]),
                Expect(&[], &["a"]),
            ],
        ),
        (
            "on demand by alias, and a key that matches nothing",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                OnDemand,
                Expect(&[], &[]),
                Subscribe(&["/10.0.0.2"]),
                Expect(&["b"], &[]),
                Ack,
                Subscribe(&["/10.0.0.9"]),
                Expect(&[], &["/10.0.0.9"]),
                Ack,
                Publish(&[("a", 1), ("b", 2), ("c", 3)]),
                Quiet,
            ],
        ),
        (
            "unsubscribe: no more updates, and a new subscription sends it again",
            &[
                Publish(&[("a", 1), ("b", 2)]),
                OnDemand,
                Expect(&[], &[]),
                Subscribe(&["a", "/10.0.0.2"]),
                Expect(&["a", "b"], &[]),
                Ack,
                Unsubscribe(&["/10.0.0.2", "a"]),
                Quiet,
                Publish(&[("a", 3), ("b", 4)]),
                Quiet,
                Subscribe(&["/10.0.0.4"]),
                Expect(&["b"], &[]),
                Ack,
                Publish(&[("b", 4)]),
                Quiet,
            ],
        ),
        (
            "subscribing to a name the client holds answers it again",
            &[
                Publish(&[("a", 1)]),
                Wildcard,
                Expect(&["a"], &[]),
                Ack,
                Subscribe(&["a"]),
                Expect(&["a"], &[]),
            ],
        ),
    ];
    for (case, steps) in cases {
        play(case, steps);
    }
}

#[test]
fn responses_carry_aliases_nonces_and_the_generation() {
    let store = ResourceStore::new();
    store.publish(resources(&[("a", 1)]));
    let generation = store.publish(resources(&[("a", 1), ("b", 2)]));
    let mut state = StreamState::new();
    let first = DeltaDiscoveryRequest {
        node: Some(Node {
            id: "ztunnel~10.0.0.1~ztunnel-x.istio-system~istio-system.svc.cluster.local".to_string(),
            ..Node::default()
        }),
        resource_names_subscribe: names(&[WILDCARD]),
        resource_names_unsubscribe: names(&[WILDCARD]),
        ..request()
    };
    assert_eq!(
        state.on_request(&first),
        Outcome {
            reply: None,
            respond: true
        }
    );
    assert_eq!(state.node_id(), first.node.as_ref().map(|node| node.id.as_str()));
    let empty = state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()).unwrap();
    assert_eq!(
        (empty.nonce.as_str(), empty.system_version_info),
        ("0", generation.to_string())
    );
    assert_eq!(empty.type_url, WORKLOAD_ADDRESS_TYPE_URL);

    let by_alias = DeltaDiscoveryRequest {
        resource_names_subscribe: names(&["/10.0.0.2"]),
        response_nonce: "0".to_string(),
        ..request()
    };
    assert_eq!(
        state.on_request(&by_alias),
        Outcome {
            reply: Some(Reply::Ack),
            respond: true
        }
    );
    let response = state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()).unwrap();
    assert_eq!(response.nonce, "1");
    let [resource] = response.resources.as_slice() else {
        panic!("{response:?}")
    };
    assert_eq!(
        (resource.name.as_str(), resource.aliases.as_slice()),
        ("b", &names(&["/10.0.0.2"])[..])
    );
    assert_eq!(resource.version, version("b", 2));
    assert_eq!(
        resource.resource.as_ref(),
        Some(&store.current().entry(WORKLOAD_ADDRESS_TYPE_URL, "b").unwrap().resource)
    );
    assert!(
        state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()).is_none(),
        "nothing more to say"
    );
}

#[test]
fn replies_name_nacks_with_their_reason_and_ignore_unknown_nonces() {
    let store = ResourceStore::new();
    store.publish(resources(&[("a", 1)]));
    let mut state = StreamState::new();
    assert!(state.on_request(&request()).respond);
    let sent = state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()).unwrap();
    let reply = |nonce: &str, error: Option<&str>| DeltaDiscoveryRequest {
        response_nonce: nonce.to_string(),
        error_detail: error.map(|message| Status {
            code: 3,
            message: message.to_string(),
            details: Vec::new(),
        }),
        ..request()
    };
    let stale = state.on_request(&reply("from-another-stream", None));
    assert_eq!(
        stale,
        Outcome {
            reply: Some(Reply::Stale),
            respond: false
        }
    );
    let nack = state.on_request(&reply(&sent.nonce, Some("bad address")));
    let reason = "bad address".to_string();
    assert_eq!(
        nack,
        Outcome {
            reply: Some(Reply::Nack { reason }),
            respond: false
        }
    );
    let again = state.on_request(&reply(&sent.nonce, None));
    assert_eq!(again.reply, Some(Reply::Stale), "a nonce is answered once");
}
