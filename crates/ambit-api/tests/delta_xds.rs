//! Wire compatibility with Envoy's delta xDS (`envoy.service.discovery.v3`), the stream that carries the workload API:
//! hand-encoded bytes pin the field numbers, and the gRPC path is the one istiod serves.

use ambit_api::WORKLOAD_ADDRESS_TYPE_URL;
use ambit_api::envoy::config::core::v3::{Locality, Node};
use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use ambit_api::envoy::service::discovery::v3::aggregated_discovery_service_server;
use ambit_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use ambit_api::google::rpc::Status;
use prost::Message;
use prost_types::Any;

/// `bytes` after a length-delimited key, with a one-byte length.
fn delimited(key: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("short test bodies");
    [&[key, len], body].concat()
}

#[test]
fn request_initial_resource_versions_nonce_and_error_detail() {
    let request = DeltaDiscoveryRequest {
        initial_resource_versions: [("k".to_string(), "v".to_string())].into(),
        response_nonce: "n".to_string(),
        error_detail: Some(Status {
            code: 3,
            message: "m".to_string(),
            details: Vec::new(),
        }),
        ..DeltaDiscoveryRequest::default()
    };
    // initial_resource_versions 5: a map entry with key 1 and value 2.
    let versions = delimited(0x2a, &[delimited(0x0a, b"k"), delimited(0x12, b"v")].concat());
    // response_nonce 6.
    let nonce = delimited(0x32, b"n");
    // error_detail 7: a google.rpc.Status with code 1 (varint) and message 2.
    let error = delimited(0x3a, &[vec![0x08, 0x03], delimited(0x12, b"m")].concat());
    assert_eq!(request.encode_to_vec(), [versions, nonce, error].concat());
}

#[test]
fn request_node_type_url_and_subscriptions() {
    let request = DeltaDiscoveryRequest {
        node: Some(Node {
            id: "i".to_string(),
            cluster: "c".to_string(),
            metadata: None,
            locality: Some(Locality {
                sub_zone: "s".to_string(),
                ..Locality::default()
            }),
        }),
        type_url: "t".to_string(),
        resource_names_subscribe: vec!["a".to_string()],
        resource_names_unsubscribe: vec!["b".to_string()],
        ..DeltaDiscoveryRequest::default()
    };
    // Node: id 1, cluster 2, locality 4 (a Locality with sub_zone 3).
    let node = [
        delimited(0x0a, b"i"),
        delimited(0x12, b"c"),
        delimited(0x22, &delimited(0x1a, b"s")),
    ]
    .concat();
    let expected = [
        delimited(0x0a, &node),
        delimited(0x12, b"t"),
        delimited(0x1a, b"a"),
        delimited(0x22, b"b"),
    ];
    assert_eq!(request.encode_to_vec(), expected.concat());
}

#[test]
fn node_metadata_is_a_struct_3_and_build_version_5_is_skipped() {
    let metadata = prost_types::Struct::default();
    let node = Node {
        metadata: Some(metadata),
        ..Node::default()
    };
    assert_eq!(node.encode_to_vec(), [0x1a, 0x00]);
    // An old client's build_version (5, a string) is skipped as unknown.
    let node = Node::decode([delimited(0x2a, b"1.0"), delimited(0x0a, b"i")].concat().as_slice()).unwrap();
    assert_eq!(node.id, "i");
}

#[test]
fn response_nonce_removed_resources_and_resources() {
    let response = DeltaDiscoveryResponse {
        system_version_info: "s".to_string(),
        resources: vec![Resource::default()],
        type_url: "t".to_string(),
        nonce: "n".to_string(),
        removed_resources: vec!["r".to_string()],
    };
    let expected = [
        delimited(0x0a, b"s"),
        delimited(0x12, &[]),
        delimited(0x22, b"t"),
        // nonce 5, then removed_resources 6.
        delimited(0x2a, b"n"),
        delimited(0x32, b"r"),
    ];
    assert_eq!(response.encode_to_vec(), expected.concat());
}

#[test]
fn resource_version_resource_name_aliases() {
    let resource = Resource {
        version: "v".to_string(),
        resource: Some(Any {
            type_url: WORKLOAD_ADDRESS_TYPE_URL.to_string(),
            value: vec![0x0a, 0x00],
        }),
        name: "n".to_string(),
        aliases: vec!["a".to_string()],
    };
    // Any: type_url 1, value 2.
    let any = [
        delimited(0x0a, WORKLOAD_ADDRESS_TYPE_URL.as_bytes()),
        delimited(0x12, &[0x0a, 0x00]),
    ]
    .concat();
    let expected = [
        delimited(0x0a, b"v"),
        delimited(0x12, &any),
        delimited(0x1a, b"n"),
        delimited(0x22, b"a"),
    ];
    assert_eq!(resource.encode_to_vec(), expected.concat());
    // Fields left out of the subset (ttl 6 here) are skipped on decode, not misread.
    let with_ttl = [delimited(0x32, &[0x08, 0x01]), delimited(0x1a, b"n")].concat();
    assert_eq!(Resource::decode(with_ttl.as_slice()).unwrap().name, "n");
}

#[test]
fn aggregated_discovery_service_has_envoys_name() {
    assert_eq!(
        aggregated_discovery_service_server::SERVICE_NAME,
        "envoy.service.discovery.v3.AggregatedDiscoveryService"
    );
    // The client exists for the node proxy; its method is DeltaAggregatedResources.
    let _client: Option<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> = None;
}
