//! Where logs go: stderr through a 64 KiB buffer that a thread of its own flushes every [`FLUSH_INTERVAL`], so the
//! access log of a busy proxy costs its data path a copy into memory per line instead of a `write` system call (and
//! no thread wake-up: the flusher runs on its own clock, not per line). A line reaches stderr at most
//! [`FLUSH_INTERVAL`] late, or at once when the buffer is full; the guard flushes what is left when the process ends.

use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How late a log line may reach stderr.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The buffer: many access-log lines per `write` under load.
const BUFFER: usize = 64 * 1024;

/// A cheap handle on the shared buffer; tracing's formatter writes each event through one.
pub struct LogSink<W: Write> {
    buffer: Arc<Mutex<BufWriter<W>>>,
}

/// Flushes the buffer when dropped (at the end of `main`).
pub struct FlushGuard<W: Write> {
    sink: LogSink<W>,
}

// === impl LogSink ===

impl LogSink<io::Stderr> {
    /// The process's stderr sink, with its flusher thread started.
    pub fn stderr() -> (Self, FlushGuard<io::Stderr>) {
        let sink = Self::new(io::stderr());
        let flusher = sink.clone();
        let started = std::thread::Builder::new().name("ambit-log".into()).spawn(move || {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush_buffer();
            }
        });
        if let Err(error) = started {
            // Without the thread, lines are written when the buffer fills and at exit.
            eprintln!("cannot start the log flusher thread: {error}");
        }
        let guard = FlushGuard { sink: sink.clone() };
        (sink, guard)
    }
}

impl<W: Write> LogSink<W> {
    pub fn new(inner: W) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(BufWriter::with_capacity(BUFFER, inner))),
        }
    }

    /// Writes out what the buffer holds. A failed write (stderr closed) is dropped: logging never fails the caller.
    pub fn flush_buffer(&self) {
        let _ = self.buffer.lock().unwrap_or_else(PoisonError::into_inner).flush();
    }
}

impl<W: Write> Clone for LogSink<W> {
    fn clone(&self) -> Self {
        Self {
            buffer: Arc::clone(&self.buffer),
        }
    }
}

impl<W: Write> Write for LogSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(buf)
    }

    /// Leaves the flushing to the flusher: a flush per event would be a system call per line again.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// === impl FlushGuard ===

impl<W: Write> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        self.sink.flush_buffer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read, counting the writes that reach it.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            inner.0.extend_from_slice(buf);
            inner.1 += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_batched_until_flushed_or_the_guard_drops() {
        let recorder = Recorder::default();
        let sink = LogSink::new(recorder.clone());
        let mut writer = sink.clone();
        for i in 0..100 {
            writeln!(writer, "line {i}").unwrap();
            writer.flush().unwrap();
        }
        assert_eq!(recorder.0.lock().unwrap().1, 0, "nothing is written before a flush");
        sink.flush_buffer();
        let (bytes, writes) = recorder.0.lock().unwrap().clone();
        assert_eq!(writes, 1, "100 lines in one write");
        assert!(String::from_utf8(bytes).unwrap().ends_with("line 99\n"));
        writeln!(writer, "last").unwrap();
        drop(FlushGuard { sink });
        assert!(
            String::from_utf8(recorder.0.lock().unwrap().0.clone())
                .unwrap()
                .ends_with("last\n")
        );
    }
}
