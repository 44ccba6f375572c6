//! Generated protobuf and gRPC code: the Istio CA API (`istio.v1.auth`).
//!
//! The messages keep Istio's field numbers, so ambit's CA and clients speak to istiod and ztunnel unchanged.

/// Istio's protobuf packages.
pub mod istio {
    /// `istio.v1.*`
    pub mod v1 {
        /// `istio.v1.auth`: the certificate service (`IstioCertificateService/CreateCertificate`).
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

/// The well-known types the messages use (`metadata` is a `google.protobuf.Struct`).
pub use prost_types;
