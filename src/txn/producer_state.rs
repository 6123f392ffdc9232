//! Per-partition idempotent-producer state, a pure state machine.
//!
//! For each producer id the partition remembers the epoch and the last
//! [`BATCHES_REMEMBERED`] batches (sequence range and offsets). A retried batch that
//! matches one of them is a duplicate and gets its original offsets back; any other batch
//! must continue the sequence exactly, or it is out of order. Mirrors Kafka's
//! `ProducerStateManager` / `ProducerAppendInfo.checkSequence`.

use std::collections::{HashMap, VecDeque};

use crate::log::BatchHeader;

/// Kafka keeps the metadata of the last five batches per producer (max.in.flight = 5).
pub const BATCHES_REMEMBERED: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already in the log: answer with these offsets, append nothing.
    Duplicate(BatchRecord),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("out of order sequence {found} for producer {producer_id}, expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        found: i32,
        expected: i32,
    },
    #[error("producer {producer_id} epoch {found} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        found: i16,
        current: i16,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    /// Decides what to do with a batch before it is appended. Batches without a producer id
    /// are always accepted.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Accept);
        }
        let producer_id = header.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired): Kafka accepts any sequence.
            return Ok(SequenceCheck::Accept);
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id,
                found: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            // A bumped epoch restarts the sequence at zero.
            return match header.base_sequence {
                0 => Ok(SequenceCheck::Accept),
                found => Err(SequenceError::OutOfOrder {
                    producer_id,
                    found,
                    expected: 0,
                }),
            };
        }
        if let Some(batch) = entry.batches.iter().find(|batch| {
            batch.first_sequence == header.base_sequence
                && batch.last_sequence == header.last_sequence()
        }) {
            return Ok(SequenceCheck::Duplicate(*batch));
        }
        let last = entry.batches.back().map(|batch| batch.last_sequence);
        match last {
            Some(last) if !follows(last, header.base_sequence) => Err(SequenceError::OutOfOrder {
                producer_id,
                found: header.base_sequence,
                expected: next_sequence(last),
            }),
            _ => Ok(SequenceCheck::Accept),
        }
    }

    /// Records a batch that is now in the log at `first_offset..=first_offset+delta`.
    pub fn update(&mut self, header: &BatchHeader, first_offset: i64) {
        if !header.has_producer_id() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchRecord {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            first_offset,
            last_offset: first_offset + i64::from(header.last_offset_delta),
            max_timestamp: header.max_timestamp,
        });
    }
}

impl ProducerStateTable {
    /// Every producer's id, epoch and remembered batches (oldest first), for snapshots.
    pub fn producers(&self) -> impl Iterator<Item = (i64, i16, &VecDeque<BatchRecord>)> {
        self.producers
            .iter()
            .map(|(id, entry)| (*id, entry.epoch, &entry.batches))
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Restores one producer from a snapshot; keeps the newest [`BATCHES_REMEMBERED`].
    pub fn restore(&mut self, producer_id: i64, epoch: i16, batches: &[BatchRecord]) {
        let kept = &batches[batches.len().saturating_sub(BATCHES_REMEMBERED)..];
        let entry = ProducerEntry {
            epoch,
            batches: kept.iter().copied().collect(),
        };
        self.producers.insert(producer_id, entry);
    }
}

/// Sequences wrap from i32::MAX to 0, as in Kafka.
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn follows(last: i32, first: i32) -> bool {
    first == next_sequence(last)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A v2 batch header of `records` records from `sequence` (tests of the table and its
    /// snapshots).
    pub(crate) fn batch(producer_id: i64, epoch: i16, sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
            record_count: records,
        }
    }

    fn accept(table: &mut ProducerStateTable, header: BatchHeader, offset: i64) {
        assert_eq!(table.check(&header), Ok(SequenceCheck::Accept));
        table.update(&header, offset);
    }

    #[test]
    fn in_order_batches_are_accepted_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, batch(7, 0, 0, 3), 0);
        accept(&mut table, batch(7, 0, 3, 2), 3);
        match table.check(&batch(7, 0, 0, 3)) {
            Ok(SequenceCheck::Duplicate(record)) => {
                assert_eq!((record.first_offset, record.last_offset), (0, 2))
            }
            other => panic!("expected duplicate, got {other:?}"),
        }
        assert_eq!(
            table.check(&batch(7, 0, 10, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                found: 10,
                expected: 5
            })
        );
        assert_eq!(
            table.check(&batch(7, 0, 4, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                found: 4,
                expected: 5
            })
        );
    }

    #[test]
    fn epochs_fence_and_reset_sequences() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, batch(1, 2, 0, 1), 0);
        assert!(matches!(
            table.check(&batch(1, 1, 1, 1)),
            Err(SequenceError::StaleEpoch { .. })
        ));
        assert!(matches!(
            table.check(&batch(1, 3, 5, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        accept(&mut table, batch(1, 3, 0, 1), 1);
        accept(&mut table, batch(1, 3, 1, 1), 2);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..6 {
            accept(&mut table, batch(9, 0, i, 1), i64::from(i));
        }
        assert!(matches!(
            table.check(&batch(9, 0, 0, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            table.check(&batch(9, 0, 1, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn unknown_producers_and_plain_batches_pass() {
        let table = ProducerStateTable::default();
        assert_eq!(table.check(&batch(5, 0, 42, 1)), Ok(SequenceCheck::Accept));
        assert_eq!(
            table.check(&batch(-1, -1, -1, 1)),
            Ok(SequenceCheck::Accept)
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert!(follows(i32::MAX, 0));
        assert!(!follows(i32::MAX, i32::MAX));
    }
}
