//! The waypoint (`ambit waypoint`): ambit's L7 proxy for the Services and workloads bound to it (ambient §5).
//!
//! - `config`: the L7 config it follows (waypoint Gateways, HTTPRoutes, GRPCRoutes and targeted
//!   AuthorizationPolicies from the control plane's `ambit.config.v1.ConfigObject` stream).
//! - `state`: that config and the workload state compiled into route tables and policies ([`state::L7State`]).
//! - `target`: which tunnels are bound here, and the endpoints of a Service port (pure).
//! - `inbound`: HBONE termination, protocol detection ([`sniff`]), HTTP serving and TCP relay.
//! - `proxy`: one HTTP request: checks, authorization, routing, faults, retries, balancing, telemetry.
//! - `upstream`: HBONE (with the waypoint's identity) or TCP to endpoints, and pooled HTTP connections on them.
//! - `app`: the process: certificates, xDS, listeners, admin, metrics and readiness, drain.

pub mod app;
mod body;
pub mod config;
pub mod inbound;
pub mod proxy;
pub mod sniff;
pub mod state;
pub mod target;
pub mod upstream;
