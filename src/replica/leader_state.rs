//! What a partition leader knows about its followers: the ISR the controller holds, an ISR
//! change it has proposed and not yet heard back about, and each follower's progress.
//! Pure (no clock, no I/O): the partition calls it under its lock with the time and offsets.
//! The one change made through `&self` (under the partition's read lock) is a follower's
//! `unchanged_fetch_ms`, an atomic time only ever raised ([`LeaderState::record_fetch_unchanged`]).
//!
//! Kafka's rules (`Partition.scala`, `Replica.scala`):
//! - the high watermark is the smallest log end offset over the *maximal* ISR: the
//!   controller's ISR plus a replica whose addition is pending (a shrink counts only once
//!   committed), so the leader never counts a replica as in sync that the controller does
//!   not, and never stops counting one before the controller agrees;
//! - a follower is caught up when its fetch offset reaches the leader's log end offset, or
//!   reaches what the log end offset was at its previous fetch (it has everything that
//!   was there when it last asked); one not caught up for `replica.lag.time.max.ms`
//!   leaves the ISR;
//! - a replica outside the ISR joins once it has everything below the high watermark and
//!   has reached the start of the leader's current epoch.
//!
//! A follower in the ISR fetching again at the end it fetched at before, with nothing
//! committed left to move, changes only the times of its progress: a follower's fetch
//! session visits its idle partitions at least every tenth of the lag bound
//! (`api::fetch_session`), and most are idle. Such a fetch is recorded
//! under the partition's read lock ([`LeaderState::record_fetch_unchanged`]) in an atomic
//! of the follower's progress, which every later use of the times reads as if each of those
//! fetches had been recorded in full: its last caught-up time keeps advancing while it keeps
//! fetching at the end, and stops when it stops fetching, as Kafka's does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::types::NodeId;

/// A follower's log end offset before its first fetch from this leader.
const UNKNOWN_OFFSET: i64 = -1;

#[derive(Debug)]
struct Progress {
    log_end_offset: i64,
    /// Read through [`Progress::caught_up_ms`]: fetches recorded unchanged may be later.
    last_caught_up_ms: i64,
    /// The leader's log end offset when this follower last fetched.
    last_fetch_leader_end: i64,
    /// Read through [`Progress::fold_unchanged`], as `last_caught_up_ms`.
    last_fetch_ms: i64,
    /// The log start offset the follower last reported (`UNKNOWN_OFFSET` before its first
    /// fetch): DeleteRecords' low watermark is the smallest over live replicas.
    log_start_offset: i64,
    /// The latest fetch recorded unchanged (0: none), under the read lock; each such fetch
    /// was at `log_end_offset`, which was the leader's end (`last_fetch_leader_end`), so it
    /// counts as a caught-up fetch at this time. Only grows: folding it in twice is harmless.
    unchanged_fetch_ms: AtomicI64,
}

impl Progress {
    fn unknown(last_caught_up_ms: i64) -> Progress {
        Progress {
            log_end_offset: UNKNOWN_OFFSET,
            last_caught_up_ms,
            last_fetch_leader_end: UNKNOWN_OFFSET,
            last_fetch_ms: 0,
            log_start_offset: UNKNOWN_OFFSET,
            unchanged_fetch_ms: AtomicI64::new(0),
        }
    }

    /// The last time the follower was caught up, counting fetches recorded unchanged.
    fn caught_up_ms(&self) -> i64 {
        let unchanged = self.unchanged_fetch_ms.load(Relaxed);
        self.last_caught_up_ms.max(unchanged)
    }

    /// Folds the fetches recorded unchanged into the times, as `record_fetch` would have
    /// recorded each: caught up then, and fetched then. Tidiness, not correctness: every
    /// decision reads the caught-up time through `caught_up_ms`, which takes the atomic
    /// into account anyway; this keeps the stored fields what they say.
    fn fold_unchanged(&mut self) {
        let unchanged = *self.unchanged_fetch_ms.get_mut();
        self.last_caught_up_ms = self.last_caught_up_ms.max(unchanged);
        self.last_fetch_ms = self.last_fetch_ms.max(unchanged);
    }
}

#[derive(Debug)]
pub struct LeaderState {
    local: NodeId,
    /// The ISR in the controller's image, replica order.
    isr: Vec<NodeId>,
    /// The image's partition epoch that `isr` belongs to; a proposal names it.
    partition_epoch: i32,
    /// An ISR sent to the controller and not answered yet.
    pending: Option<Vec<NodeId>>,
    followers: BTreeMap<NodeId, Progress>,
}

