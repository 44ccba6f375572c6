//! The gRPC echo service (`ambit.echo.v1.Echo`, h2c): replies name the pod and the connection's peer.
//!
//! One service value is built per accepted connection, so the peer it reports is the TCP peer of that
//! connection (a node proxy or waypoint when the call went through the mesh).

use std::net::SocketAddr;
use std::pin::Pin;

use ambit_api::ambit::echo::v1::echo_server::{Echo, EchoServer};
use ambit_api::ambit::echo::v1::{EchoReply, EchoRequest};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::fail::FailRate;

/// Most replies one `ServerStream` call gets; larger `count`s are capped.
pub const MAX_STREAM_REPLIES: u32 = 1000;

/// The replies of a `ServerStream` call.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// The echo service as seen by one connection.
#[derive(Debug, Clone)]
pub(crate) struct GrpcEcho {
    pod: String,
    peer: String,
}

impl GrpcEcho {
    /// The service for a connection from `peer`, answering as `pod`.
    pub(crate) fn new(pod: String, peer: SocketAddr) -> Self {
        Self {
            pod,
            peer: peer.to_string(),
        }
    }

    /// The tonic server for this connection.
    pub(crate) fn into_server(self) -> EchoServer<Self> {
        EchoServer::new(self)
    }

    /// Fail the call on purpose when the request's `fail_percent` says so.
    fn inject_failure(&self, req: &EchoRequest) -> Result<(), Status> {
        let rate = FailRate::from_whole_percent(req.fail_percent);
        if rate.roll() {
            Err(Status::unavailable(injected_failure_message(&self.pod, rate)))
        } else {
            Ok(())
        }
    }
}

/// The status message of a call failed on purpose: says so, and names the pod and the rate.
pub(crate) fn injected_failure_message(pod: &str, rate: FailRate) -> String {
    format!("injected failure: pod={pod} fails {rate} of calls (fail_percent)")
}

/// The replies a `ServerStream` call gets: `count` (capped at [`MAX_STREAM_REPLIES`]) echoes indexed from 0.
pub(crate) fn stream_replies(pod: &str, peer: &str, req: &EchoRequest) -> Vec<EchoReply> {
    (0..req.count.min(MAX_STREAM_REPLIES))
        .map(|index| reply(pod, peer, &req.message, index))
        .collect()
}

fn reply(pod: &str, peer: &str, message: &str, index: u32) -> EchoReply {
    EchoReply {
        message: message.to_owned(),
        pod: pod.to_owned(),
        peer: peer.to_owned(),
        index,
    }
}

#[tonic::async_trait]
impl Echo for GrpcEcho {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let req = request.into_inner();
        self.inject_failure(&req)?;
        Ok(Response::new(reply(&self.pod, &self.peer, &req.message, 0)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(&self, request: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
        let req = request.into_inner();
        self.inject_failure(&req)?;
        let replies = stream_replies(&self.pod, &self.peer, &req);
        Ok(Response::new(Box::pin(futures::stream::iter(
            replies.into_iter().map(Ok),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(count: u32) -> EchoRequest {
        EchoRequest {
            message: "hi".to_owned(),
            count,
            fail_percent: 0,
        }
    }

    #[test]
    fn stream_replies_are_counted_capped_and_indexed() {
        let cases = [
            (0, 0),
            (1, 1),
            (3, 3),
            (1000, 1000),
            (5000, MAX_STREAM_REPLIES as usize),
        ];
        for (count, want) in cases {
            let replies = stream_replies("echo-1", "10.0.0.1:4000", &request(count));
            assert_eq!(replies.len(), want, "count {count}");
            for (i, reply) in replies.iter().enumerate() {
                assert_eq!(reply.index as usize, i);
                assert_eq!(reply.message, "hi");
                assert_eq!(reply.pod, "echo-1");
                assert_eq!(reply.peer, "10.0.0.1:4000");
            }
        }
    }

    #[test]
    fn injected_failures_follow_fail_percent() {
        let service = GrpcEcho::new("echo-1".to_owned(), "127.0.0.1:5000".parse().unwrap());
        let cases = [(0, true), (100, false), (400, false)];
        for (fail_percent, ok) in cases {
            let req = EchoRequest {
                fail_percent,
                ..request(1)
            };
            for _ in 0..100 {
                let result = service.inject_failure(&req);
                assert_eq!(result.is_ok(), ok, "fail_percent {fail_percent}");
                if let Err(status) = result {
                    assert_eq!(status.code(), tonic::Code::Unavailable);
                    assert_eq!(
                        status.message(),
                        "injected failure: pod=echo-1 fails 100% of calls (fail_percent)"
                    );
                }
            }
        }
    }
}
