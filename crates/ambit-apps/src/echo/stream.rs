//! Raw TCP listeners of the echo server: `tcp` (echo every byte back) and `sink` (count and discard).

use std::io;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Read buffer size for raw TCP connections.
pub const READ_BUFFER: usize = 64 * 1024;

/// Write back every byte read until the client half-closes, then half-close too.
pub(crate) async fn echo(mut stream: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            stream.shutdown().await?;
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Discard everything until the client half-closes, then answer the byte count as
/// ASCII decimal followed by `\n` and close.
pub(crate) async fn sink(mut stream: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let answer = format!("{total}\n");
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(total)
}
