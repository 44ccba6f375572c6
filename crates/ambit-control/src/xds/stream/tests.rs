//! The stream protocol as scripts: a client's requests, the store's publications, and the responses expected.

use ambit_api::WORKLOAD_ADDRESS_TYPE_URL;
use ambit_api::envoy::config::core::v3::Node;
use ambit_api::google::rpc::Status;
use ambit_api::istio::workload as pb;

use super::*;
use crate::xds::resources::ResourceStore;

/// Workloads as (uid, last octet of the address 10.0.0.x); changing the octet changes the version.
type Workloads = &'static [(&'static str, u8)];

/// Pods as (uid, last octet, node, the hostnames of the services in `demo` it is an endpoint of).
type Pods = &'static [(&'static str, u8, &'static str, &'static [&'static str])];

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The store publishes exactly these workloads.
    Publish(Workloads),
    /// The store publishes exactly these pods, and services in `demo` with these hostnames (named `demo/<host>`).
    Mesh(Pods, &'static [&'static str]),
    /// The first request of a stream scoped to this node: a wildcard.
    Scoped(&'static str),
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

fn mesh(pods: Pods, services: &[&str]) -> Resources {
    let workloads = (pods.iter())
        .map(|(uid, octet, node, services)| pb::Workload {
            node: node.to_string(),
            services: (services.iter())
                .map(|host| (format!("demo/{host}"), pb::PortList::default()))
                .collect(),
            ..workload(uid, *octet)
        })
        .collect();
    let services = (services.iter())
        .map(|host| pb::Service {
            name: host.to_string(),
            namespace: "demo".to_string(),
            hostname: host.to_string(),
            ..pb::Service::default()
        })
        .collect();
    Resources::from_protos(workloads, services, Vec::new())
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
            Mesh(pods, services) => {
                store.publish(mesh(pods, services));
                pending.extend(state.respond_all(&store.current()));
                None
            }
            Scoped(node) => {
                state.set_scope(Scope::Node(node.to_string()));
                Some(request())
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

/// The node scope: the node's workloads and every service unasked, lookups by name or alias on top, a subscribed
/// service's endpoints, and membership that follows each snapshot.
#[test]
fn node_scoped_scripts() {
    const ECHO: &str = "demo/echo.demo";
    const OTHER: &str = "demo/other.demo";
    let cases: &[(&str, &[Step])] = &[
        (
            "only the node's workloads, and every service",
            &[
                Mesh(
                    &[
                        ("a", 1, "node-1", &[]),
                        ("b", 2, "node-2", &[]),
                        ("c", 3, "node-1", &[]),
                    ],
                    &["echo.demo", "other.demo"],
                ),
                Scoped("node-1"),
                Expect(&["a", "c", ECHO, OTHER], &[]),
                Ack,
                // A change elsewhere is not this node's business.
                Mesh(
                    &[
                        ("a", 1, "node-1", &[]),
                        ("b", 9, "node-2", &[]),
                        ("c", 3, "node-1", &[]),
                    ],
                    &["echo.demo", "other.demo"],
                ),
                Quiet,
            ],
        ),
        (
            "an alias brings a remote workload, which is then kept up to date",
            &[
                Mesh(&[("a", 1, "node-1", &[]), ("b", 2, "node-2", &[])], &[]),
                Scoped("node-1"),
                Expect(&["a"], &[]),
                Ack,
                Subscribe(&["/10.0.0.2"]),
                Expect(&["b"], &[]),
                Ack,
                Mesh(&[("a", 1, "node-1", &[]), ("b", 2, "node-3", &[])], &[]),
                Expect(&["b"], &[]),
                Ack,
                Subscribe(&["/10.0.0.7"]),
                Expect(&[], &["/10.0.0.7"]),
            ],
        ),
        (
            "a subscribed service brings its endpoints, as they come and go",
            &[
                Mesh(
                    &[
                        ("a", 1, "node-1", &["echo.demo"]),
                        ("b", 2, "node-2", &["echo.demo"]),
                        ("d", 4, "node-2", &["other.demo"]),
                    ],
                    &["echo.demo", "other.demo"],
                ),
                Scoped("node-1"),
                Expect(&["a", ECHO, OTHER], &[]),
                Ack,
                Subscribe(&[ECHO]),
                Expect(&["b", ECHO], &[]),
                Ack,
                Mesh(
                    &[
                        ("a", 1, "node-1", &["echo.demo"]),
                        ("b", 2, "node-2", &["echo.demo"]),
                        ("d", 4, "node-2", &["other.demo"]),
                        ("e", 5, "node-3", &["echo.demo"]),
                    ],
                    &["echo.demo", "other.demo"],
                ),
                Expect(&["e"], &[]),
                Ack,
                // b is no longer an endpoint of echo: it leaves the node's set.
                Mesh(
                    &[
                        ("a", 1, "node-1", &["echo.demo"]),
                        ("b", 2, "node-2", &[]),
                        ("d", 4, "node-2", &["other.demo"]),
                        ("e", 5, "node-3", &["echo.demo"]),
                    ],
                    &["echo.demo", "other.demo"],
                ),
                Expect(&[], &["b"]),
            ],
        ),
        (
            "a pod moving into the node is sent, moving out is removed, deleted is removed",
            &[
                Mesh(&[("a", 1, "node-2", &[]), ("b", 2, "node-1", &[])], &[]),
                Scoped("node-1"),
                Expect(&["b"], &[]),
                Ack,
                Mesh(&[("a", 1, "node-1", &[]), ("b", 2, "node-1", &[])], &[]),
                Expect(&["a"], &[]),
                Ack,
                Mesh(&[("a", 1, "node-2", &[]), ("b", 2, "node-1", &[])], &[]),
                Expect(&[], &["a"]),
                Ack,
                Mesh(&[("a", 1, "node-2", &[])], &[]),
                Expect(&[], &["b"]),
                Ack,
                Mesh(&[("a", 1, "node-2", &[])], &[]),
                Quiet,
            ],
        ),
        (
            "unsubscribing drops the looked-up workload at once, unless the node needs it",
            &[
                Mesh(&[("a", 1, "node-1", &[]), ("b", 2, "node-2", &[])], &[]),
                Scoped("node-1"),
                Expect(&["a"], &[]),
                Ack,
                Subscribe(&["b", "a"]),
                Expect(&["a", "b"], &[]),
                Ack,
                Unsubscribe(&["b", "a"]),
                Expect(&[], &["b"]),
            ],
        ),
        (
            "a non-scoped stream of the same mesh gets everything",
            &[
                Mesh(&[("a", 1, "node-1", &[]), ("b", 2, "node-2", &[])], &["echo.demo"]),
                Wildcard,
                Expect(&["a", "b", ECHO], &[]),
            ],
        ),
    ];
    for (case, steps) in cases {
        play(case, steps);
    }
}

#[test]
fn a_reconnecting_scoped_client_loses_what_its_node_no_longer_needs() {
    let store = ResourceStore::new();
    store.publish(mesh(&[("a", 1, "node-1", &[]), ("b", 2, "node-2", &[])], &[]));
    let mut state = StreamState::new();
    state.set_scope(Scope::Node("node-1".to_string()));
    state.set_scope(Scope::All);
    assert_eq!(
        state.scope(),
        Some(&Scope::Node("node-1".to_string())),
        "the first decision stands"
    );
    let held = |uid: &str| {
        let entry = store.current().entry(WORKLOAD_ADDRESS_TYPE_URL, uid).unwrap().clone();
        (uid.to_string(), entry.version.clone())
    };
    let reconnect = DeltaDiscoveryRequest {
        initial_resource_versions: [held("a"), held("b")].into(),
        ..request()
    };
    assert!(state.on_request(&reconnect).respond);
    let response = state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()).unwrap();
    assert!(response.resources.is_empty(), "a is held at its version: {response:?}");
    assert_eq!(response.removed_resources, ["b"]);
}

#[test]
fn policies_stay_wildcard_under_the_node_scope() {
    let store = ResourceStore::new();
    let policy = ambit_api::istio::security::Authorization {
        name: "allow".to_string(),
        namespace: "demo".to_string(),
        ..Default::default()
    };
    let workloads = vec![pb::Workload {
        node: "node-2".to_string(),
        ..workload("b", 2)
    }];
    store.publish(Resources::from_protos(workloads, Vec::new(), vec![policy]));
    let mut state = StreamState::new();
    state.set_scope(Scope::Node("node-1".to_string()));
    for type_url in [ambit_api::AUTHORIZATION_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL] {
        let first = DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            ..DeltaDiscoveryRequest::default()
        };
        assert!(state.on_request(&first).respond);
    }
    let policies = state
        .respond(ambit_api::AUTHORIZATION_TYPE_URL, &store.current())
        .unwrap();
    let names: Vec<&str> = policies.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["demo/allow"]);
    let addresses = state.respond(WORKLOAD_ADDRESS_TYPE_URL, &store.current()).unwrap();
    assert!(addresses.resources.is_empty(), "b is on node-2: {addresses:?}");
}