impl LeaderState {
    /// A new leadership. Followers' offsets are unknown until they fetch; those in the ISR
    /// count as caught up now, so none is dropped before it had a chance to fetch.
    pub fn new(
        local: NodeId,
        replicas: &[NodeId],
        isr: &[NodeId],
        partition_epoch: i32,
        now_ms: i64,
    ) -> LeaderState {
        let followers = replicas
            .iter()
            .filter(|&&replica| replica != local)
            .map(|&replica| {
                let in_sync = isr.contains(&replica);
                (replica, Progress::unknown(if in_sync { now_ms } else { 0 }))
            })
            .collect();
        LeaderState {
            local,
            isr: isr.to_vec(),
            partition_epoch,
            pending: None,
            followers,
        }
    }

    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn has_pending_change(&self) -> bool {
        self.pending.is_some()
    }

    /// The ISR proposed and not answered yet.
    pub fn pending(&self) -> Option<&[NodeId]> {
        self.pending.as_deref()
    }

    /// The controller's view moved on (a newer image, or the answer to our proposal):
    /// adopt it and forget the proposal, which it either contains or refused. Returns
    /// false (and changes nothing) for a view older than the one held, or the same one.
    pub fn adopt(&mut self, isr: &[NodeId], partition_epoch: i32, now_ms: i64) -> bool {
        let same = partition_epoch == self.partition_epoch && isr == self.isr;
        if partition_epoch < self.partition_epoch || same {
            return false;
        }
        for &replica in isr {
            // A replica the controller just added counts as caught up from now on.
            if !self.isr.contains(&replica)
                && let Some(progress) = self.followers.get_mut(&replica)
            {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
            }
        }
        self.isr = isr.to_vec();
        self.partition_epoch = partition_epoch;
        self.pending = None;
        true
    }

    /// True if the followers tracked are exactly `replicas` without the leader.
    pub fn follows_replicas(&self, replicas: &[NodeId]) -> bool {
        let others = replicas.iter().filter(|&&replica| replica != self.local);
        others.clone().count() == self.followers.len()
            && others
                .into_iter()
                .all(|replica| self.followers.contains_key(replica))
    }

    /// The replica list changed under the same leadership (a reassignment started,
    /// completed or was cancelled): a new replica is tracked from its first fetch, out of
    /// sync until it catches up; a replica no longer listed is forgotten (its progress
    /// must not hold DeleteRecords' low watermark back). Returns true if anything changed.
    pub fn set_replicas(&mut self, replicas: &[NodeId]) -> bool {
        if self.follows_replicas(replicas) {
            return false;
        }
        let local = self.local;
        self.followers
            .retain(|replica, _| replicas.contains(replica) && *replica != local);
        for &replica in replicas.iter().filter(|&&replica| replica != local) {
            (self.followers.entry(replica)).or_insert_with(|| Progress::unknown(0));
        }
        true
    }

    /// The proposal was refused or lost: the next fetch or shrink check decides again.
    pub fn abandon_proposal(&mut self) {
        self.pending = None;
    }

