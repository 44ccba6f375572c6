//! Wire compatibility with Istio's workload API (`istio.workload`, `istio.security`): hand-encoded bytes pin the field
//! numbers and wire types that istiod and ztunnel use.

use ambit_api::istio::security::{
    self, Authorization, Group, Match, Rules, ServiceAccountMatch, StringMatch, string_match::MatchType,
};
use ambit_api::istio::workload::{
    Address, GatewayAddress, NetworkAddress, Port, PortList, Service, TunnelProtocol, Workload, address,
    gateway_address,
};
use ambit_api::{AUTHORIZATION_TYPE_URL, WORKLOAD_ADDRESS_TYPE_URL};
use prost::Message;

/// `bytes` after a length-delimited key, with a one-byte length.
fn delimited(key: &[u8], body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("short test bodies");
    [key, &[len], body].concat()
}

#[test]
fn workload_uid_is_field_20() {
    let workload = Workload {
        uid: "u".to_string(),
        ..Workload::default()
    };
    // 20 << 3 | 2 = 162: the varint 0xa2 0x01.
    assert_eq!(workload.encode_to_vec(), delimited(&[0xa2, 0x01], b"u"));
}

#[test]
fn workload_addresses_are_repeated_bytes_3() {
    let bytes = [delimited(&[0x1a], &[10, 0, 0, 1]), delimited(&[0x1a], &[0; 16])].concat();
    let workload = Workload::decode(bytes.as_slice()).unwrap();
    assert_eq!(workload.addresses, [vec![10, 0, 0, 1], vec![0; 16]]);
    assert_eq!(workload.encode_to_vec(), bytes);
}

#[test]
fn workload_services_is_map_22_of_port_lists() {
    let ports = PortList {
        ports: vec![Port {
            service_port: 80,
            target_port: 8080,
            app_protocol: 0,
        }],
    };
    let workload = Workload {
        services: [("a/b".to_string(), ports)].into(),
        ..Workload::default()
    };
    // Port: service_port 1 (varint 80), target_port 2 (varint 8080 = 0x90 0x3f).
    let port = [0x08, 0x50, 0x10, 0x90, 0x3f];
    // Map entry: key 1, value 2 (a PortList whose ports are field 1).
    let entry = [
        delimited(&[0x0a], b"a/b"),
        delimited(&[0x12], &delimited(&[0x0a], &port)),
    ]
    .concat();
    // 22 << 3 | 2 = 178: the varint 0xb2 0x01.
    assert_eq!(workload.encode_to_vec(), delimited(&[0xb2, 0x01], &entry));
}

#[test]
fn workload_capacity_is_a_uint32_wrapper_27() {
    let with = |capacity| Workload {
        capacity,
        ..Workload::default()
    };
    // 27 << 3 | 2 = 218: the varint 0xda 0x01, then a UInt32Value whose value is field 1.
    assert_eq!(with(Some(5)).encode_to_vec(), [0xda, 0x01, 0x02, 0x08, 0x05]);
    // An explicit 0 (never chosen) stays distinct from absent (1).
    assert_eq!(with(Some(0)).encode_to_vec(), [0xda, 0x01, 0x00]);
    assert!(with(None).encode_to_vec().is_empty());
    assert_eq!(
        Workload::decode([0xda, 0x01, 0x00].as_slice()).unwrap().capacity,
        Some(0)
    );
}

#[test]
fn workload_tunnel_protocol_and_reserved_15() {
    // tunnel_protocol: field 5, varint; LEGACY_ISTIO_MTLS is 2.
    let workload = Workload::decode([0x28, 0x02].as_slice()).unwrap();
    assert_eq!(workload.tunnel_protocol(), TunnelProtocol::LegacyIstioMtls);
    // Field 15 (the removed virtual_ips map) is skipped, not misread.
    let bytes = [delimited(&[0x7a], b"junk"), delimited(&[0x0a], b"pod")].concat();
    let workload = Workload::decode(bytes.as_slice()).unwrap();
    assert_eq!(workload.name, "pod");
}

#[test]
fn workload_waypoint_and_network_gateway() {
    let gateway = GatewayAddress {
        destination: Some(gateway_address::Destination::Address(NetworkAddress {
            network: String::new(),
            address: vec![10, 0, 0, 9],
            length: None,
        })),
        hbone_mtls_port: 15008,
    };
    let workload = Workload {
        network_gateway: Some(gateway),
        ..Workload::default()
    };
    // GatewayAddress: address 2 (a NetworkAddress whose address is field 2), hbone_mtls_port 3 (15008 = 0xa0 0x75).
    let gateway = [
        delimited(&[0x12], &delimited(&[0x12], &[10, 0, 0, 9])),
        vec![0x18, 0xa0, 0x75],
    ]
    .concat();
    // 19 << 3 | 2 = 154: the varint 0x9a 0x01.
    assert_eq!(workload.encode_to_vec(), delimited(&[0x9a, 0x01], &gateway));
}

#[test]
fn network_address_length_is_optional_3() {
    let address = NetworkAddress {
        network: "n".to_string(),
        address: vec![10, 0, 0, 0],
        length: Some(0),
    };
    // network 1, address 2, length 3 written even when 0 (explicit presence).
    let bytes = [
        delimited(&[0x0a], b"n"),
        delimited(&[0x12], &[10, 0, 0, 0]),
        vec![0x18, 0x00],
    ]
    .concat();
    assert_eq!(address.encode_to_vec(), bytes);
    let without = NetworkAddress::decode(&bytes[..bytes.len() - 2]).unwrap();
    assert_eq!(without.length, None);
}

