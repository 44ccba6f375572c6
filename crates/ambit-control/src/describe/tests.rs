//! Tests of `describe pod`: the pod's fields, the policies that apply in evaluation order, and the sample verdict.

use ambit_node::state::select::policies_for;
use ambit_node::state::snapshot::Snapshot;
use ambit_policy::istio::{AuthorizationPolicy, PeerAuthentication};
use ambit_policy::{MtlsPolicy, WorkloadMeta, peer_authentication_policies, translate_authorization_policy};
use serde_json::{Value, json};

use super::*;

const ROOT: &str = "istio-system";

fn trust_domain() -> TrustDomain {
    TrustDomain::new("example.org").expect("a valid trust domain")
}

fn peer(namespace: &str, account: &str) -> Identity {
    Identity::new(trust_domain(), namespace, account).expect("a valid identity")
}

/// Authorizations from Istio AuthorizationPolicies, as the control plane translates them.
fn authorizations(policies: Value) -> Vec<Authorization> {
    let policies: Vec<AuthorizationPolicy> = serde_json::from_value(policies).expect("AuthorizationPolicies");
    let translate = |p: &AuthorizationPolicy| translate_authorization_policy(p, ROOT).expect("a valid policy");
    policies.iter().filter_map(|p| translate(p).authorization).collect()
}

/// Workloads `web/server` (10.1.0.1, HBONE, ready, endpoint of `web` on 80 -> 8080 and of `admin` on 9000 -> 9090,
/// listing the selector policies `selected`), `web/idle` (10.1.0.2, no services) and `client/app` (10.2.0.1,
/// service account `app`), with `policies`.
fn state(selected: &[&str], policies: Vec<Authorization>) -> StateFile {
    let state = json!({
        "workloads": [
            {
                "uid": "Kubernetes//Pod/web/server",
                "name": "server",
                "namespace": "web",
                "addresses": ["10.1.0.1"],
                "tunnel_protocol": "HBONE",
                "node": "node-1",
                "services": {
                    "web/web.web.svc.cluster.local": [{ "service_port": 80, "target_port": 8080 }],
                    "web/admin.web.svc.cluster.local": [{ "service_port": 9000, "target_port": 9090 }],
                },
                "authorization_policies": selected,
                "waypoint": { "destination": { "hostname": "web/wp.web.svc.cluster.local" }, "hbone_mtls_port": 15008 },
            },
            {
                "uid": "Kubernetes//Pod/web/idle",
                "name": "idle",
                "namespace": "web",
                "addresses": ["10.1.0.2"],
                "status": "UNHEALTHY",
            },
            {
                "uid": "Kubernetes//Pod/client/app",
                "name": "app",
                "namespace": "client",
                "addresses": ["10.2.0.1"],
                "service_account": "app",
                "tunnel_protocol": "HBONE",
            },
        ],
    });
    let mut state: StateFile = serde_json::from_value(state).expect("a state file");
    state.policies = policies;
    state
}

fn describe(state: &StateFile, peer: Option<&Identity>, port: Option<u16>) -> PodDescription {
    let described = describe_pod(state, &trust_domain(), "web", "server", peer, port);
    described.expect("web/server is described")
}

#[test]
fn an_unknown_pod_is_not_described() {
    let state = state(&[], Vec::new());
    for (namespace, name) in [
        ("web", "nope"),
        ("client", "server"),
        ("web", "Kubernetes//Pod/web/server"),
    ] {
        let described = describe_pod(&state, &trust_domain(), namespace, name, None, None);
        assert_eq!(described, None, "{namespace}/{name}");
    }
}

#[test]
fn the_pod_as_the_mesh_sees_it() {
    let state = state(&[], Vec::new());
    let d = describe(&state, None, None);
    assert_eq!((d.name.as_str(), d.namespace.as_str()), ("server", "web"));
    assert_eq!(d.uid, "Kubernetes//Pod/web/server");
    assert_eq!(d.identity, "spiffe://example.org/ns/web/sa/default");
    assert_eq!(d.node, "node-1");
    assert_eq!(d.addresses, ["10.1.0.1".parse::<IpAddr>().expect("an IP")]);
    assert!(d.enrolled && d.healthy);
    assert_eq!(d.waypoint.as_deref(), Some("web/wp.web.svc.cluster.local:15008"));
    assert_eq!(d.services, ["admin.web.svc.cluster.local", "web.web.svc.cluster.local"]);
    assert!(d.policies.is_empty());
    let idle = describe_pod(&state, &trust_domain(), "web", "idle", None, None).expect("web/idle");
    assert!(!idle.enrolled && !idle.healthy);
    assert_eq!((idle.waypoint, idle.services.len()), (None, 0));
}

