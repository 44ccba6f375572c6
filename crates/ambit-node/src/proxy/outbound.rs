//! Outbound for one local pod: original destination, plan, HBONE or passthrough, telemetry.
