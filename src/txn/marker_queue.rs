//! The marker sender's bookkeeping, pure: which partitions of which transactions still
//! need a marker, which are in flight to which destination broker, and what an answer
//! settles. The async shell (`markers`) runs one worker per destination over it.
//!
//! Invariants: a partition is in flight to at most one destination at a time (claimed by
//! the one worker of that destination, released by its answer or by its death), so a
//! leader change never has two brokers writing the same marker at once; one request
//! carries at most one marker per producer id (answers are matched by producer id); a
//! job is finished only when no partition is left, claimed or not.

use std::collections::{BTreeMap, BTreeSet};

use super::markers::MarkerJob;
use crate::types::NodeId;

pub type JobId = u64;
/// (topic, partition).
pub type PartitionKey = (String, i32);

/// Where a partition's marker goes, as the metadata image says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The topic is gone: no marker can or need be written (Kafka drops those).
    Gone,
    /// No leader right now: wait.
    NoLeader,
    Leader(NodeId),
}

/// One transaction whose markers are not all written, with whatever the shell waits on.
struct Queued<W> {
    job: MarkerJob,
    /// Partition -> the destination it is in flight to (`None`: waiting for a worker).
    left: BTreeMap<PartitionKey, Option<NodeId>>,
    waiter: W,
}

/// What one request to one destination carries: per job, its partitions there.
pub type Claim = Vec<(JobId, Vec<PartitionKey>)>;

pub struct MarkerQueue<W> {
    next_id: JobId,
    jobs: BTreeMap<JobId, Queued<W>>,
}

impl<W> Default for MarkerQueue<W> {
    fn default() -> Self {
        MarkerQueue {
            next_id: 0,
            jobs: BTreeMap::new(),
        }
    }
}

