//! Generated protobuf and gRPC code: the Istio CA API (`istio.v1.auth`).