#[test]
fn the_sample_defaults_to_a_neighbour_on_the_first_service_target_port() {
    let state = state(&[], Vec::new());
    let d = describe(&state, None, None);
    assert_eq!(d.sample.peer, "spiffe://example.org/ns/web/sa/default");
    assert_eq!(d.sample.port, 9090, "admin.web sorts first");
    let idle = describe_pod(&state, &trust_domain(), "web", "idle", None, None).expect("web/idle");
    assert_eq!(idle.sample.port, DEFAULT_SAMPLE_PORT);
    let given = describe(&state, Some(&peer("client", "app")), Some(8080));
    assert_eq!(
        (given.sample.peer.as_str(), given.sample.port),
        ("spiffe://example.org/ns/client/sa/app", 8080)
    );
}

#[test]
fn the_sample_verdict_says_which_policy_decided() {
    let allow_client = json!({
        "metadata": { "name": "allow-client", "namespace": "web" },
        "spec": { "rules": [{ "from": [{ "source": { "principals": ["example.org/ns/client/sa/app"] } }] }] },
    });
    let deny_client = json!({
        "metadata": { "name": "deny-client", "namespace": "web" },
        "spec": { "action": "DENY", "rules": [{ "from": [{ "source": { "namespaces": ["client"] } }] }] },
    });
    let allow_admin_port = json!({
        "metadata": { "name": "allow-admin-port", "namespace": "web" },
        "spec": { "rules": [{ "to": [{ "operation": { "ports": ["9090"] } }] }] },
    });
    let client = peer("client", "app");
    let stranger = peer("other", "x");
    /// (case, policies, peer, port, allowed, the reason starts with, (policy, matches) in evaluation order)
    type Row<'a> = (
        &'a str,
        Value,
        &'a Identity,
        Option<u16>,
        bool,
        &'a str,
        Vec<(&'a str, bool)>,
    );
    let cases: [Row<'_>; 7] = [
        (
            "no policy",
            json!([]),
            &client,
            None,
            true,
            "allowed: no policy applies",
            vec![],
        ),
        (
            "ALLOW by principal",
            json!([allow_client.clone()]),
            &client,
            None,
            true,
            "allowed by ALLOW policy web/allow-client (rule 0",
            vec![("allow-client", true)],
        ),
        (
            "ALLOW policies exist but none matches",
            json!([allow_client.clone()]),
            &stranger,
            None,
            false,
            "allow policies exist, but none allowed (no rule matched in ALLOW web/allow-client)",
            vec![("allow-client", false)],
        ),
        (
            "DENY before ALLOW",
            json!([allow_client.clone(), deny_client.clone()]),
            &client,
            None,
            false,
            "denied by DENY policy web/deny-client (rule 0",
            vec![("deny-client", true), ("allow-client", true)],
        ),
        (
            "DENY that does not match",
            json!([deny_client.clone()]),
            &stranger,
            None,
            true,
            "allowed: no ALLOW policy applies and the DENY policy did not match",
            vec![("deny-client", false)],
        ),
        (
            "ALLOW on another port",
            json!([allow_admin_port.clone()]),
            &client,
            Some(8080),
            false,
            "allow policies exist, but none allowed",
            vec![("allow-admin-port", false)],
        ),
        (
            "ALLOW on the sample port",
            json!([allow_admin_port.clone()]),
            &client,
            None,
            true,
            "allowed by ALLOW policy web/allow-admin-port",
            vec![("allow-admin-port", true)],
        ),
    ];
    for (case, policies, peer, port, allowed, reason, listed) in cases {
        let state = state(&[], authorizations(policies));
        let d = describe(&state, Some(peer), port);
        assert_eq!(d.sample.allowed, allowed, "{case}: {}", d.sample.reason);
        assert!(d.sample.reason.starts_with(reason), "{case}: {}", d.sample.reason);
        let summaries: Vec<(&str, bool)> = d.policies.iter().map(|p| (p.name.as_str(), p.matches)).collect();
        assert_eq!(summaries, listed, "{case}");
    }
}

