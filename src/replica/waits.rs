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
//!
//! A fetch session (`api::fetch_session`) instead stands registered with each partition it
//! fetches, once, as a [`SessionWatch`] and the partition's slot in it: every change of the
//! partition's version marks the slot dirty, and every change a read could see also wakes
//! the session's parked fetch. So a session's fetch visits the partitions that changed
//! rather than all of them, and parks without registering anywhere.
//!
//! Deadlines of long waits are put on a grid ([`wait_deadline`]) so that waits parked at
//! about the same time end in one wake-up of the runtime instead of one each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

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

/// The watchers registered with one partition: one-shot wake-ups, and the standing
/// registrations of fetch sessions.
#[derive(Default)]
pub struct Watchers {
    list: Vec<Weak<ChangeWatcher>>,
    standing: Vec<(Weak<SessionWatch>, u64)>,
}

impl Watchers {
    /// Registers `slot` of `watch` until the session forgets the slot or is gone; a
    /// registration already there is not added twice. Before the list would grow, it drops
    /// the registrations of sessions gone and of slots forgotten.
    pub fn stand(&mut self, watch: &Arc<SessionWatch>, slot: u64) {
        let same = |(standing, standing_slot): &(Weak<SessionWatch>, u64)| {
            *standing_slot == slot && std::ptr::eq(standing.as_ptr(), Arc::as_ptr(watch))
        };
        if self.standing.iter().any(same) {
            return;
        }
        if self.standing.len() == self.standing.capacity() {
            (self.standing).retain(|(watch, slot)| watch.upgrade().is_some_and(|w| w.holds(*slot)));
        }
        self.standing.push((Arc::downgrade(watch), slot));
    }

    /// The partition's version moved: marks every standing slot dirty, dropping the
    /// registrations of sessions gone and of slots forgotten.
    pub fn mark_standing(&mut self) {
        if self.standing.is_empty() {
            return;
        }
        (self.standing).retain(|(watch, slot)| watch.upgrade().is_some_and(|w| w.mark(*slot)));
    }

    /// Wakes the parked fetches of every standing session (after [`Self::mark_standing`]).
    pub fn wake_standing(&self) {
        for (watch, _) in &self.standing {
            if let Some(watch) = watch.upgrade() {
                watch.woken.notify_waiters();
            }
        }
    }

    #[cfg(test)]
    pub fn standing_len(&self) -> usize {
        self.standing.len()
    }

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

/// One fetch session's view of its partitions' changes: which of its slots (a number per
/// partition of the session, never reused within it) changed since it last looked, and a
/// wake-up for its parked fetch. The session adds and removes slots under its cache's
/// lock; partitions mark them (under their own locks) and wake it.
#[derive(Default)]
pub struct SessionWatch {
    slots: Mutex<WatchedSlots>,
    /// Wakes only waiters armed at the time (`notify_waiters`): a fetch arms, then drains
    /// the marks, then reads, so a change it missed is one it would have read. A permit
    /// kept between fetches would wake the next one for a change it already read.
    woken: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct WatchedSlots {
    /// Every slot of the session, and whether it is dirty.
    live: HashMap<u64, bool>,
    /// The dirty slots, in the order they were marked.
    dirty: Vec<u64>,
}

impl SessionWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchedSlots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new slot, clean: what the session knows of its partition is current.
    pub fn add(&self, slot: u64) {
        self.lock().live.insert(slot, false);
    }

    /// A slot the session forgot: partitions that still name it drop it at their next
    /// change.
    pub fn remove(&self, slot: u64) {
        let mut slots = self.lock();
        if slots.live.remove(&slot) == Some(true) {
            slots.dirty.retain(|dirty| *dirty != slot);
        }
    }

    fn holds(&self, slot: u64) -> bool {
        self.lock().live.contains_key(&slot)
    }

    /// Marks `slot` dirty; false if the session no longer has it.
    fn mark(&self, slot: u64) -> bool {
        let mut slots = self.lock();
        let slots = &mut *slots;
        match slots.live.get_mut(&slot) {
            None => false,
            Some(true) => true,
            Some(dirty) => {
                *dirty = true;
                slots.dirty.push(slot);
                true
            }
        }
    }

    /// The slots marked since the last drain, now clean. Taken before the partitions are
    /// read: a change after this marks its slot again.
    pub fn drain(&self) -> Vec<u64> {
        let mut slots = self.lock();
        let dirty = std::mem::take(&mut slots.dirty);
        for slot in &dirty {
            if let Some(flag) = slots.live.get_mut(slot) {
                *flag = false;
            }
        }
        dirty
    }

