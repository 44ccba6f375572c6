use ambit_api::envoy::service::discovery::v3::Resource;
use ambit_api::prost_types::Any;

use super::*;

const TYPE: &str = "type.googleapis.com/istio.workload.Address";

/// A handler that answers every update with `result` and records what it was given.
struct Scripted {
    result: Result<(), Vec<Rejection>>,
    updates: Vec<Update>,
}

impl Scripted {
    fn accepting() -> Self {
        Self {
            result: Ok(()),
            updates: Vec::new(),
        }
    }

    fn rejecting(rejections: Vec<Rejection>) -> Self {
        Self {
            result: Err(rejections),
            updates: Vec::new(),
        }
    }
}

impl Handler for Scripted {
    fn type_url(&self) -> &'static str {
        TYPE
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>> {
        self.updates.push(update);
        self.result.clone()
    }
}

fn resource(name: &str, version: &str) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(Any {
            type_url: TYPE.into(),
            value: name.as_bytes().to_vec(),
        }),
        aliases: Vec::new(),
    }
}

fn response(nonce: &str, resources: Vec<Resource>, removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: TYPE.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: strings(removed),
        ..Default::default()
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// A state that accepted `pairs` (name, version).
fn holding(mut state: DeltaState, pairs: &[(&str, &str)]) -> DeltaState {
    let resources = pairs.iter().map(|(n, v)| resource(n, v)).collect();
    let reply = state.handle_response(response("seed", resources, &[]), &mut Scripted::accepting());
    assert_eq!(reply.verdict, Verdict::Ack);
    state
}

#[test]
fn initial_requests() {
    let mut on_demand_names = DeltaState::on_demand(TYPE);
    on_demand_names.subscribe(strings(&["ns/b", "ns/a"]));
    let mut scoped_names = DeltaState::node_scoped(TYPE);
    scoped_names.subscribe(strings(&["/10.0.0.2", "ns/a"]));
    // (case, state, subscribe, unsubscribe, initial versions)
    let cases = [
        (
            "wildcard, nothing held",
            DeltaState::wildcard(TYPE),
            vec![],
            vec![],
            vec![],
        ),
        (
            "wildcard after a reconnect",
            holding(DeltaState::wildcard(TYPE), &[("a", "1"), ("b", "7")]),
            vec![],
            vec![],
            vec![("a", "1"), ("b", "7")],
        ),
        (
            "on demand, no names",
            DeltaState::on_demand(TYPE),
            vec!["*"],
            vec!["*"],
            vec![],
        ),
        (
            "on demand, names",
            on_demand_names.clone(),
            vec!["ns/a", "ns/b"],
            vec![],
            vec![],
        ),
        (
            "on demand, names and versions",
            holding(on_demand_names, &[("uid-a", "3")]),
            vec!["ns/a", "ns/b"],
            vec![],
            vec![("uid-a", "3")],
        ),
        (
            "node scope, no names: a wildcard",
            DeltaState::node_scoped(TYPE),
            vec![],
            vec![],
            vec![],
        ),
        (
            "node scope after a reconnect: the explicit wildcard, then the names",
            holding(scoped_names, &[("uid-local", "1"), ("uid-b", "2")]),
            vec!["*", "/10.0.0.2", "ns/a"],
            vec![],
            vec![("uid-b", "2"), ("uid-local", "1")],
        ),
    ];
    for (case, mut state, subscribe, unsubscribe, initial) in cases {
        let request = state.initial_request();
        assert_eq!(request.type_url, TYPE, "{case}");
        assert_eq!(request.resource_names_subscribe, strings(&subscribe), "{case}");
        assert_eq!(request.resource_names_unsubscribe, strings(&unsubscribe), "{case}");
        assert_eq!(request.initial_resource_versions, versions(&initial), "{case}");
        assert!(request.node.is_none() && request.response_nonce.is_empty(), "{case}");
    }
}

#[test]
fn responses() {
    let no_body = Resource {
        resource: None,
        ..resource("c", "1")
    };
    let mut other_type = resource("c", "1");
    other_type.resource.as_mut().unwrap().type_url = "type.googleapis.com/other".into();
    let held = [("a", "1"), ("b", "1")];
    // (case, response, handler, verdict (None = ACK), accepted afterwards, handler called)
    let cases = [
        (
            "adds and changes",
            response("n", vec![resource("a", "2"), resource("c", "1")], &[]),
            Scripted::accepting(),
            None,
            vec![("a", "2"), ("b", "1"), ("c", "1")],
            true,
        ),
        (
            "removes, unknown names included",
            response("n", vec![], &["b", "zz"]),
            Scripted::accepting(),
            None,
            vec![("a", "1")],
            true,
        ),
        (
            "handler rejects",
            response("n", vec![resource("a", "2"), resource("c", "1")], &["b"]),
            Scripted::rejecting(vec![Rejection::new("a", "bad port"), Rejection::new("c", "no uid")]),
            Some("a: bad port; c: no uid"),
            vec![("a", "1"), ("b", "1")],
            true,
        ),
        (
            "handler rejects without a reason",
            response("n", vec![resource("c", "1")], &[]),
            Scripted::rejecting(vec![]),
            Some("rejected without a reason"),
            vec![("a", "1"), ("b", "1")],
            true,
        ),
        (
            "resource without a name",
            response("n", vec![resource("", "1")], &[]),
            Scripted::accepting(),
            Some(": resource without a name"),
            vec![("a", "1"), ("b", "1")],
            false,
        ),
        (
            "resource without a body",
            response("n", vec![resource("a", "2"), no_body], &[]),
            Scripted::accepting(),
            Some("c: resource without a body"),
            vec![("a", "1"), ("b", "1")],
            false,
        ),
        (
            "body of another type",
            response("n", vec![other_type], &[]),
            Scripted::accepting(),
            Some("c: body of type type.googleapis.com/other"),
            vec![("a", "1"), ("b", "1")],
            false,
        ),
        (
            "a name twice",
            response("n", vec![resource("c", "1"), resource("c", "2")], &[]),
            Scripted::accepting(),
            Some("c: sent twice in one response"),
            vec![("a", "1"), ("b", "1")],
            false,
        ),
        (
            "added and removed",
            response("n", vec![resource("c", "1")], &["c"]),
            Scripted::accepting(),
            Some("c: both added and removed"),
            vec![("a", "1"), ("b", "1")],
            false,
        ),
    ];
    for (case, response, mut handler, nack, accepted, called) in cases {
        let mut state = holding(DeltaState::wildcard(TYPE), &held);
        let reply = state.handle_response(response, &mut handler);
        let expected = nack.map_or(Verdict::Ack, |m| Verdict::Nack(m.to_string()));
        assert_eq!(reply.verdict, expected, "{case}");
        assert_eq!(reply.request.type_url, TYPE, "{case}");
        assert_eq!(reply.request.response_nonce, "n", "{case}");
        let detail = reply.request.error_detail.as_ref();
        assert_eq!(detail.map(|s| s.message.as_str()), nack, "{case}");
        assert_eq!(detail.map(|s| s.code), nack.map(|_| INVALID_ARGUMENT), "{case}");
        assert_eq!(state.accepted(), &versions(&accepted), "{case}");
        assert_eq!(handler.updates.len(), usize::from(called), "{case}");
    }
}

#[test]
fn the_handler_gets_the_response_as_sent() {
    let mut state = DeltaState::wildcard(TYPE);
    let mut handler = Scripted::accepting();
    state.initial_request();
    state.handle_response(
        response("1", vec![resource("a", "1"), resource("b", "1")], &["x"]),
        &mut handler,
    );
    let expected = Update {
        added: vec![resource("a", "1"), resource("b", "1")],
        removed: strings(&["x"]),
        initial: true,
    };
    assert_eq!(handler.updates, vec![expected]);
}

#[test]
fn initial_marks_the_first_response_of_each_stream() {
    let mut state = DeltaState::wildcard(TYPE);
    let mut handler = Scripted::accepting();
    let mut initial = Vec::new();
    for event in ["stream", "response", "response", "stream", "response", "response"] {
        if event == "stream" {
            state.initial_request();
        } else {
            initial.push(state.handle_response(response("n", vec![], &[]), &mut handler).initial);
        }
    }
    assert_eq!(initial, [true, false, true, false]);
    let seen: Vec<bool> = handler.updates.iter().map(|u| u.initial).collect();
    assert_eq!(seen, initial);
}

#[test]
fn a_rejected_first_response_still_ends_the_initial_one() {
    let mut state = DeltaState::wildcard(TYPE);
    state.initial_request();
    let reply = state.handle_response(response("1", vec![], &[]), &mut Scripted::rejecting(vec![]));
    assert!(reply.initial);
    let reply = state.handle_response(response("2", vec![], &[]), &mut Scripted::accepting());
    assert!(!reply.initial);
}

#[test]
fn subscriptions() {
    let mut wildcard = DeltaState::wildcard(TYPE);
    assert_eq!(wildcard.subscribe(strings(&["a"])), None, "a wildcard sends nothing");
    assert_eq!(wildcard.unsubscribe(strings(&["a"])), None);
    assert_eq!(wildcard.subscription(), &Subscription::Wildcard);

    let mut state = DeltaState::on_demand(TYPE);
    let request = state.subscribe(strings(&["10.0.0.1", "10.0.0.2"])).unwrap();
    assert_eq!(request.resource_names_subscribe, strings(&["10.0.0.1", "10.0.0.2"]));
    assert!(request.resource_names_unsubscribe.is_empty() && request.initial_resource_versions.is_empty());
    assert_eq!(state.subscribe(strings(&["10.0.0.1"])), None, "already subscribed");
    let request = state.subscribe(strings(&["10.0.0.1", "10.0.0.3"])).unwrap();
    assert_eq!(
        request.resource_names_subscribe,
        strings(&["10.0.0.3"]),
        "only the new name"
    );

    let mut state = holding(state, &[("10.0.0.1", "4"), ("10.0.0.2", "4")]);
    let request = state.unsubscribe(strings(&["10.0.0.1", "10.0.0.9"])).unwrap();
    assert_eq!(request.resource_names_unsubscribe, strings(&["10.0.0.1"]));
    assert!(request.resource_names_subscribe.is_empty());
    assert_eq!(state.unsubscribe(strings(&["10.0.0.1"])), None, "no longer subscribed");
    assert_eq!(
        state.accepted(),
        &versions(&[("10.0.0.2", "4")]),
        "the version is forgotten"
    );
    let names = ["10.0.0.2", "10.0.0.3"].map(String::from).into();
    assert_eq!(state.subscription(), &Subscription::Names(names));
}

/// The third mode: the control plane's node set arrives unasked and is kept; names are added on demand; an
/// unsubscribed name keeps its version (the control plane sends the removal if the node no longer needs it).
#[test]
fn node_scoped_subscriptions() {
    let mut state = DeltaState::node_scoped(TYPE);
    assert_eq!(state.subscription(), &Subscription::NodeScoped(BTreeSet::new()));
    let mut handler = Scripted::accepting();
    let local = state.handle_response(response("1", vec![resource("uid-local", "1")], &[]), &mut handler);
    assert_eq!(local.verdict, Verdict::Ack);
    assert!(local.initial);

    let request = state.subscribe(strings(&["/10.0.0.9"])).expect("a name is sent");
    assert_eq!(request.resource_names_subscribe, strings(&["/10.0.0.9"]));
    assert!(request.resource_names_unsubscribe.is_empty());
    assert_eq!(state.subscribe(strings(&["/10.0.0.9"])), None, "already subscribed");

    // The lookup's answer is named by its uid, not the alias asked for: still kept, as is the node's set.
    let answer = state.handle_response(response("2", vec![resource("uid-remote", "4")], &[]), &mut handler);
    assert_eq!(answer.verdict, Verdict::Ack);
    assert_eq!(state.accepted(), &versions(&[("uid-local", "1"), ("uid-remote", "4")]));

    let request = state.unsubscribe(strings(&["/10.0.0.9", "never"])).unwrap();
    assert_eq!(request.resource_names_unsubscribe, strings(&["/10.0.0.9"]));
    assert_eq!(
        state.accepted().len(),
        2,
        "versions stay until the control plane removes them"
    );
    let removal = state.handle_response(response("3", vec![], &["uid-remote"]), &mut handler);
    assert_eq!(removal.verdict, Verdict::Ack);
    assert_eq!(state.accepted(), &versions(&[("uid-local", "1")]));
    assert_eq!(state.subscription(), &Subscription::NodeScoped(BTreeSet::new()));
}

#[test]
fn unknown_types_are_nacked() {
    let response = DeltaDiscoveryResponse {
        type_url: "type.googleapis.com/unknown".into(),
        nonce: "9".into(),
        ..Default::default()
    };
    let request = reject_unknown_type(&response);
    assert_eq!(request.type_url, "type.googleapis.com/unknown");
    assert_eq!(request.response_nonce, "9");
    let message = request.error_detail.unwrap().message;
    assert_eq!(message, "no handler for type URL \"type.googleapis.com/unknown\"");
}
