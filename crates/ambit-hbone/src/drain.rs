//! Graceful shutdown: one trigger, many watches. Draining starts with a deadline; the trigger learns when every watch
//! (listener, connection) has gone.

use std::future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Starts the drain. Dropping it without draining leaves the watches waiting forever.
#[derive(Debug)]
pub struct DrainTrigger {
    tx: watch::Sender<Option<Instant>>,
}

/// Held by whatever must finish before the drain completes; resolves [`DrainWatch::signaled`] when draining starts.
#[derive(Clone, Debug)]
pub struct DrainWatch {
    rx: watch::Receiver<Option<Instant>>,
}

/// A trigger and its first watch.
pub fn channel() -> (DrainTrigger, DrainWatch) {
    let (tx, rx) = watch::channel(None);
    (DrainTrigger { tx }, DrainWatch { rx })
}

// === impl DrainTrigger ===

impl DrainTrigger {
    /// Starts draining: listeners stop accepting, connections send GOAWAY, and streams still open at `now + grace`
    /// are reset. Later calls do not move the deadline.
    pub fn start(&self, grace: Duration) {
        self.tx.send_if_modified(|deadline| {
            let first = deadline.is_none();
            deadline.get_or_insert_with(|| Instant::now() + grace);
            first
        });
    }

    /// Resolves once every [`DrainWatch`] has been dropped.
    pub async fn drained(&self) {
        self.tx.closed().await;
    }

    /// [`Self::start`], then [`Self::drained`].
    pub async fn drain(self, grace: Duration) {
        self.start(grace);
        self.drained().await;
    }
}

// === impl DrainWatch ===

impl DrainWatch {
    /// Resolves with the deadline once draining has started; never, if the trigger is dropped without draining.
    pub async fn signaled(&mut self) -> Instant {
        let deadline = match self.rx.wait_for(Option::is_some).await {
            Ok(deadline) => *deadline,
            Err(_) => None,
        };
        match deadline {
            Some(deadline) => deadline,
            None => future::pending().await,
        }
    }

    /// The deadline, if draining has started.
    pub fn deadline(&self) -> Option<Instant> {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_completes_when_every_watch_is_gone() {
        let (trigger, watch) = channel();
        let mut second = watch.clone();
        assert_eq!(watch.deadline(), None);
        let waiter = tokio::spawn(async move {
            let deadline = second.signaled().await;
            drop(second);
            deadline
        });
        trigger.start(Duration::from_secs(5));
        let first = watch.deadline().unwrap();
        trigger.start(Duration::from_secs(50));
        assert_eq!(watch.deadline(), Some(first), "the deadline does not move");
        assert_eq!(waiter.await.unwrap(), first);
        drop(watch);
        tokio::time::timeout(Duration::from_secs(1), trigger.drained())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn dropped_trigger_never_signals() {
        let (trigger, mut watch) = channel();
        drop(trigger);
        let waited = tokio::time::timeout(Duration::from_millis(20), watch.signaled()).await;
        assert!(waited.is_err());
    }
}