    /// A wake-up at the next change of a partition of the session that a read could see.
    /// Arm before draining the marks and reading, then [`SessionWake::wait`].
    pub fn arm(&self) -> SessionWake {
        let mut notified = Box::pin(Arc::clone(&self.woken).notified_owned());
        notified.as_mut().enable();
        SessionWake { notified }
    }
}

/// A session's armed wake-up ([`SessionWatch::arm`]).
pub struct SessionWake {
    notified: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
}

impl SessionWake {
    /// Resolves when woken (true) or at `deadline` (false).
    pub async fn wait(self, deadline: Instant) -> bool {
        tokio::time::timeout_at(deadline, self.notified)
            .await
            .is_ok()
    }
}

/// A wait of `wait` ends at most this fraction of it early, to land on the grid.
const EARLY_FRACTION_MAX: u32 = 50;
/// The coarsest grid: waits of 800 ms and more end on a 16 ms grid.
const GRID_MAX: Duration = Duration::from_millis(16);

/// When a wait of `wait` that starts `now` ends: `now + wait`, moved earlier onto a grid
/// of a power-of-two number of milliseconds, at most 1/50 of the wait (waits under 100 ms
/// end exactly). The grid is the same for every wait of the process.
///
/// Why: 1000 consumers long-polling with Kafka's default 500 ms wait are 2000 deadlines a
/// second; each ending on its own millisecond costs the runtime a wake-up (epoll_wait,
/// often a futex and a context switch) per answer. On an 8 ms grid the answers due within
/// those 8 ms go out in one wake-up: a bare epoll server doing only that (the bench's
/// `longpoll_floor`) spent 3.1% of a core instead of 5.0%. Kafka's `max_wait_ms` is the
/// longest a fetch waits; answering 10 ms of 500 early changes nothing a client sees but
/// one more empty poll in fifty.
pub fn wait_deadline(now: Instant, wait: Duration) -> Instant {
    let exact = now + wait;
    let early_max = (wait / EARLY_FRACTION_MAX).min(GRID_MAX);
    let grid_ms = match early_max.as_millis() as u64 {
        0 | 1 => return exact,
        ms => 1u64 << (63 - ms.leading_zeros()), // the largest power of two <= ms
    };
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let since_origin = exact.saturating_duration_since(origin);
    let grid = Duration::from_millis(grid_ms);
    let past_grid = since_origin.as_nanos() % grid.as_nanos();
    exact - Duration::from_nanos(past_grid as u64)
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

    #[test]
    fn short_waits_end_exactly() {
        let now = Instant::now();
        for ms in [0, 1, 5, 50, 99] {
            let wait = Duration::from_millis(ms);
            assert_eq!(wait_deadline(now, wait), now + wait, "{ms} ms");
        }
    }

    #[test]
    fn long_waits_end_early_by_less_than_a_fiftieth_on_a_shared_grid() {
        // The grid's origin is set by the first call: before `start`, so no deadline here
        // falls before it (where it would be left exact).
        wait_deadline(Instant::now(), Duration::from_millis(500));
        let start = Instant::now();
        for (wait_ms, grid_ms) in [(100, 2), (500, 8), (799, 8), (800, 16), (30_000, 16)] {
            let wait = Duration::from_millis(wait_ms);
            let mut ends = Vec::new();
            for step_us in (0..40_000).step_by(333) {
                let now = start + Duration::from_micros(step_us);
                let end = wait_deadline(now, wait);
                assert!(end <= now + wait, "{wait_ms} ms wait ends late");
                assert!(
                    now + wait - end < wait / 50,
                    "{wait_ms} ms wait ends too early"
                );
                assert!(now + wait - end < Duration::from_millis(grid_ms));
                ends.push(end);
            }
            // Waits started over 40 ms end on the grid's instants: about 40 / grid of them.
            ends.dedup();
            let most = 40 / grid_ms as usize + 2;
            assert!(
                ends.len() <= most,
                "{wait_ms} ms: {} ends, at most {most}",
                ends.len()
            );
            for pair in ends.windows(2) {
                assert_eq!(
                    pair[1] - pair[0],
                    Duration::from_millis(grid_ms),
                    "{wait_ms} ms"
                );
            }
        }
    }

    #[test]
    fn a_session_watch_marks_each_live_slot_once_until_drained() {
        let watch = Arc::new(SessionWatch::default());
        let mut watchers = Watchers::default();
        for slot in [1, 2, 3] {
            watch.add(slot);
            watchers.stand(&watch, slot);
            watchers.stand(&watch, slot);
        }
        assert_eq!(watchers.standing_len(), 3, "one registration per slot");
        watchers.mark_standing();
        watchers.mark_standing();
        assert_eq!(watch.drain(), vec![1, 2, 3]);
        assert!(watch.drain().is_empty());
        watchers.mark_standing();
        watch.remove(2);
        assert_eq!(watch.drain(), vec![1, 3], "a removed slot is not drained");
        watchers.mark_standing();
        assert_eq!(
            watchers.standing_len(),
            2,
            "its registration went at the change"
        );
        drop(watch);
        watchers.mark_standing();
        assert_eq!(watchers.standing_len(), 0, "the session is gone");
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
