//! Wire compatibility with Istio's `istio.v1.auth` messages: the field numbers and wire types on the wire.

use ambit_api::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use prost::Message;
use prost_types::{Struct, Value, value::Kind};

fn metadata(key: &str, value: &str) -> Struct {
    let value = Value {
        kind: Some(Kind::StringValue(value.to_string())),
    };
    Struct {
        fields: [(key.to_string(), value)].into(),
    }
}

#[test]
fn request_uses_istio_field_tags() {
    let request = IstioCertificateRequest {
        csr: "C".to_string(),
        validity_duration: 86_400,
        metadata: Some(metadata("ImpersonatedIdentity", "spiffe://cluster.local/ns/a/sa/b")),
    };
    let bytes = request.encode_to_vec();
    // csr: field 1, length-delimited (1 << 3 | 2), length 1, "C".
    assert_eq!(&bytes[..3], &[0x0a, 0x01, b'C']);
    // validity_duration: field 3, varint (3 << 3 | 0), 86400 as a varint.
    assert_eq!(&bytes[3..7], &[0x18, 0x80, 0xa3, 0x05]);
    // metadata: field 4, length-delimited (4 << 3 | 2), then the rest of the message.
    assert_eq!(bytes[7], 0x22);
    assert_eq!(usize::from(bytes[8]), bytes.len() - 9);
    assert_eq!(IstioCertificateRequest::decode(bytes.as_slice()).unwrap(), request);
}

#[test]
fn field_two_stays_unused() {
    // A field-2 string (what older Istio revisions might have sent) is skipped as unknown, not misread.
    let bytes = [0x12, 0x01, b'x', 0x0a, 0x01, b'C'];
    let request = IstioCertificateRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(request.csr, "C");
    assert_eq!(request.validity_duration, 0);
    assert!(request.metadata.is_none());
}

#[test]
fn response_uses_istio_field_tag() {
    let response = IstioCertificateResponse {
        cert_chain: vec!["leaf".to_string(), "root".to_string()],
    };
    let bytes = response.encode_to_vec();
    assert_eq!(bytes, [&[0x0a, 0x04][..], b"leaf", &[0x0a, 0x04], b"root"].concat());
}