    /// The committed ISR plus a pending addition (see the module doc).
    fn maximal_isr(&self) -> impl Iterator<Item = NodeId> + '_ {
        let added = self
            .pending
            .iter()
            .flatten()
            .filter(|r| !self.isr.contains(r));
        self.isr.iter().chain(added).copied()
    }

    /// Where the high watermark may stand with the leader's log at `leader_end`: the
    /// smallest log end offset over the maximal ISR (`UNKNOWN_OFFSET` while a member has
    /// not fetched yet). The caller never moves the high watermark backwards.
    pub fn high_watermark(&self, leader_end: i64) -> i64 {
        self.maximal_isr()
            .map(|replica| match self.followers.get(&replica) {
                _ if replica == self.local => leader_end,
                Some(progress) => progress.log_end_offset,
                None => UNKNOWN_OFFSET,
            })
            .min()
            .unwrap_or(leader_end)
    }

    /// Records a follower fetch at `fetch_offset` (it holds everything below). False for a
    /// broker that is not a follower of this partition.
    pub fn record_fetch(
        &mut self,
        replica: NodeId,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        let Some(progress) = self.followers.get_mut(&replica) else {
            return false;
        };
        progress.fold_unchanged();
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset;
        progress.last_fetch_leader_end = leader_end;
        progress.last_fetch_ms = now_ms;
        true
    }

    /// Records a follower fetch that changes nothing but the times, if it is one, under a
    /// shared borrow (the partition's read lock); false if it needs [`Self::record_fetch`].
    /// It is one when the follower is in the ISR (no expansion to propose), fetches at the
    /// leader's end `leader_end`, which its last recorded fetch reached and saw too (its
    /// offsets stay), reports the log start it reported before, and `high_watermark` is at
    /// that end (nothing for its offset to move).
    pub fn record_fetch_unchanged(
        &self,
        replica: NodeId,
        (fetch_offset, log_start_offset): (i64, i64),
        (leader_end, high_watermark): (i64, i64),
        now_ms: i64,
    ) -> bool {
        let Some(progress) = self.followers.get(&replica) else {
            return false;
        };
        let unchanged = fetch_offset == leader_end
            && high_watermark == leader_end
            && progress.log_end_offset == fetch_offset
            && progress.last_fetch_leader_end == leader_end
            && progress.log_start_offset == log_start_offset
            && self.isr.contains(&replica);
        if unchanged {
            progress.unchanged_fetch_ms.fetch_max(now_ms, Relaxed);
        }
        unchanged
    }

    /// Records the log start offset a follower's fetch reported. True if it changed; false
    /// also for a broker that is not a follower of this partition.
    pub fn record_log_start(&mut self, replica: NodeId, log_start_offset: i64) -> bool {
        let Some(progress) = self.followers.get_mut(&replica) else {
            return false;
        };
        let changed = progress.log_start_offset != log_start_offset;
        progress.log_start_offset = log_start_offset;
        changed
    }

    /// The log start offset `replica` last reported, if it is a follower here.
    pub fn follower_log_start(&self, replica: NodeId) -> Option<i64> {
        self.followers.get(&replica).map(|p| p.log_start_offset)
    }

    /// Kafka's `lowWatermarkIfLeader`: the smallest log start offset over the leader's
    /// (`leader_start`) and every follower on a live broker (`live`), in the ISR or not. A
    /// live follower that has not fetched yet counts as -1, so DeleteRecords waits for it.
    pub fn low_watermark(&self, leader_start: i64, live: impl Fn(NodeId) -> bool) -> i64 {
        let followers = self.followers.iter();
        let live_starts = followers.filter(|(replica, _)| live(**replica));
        live_starts
            .map(|(_, progress)| progress.log_start_offset)
            .fold(leader_start, i64::min)
    }

    /// The ISR to propose with `replica` added, if it has caught up (see the module doc)
    /// and no other change is pending. `eligible`: the controller would accept it (a live
    /// broker, not shutting down).
    pub fn expansion(
        &self,
        replica: NodeId,
        high_watermark: i64,
        epoch_start_offset: i64,
        eligible: bool,
    ) -> Option<Vec<NodeId>> {
        if self.pending.is_some() || self.isr.contains(&replica) || !eligible {
            return None;
        }
        let progress = self.followers.get(&replica)?;
        let caught_up = progress.log_end_offset >= high_watermark
            && progress.log_end_offset >= epoch_start_offset;
        caught_up.then(|| {
            let mut isr = self.isr.clone();
            isr.push(replica);
            isr
        })
    }

    /// The ISR to propose without the followers that have not been caught up for
    /// `lag_max_ms`, if there are any and no other change is pending.
    pub fn shrink(&self, leader_end: i64, now_ms: i64, lag_max_ms: i64) -> Option<Vec<NodeId>> {
        if self.pending.is_some() {
            return None;
        }
        let out_of_sync = |replica: &NodeId| {
            self.followers.get(replica).is_some_and(|progress| {
                progress.log_end_offset != leader_end
                    && now_ms.saturating_sub(progress.caught_up_ms()) > lag_max_ms
            })
        };
        if !self.isr.iter().any(out_of_sync) {
            return None;
        }
        Some(
            self.isr
                .iter()
                .copied()
                .filter(|r| !out_of_sync(r))
                .collect(),
        )
    }

    /// Marks `isr` as sent to the controller.
    pub fn propose(&mut self, isr: Vec<NodeId>) {
        self.pending = Some(isr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reassignment_adds_and_forgets_followers_under_the_same_leadership() {
        let mut state = LeaderState::new(1, &[1, 2], &[1, 2], 0, 1_000);
        assert!(state.follows_replicas(&[1, 2]) && !state.follows_replicas(&[1, 2, 3]));
        assert!(state.set_replicas(&[3, 1, 2]));
        assert!(
            !state.set_replicas(&[1, 2, 3]),
            "the same set again changes nothing"
        );
        assert!(state.follows_replicas(&[1, 2, 3]));
        // The new follower is unknown until it fetches and joins once caught up.
        assert_eq!(state.expansion(3, 10, 0, true), None);
        assert!(state.record_fetch(3, 10, 10, 2_000));
        assert_eq!(state.expansion(3, 10, 0, true), Some(vec![1, 2, 3]));
        assert!(state.set_replicas(&[1, 3]));
        assert!(
            !state.record_fetch(2, 10, 10, 3_000),
            "2 is no longer a follower"
        );
        assert_eq!(
            state.low_watermark(5, |_| true),
            -1,
            "3 has not reported a start"
        );
    }

    const LAG: i64 = 30_000;

    fn leader() -> LeaderState {
        LeaderState::new(1, &[1, 2, 3], &[1, 2, 3], 5, 1_000)
    }

    #[test]
    fn low_watermark_is_the_smallest_start_over_live_replicas() {
        let mut state = leader();
        let all_live = |_| true;
        // Followers that have not fetched hold DeleteRecords back.
        assert_eq!(state.low_watermark(50, all_live), -1);
        assert!(state.record_log_start(2, 40));
        assert!(!state.record_log_start(2, 40));
        assert_eq!(state.low_watermark(50, all_live), -1);
        assert!(state.record_log_start(3, 60));
        assert_eq!(state.low_watermark(50, all_live), 40);
        assert_eq!(state.low_watermark(30, all_live), 30);
        // A dead broker's replica does not count (Kafka's `hasAliveBroker`).
        assert_eq!(state.low_watermark(50, |replica| replica != 2), 50);
        assert!(!state.record_log_start(9, 0), "not a replica");
    }

    #[test]
    fn the_high_watermark_waits_for_every_isr_member_and_ignores_others() {
        let mut state = leader();
        assert_eq!(
            state.high_watermark(10),
            UNKNOWN_OFFSET,
            "nobody fetched yet"
        );
        state.record_fetch(2, 10, 10, 1_100);
        assert_eq!(state.high_watermark(10), UNKNOWN_OFFSET);
        state.record_fetch(3, 7, 10, 1_100);
        assert_eq!(state.high_watermark(10), 7);
        state.record_fetch(3, 10, 12, 1_200);
        assert_eq!(state.high_watermark(12), 10);
        // Out of the ISR, replica 3 no longer holds the high watermark back.
        assert!(state.adopt(&[1, 2], 6, 1_300));
        assert_eq!(state.high_watermark(12), 10, "2 is at 10");
        state.record_fetch(2, 12, 12, 1_300);
        assert_eq!(state.high_watermark(12), 12);
        assert!(!state.record_fetch(9, 12, 12, 1_300), "not a replica");
    }

    #[test]
    fn a_pending_addition_counts_at_once_and_a_pending_removal_only_when_committed() {
        let mut state = LeaderState::new(1, &[1, 2, 3], &[1, 2], 0, 0);
        state.record_fetch(2, 10, 10, 1);
        state.record_fetch(3, 4, 10, 1);
        assert_eq!(state.high_watermark(10), 10);
        let added = state
            .expansion(3, 4, 0, true)
            .expect("3 reached the high watermark 4");
        assert_eq!(added, vec![1, 2, 3]);
        state.propose(added);
        assert_eq!(
            state.high_watermark(10),
            4,
            "the proposed member counts already"
        );
        assert!(
            state.expansion(3, 4, 0, true).is_none(),
            "one change at a time"
        );
        assert!(state.adopt(&[1, 2, 3], 1, 2));
        assert!(!state.has_pending_change());

        let shrunk = state.shrink(10, 2 + LAG + 1, LAG).expect("3 is behind");
        assert_eq!(shrunk, vec![1, 2]);
        state.propose(shrunk);
        assert_eq!(
            state.high_watermark(10),
            4,
            "3 counts until the controller agrees"
        );
        assert!(state.adopt(&[1, 2], 2, LAG + 10));
        assert_eq!(state.high_watermark(10), 10);
    }

    #[test]
    fn a_follower_is_caught_up_by_reaching_the_end_it_saw_at_its_previous_fetch() {
        let mut state = leader();
        state.record_fetch(2, 0, 100, 2_000);
        // A fetch that reaches the end seen at the previous fetch (100) proves the follower
        // was caught up as of that previous fetch (2_000), even though new records arrived.
        state.record_fetch(2, 100, 150, 40_000);
        assert_eq!(state.followers[&2].last_caught_up_ms, 2_000);
        state.record_fetch(2, 150, 150, 41_000);
        assert_eq!(state.followers[&2].last_caught_up_ms, 41_000);
        // 3 never fetched: it leaves the ISR once the lag passes; 2 stays.
        state.record_fetch(3, 0, 150, 41_000);
        assert_eq!(state.shrink(150, 1_000 + LAG, LAG), None);
        assert_eq!(state.shrink(150, 1_001 + LAG, LAG), Some(vec![1, 2]));
        // A follower exactly at the leader's end is never out of sync, however old.
        state.record_fetch(3, 150, 150, 41_000);
        assert_eq!(state.shrink(150, 10 * LAG, LAG), None);
    }

    /// A fetch recorded unchanged where it may be, else in full: what the partition does.
    fn fetch(state: &mut LeaderState, replica: NodeId, offset: i64, end: i64, now_ms: i64) {
        let high_watermark = state.high_watermark(end).min(end);
        let ends = (end, high_watermark);
        if !state.record_fetch_unchanged(replica, (offset, -1), ends, now_ms) {
            state.record_fetch(replica, offset, end, now_ms);
            state.record_log_start(replica, -1);
        }
    }

    #[test]
    fn a_follower_fetching_at_the_end_of_an_idle_partition_stays_caught_up() {
        let mut state = leader();
        fetch(&mut state, 2, 10, 10, 2_000);
        fetch(&mut state, 3, 10, 10, 2_000);
        // Idle for ten lag times, 2 fetching all along (recorded unchanged), 3 not.
        for now_ms in (2_500..=10 * LAG).step_by(500) {
            assert!(state.record_fetch_unchanged(2, (10, -1), (10, 10), now_ms));
        }
        assert_eq!(state.shrink(10, 10 * LAG + 1, LAG), None, "both at the end");
        // A new record: 3 has not been caught up since 2_000, 2 since its last fetch.
        assert_eq!(state.shrink(11, 10 * LAG + 1, LAG), Some(vec![1, 2]));
        assert_eq!(state.shrink(11, 11 * LAG, LAG), Some(vec![1, 2]));
        assert_eq!(state.shrink(11, 11 * LAG + 1, LAG), Some(vec![1]));
        // 2 fetches at the end it saw before the record: caught up as of that fetch.
        assert!(!state.record_fetch_unchanged(2, (10, -1), (11, 10), 10 * LAG + 100));
        state.record_fetch(2, 10, 11, 10 * LAG + 100);
        assert_eq!(state.followers[&2].last_caught_up_ms, 10 * LAG);
        assert_eq!(state.followers[&2].last_fetch_ms, 10 * LAG + 100);
    }

    #[test]
    fn a_follower_that_stops_fetching_is_shrunk_after_the_lag() {
        let mut state = leader();
        fetch(&mut state, 2, 10, 10, 2_000);
        fetch(&mut state, 3, 10, 10, 2_000);
        for now_ms in [3_000, 4_000] {
            fetch(&mut state, 2, 10, 10, now_ms);
            fetch(&mut state, 3, 10, 10, now_ms);
        }
        // 3 stops at 4_000; 2 keeps fetching until a record arrives at 20_000.
        fetch(&mut state, 2, 10, 10, 20_000);
        assert_eq!(state.shrink(12, 4_000 + LAG, LAG), None);
        assert_eq!(state.shrink(12, 4_001 + LAG, LAG), Some(vec![1, 2]));
        assert_eq!(state.shrink(12, 20_001 + LAG, LAG), Some(vec![1]));
    }

    #[test]
    fn only_a_fetch_that_changes_nothing_but_the_time_is_recorded_unchanged() {
        let mut state = LeaderState::new(1, &[1, 2, 3], &[1, 2], 0, 0);
        state.record_fetch(2, 10, 10, 1);
        state.record_log_start(2, 0);
        state.record_fetch(3, 10, 10, 1);
        state.record_log_start(3, 0);
        assert!(state.record_fetch_unchanged(2, (10, 0), (10, 10), 2));
        let refused = [
            (3, (10, 0), (10, 10), "out of the ISR"),
            (2, (10, 0), (10, 9), "uncommitted records"),
            (2, (9, 0), (10, 10), "another offset"),
            (2, (10, 5), (10, 10), "another start"),
            (2, (11, 0), (11, 11), "a later end"),
            (9, (10, 0), (10, 10), "not a replica"),
        ];
        for (replica, fetched, ends, why) in refused {
            assert!(
                !state.record_fetch_unchanged(replica, fetched, ends, 2),
                "{why}"
            );
        }
        // The follower outside the ISR joins as before: by the full record.
        assert_eq!(state.expansion(3, 10, 0, true), Some(vec![1, 2, 3]));
    }

    /// xorshift64*: the simulation's choices, fixed by its seed.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Appends, fetches (in step or lagging), stops, ISR changes and time in random order:
    /// a leader that records fetches unchanged where it may decides every shrink, expansion
    /// and high watermark as one that records each fetch in full.
    #[test]
    fn recording_unchanged_fetches_decides_as_recording_every_fetch_in_full() {
        for mut seed in 1..=200u64 {
            let mut lazy = LeaderState::new(1, &[1, 2, 3], &[1, 2, 3], 0, 0);
            let mut full = LeaderState::new(1, &[1, 2, 3], &[1, 2, 3], 0, 0);
            let (mut end, mut now_ms, mut partition_epoch) = (0i64, 0i64, 0);
            let mut fetched = [0i64; 4];
            for _ in 0..300 {
                now_ms += (next(&mut seed) % 8_000) as i64;
                let replica = 2 + (next(&mut seed) % 2) as NodeId;
                match next(&mut seed) % 10 {
                    0 => end += 1 + (next(&mut seed) % 3) as i64,
                    1 => {
                        let shrunk = full.shrink(end, now_ms, LAG);
                        assert_eq!(lazy.shrink(end, now_ms, LAG), shrunk, "seed {seed}");
                        if let Some(isr) = shrunk {
                            partition_epoch += 1;
                            lazy.adopt(&isr, partition_epoch, now_ms);
                            full.adopt(&isr, partition_epoch, now_ms);
                        }
                    }
                    2 => {} // this follower stops for a while
                    _ => {
                        let offset = match next(&mut seed) % 3 {
                            0 => fetched[replica as usize],
                            _ => end,
                        };
                        fetched[replica as usize] = offset;
                        let high_watermark = full.high_watermark(end).min(end);
                        fetch(&mut lazy, replica, offset, end, now_ms);
                        full.record_fetch(replica, offset, end, now_ms);
                        full.record_log_start(replica, -1);
                        let expansion = full.expansion(replica, high_watermark, 0, true);
                        let lazy_expansion = lazy.expansion(replica, high_watermark, 0, true);
                        assert_eq!(lazy_expansion, expansion, "seed {seed}");
                        if let Some(isr) = expansion {
                            partition_epoch += 1;
                            lazy.adopt(&isr, partition_epoch, now_ms);
                            full.adopt(&isr, partition_epoch, now_ms);
                        }
                    }
                }
                assert_eq!(lazy.high_watermark(end), full.high_watermark(end));
                for later in [now_ms, now_ms + LAG, now_ms + LAG + 1, now_ms + 3 * LAG] {
                    assert_eq!(lazy.shrink(end, later, LAG), full.shrink(end, later, LAG));
                }
            }
        }
    }

    #[test]
    fn expansion_needs_the_high_watermark_the_epoch_start_and_an_eligible_broker() {
        let mut state = LeaderState::new(1, &[1, 2], &[1], 3, 0);
        state.record_fetch(2, 8, 10, 1);
        assert_eq!(
            state.expansion(2, 9, 0, true),
            None,
            "below the high watermark"
        );
        assert_eq!(
            state.expansion(2, 8, 9, true),
            None,
            "before the epoch start"
        );
        assert_eq!(
            state.expansion(2, 8, 8, false),
            None,
            "fenced or shutting down"
        );
        assert_eq!(state.expansion(2, 8, 8, true), Some(vec![1, 2]));
        assert_eq!(state.expansion(1, 8, 8, true), None, "the leader itself");
        assert!(!state.adopt(&[1], 2, 5), "an older partition epoch");
        assert_eq!(state.partition_epoch(), 3);
    }
}
