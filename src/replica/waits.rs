//! Waiting for any of several partitions to change (delayed fetch), without polling.
//!
//! A waiter registers one [`ChangeWatcher`] with every partition *before* it re-reads
//! them, so a change that lands between the read and the sleep still wakes it.
//!
//! A registration is one push onto the partition's list of watchers, taken whole by its
//! next change (`Partition::notify_changed`); a waiter that stops waiting leaves dead
//! entries behind, dropped by that change or by the next registration that would grow the
//! list. A follower's fetch watches every partition it follows at every park, so this is
//! kept to a lock and a push per partition: a tokio `Notified` per partition cost an
//! allocation and three trips through the partition's `Notify` lock (arm, poll, drop).

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Partition;

/// What a partition wakes when it changes: one waiter's wake-up, shared by every partition
/// it watches.
#[derive(Default)]
pub struct ChangeWatcher {
    woken: Notify,
}

impl ChangeWatcher {
    /// Wakes the waiter, now or (a permit) when it next waits.
    pub fn wake(&self) {
        self.woken.notify_one();
    }
}

/// The watchers registered with one partition.
#[derive(Default)]
pub struct Watchers {
    list: Vec<Weak<ChangeWatcher>>,
}

impl Watchers {
    /// Adds `watcher`. Before the list would grow, it drops the watchers whose waiters are
    /// gone, so a partition that never changes holds at most twice its live watchers.
    pub fn push(&mut self, watcher: Weak<ChangeWatcher>) {
        if self.list.len() == self.list.capacity() {
            self.list.retain(|watcher| watcher.strong_count() > 0);
        }
        self.list.push(watcher);
    }

    /// Every watcher registered, leaving none: each is woken once per registration.
    pub fn take(&mut self) -> Vec<Weak<ChangeWatcher>> {
        std::mem::take(&mut self.list)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A wake-up armed on a set of partitions.
pub struct ChangeWaiter {
    watcher: Arc<ChangeWatcher>,
    watching: bool,
}

impl ChangeWaiter {
    /// Arms a wake-up on each partition. Re-read after this, then call [`Self::wait`].
    pub fn arm(partitions: &[Arc<Partition>]) -> ChangeWaiter {
        let watcher = Arc::new(ChangeWatcher::default());
        for partition in partitions {
            partition.watch(&watcher);
        }
        ChangeWaiter {
            watcher,
            watching: !partitions.is_empty(),
        }
    }

    /// Resolves when any armed partition changed, or at `deadline`. True if woken by a change.
    pub async fn wait(self, deadline: Instant) -> bool {
        if !self.watching {
            tokio::time::sleep_until(deadline).await;
            return false;
        }
        let woken = self.watcher.woken.notified();
        tokio::time::timeout_at(deadline, woken).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_watchers_are_dropped_before_the_list_grows() {
        let mut watchers = Watchers::default();
        let live = Arc::new(ChangeWatcher::default());
        watchers.push(Arc::downgrade(&live));
        for _ in 0..1000 {
            let gone = Arc::new(ChangeWatcher::default());
            watchers.push(Arc::downgrade(&gone));
        }
        assert!(watchers.len() <= 4, "{} left", watchers.len());
        let taken = watchers.take();
        assert!(watchers.is_empty());
        let live_taken = taken.iter().filter(|w| w.upgrade().is_some()).count();
        assert_eq!(live_taken, 1);
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let waiter = ChangeWaiter {
            watcher: Arc::new(ChangeWatcher::default()),
            watching: true,
        };
        waiter.watcher.wake();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        assert!(waiter.wait(deadline).await);
    }
}
