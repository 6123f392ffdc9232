//! Waiting for any of several partitions to change (delayed fetch), without polling.
//!
//! A waiter arms a `Notified` on every partition *before* it re-reads them, so an append
//! that lands between the read and the sleep still wakes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::Partition;

/// Armed wake-ups on a set of partitions.
pub struct ChangeWaiter<'a> {
    armed: Vec<Pin<Box<Notified<'a>>>>,
}

impl<'a> ChangeWaiter<'a> {
    /// Arms a wake-up on each partition. Re-read after this, then call [`Self::wait`].
    pub fn arm(partitions: &'a [Arc<Partition>]) -> ChangeWaiter<'a> {
        let mut armed: Vec<_> = partitions
            .iter()
            .map(|partition| Box::pin(partition.changed().notified()))
            .collect();
        for notified in &mut armed {
            notified.as_mut().enable();
        }
        ChangeWaiter { armed }
    }

    /// Resolves when any armed partition changed, or at `deadline`. True if woken by a change.
    pub async fn wait(mut self, deadline: Instant) -> bool {
        if self.armed.is_empty() {
            tokio::time::sleep_until(deadline).await;
            return false;
        }
        let any = std::future::poll_fn(|cx| {
            for notified in &mut self.armed {
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        tokio::time::timeout_at(deadline, any).await.is_ok()
    }
}