#[test]
fn scopes_come_from_the_node_metadata() {
    use ambit_api::prost_types::{Struct, Value};
    let node = |fields: &[(&str, &str)]| Node {
        id: "ztunnel~0.0.0.0~node-1.ambit-system~ambit-system.svc.cluster.local".to_string(),
        metadata: Some(Struct {
            fields: (fields.iter())
                .map(|(k, v)| {
                    let kind = Some(ambit_api::prost_types::value::Kind::StringValue(v.to_string()));
                    (k.to_string(), Value { kind })
                })
                .collect(),
        }),
        ..Node::default()
    };
    let node_1 = Scope::Node("node-1".to_string());
    // (case, metadata, scope or the field the error names)
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Result<Scope, &'static str>,
    );
    let cases: &[Case] = &[
        ("absent", &[("NODE_NAME", "node-1")], Ok(Scope::All)),
        (
            "all",
            &[("NODE_NAME", "node-1"), ("AMBIT_XDS_SCOPE", "all")],
            Ok(Scope::All),
        ),
        (
            "node",
            &[("NODE_NAME", "node-1"), ("AMBIT_XDS_SCOPE", "node")],
            Ok(node_1),
        ),
        ("node without a name", &[("AMBIT_XDS_SCOPE", "node")], Err("NODE_NAME")),
        (
            "node with an empty name",
            &[("NODE_NAME", ""), ("AMBIT_XDS_SCOPE", "node")],
            Err("NODE_NAME"),
        ),
        (
            "unknown",
            &[("NODE_NAME", "node-1"), ("AMBIT_XDS_SCOPE", "zone")],
            Err("AMBIT_XDS_SCOPE"),
        ),
    ];
    for (case, fields, expected) in cases {
        match (scope_of(&node(fields)), expected) {
            (Ok(got), Ok(expected)) => assert_eq!(&got, expected, "{case}"),
            (Err(got), Err(field)) => assert!(got.contains(field), "{case}: {got}"),
            (got, expected) => panic!("{case}: {got:?}, expected {expected:?}"),
        }
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

#[test]
fn a_large_answer_comes_in_bounded_responses() {
    let uids: Vec<String> = (0..2500).map(|i| format!("pod-{i}")).collect();
    let workloads = uids.iter().map(|uid| workload(uid, 1)).collect();
    let snapshot = Resources::from_protos(workloads, Vec::new(), Vec::new());
    let mut state = StreamState::new();
    assert!(state.on_request(&request()).respond);
    let responses = state.respond_all(&snapshot);
    let sizes: Vec<usize> = responses.iter().map(|r| r.resources.len()).collect();
    assert_eq!(sizes, [MAX_RESOURCES_PER_RESPONSE, MAX_RESOURCES_PER_RESPONSE, 500]);
    let mut sent: Vec<&str> = responses
        .iter()
        .flat_map(|r| &r.resources)
        .map(|r| r.name.as_str())
        .collect();
    sent.sort_unstable();
    sent.dedup();
    assert_eq!(sent.len(), 2500, "every resource exactly once");
    let nonces: std::collections::BTreeSet<&str> = responses.iter().map(|r| r.nonce.as_str()).collect();
    assert_eq!(nonces.len(), 3, "each response has its own nonce");
    assert!(state.respond_all(&snapshot).is_empty(), "nothing left to send");
}
