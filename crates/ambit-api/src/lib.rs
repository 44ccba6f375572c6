//! Generated protobuf and gRPC code for the wire APIs ambit shares with Istio: the CA API (`istio.v1.auth`), the
//! workload API (`istio.workload`, `istio.security`) and the delta xDS stream that carries it
//! (`envoy.service.discovery.v3`, with `envoy.config.core.v3` and `google.rpc`); ambit's own resource type for
//! the waypoint's L7 config (`ambit.config.v1`); and the gRPC echo service of the sample workload (`ambit.echo.v1`).
//!
//! The messages keep Istio's and Envoy's field numbers, so ambit's control plane and node proxies speak to istiod
//! and ztunnel unchanged. The Envoy messages hold only the fields the workload API uses; the others are skipped on
//! decode like any unknown field.

/// The type URL of workload API resources (`Address`: a workload or a service).
pub const WORKLOAD_ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// The type URL of L4 authorization policies.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// The type URL of ambit's L7 config objects for the waypoint (`ambit.config.v1.ConfigObject`).
pub const CONFIG_OBJECT_TYPE_URL: &str = "type.googleapis.com/ambit.config.v1.ConfigObject";

/// ambit's own protobuf packages.
pub mod ambit {
    /// `ambit.config.*`
    pub mod config {
        /// `ambit.config.v1`: the mesh's Kubernetes-shaped L7 config (`ConfigObject`), an xDS resource type of
        /// ambit's own for the waypoint.
        pub mod v1 {
            tonic::include_proto!("ambit.config.v1");
        }
    }

    /// `ambit.echo.*`
    pub mod echo {
        /// `ambit.echo.v1`: the gRPC echo service of the sample workload (`ambit app echo --grpc`).
        pub mod v1 {
            tonic::include_proto!("ambit.echo.v1");
        }
    }
}

/// Istio's protobuf packages.
pub mod istio {
    /// `istio.v1.*`
    pub mod v1 {
        /// `istio.v1.auth`: the certificate service (`IstioCertificateService/CreateCertificate`).
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }

    /// `istio.workload`: workloads and services (`Address`).
    pub mod workload {
        // `Address` is a oneof of a Workload and a smaller Service, held inline as prost generates it.
        #![allow(clippy::large_enum_variant)]
        tonic::include_proto!("istio.workload");

        /// `istio.workload.zds`: ZDS, the node agent to node proxy protocol that hands over each enrolled pod and
        /// its network namespace (one message per SOCK_SEQPACKET datagram, the netns fd beside `AddWorkload`).
        pub mod zds {
            tonic::include_proto!("istio.workload.zds");
        }
    }

    /// `istio.security`: L4 authorization policies (`Authorization`).
    pub mod security {
        tonic::include_proto!("istio.security");
    }
}

/// Envoy's data-plane API, the subset delta xDS needs.
pub mod envoy {
    /// `envoy.service.*`
    pub mod service {
        /// `envoy.service.discovery.*`
        pub mod discovery {
            /// `envoy.service.discovery.v3`: `AggregatedDiscoveryService/DeltaAggregatedResources` and its
            /// messages.
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }

    /// `envoy.config.*`
    pub mod config {
        /// `envoy.config.core.*`
        pub mod core {
            /// `envoy.config.core.v3`: the `Node` a client describes itself with.
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
}

/// Google's API packages.
pub mod google {
    /// `google.rpc`: `Status`, the reason a NACK carries.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The `Message` trait the generated types implement, to encode and decode them (for example a resource's `Any`).
pub use prost;
/// The well-known types the messages use (`Struct`, `Any`).
pub use prost_types;
