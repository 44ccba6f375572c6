//! Running the `ip` and `nft` commands capture is applied with, inside a named namespace, and turning their failures
//! into errors that name the command and carry its stderr.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::CaptureError;

/// Fails unless the named namespace exists, so that a vanished pod gives a clear error rather than `ip`'s.
pub(crate) fn ensure_namespace(netns: &str) -> Result<(), CaptureError> {
    if ambit_netns::path_of(netns).exists() {
        Ok(())
    } else {
        Err(CaptureError::NoNamespace(netns.to_string()))
    }
}

/// `ip -n NETNS ARGS…`, returning its stdout.
pub(crate) fn ip(netns: &str, args: &[&str]) -> Result<String, CaptureError> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("ip", &full, None)
}

/// `nft ARGS…` run inside the named namespace, fed `stdin`, returning its stdout. The command is started from a
/// thread that entered the namespace (a child inherits it), which spares the `ip netns exec` process in between:
/// the node agent lists every enrolled pod's ruleset every second.
pub(crate) fn nft(netns: &str, args: &[&str], stdin: Option<&str>) -> Result<String, CaptureError> {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    in_netns(netns, move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("nft", &args, stdin.as_deref())
    })?
    .map_err(|error| match error {
        // Name the namespace in the failed command, as `ip netns exec NETNS nft` would.
        CaptureError::Command { command, stderr } => CaptureError::Command {
            command: format!("{command} (in {netns})"),
            stderr,
        },
        other => other,
    })
}

/// Runs `f` on a thread inside the named namespace; a namespace that vanished is [`CaptureError::NoNamespace`], as
/// when it is missing from the start.
pub(crate) fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CaptureError> {
    ambit_netns::run_in(netns, f).map_err(|err| match err {
        ambit_netns::NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            CaptureError::NoNamespace(netns.to_string())
        }
        other => CaptureError::Netns(other),
    })
}

/// Runs a command to completion, feeding `stdin`; a non-zero exit is an error carrying its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, CaptureError> {
    let command = format!("{program} {}", args.join(" "));
    let spawn_error = |source| CaptureError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error (the command exited early) shows up as the command's own failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(CaptureError::Command {
        command,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_named() {
        let err = ensure_namespace("ambit-no-such-namespace-for-test").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network namespace ambit-no-such-namespace-for-test does not exist"
        );
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run("ambit-no-such-program", &["x"], None).unwrap_err();
        assert!(matches!(err, CaptureError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("`ambit-no-such-program x`"), "{err}");
    }

    #[test]
    fn failure_carries_stderr_and_success_stdout() {
        let err = run("sh", &["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        assert_eq!(err.to_string(), "`sh -c echo oops >&2; exit 3` failed: oops");
        assert_eq!(run("cat", &[], Some("fed\n")).unwrap(), "fed\n");
    }
}
