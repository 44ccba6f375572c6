//! Sample workloads built into the ambit binary: `ambit app echo`, `ambit app load`, `ambit app grpc` and `ambit app relay`.
//!
//! [`echo`] is a small HTTP/gRPC/TCP server that reports what it saw (identity,
//! peer, request); [`load`] is a load generator that measures latency and
//! throughput against it, directly or through the mesh; [`grpc`] is a gRPC
//! client that tells which pods answered calls sharing one connection; [`relay`]
//! is a plain TCP relay, the floor the benchmark sets beside the mesh.

pub mod echo;
pub mod grpc;
pub mod load;
pub mod relay;

/// Number of CPUs available to this process (1 when unknown).
pub(crate) fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A tokio runtime with `threads` workers: a current-thread runtime for one
/// thread (no cross-thread wake-ups), a multi-thread runtime otherwise.
pub(crate) fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// A future that resolves on the first SIGTERM or SIGINT.
pub(crate) fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            _ = int.recv() => tracing::info!("SIGINT received, stopping"),
        }
    })
}
