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
//! rather than all of them, and parks without registering anywhere. A follower's replica
//! fetcher (`replica::fetcher`) stands with the partitions it follows the same way, to
//! build each round from the ones that changed.
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
    /// registrations of sessions gone, lapsed, and of slots forgotten.
    pub fn mark_standing(&mut self) {
        if self.standing.is_empty() {
            return;
        }
        self.mark_standing_at(crate::client_quota::monotonic_ms());
    }

    /// [`Self::mark_standing`] at `now_ms` (of `client_quota::monotonic_ms`).
    pub fn mark_standing_at(&mut self, now_ms: u64) {
        (self.standing)
            .retain(|(watch, slot)| watch.upgrade().is_some_and(|w| w.mark(*slot, now_ms)));
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

/// A session unused this long (Kafka's session eviction age) stops being marked: each of
/// its partitions drops it at its next change, so sessions clients abandoned do not cost
/// every append until something evicts them. If it is used again, its next fetch visits
/// every partition and registers them anew (a replica fetcher cut off from its leader this
/// long does the same).
pub const LAPSE_MS: u64 = 120_000;

/// One fetch session's view of its partitions' changes: which of its slots (a number per
/// partition of the session, never reused within it) changed since it last looked, and a
/// wake-up for its parked fetch. The session adds and removes slots under its cache's
/// lock; partitions mark them (under their own locks) and wake it.
pub struct SessionWatch {
    slots: Mutex<WatchedSlots>,
    /// Wakes only waiters armed at the time (`notify_waiters`): a fetch arms, then drains
    /// the marks, then reads, so a change it missed is one it would have read. A permit
    /// kept between fetches would wake the next one for a change it already read.
    woken: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct WatchedSlots {
    /// Every slot of the session.
    live: HashMap<u64, Slot>,
    /// The dirty slots, in the order they were marked.
    dirty: Vec<u64>,
    /// When the session last drained its marks (began a fetch).
    used_ms: u64,
    /// A partition dropped the session for being unused ([`LAPSE_MS`]): its change was
    /// not marked, and the registrations are no longer known to stand.
    lapsed: bool,
}

impl WatchedSlots {
    /// The dirty slots, now clean; the session used at `now_ms`.
    fn take_dirty(&mut self, now_ms: u64) -> Vec<u64> {
        self.used_ms = self.used_ms.max(now_ms);
        let dirty = std::mem::take(&mut self.dirty);
        for slot in &dirty {
            if let Some(live) = self.live.get_mut(slot) {
                live.dirty = false;
            }
        }
        dirty
    }
}

#[derive(Default)]
struct Slot {
    dirty: bool,
    /// The partition (its process-wide number) the slot stands registered with.
    stands_with: Option<u64>,
}

/// What a session's fetch finds when it drains its marks.
pub struct Drained {
    pub slots: Vec<u64>,
    /// Changes went unmarked: visit every partition.
    pub lapsed: bool,
}

impl SessionWatch {
    /// The watch of a session made at `now_ms`.
    pub fn new(now_ms: u64) -> SessionWatch {
        let slots = WatchedSlots {
            used_ms: now_ms,
            ..WatchedSlots::default()
        };
        SessionWatch {
            slots: Mutex::new(slots),
            woken: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchedSlots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new slot, clean: what the session knows of its partition is current.
    pub fn add(&self, slot: u64) {
        self.lock().live.insert(slot, Slot::default());
    }

    /// A slot the session forgot: partitions that still name it drop it at their next
    /// change.
    pub fn remove(&self, slot: u64) {
        let mut slots = self.lock();
        if slots.live.remove(&slot).is_some_and(|slot| slot.dirty) {
            slots.dirty.retain(|dirty| *dirty != slot);
        }
    }

    fn holds(&self, slot: u64) -> bool {
        self.lock().live.contains_key(&slot)
    }

    /// Marks `slot` dirty at `now_ms`; false if the session no longer has it or lapsed.
    fn mark(&self, slot: u64, now_ms: u64) -> bool {
        let mut slots = self.lock();
        let slots = &mut *slots;
        if now_ms.saturating_sub(slots.used_ms) > LAPSE_MS {
            // Once per lapse: every later change of another partition would walk them all
            // again until the next drain.
            if !slots.lapsed {
                slots.lapsed = true;
                (slots.live.values_mut()).for_each(|slot| slot.stands_with = None);
            }
            return false;
        }
        match slots.live.get_mut(&slot) {
            None => false,
            Some(Slot { dirty: true, .. }) => true,
            Some(live) => {
                live.dirty = true;
                slots.dirty.push(slot);
                true
            }
        }
    }

    /// Marks every slot and wakes the parked fetch: a fetch that drained marks and will
    /// not answer them (overtaken, throttled, dropped) hands them back.
    pub fn mark_all(&self) {
        {
            let mut slots = self.lock();
            let slots = &mut *slots;
            for (number, slot) in slots.live.iter_mut() {
                if !slot.dirty {
                    slot.dirty = true;
                    slots.dirty.push(*number);
                }
            }
        }
        self.woken.notify_waiters();
    }

    /// The slots marked since the last drain, now clean, at `now_ms`, and whether changes
    /// went unmarked (a lapse), which this clears: a fetch of the session begins. Taken
    /// before the partitions are read: a change after this marks its slot again.
    pub fn drain(&self, now_ms: u64) -> Drained {
        let mut slots = self.lock();
        Drained {
            slots: slots.take_dirty(now_ms),
            lapsed: std::mem::take(&mut slots.lapsed),
        }
    }

    /// [`Self::drain`] for a fetch under way (parked): the marks only. A lapse, were one
    /// seen, stays for the session's next fetch, which visits every partition for it.
    /// (A park is shorter than [`LAPSE_MS`], and its fetch's drain renewed the session.)
    pub fn drain_marks(&self, now_ms: u64) -> Vec<u64> {
        self.lock().take_dirty(now_ms)
    }

    /// Of `visited` (slot, partition number), the indexes of those not yet registered with
    /// that partition, now taken as registered: the caller registers them before reading.
    pub fn to_stand(&self, visited: impl Iterator<Item = (u64, u64)>) -> Vec<usize> {
        let mut slots = self.lock();
        let mut unregistered = Vec::new();
        for (index, (slot, number)) in visited.enumerate() {
            if let Some(live) = slots.live.get_mut(&slot)
                && live.stands_with != Some(number)
            {
                live.stands_with = Some(number);
                unregistered.push(index);
            }
        }
        unregistered
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

    fn now() -> u64 {
        crate::client_quota::monotonic_ms()
    }

    #[test]
    fn a_session_watch_marks_each_live_slot_once_until_drained() {
        let watch = Arc::new(SessionWatch::new(now()));
        let mut watchers = Watchers::default();
        for slot in [1, 2, 3] {
            watch.add(slot);
            watchers.stand(&watch, slot);
            watchers.stand(&watch, slot);
        }
        assert_eq!(watchers.standing_len(), 3, "one registration per slot");
        watchers.mark_standing();
        watchers.mark_standing();
        assert_eq!(watch.drain(now()).slots, vec![1, 2, 3]);
        assert!(watch.drain(now()).slots.is_empty());
        watchers.mark_standing();
        watch.remove(2);
        assert_eq!(
            watch.drain(now()).slots,
            vec![1, 3],
            "a removed slot is not drained"
        );
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

    /// A slot is registered with a partition once, until the session lapses: unused for
    /// [`LAPSE_MS`], it is dropped at a partition's change, its next drain says so, and
    /// every slot is to be registered again.
    #[test]
    fn registrations_stand_once_until_the_session_lapses() {
        let watch = Arc::new(SessionWatch::new(1_000));
        for slot in [1, 2] {
            watch.add(slot);
        }
        assert_eq!(watch.to_stand([(1, 10), (2, 20)].into_iter()), vec![0, 1]);
        assert!(watch.to_stand([(1, 10), (2, 20)].into_iter()).is_empty());
        assert_eq!(
            watch.to_stand([(2, 21)].into_iter()),
            vec![0],
            "another partition"
        );
        assert!(
            watch.to_stand([(3, 30)].into_iter()).is_empty(),
            "not a slot"
        );
        assert!(watch.mark(1, 1_000 + LAPSE_MS));
        let drained = watch.drain(1_000 + LAPSE_MS);
        assert_eq!((drained.slots, drained.lapsed), (vec![1], false));
        // Unused since: the next change drops it and leaves it to register anew.
        assert!(!watch.mark(2, 1_001 + 2 * LAPSE_MS));
        assert_eq!(watch.to_stand([(1, 10), (2, 21)].into_iter()), vec![0, 1]);
        // A fetch under way takes the marks only: the lapse waits for the next fetch.
        assert!(watch.drain_marks(1_002 + 2 * LAPSE_MS).is_empty());
        assert!(
            watch.mark(1, 1_002 + 2 * LAPSE_MS),
            "the drain renewed the session"
        );
        let drained = watch.drain(1_002 + 2 * LAPSE_MS);
        assert!(drained.lapsed);
        assert_eq!(drained.slots, vec![1]);
        assert!(!watch.drain(1_003 + 2 * LAPSE_MS).lapsed, "said once");
    }

    #[tokio::test]
    async fn marking_all_marks_every_slot_once_and_wakes() {
        let watch = Arc::new(SessionWatch::new(now()));
        for slot in [5, 6] {
            watch.add(slot);
        }
        let mut watchers = Watchers::default();
        watchers.stand(&watch, 6);
        watchers.mark_standing();
        let armed = watch.arm();
        watch.mark_all();
        let mut drained = watch.drain(now()).slots;
        drained.sort();
        assert_eq!(drained, vec![5, 6]);
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(armed.wait(deadline).await, "woken");
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
