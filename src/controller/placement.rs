//! Replica placement for new partitions: round-robin over the registered brokers, so
//! leaders and replicas spread evenly (Kafka's non-rack-aware assignment, simplified).

use crate::types::NodeId;

/// Replica lists for partitions `first_partition..first_partition + count`.
/// `brokers` must be sorted and non-empty, and `replication_factor <= brokers.len()`.
pub fn assign_replicas(
    brokers: &[NodeId],
    first_partition: i32,
    count: i32,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<NodeId>> {
    assert!(!brokers.is_empty());
    assert!(replication_factor >= 1 && replication_factor <= brokers.len());
    (first_partition..first_partition + count)
        .map(|partition| {
            let first = start + partition as usize;
            (0..replication_factor)
                .map(|i| brokers[(first + i) % brokers.len()])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_rotate_and_replicas_are_distinct() {
        let assignments = assign_replicas(&[1, 2, 3], 0, 6, 3, 0);
        let leaders: Vec<_> = assignments.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        for replicas in &assignments {
            let mut sorted = replicas.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3);
        }
        assert_eq!(assign_replicas(&[1], 4, 2, 1, 7), vec![vec![1], vec![1]]);
    }
}
