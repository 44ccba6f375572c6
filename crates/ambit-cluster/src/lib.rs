//! The local cluster: ordinary Kubernetes manifests run as host processes inside network namespaces on one Linux
//! host, with a fabric bridge between node namespaces, per-node pod CIDRs, ClusterIP load balancing by nftables DNAT
//! in each node namespace, a cluster DNS server, the control plane and one node proxy per node, and in-pod capture
//! for the pods enrolled in ambient.

pub mod dns;
pub mod endpoints;
pub mod layout;
pub mod manifest;
pub mod mesh;
pub mod model;
pub mod net;
pub mod objects;
pub mod runtime;
pub mod status;
pub mod supervisor;
pub mod upgrade;
pub mod view;
