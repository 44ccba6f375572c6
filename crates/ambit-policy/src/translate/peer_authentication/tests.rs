//! Tests of PeerAuthentication: mode resolution across mesh, namespace and workload, oldest-wins conflicts,
//! port-level exceptions, the generated DENY policies, and what they do to plaintext and mTLS peers.

use std::net::IpAddr;

use serde_json::json;

use super::*;
use crate::evaluate::{ConnInfo, Verdict, evaluate};

const ROOT: &str = "istio-system";

/// A PeerAuthentication `<namespace>/<name>` with `spec` (flow YAML), created at `index`.
fn pa(index: u64, namespace: &str, name: &str, spec: &str) -> MtlsPolicy {
    let text = format!("metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}");
    let pa: PeerAuthentication = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"));
    MtlsPolicy::from_peer_authentication(&pa, index).unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"))
}

/// A workload-level spec selecting `app: web`, with more fields.
fn web(fields: &str) -> String {
    let sep = if fields.is_empty() { "" } else { ", " };
    format!("{{selector: {{matchLabels: {{app: web}}}}{sep}{fields}}}")
}

/// A PeerAuthentication document `demo/p` with `spec`.
fn doc(spec: &str) -> String {
    format!("metadata: {{name: p, namespace: demo}}\nspec: {spec}")
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

fn resolve(policies: &[MtlsPolicy], namespace: &str) -> EffectiveMtls {
    let labels = labels();
    let workload = WorkloadMeta {
        namespace,
        labels: &labels,
    };
    peer_authentication_policies(policies, &workload, ROOT)
}

fn conn(mtls: bool, port: u16) -> ConnInfo {
    ConnInfo {
        source_identity: mtls.then(|| {
            "spiffe://cluster.local/ns/a/sa/b"
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        }),
        source_ip: IpAddr::from([10, 0, 0, 1]),
        destination_ip: IpAddr::from([10, 1, 0, 1]),
        destination_port: port,
    }
}

fn verdict(effective: &EffectiveMtls, mtls: bool, port: u16) -> Verdict {
    let policies: Vec<&Authorization> = effective.authorizations.iter().collect();
    evaluate(&policies, &conn(mtls, port)).verdict
}

const STRICT: &str = "{mtls: {mode: STRICT}}";
const PERMISSIVE: &str = "{mtls: {mode: PERMISSIVE}}";
const DISABLE: &str = "{mtls: {mode: DISABLE}}";
const UNSET: &str = "{mtls: {}}";

struct Case {
    name: &'static str,
    policies: Vec<MtlsPolicy>,
    /// The effective mode as printed by [`EffectiveMtls`]'s Display.
    effective: &'static str,
    authorizations: &'static [&'static str],
    /// Ports on which a plaintext peer is denied, among 8080 and 9090.
    strict_ports: &'static [u16],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "no PeerAuthentication: PERMISSIVE",
            policies: vec![],
            effective: "PERMISSIVE (default: no PeerAuthentication sets a mode)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "mesh STRICT",
            policies: vec![pa(1, ROOT, "default", STRICT)],
            effective: "STRICT (set by istio-system/default)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "mesh PERMISSIVE",
            policies: vec![pa(1, ROOT, "default", PERMISSIVE)],
            effective: "PERMISSIVE (set by istio-system/default)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "namespace beats mesh: PERMISSIVE under STRICT",
            policies: vec![pa(1, ROOT, "default", STRICT), pa(2, "demo", "ns", PERMISSIVE)],
            effective: "PERMISSIVE (set by demo/ns)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "namespace beats mesh: STRICT under PERMISSIVE",
            policies: vec![pa(1, ROOT, "default", PERMISSIVE), pa(2, "demo", "ns", STRICT)],
            effective: "STRICT (set by demo/ns)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "namespace UNSET inherits the mesh",
            policies: vec![pa(1, ROOT, "default", STRICT), pa(2, "demo", "ns", UNSET)],
            effective: "STRICT (set by istio-system/default)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "another namespace's policy does not count",
            policies: vec![pa(1, "other", "ns", STRICT)],
            effective: "PERMISSIVE (default: no PeerAuthentication sets a mode)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "workload beats namespace and mesh",
            policies: vec![
                pa(1, ROOT, "default", STRICT),
                pa(2, "demo", "ns", STRICT),
                pa(3, "demo", "web", &web("mtls: {mode: PERMISSIVE}")),
            ],
            effective: "PERMISSIVE (set by demo/web)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "workload STRICT under PERMISSIVE namespace",
            policies: vec![
                pa(1, "demo", "ns", PERMISSIVE),
                pa(2, "demo", "web", &web("mtls: {mode: STRICT}")),
            ],
            effective: "STRICT (set by demo/web)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "workload UNSET inherits the namespace",
            policies: vec![pa(1, "demo", "ns", STRICT), pa(2, "demo", "web", &web(""))],
            effective: "STRICT (set by demo/ns)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "DISABLE acts as not strict",
            policies: vec![
                pa(1, ROOT, "default", STRICT),
                pa(2, "demo", "web", &web("mtls: {mode: DISABLE}")),
            ],
            effective: "DISABLE (set by demo/web)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "namespace DISABLE acts as not strict",
            policies: vec![pa(1, ROOT, "default", STRICT), pa(2, "demo", "ns", DISABLE)],
            effective: "DISABLE (set by demo/ns)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "a selector that does not match is ignored",
            policies: vec![pa(
                1,
                "demo",
                "db",
                "{selector: {matchLabels: {app: db}}, mtls: {mode: STRICT}}",
            )],
            effective: "PERMISSIVE (default: no PeerAuthentication sets a mode)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "a matching selector in another namespace is ignored",
            policies: vec![pa(1, "other", "web", &web("mtls: {mode: STRICT}"))],
            effective: "PERMISSIVE (default: no PeerAuthentication sets a mode)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "oldest namespace policy wins",
            policies: vec![pa(7, "demo", "newer", PERMISSIVE), pa(3, "demo", "older", STRICT)],
            effective: "STRICT (set by demo/older)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "oldest mesh policy wins",
            policies: vec![pa(2, ROOT, "b", STRICT), pa(1, ROOT, "a", PERMISSIVE)],
            effective: "PERMISSIVE (set by istio-system/a)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "same age: smaller name wins",
            policies: vec![pa(5, "demo", "b", STRICT), pa(5, "demo", "a", PERMISSIVE)],
            effective: "PERMISSIVE (set by demo/a)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "oldest workload policy wins",
            policies: vec![
                pa(9, "demo", "new", &web("mtls: {mode: STRICT}")),
                pa(4, "demo", "old", &web("mtls: {mode: PERMISSIVE}")),
            ],
            effective: "PERMISSIVE (set by demo/old)",
            authorizations: &[],
            strict_ports: &[],
        },
        Case {
            name: "port-level STRICT under PERMISSIVE",
            policies: vec![pa(
                1,
                "demo",
                "web",
                &web("mtls: {mode: PERMISSIVE}, portLevelMtls: {9090: {mode: STRICT}}"),
            )],
            effective: "PERMISSIVE (set by demo/web), port 9090 STRICT",
            authorizations: &["demo/converted_peer_authentication_web"],
            strict_ports: &[9090],
        },
        Case {
            name: "port-level STRICT under the default",
            policies: vec![pa(1, "demo", "web", &web("portLevelMtls: {9090: {mode: STRICT}}"))],
            effective: "PERMISSIVE (default: no PeerAuthentication sets a mode), port 9090 STRICT",
            authorizations: &["demo/converted_peer_authentication_web"],
            strict_ports: &[9090],
        },
        Case {
            name: "port-level PERMISSIVE under STRICT",
            policies: vec![pa(
                1,
                "demo",
                "web",
                &web("mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}}"),
            )],
            effective: "STRICT (set by demo/web), port 8080 PERMISSIVE",
            authorizations: &["demo/converted_peer_authentication_web"],
            strict_ports: &[9090],
        },
        Case {
            name: "port-level PERMISSIVE under an inherited STRICT namespace",
            policies: vec![
                pa(1, "demo", "ns", STRICT),
                pa(2, "demo", "web", &web("portLevelMtls: {8080: {mode: PERMISSIVE}}")),
            ],
            effective: "STRICT (set by demo/ns), port 8080 PERMISSIVE",
            authorizations: &["demo/converted_peer_authentication_web"],
            strict_ports: &[9090],
        },
        Case {
            name: "port-level DISABLE under STRICT acts as PERMISSIVE",
            policies: vec![
                pa(1, ROOT, "default", STRICT),
                pa(2, "demo", "web", &web("portLevelMtls: {8080: {mode: DISABLE}}")),
            ],
            effective: "STRICT (set by istio-system/default), port 8080 DISABLE",
            authorizations: &["demo/converted_peer_authentication_web"],
            strict_ports: &[9090],
        },
        Case {
            name: "port-level STRICT under STRICT is no exception",
            policies: vec![pa(
                1,
                "demo",
                "web",
                &web("mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: STRICT}}"),
            )],
            effective: "STRICT (set by demo/web)",
            authorizations: &["istio-system/istio_converted_static_strict"],
            strict_ports: &[8080, 9090],
        },
        Case {
            name: "port-level PERMISSIVE or DISABLE or UNSET under PERMISSIVE is no exception",
            policies: vec![pa(
                1,
                "demo",
                "web",
                "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {8080: {mode: \
                 PERMISSIVE}, 9090: {mode: DISABLE}, 9091: {}}}",
            )],
            effective: "PERMISSIVE (set by demo/web)",
            authorizations: &[],
            strict_ports: &[],
        },
    ]
}