#[test]
fn service_hostname_is_field_3() {
    let service = Service {
        hostname: "a.b.svc.cluster.local".to_string(),
        ..Service::default()
    };
    assert_eq!(service.encode_to_vec(), delimited(&[0x1a], b"a.b.svc.cluster.local"));
}

#[test]
fn service_fields_10_to_14() {
    // canonical 11, ingress_use_waypoint 12 (varints), visibility 14 (NAMESPACE = 1).
    let bytes = [0x58, 0x01, 0x60, 0x01, 0x70, 0x01];
    let service = Service::decode(bytes.as_slice()).unwrap();
    assert!(service.canonical && service.ingress_use_waypoint);
    assert_eq!(service.visibility, 1);
    // weighted_waypoints 13: destination 1 (a GatewayAddress), weight 2.
    let weighted = [delimited(&[0x0a], &[0x18, 0x01]), vec![0x10, 0x07]].concat();
    let service = Service::decode(delimited(&[0x6a], &weighted).as_slice()).unwrap();
    assert_eq!(service.weighted_waypoints[0].weight, 7);
    assert_eq!(
        service.weighted_waypoints[0]
            .destination
            .as_ref()
            .unwrap()
            .hbone_mtls_port,
        1
    );
}

#[test]
fn address_is_a_oneof_of_workload_1_and_service_2() {
    let workload = Address {
        r#type: Some(address::Type::Workload(Workload {
            uid: "u".to_string(),
            ..Workload::default()
        })),
    };
    assert_eq!(
        workload.encode_to_vec(),
        delimited(&[0x0a], &delimited(&[0xa2, 0x01], b"u"))
    );
    let service = Address::decode(delimited(&[0x12], &delimited(&[0x1a], b"h")).as_slice()).unwrap();
    let Some(address::Type::Service(service)) = service.r#type else {
        panic!("expected a service");
    };
    assert_eq!(service.hostname, "h");
}

#[test]
fn authorization_groups_rules_matches() {
    let matched = Match {
        not_service_accounts: vec![ServiceAccountMatch {
            namespace: "ns".to_string(),
            service_account: "sa".to_string(),
        }],
        ..Match::default()
    };
    let policy = Authorization {
        groups: vec![Group {
            rules: vec![Rules { matches: vec![matched] }],
        }],
        ..Authorization::default()
    };
    // ServiceAccountMatch: namespace 1, serviceAccount 2.
    let account = [delimited(&[0x0a], b"ns"), delimited(&[0x12], b"sa")].concat();
    // Match.not_service_accounts is 12 (12 << 3 | 2 = 0x62); Rules.matches is 2; Group.rules is 1;
    // Authorization.groups is 5.
    let rules = delimited(&[0x12], &delimited(&[0x62], &account));
    let group = delimited(&[0x0a], &rules);
    assert_eq!(policy.encode_to_vec(), delimited(&[0x2a], &group));
}

#[test]
fn authorization_scalars_and_match_fields() {
    // scope 3 (WORKLOAD_SELECTOR = 2), action 4 (DENY = 1), dry_run 6.
    let policy = Authorization::decode([0x18, 0x02, 0x20, 0x01, 0x30, 0x01].as_slice()).unwrap();
    assert_eq!(policy.scope(), security::Scope::WorkloadSelector);
    assert_eq!(policy.action(), security::Action::Deny);
    assert!(policy.dry_run);

    let matched = Match {
        principals: vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        source_ips: vec![security::Address {
            address: vec![10, 0, 0, 0],
            length: 8,
        }],
        destination_ports: vec![80, 443],
        ..Match::default()
    };
    // principals 3: a StringMatch with presence 4 (an empty message).
    let principals = delimited(&[0x1a], &delimited(&[0x22], &[]));
    // source_ips 5: an Address with address 1 and length 2.
    let source = delimited(
        &[0x2a],
        &[delimited(&[0x0a], &[10, 0, 0, 0]), vec![0x10, 0x08]].concat(),
    );
    // destination_ports 9, packed: 80, then 443 (0xbb 0x03).
    let ports = delimited(&[0x4a], &[0x50, 0xbb, 0x03]);
    assert_eq!(matched.encode_to_vec(), [principals, source, ports].concat());
}

#[test]
fn string_match_variants() {
    for (key, variant) in [
        (0x0a, MatchType::Exact("x".to_string())),
        (0x12, MatchType::Prefix("x".to_string())),
        (0x1a, MatchType::Suffix("x".to_string())),
    ] {
        let matched = StringMatch {
            match_type: Some(variant),
        };
        assert_eq!(matched.encode_to_vec(), delimited(&[key], b"x"));
    }
}

#[test]
fn type_urls_name_the_packages() {
    assert_eq!(WORKLOAD_ADDRESS_TYPE_URL, "type.googleapis.com/istio.workload.Address");
    assert_eq!(
        AUTHORIZATION_TYPE_URL,
        "type.googleapis.com/istio.security.Authorization"
    );
}