impl<W> MarkerQueue<W> {
    pub fn push(&mut self, job: MarkerJob, waiter: W) -> JobId {
        let left = job
            .partitions
            .iter()
            .flat_map(|(topic, ids)| ids.iter().map(move |id| ((topic.clone(), *id), None)))
            .collect();
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(id, Queued { job, left, waiter });
        id
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Every job's id and waiter (the shell asks each whether it is still wanted).
    pub fn waiters(&self) -> impl Iterator<Item = (JobId, &W)> {
        self.jobs.iter().map(|(id, queued)| (*id, &queued.waiter))
    }

    /// Removes a job whatever is left of it (abandoned); its claims die with it, and an
    /// answer for them later settles nothing.
    pub fn remove(&mut self, id: JobId) -> Option<W> {
        self.jobs.remove(&id).map(|queued| queued.waiter)
    }

    /// Removes and returns the jobs with nothing left.
    pub fn take_finished(&mut self) -> Vec<W> {
        let finished: Vec<JobId> = (self.jobs.iter())
            .filter(|(_, queued)| queued.left.is_empty())
            .map(|(id, _)| *id)
            .collect();
        let waiters = finished.iter().filter_map(|id| self.remove(*id));
        waiters.collect()
    }

    /// The destinations that have unclaimed partitions waiting; drops the unclaimed
    /// partitions whose topic is gone.
    pub fn route(&mut self, placement: &dyn Fn(&str, i32) -> Placement) -> BTreeSet<NodeId> {
        let mut destinations = BTreeSet::new();
        for queued in self.jobs.values_mut() {
            queued.left.retain(|(topic, partition), claimed| {
                if claimed.is_some() {
                    return true;
                }
                match placement(topic, *partition) {
                    Placement::Gone => {
                        tracing::info!(topic, partition, "no marker for a partition that is gone");
                        false
                    }
                    Placement::NoLeader => true,
                    Placement::Leader(leader) => {
                        destinations.insert(leader);
                        true
                    }
                }
            });
        }
        destinations
    }

    /// Claims for `destination` the unclaimed partitions it leads, from at most
    /// `markers_max` jobs, oldest first, one job per producer id.
    pub fn claim(
        &mut self,
        destination: NodeId,
        placement: &dyn Fn(&str, i32) -> Placement,
        markers_max: usize,
    ) -> Claim {
        let mut claim = Vec::new();
        let mut producers = BTreeSet::new();
        for (id, queued) in self.jobs.iter_mut() {
            if claim.len() == markers_max {
                break;
            }
            if producers.contains(&queued.job.producer_id) {
                continue;
            }
            let mut partitions = Vec::new();
            for ((topic, partition), claimed) in queued.left.iter_mut() {
                let here = placement(topic, *partition) == Placement::Leader(destination);
                if claimed.is_none() && here {
                    *claimed = Some(destination);
                    partitions.push((topic.clone(), *partition));
                }
            }
            if !partitions.is_empty() {
                producers.insert(queued.job.producer_id);
                claim.push((*id, partitions));
            }
        }
        assert!(claim.len() <= markers_max);
        claim
    }

    /// The job a claim entry belongs to (None once it was removed).
    pub fn job(&self, id: JobId) -> Option<&MarkerJob> {
        self.jobs.get(&id).map(|queued| &queued.job)
    }

    /// Applies `destination`'s answer to `claim`: a partition `done` says is finished
    /// leaves its job; every other one is released for the next round. Returns how many
    /// partitions finished.
    pub fn settle(
        &mut self,
        destination: NodeId,
        claim: &Claim,
        done: &dyn Fn(i64, &PartitionKey) -> bool,
    ) -> usize {
        let mut finished = 0;
        for (id, partitions) in claim {
            let Some(queued) = self.jobs.get_mut(id) else {
                continue;
            };
            for key in partitions {
                if queued.left.get(key) != Some(&Some(destination)) {
                    continue;
                }
                if done(queued.job.producer_id, key) {
                    queued.left.remove(key);
                    finished += 1;
                } else {
                    queued.left.insert(key.clone(), None);
                }
            }
        }
        finished
    }

    /// Releases every partition in flight to `destination`: its worker died, so no answer
    /// will come.
    pub fn release(&mut self, destination: NodeId) -> usize {
        let mut released = 0;
        for queued in self.jobs.values_mut() {
            for claimed in queued.left.values_mut() {
                if *claimed == Some(destination) {
                    *claimed = None;
                    released += 1;
                }
            }
        }
        released
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::txn::records::TxnPartitions;

    /// A commit job for `producer_id` on `partitions` (the sender's tests use it too).
    pub(crate) fn job(producer_id: i64, partitions: &[(&str, i32)]) -> MarkerJob {
        let mut map = TxnPartitions::new();
        for (topic, partition) in partitions {
            map.entry(topic.to_string()).or_default().insert(*partition);
        }
        MarkerJob {
            producer_id,
            producer_epoch: 0,
            commit: true,
            coordinator_epoch: 0,
            partitions: map,
        }
    }

    /// Topic "a" is led by node 1, "b" by node 2, "c" has no leader; others are gone.
    fn placement(topic: &str, _partition: i32) -> Placement {
        match topic {
            "a" => Placement::Leader(1),
            "b" => Placement::Leader(2),
            "c" => Placement::NoLeader,
            _ => Placement::Gone,
        }
    }

    #[test]
    fn partitions_are_routed_claimed_once_and_settled() {
        let mut queue = MarkerQueue::default();
        let first = queue.push(job(7, &[("a", 0), ("b", 0), ("gone", 0)]), "first");
        queue.push(job(8, &[("a", 1), ("c", 0)]), "second");
        assert_eq!(queue.route(&placement), BTreeSet::from([1, 2]));
        let to_one = queue.claim(1, &placement, 10);
        assert_eq!(to_one.len(), 2, "{to_one:?}");
        // Claimed partitions are not handed out again, nor routed.
        assert!(queue.claim(1, &placement, 10).is_empty());
        assert_eq!(queue.route(&placement), BTreeSet::from([2]));
        // Partition a-0 is done; a-1 was refused and waits for the next round.
        let done = |producer_id: i64, key: &PartitionKey| producer_id == 7 && key.1 == 0;
        assert_eq!(queue.settle(1, &to_one, &done), 1);
        assert_eq!(queue.claim(1, &placement, 10).len(), 1);
        let to_two = queue.claim(2, &placement, 10);
        assert_eq!(to_two, vec![(first, vec![("b".to_string(), 0)])]);
        assert_eq!(queue.settle(2, &to_two, &|_, _| true), 1);
        assert_eq!(queue.take_finished(), vec!["first"]);
        assert_eq!(queue.len(), 1, "the second still waits for a leader of c-0");
    }

    #[test]
    fn one_marker_per_producer_per_request_and_a_cap_on_markers() {
        let mut queue = MarkerQueue::default();
        queue.push(job(7, &[("a", 0)]), ());
        queue.push(job(7, &[("a", 1)]), ());
        queue.push(job(9, &[("a", 2)]), ());
        queue.push(job(10, &[("a", 3)]), ());
        let claim = queue.claim(1, &placement, 2);
        let ids: Vec<JobId> = claim.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![0, 2]);
        let claim = queue.claim(1, &placement, 2);
        let ids: Vec<JobId> = claim.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn a_dead_workers_claims_are_released_and_stale_answers_ignored() {
        let mut queue = MarkerQueue::default();
        queue.push(job(7, &[("a", 0), ("a", 1)]), ());
        let claim = queue.claim(1, &placement, 10);
        assert_eq!(queue.release(1), 2);
        let again = queue.claim(1, &placement, 10);
        assert_eq!(again, claim);
        // The leader moved: partition a-0 now goes to node 2 once released.
        let moved = |topic: &str, partition: i32| match (topic, partition) {
            ("a", 0) => Placement::Leader(2),
            other => placement(other.0, other.1),
        };
        assert_eq!(queue.settle(1, &again, &|_, key| key.1 == 1), 1);
        assert_eq!(queue.route(&moved), BTreeSet::from([2]));
        // An answer for a claim that was released and re-claimed elsewhere settles nothing.
        let to_two = queue.claim(2, &moved, 10);
        assert_eq!(queue.settle(1, &again, &|_, _| true), 0);
        assert_eq!(queue.settle(2, &to_two, &|_, _| true), 1);
        assert_eq!(queue.take_finished().len(), 1);
        assert!(queue.is_empty());
    }
}
