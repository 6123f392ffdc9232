//! `queued.max.request.bytes`: one broker-wide budget of request bytes held in memory.
//!
//! A connection that has read a frame's 4-byte size takes that many bytes from the
//! budget before it reserves room for the body, and gives them back once the request has
//! been answered (or, while its grown read buffer still holds them, when that buffer is
//! dropped after a second of silence). While it waits it does not read, so the client meets
//! TCP backpressure instead of the broker buffering every large produce at once (issue 6:
//! 200 clients x 5 MB took the broker to 860 MB).
//!
//! Frames that fit in a standing-size read buffer (64 KiB, lent from a per-thread pool to a
//! connection while it has a request in hand) do not draw on the budget: that memory is
//! bounded by the connections (`max.connections` x its size) as it always was, and it
//! keeps small requests (heartbeats, metadata, follower fetches that an acks=all produce
//! may be waiting for) from queueing behind large ones.
//!
//! The budget is a fair (FIFO) semaphore of bytes. A frame larger than the whole budget
//! takes all of it, so it is admitted only when the budget is entirely free, as Kafka's
//! memory pool lets one request overdraw; fairness keeps it from starving.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of one admitted request; dropping it gives them back.
pub type BudgetPermit = OwnedSemaphorePermit;

pub struct RequestBudget {
    bytes: Arc<Semaphore>,
    bytes_max: u32,
}

impl RequestBudget {
    pub fn new(bytes_max: u32) -> RequestBudget {
        assert!(bytes_max > 0, "a budget of zero bytes admits nothing");
        RequestBudget {
            bytes: Arc::new(Semaphore::new(bytes_max as usize)),
            bytes_max,
        }
    }

    /// The bytes a frame of `frame_bytes` takes: its size, or all of the budget.
    pub fn bytes_for(&self, frame_bytes: usize) -> usize {
        frame_bytes.min(self.bytes_max as usize)
    }

    /// Waits until `frame_bytes` are free (all of the budget for a larger frame).
    pub async fn acquire(&self, frame_bytes: usize) -> BudgetPermit {
        let wanted = self.bytes_for(frame_bytes) as u32;
        self.bytes
            .clone()
            .acquire_many_owned(wanted)
            .await
            .expect("the budget's semaphore is never closed")
    }

    /// `queued.max.request.bytes`.
    pub fn bytes_max(&self) -> u32 {
        self.bytes_max
    }

    /// Bytes not taken by any request right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_share_the_budget_and_give_it_back() {
        let budget = RequestBudget::new(100);
        let first = budget.acquire(60).await;
        let second = budget.acquire(40).await;
        assert_eq!(budget.available(), 0);
        let third = budget.acquire(10);
        tokio::pin!(third);
        assert!(
            futures_poll(&mut third).is_none(),
            "admitted beyond the budget"
        );
        drop(first);
        let third = third.await;
        assert_eq!(budget.available(), 50);
        drop((second, third));
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_waits_until_it_is_all_free() {
        let budget = RequestBudget::new(100);
        let small = budget.acquire(1).await;
        let large = budget.acquire(1_000);
        tokio::pin!(large);
        assert!(
            futures_poll(&mut large).is_none(),
            "overdrew while bytes were taken"
        );
        // Fair: a small request behind the waiting large one does not overtake it.
        let later = budget.acquire(1);
        tokio::pin!(later);
        assert!(
            futures_poll(&mut later).is_none(),
            "a later request jumped the queue"
        );
        drop(small);
        let large = large.await;
        assert_eq!(budget.available(), 0);
        drop(large);
        let later = later.await;
        assert_eq!(budget.available(), 99);
        drop(later);
    }

    /// Polls a future once without a waker that matters.
    fn futures_poll<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(future).poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}
