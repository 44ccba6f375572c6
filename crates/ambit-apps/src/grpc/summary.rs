//! The outcome counts of a `ambit app grpc` run and their JSON form.

use std::collections::BTreeMap;

use serde::Serialize;
use tonic::Code;

/// The error "code" of a streaming call that ended OK with another number of replies than it asked for (not a gRPC
/// status code: the server or a proxy lost or invented replies).
pub const WRONG_REPLY_COUNT: &str = "WRONG_REPLY_COUNT";

/// Outcome counts of one kind of call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallSummary {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Successful calls per answering pod (a streaming call counts under the pod of its first reply).
    pub pods: BTreeMap<String, u64>,
    /// Failed calls per gRPC status code name (`UNAVAILABLE`, ...), or [`WRONG_REPLY_COUNT`].
    pub codes: BTreeMap<String, u64>,
}

impl CallSummary {
    /// Count one call: `Ok(pod)` for a success answered by `pod`, `Err(code)` for a failure.
    pub fn record(&mut self, outcome: Result<String, &str>) {
        match outcome {
            Ok(pod) => {
                self.ok += 1;
                *self.pods.entry(pod).or_default() += 1;
            }
            Err(code) => {
                self.errors += 1;
                *self.codes.entry(code.to_owned()).or_default() += 1;
            }
        }
    }
}

/// What `ambit app grpc` prints:
/// `{"unary":{"ok":n,"errors":n,"pods":{..},"codes":{..}},"stream":{..}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub unary: CallSummary,
    pub stream: CallSummary,
}

impl Summary {
    /// The summary as one line of JSON (keys in a stable order).
    pub fn to_json(&self) -> String {
        // Maps of strings to integers always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The outcome of a streaming call that ended OK after `received` replies, `first_pod` answering the first:
/// success only when it got the `expected` number of replies.
pub fn stream_outcome(first_pod: Option<String>, received: u32, expected: u32) -> Result<String, &'static str> {
    match first_pod {
        Some(pod) if received == expected => Ok(pod),
        _ => Err(WRONG_REPLY_COUNT),
    }
}

/// The canonical name of a gRPC status code, as in the gRPC specification (`UNAVAILABLE`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_prints() {
        let mut summary = Summary::default();
        let unary: [Result<String, &str>; 4] = [
            Ok("echo-b".to_owned()),
            Ok("echo-a".to_owned()),
            Ok("echo-b".to_owned()),
            Err("UNAVAILABLE"),
        ];
        for outcome in unary {
            summary.unary.record(outcome);
        }
        summary.stream.record(Err("UNAVAILABLE"));
        summary.stream.record(Err(WRONG_REPLY_COUNT));
        summary.stream.record(Err("UNAVAILABLE"));
        assert_eq!(
            summary.to_json(),
            concat!(
                r#"{"unary":{"ok":3,"errors":1,"pods":{"echo-a":1,"echo-b":2},"codes":{"UNAVAILABLE":1}},"#,
                r#""stream":{"ok":0,"errors":3,"pods":{},"codes":{"UNAVAILABLE":2,"WRONG_REPLY_COUNT":1}}}"#
            )
        );
    }

    #[test]
    fn stream_outcomes() {
        let pod = || Some("echo-a".to_owned());
        let cases = [
            (pod(), 3, 3, Ok("echo-a".to_owned())),
            (pod(), 2, 3, Err(WRONG_REPLY_COUNT)),
            (pod(), 4, 3, Err(WRONG_REPLY_COUNT)),
            (None, 0, 3, Err(WRONG_REPLY_COUNT)),
            (None, 0, 0, Err(WRONG_REPLY_COUNT)),
        ];
        for (first_pod, received, expected, want) in cases {
            assert_eq!(
                stream_outcome(first_pod, received, expected),
                want,
                "{received}/{expected}"
            );
        }
    }

    #[test]
    fn code_names() {
        let cases = [
            (Code::Ok, "OK"),
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Code::Unavailable, "UNAVAILABLE"),
            (Code::PermissionDenied, "PERMISSION_DENIED"),
            (Code::Unauthenticated, "UNAUTHENTICATED"),
        ];
        for (code, name) in cases {
            assert_eq!(code_name(code), name);
        }
        // Every code has a distinct name.
        let names: std::collections::BTreeSet<&str> = (0..17).map(|i| code_name(Code::from_i32(i))).collect();
        assert_eq!(names.len(), 17);
    }
}
