//! The waypoint (`ambit waypoint`): ambit's L7 proxy for the services and workloads bound to it. Today: the L7
//! config it follows (`config`: waypoint Gateways, HTTPRoutes, GRPCRoutes and targeted AuthorizationPolicies from the
//! control plane's `ambit.config.v1.ConfigObject` stream). The proxy itself (HBONE termination, HTTP/1.1, HTTP/2 and
//! gRPC, routing and authorization with the `ambit-l7` and `ambit-policy` cores) is not built yet.

pub mod config;