#[test]
fn resolves_and_enforces_modes() {
    for case in cases() {
        let name = case.name;
        let effective = resolve(&case.policies, "demo");
        assert_eq!(effective.to_string(), case.effective, "{name}");
        let refs: Vec<String> = effective.policy_refs().iter().map(ToString::to_string).collect();
        assert_eq!(refs, case.authorizations, "{name}");
        for port in [8080, 9090] {
            assert_eq!(
                verdict(&effective, true, port),
                Verdict::Allow,
                "{name}: mTLS on {port}"
            );
            let plaintext = if case.strict_ports.contains(&port) {
                Verdict::Deny
            } else {
                Verdict::Allow
            };
            assert_eq!(
                verdict(&effective, false, port),
                plaintext,
                "{name}: plaintext on {port}"
            );
        }
    }
}

#[test]
fn workload_in_the_root_namespace() {
    let policies = [
        pa(1, ROOT, "default", PERMISSIVE),
        pa(2, ROOT, "web", &web("mtls: {mode: STRICT}")),
    ];
    let effective = resolve(&policies, ROOT);
    assert_eq!(effective.to_string(), "STRICT (set by istio-system/web)");
    assert_eq!(verdict(&effective, false, 8080), Verdict::Deny);
}

#[test]
fn generated_policies() {
    let strict = resolve(&[pa(1, ROOT, "default", STRICT)], "demo");
    let exceptions = resolve(
        &[pa(
            1,
            "demo",
            "web",
            &web("mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}, 8443: {mode: DISABLE}}"),
        )],
        "demo",
    );
    let strict_ports = resolve(
        &[pa(
            1,
            "demo",
            "web",
            &web("portLevelMtls: {8080: {mode: STRICT}, 8443: {mode: STRICT}}"),
        )],
        "demo",
    );
    let deny_plaintext = |extra: serde_json::Value| {
        let mut m = json!({"notPrincipals": ["presence"]});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        json!({"clauses": [{"matches": [m]}]})
    };
    let cases = [
        (
            strict,
            json!({
                "name": "istio_converted_static_strict",
                "namespace": "istio-system",
                "scope": "WORKLOAD_SELECTOR",
                "action": "DENY",
                "groups": [deny_plaintext(json!({}))],
            }),
        ),
        (
            exceptions,
            json!({
                "name": "converted_peer_authentication_web",
                "namespace": "demo",
                "scope": "WORKLOAD_SELECTOR",
                "action": "DENY",
                "groups": [deny_plaintext(json!({"notDestinationPorts": [8080, 8443]}))],
            }),
        ),
        (
            strict_ports,
            json!({
                "name": "converted_peer_authentication_web",
                "namespace": "demo",
                "scope": "WORKLOAD_SELECTOR",
                "action": "DENY",
                "groups": [
                    deny_plaintext(json!({"destinationPorts": [8080]})),
                    deny_plaintext(json!({"destinationPorts": [8443]})),
                ],
            }),
        ),
    ];
    for (effective, want) in cases {
        assert_eq!(effective.authorizations.len(), 1, "{effective}");
        assert_eq!(
            serde_json::to_value(&effective.authorizations[0]).ok(),
            Some(want),
            "{effective}"
        );
    }
}

