//! `init` installs the process-wide subscriber once and reports, instead of panicking, a bad filter or a second
//! install. Its own test binary, because the subscriber is global to the process.

use ambit_telemetry::{LogFormat, LoggingError, init};

#[test]
fn init_installs_once_and_then_refuses() {
    let bad = init(LogFormat::Json, "access=loud");
    assert!(
        matches!(&bad, Err(LoggingError::InvalidFilter { filter, .. }) if filter == "access=loud"),
        "{bad:?}"
    );

    init(LogFormat::Json, "info,access=debug").expect("the first valid init installs the subscriber");
    tracing::event!(target: "access", tracing::Level::INFO, src.addr = "10.0.0.1:1", "connection complete");

    let again = init(LogFormat::Text, "info");
    assert!(matches!(again, Err(LoggingError::AlreadyInstalled(_))), "{again:?}");
    assert!(tracing::dispatcher::has_been_set());
}
