//! The L7 decisions of ambit's waypoint, without IO: which route and backend a request takes (`route`: Gateway API
//! HTTPRoute and GRPCRoute compiled into a table per Service), and which endpoint serves it, when a failing endpoint
//! is set aside and when a failed request is tried again (`balance`). The waypoint's driver feeds them requests,
//! samples of randomness and the time, and carries out what they decide.
#![forbid(unsafe_code)]

pub mod balance;
pub mod route;