#[test]
fn explains_a_strict_denial() {
    let effective = resolve(&[pa(1, ROOT, "default", STRICT)], "demo");
    let policies: Vec<&Authorization> = effective.authorizations.iter().collect();
    assert_eq!(
        evaluate(&policies, &conn(false, 8080)).to_string(),
        "denied by DENY policy istio-system/istio_converted_static_strict (rule 0 matched: principal (none) matches \
         none of not_principals [*])"
    );
}

#[test]
fn invalid_peer_authentications() {
    let cases = [
        (
            doc(&web("portLevelMtls: {0: {mode: STRICT}}")),
            "spec.portLevelMtls[0]: \"0\" is not a port: use a number from 1 to 65535",
        ),
        (
            doc(&web("portLevelMtls: {70000: {mode: STRICT}}")),
            "spec.portLevelMtls[70000]: \"70000\" is not a port: use a number from 1 to 65535",
        ),
        (
            doc("{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}}}"),
            "spec.portLevelMtls: port-level mTLS needs a selector: mesh- and namespace-wide policies cannot set it",
        ),
        (
            doc("{selector: {matchLabels: {}}, portLevelMtls: {8080: {mode: STRICT}}}"),
            "spec.portLevelMtls: port-level mTLS needs a selector: mesh- and namespace-wide policies cannot set it",
        ),
        (
            "metadata: {namespace: demo}\nspec: {}".to_string(),
            "metadata.name: must be set",
        ),
    ];
    for (text, want) in cases {
        let pa: PeerAuthentication = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let err = MtlsPolicy::from_peer_authentication(&pa, 0).unwrap_err();
        assert_eq!(err.to_string(), want, "{text}");
    }
}

#[test]
fn reads_yaml_and_json() {
    let yaml = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: web
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: PERMISSIVE
";
    let json = r#"{"metadata": {"name": "web", "namespace": "demo"}, "spec": {"selector": {"matchLabels":
        {"app": "web"}}, "mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}}"#;
    let from_yaml: PeerAuthentication = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    let from_json: PeerAuthentication = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_yaml, from_json);
    let policy = MtlsPolicy::from_peer_authentication(&from_yaml, 0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.port_modes, BTreeMap::from([(8080, MtlsMode::Permissive)]));
    assert!(serde_saphyr::from_str::<PeerAuthentication>("spec: {mtls: {mode: STRICTER}}").is_err());
}