#[test]
fn policies_apply_by_scope_or_by_listing() {
    let policies = authorizations(json!([
        { "metadata": { "name": "selected", "namespace": "web" },
          "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] } },
        { "metadata": { "name": "not-listed", "namespace": "web" },
          "spec": { "selector": { "matchLabels": { "app": "other" } }, "rules": [{}] } },
        { "metadata": { "name": "mesh-deny", "namespace": ROOT },
          "spec": { "action": "DENY", "rules": [{ "from": [{ "source": { "namespaces": ["evil"] } }] }] } },
        { "metadata": { "name": "elsewhere", "namespace": "client" }, "spec": { "rules": [{}] } },
        { "metadata": { "name": "watching", "namespace": "web", "annotations": { "istio.io/dry-run": "true" } },
          "spec": { "action": "DENY", "rules": [{}] } },
    ]));
    let state = state(&["web/selected"], policies);
    let d = describe(&state, None, None);
    let listed: Vec<(&str, &str, Scope, Action, bool, bool)> = (d.policies.iter())
        .map(|p| {
            (
                p.namespace.as_str(),
                p.name.as_str(),
                p.scope,
                p.action,
                p.dry_run,
                p.matches,
            )
        })
        .collect();
    let expected = [
        (ROOT, "mesh-deny", Scope::Global, Action::Deny, false, false),
        ("web", "selected", Scope::WorkloadSelector, Action::Allow, false, true),
        ("web", "watching", Scope::Namespace, Action::Deny, true, true),
    ];
    assert_eq!(listed, expected);
    assert!(d.sample.allowed, "a dry-run DENY never denies: {}", d.sample.reason);
    assert!(
        d.sample.reason.contains("dry-run DENY policy web/watching"),
        "{}",
        d.sample.reason
    );
}

#[test]
fn describe_selects_the_policies_the_node_proxy_selects() {
    let policies = authorizations(json!([
        { "metadata": { "name": "selected", "namespace": "web" },
          "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] } },
        { "metadata": { "name": "namespace-wide", "namespace": "web" }, "spec": { "action": "DENY" } },
        { "metadata": { "name": "root", "namespace": ROOT }, "spec": { "rules": [{}] } },
        { "metadata": { "name": "root-selected", "namespace": ROOT },
          "spec": { "selector": { "matchLabels": { "app": "web" } }, "rules": [{}] } },
        { "metadata": { "name": "elsewhere", "namespace": "client" }, "spec": { "rules": [{}] } },
    ]));
    let state = state(&["web/selected", "istio-system/root-selected"], policies);
    let snapshot = Snapshot::new(
        1,
        state.workloads.clone(),
        state.services.clone(),
        state.policies.clone(),
    );
    let snapshot = snapshot.expect("a valid snapshot");
    for workload in &state.workloads {
        let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
        let described = describe_pod(&state, &trust_domain(), namespace, name, None, None).expect("described");
        let mut by_describe: Vec<String> = described
            .policies
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let mut by_proxy: Vec<String> = policies_for(&snapshot, workload, ROOT)
            .iter()
            .map(|p| p.policy_ref().to_string())
            .collect();
        by_describe.sort();
        by_proxy.sort();
        assert_eq!(by_describe, by_proxy, "{namespace}/{name}");
    }
}

#[test]
fn strict_mtls_does_not_deny_the_sample_mtls_peer() {
    let pa: PeerAuthentication = serde_json::from_value(json!({
        "metadata": { "name": "default", "namespace": ROOT },
        "spec": { "mtls": { "mode": "STRICT" } },
    }))
    .expect("a PeerAuthentication");
    let mtls = MtlsPolicy::from_peer_authentication(&pa, 0).expect("a valid PeerAuthentication");
    let labels = Default::default();
    let meta = WorkloadMeta {
        namespace: "web",
        labels: &labels,
    };
    let effective = peer_authentication_policies([&mtls], &meta, ROOT);
    let refs: Vec<String> = effective.policy_refs().iter().map(ToString::to_string).collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let state = state(&refs, effective.authorizations);
    let d = describe(&state, None, None);
    assert!(d.sample.allowed, "{}", d.sample.reason);
    let listed: Vec<(&str, bool)> = d.policies.iter().map(|p| (p.name.as_str(), p.matches)).collect();
    assert_eq!(listed, [(ambit_policy::STATIC_STRICT_POLICY_NAME, false)]);
}

#[test]
fn the_sample_comes_from_a_workload_with_the_peer_identity() {
    let policies = authorizations(json!([{
        "metadata": { "name": "from-client-pods", "namespace": "web" },
        "spec": { "rules": [{ "from": [{ "source": { "ipBlocks": ["10.2.0.0/16"] } }] }] },
    }]));
    let state = state(&[], policies);
    let cases = [(peer("client", "app"), true), (peer("client", "ghost"), false)];
    for (peer, allowed) in cases {
        let d = describe(&state, Some(&peer), None);
        assert_eq!(d.sample.allowed, allowed, "{peer}: {}", d.sample.reason);
    }
}

#[test]
fn a_description_serializes_as_the_cli_reads_it() {
    let policies = authorizations(json!([{
        "metadata": { "name": "allow-all", "namespace": "web" },
        "spec": { "rules": [{}] },
    }]));
    let d = describe(&state(&[], policies), None, None);
    let value = serde_json::to_value(&d).expect("a description serializes");
    assert_eq!(value["addresses"], json!(["10.1.0.1"]));
    assert_eq!(value["policies"][0]["scope"], json!("NAMESPACE"));
    assert_eq!(value["policies"][0]["action"], json!("ALLOW"));
    assert_eq!(value["sample"]["allowed"], json!(true));
    let back: PodDescription = serde_json::from_value(value).expect("a description parses back");
    assert_eq!(back, d);
}
