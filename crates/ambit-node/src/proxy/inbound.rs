//! Inbound HBONE for one local pod: authority check, L4 authorization, connect to the app, telemetry.
