//! Retention decisions, pure: how many of the oldest segments `retention.ms` and
//! `retention.bytes` allow deleting. `PartitionLog::enforce_retention` carries them out.
//!
//! As in Kafka (`UnifiedLog.deleteOldSegments`), only a prefix of the log is deleted: the
//! walk stops at the first segment that must stay. The last segment counts too when it is
//! non-empty; the caller then rolls first so that the log keeps an active segment.

/// What retention needs to know about one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) size_bytes: u64,
    /// The newest record timestamp (or the file's modification time if none).
    pub(crate) largest_timestamp_ms: i64,
}

/// Oldest segments whose newest record is more than `retention_ms` old; -1 keeps all.
pub(crate) fn expired_by_time(
    segments: &[SegmentSummary],
    now_ms: i64,
    retention_ms: i64,
) -> usize {
    if retention_ms < 0 {
        return 0;
    }
    deletable_prefix(segments, |segment| {
        now_ms.saturating_sub(segment.largest_timestamp_ms) > retention_ms
    })
}

/// Oldest segments whose removal keeps the total size at or above `retention_bytes`
/// without leaving more than needed; -1 keeps all.
pub(crate) fn excess_by_size(segments: &[SegmentSummary], retention_bytes: i64) -> usize {
    let Ok(retention_bytes) = u64::try_from(retention_bytes) else {
        return 0;
    };
    let total_bytes: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
    let Some(mut excess_bytes) = total_bytes.checked_sub(retention_bytes) else {
        return 0;
    };
    deletable_prefix(segments, |segment| {
        let fits = segment.size_bytes <= excess_bytes;
        if fits {
            excess_bytes -= segment.size_bytes;
        }
        fits
    })
}

/// Length of the leading run of segments that `deletable` accepts, never counting an empty
/// last segment (deleting it would gain nothing and force a pointless roll).
fn deletable_prefix(
    segments: &[SegmentSummary],
    mut deletable: impl FnMut(&SegmentSummary) -> bool,
) -> usize {
    let last = segments.len().saturating_sub(1);
    segments
        .iter()
        .enumerate()
        .take_while(|(index, segment)| {
            let empty_last = *index == last && segment.size_bytes == 0;
            !empty_last && deletable(segment)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(size_bytes: u64, largest_timestamp_ms: i64) -> SegmentSummary {
        SegmentSummary {
            size_bytes,
            largest_timestamp_ms,
        }
    }

    #[test]
    fn time_retention_deletes_the_expired_prefix() {
        let segments = [
            summary(10, 100),
            summary(10, 200),
            summary(10, 150),
            summary(10, 900),
        ];
        assert_eq!(expired_by_time(&segments, 1_000, 850), 1);
        assert_eq!(expired_by_time(&segments, 1_000, 790), 3);
        assert_eq!(expired_by_time(&segments, 1_000, 10_000), 0);
        assert_eq!(expired_by_time(&segments, 1_000, -1), 0);
    }

    #[test]
    fn time_retention_stops_at_the_first_young_segment() {
        let segments = [
            summary(10, 100),
            summary(10, 950),
            summary(10, 100),
            summary(10, 960),
        ];
        assert_eq!(expired_by_time(&segments, 1_000, 500), 1);
    }

    #[test]
    fn time_retention_may_include_a_non_empty_last_segment_only() {
        let expired = [summary(10, 100), summary(10, 100)];
        assert_eq!(expired_by_time(&expired, 1_000, 10), 2);
        let empty_last = [summary(10, 100), summary(0, 0)];
        assert_eq!(expired_by_time(&empty_last, 1_000, 10), 1);
    }

    #[test]
    fn size_retention_deletes_only_whole_excess_segments() {
        let segments = [
            summary(100, 0),
            summary(100, 0),
            summary(100, 0),
            summary(50, 0),
        ];
        assert_eq!(excess_by_size(&segments, 350), 0);
        assert_eq!(excess_by_size(&segments, 250), 1);
        assert_eq!(excess_by_size(&segments, 249), 1);
        assert_eq!(excess_by_size(&segments, 150), 2);
        assert_eq!(excess_by_size(&segments, 0), 4);
        assert_eq!(excess_by_size(&segments, -1), 0);
        assert_eq!(excess_by_size(&segments, 10_000), 0);
    }
}

#[cfg(test)]
mod log_tests {
    use crate::log::config::LogConfig;
    use crate::log::error::LogError;
    use crate::log::partition_log::PartitionLog;
    use crate::log::test_support::LogModel;

    /// 30 batches with timestamps 1_000, 1_100, ... in segments of about 1 KiB.
    fn filled(dir: &std::path::Path, config: LogConfig) -> LogModel {
        let mut model = LogModel::open(dir, config);
        for index in 0..30 {
            model.append_records(2, 1_000 + 100 * index as i64, 60);
        }
        model
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1_024,
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        }
    }

    fn segment_logs(dir: &std::path::Path) -> usize {
        let entries = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path());
        entries
            .filter(|path| path.extension().is_some_and(|e| e == "log"))
            .count()
    }

    fn assert_out_of_range_below(model: &LogModel) {
        let start = model.log.log_start_offset();
        let error = model
            .log
            .read(start - 1, 1_000, i64::MAX, true)
            .unwrap_err();
        assert!(
            matches!(error, LogError::OffsetOutOfRange { log_start, .. } if log_start == start)
        );
        model.assert_reads_from(start);
    }

    #[test]
    fn time_retention_deletes_old_segments_and_moves_the_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path(), config());
        let before = segment_logs(dir.path());
        assert_eq!(model.log.enforce_retention(10_000).unwrap(), 0);
        model.log.set_config(LogConfig {
            retention_ms: 7_000,
            ..config()
        });
        // Keeps every segment holding a record newer than 10_000 - 7_000.
        let deleted = model.log.enforce_retention(10_000).unwrap();
        assert!(deleted > 0 && deleted < before, "{deleted} of {before}");
        assert_eq!(segment_logs(dir.path()), before - deleted);
        let start = model.log.log_start_offset();
        assert!(start > 0);
        let first_kept = model.batch_holding(start);
        assert_eq!(model.batches[first_kept].0.base_offset, start);
        assert!(model.batches[first_kept - 1].0.max_timestamp < 3_000);
        assert_out_of_range_below(&model);
        assert_eq!(model.log.log_end_offset(), 60);
        assert_eq!(model.log.offset_for_timestamp(0).unwrap().unwrap().0, start);
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(
            dir.path(),
            LogConfig {
                retention_bytes: 2_500,
                ..config()
            },
        );
        let total: usize = model.batches.iter().map(|(_, bytes)| bytes.len()).sum();
        let deleted = model.log.enforce_retention(0).unwrap();
        assert!(deleted > 0);
        let kept: usize = model
            .bytes_from(model.batch_holding(model.log.log_start_offset()))
            .len();
        assert!(kept >= 2_500 && kept < total, "kept {kept} of {total}");
        assert_out_of_range_below(&model);
        assert_eq!(model.log.enforce_retention(0).unwrap(), 0);
    }

    #[test]
    fn retention_never_deletes_a_segment_reaching_above_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(
            dir.path(),
            LogConfig {
                retention_ms: 100,
                ..config()
            },
        );
        // Committed only up to offset 25: segments ending above it stay, however old.
        let deleted = model.log.enforce_retention_below(1_000_000, 25).unwrap();
        assert!(deleted > 0);
        assert!(model.log.log_start_offset() <= 25);
        assert_eq!(model.log.log_end_offset(), 60);
        assert_eq!(model.log.enforce_retention_below(1_000_000, 25).unwrap(), 0);
        // Nothing committed: nothing deleted.
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(
            dir.path(),
            LogConfig {
                retention_ms: 100,
                ..config()
            },
        );
        assert_eq!(model.log.enforce_retention_below(1_000_000, 0).unwrap(), 0);
        assert_eq!(model.log.log_start_offset(), 0);
    }

    #[test]
    fn an_expired_active_segment_is_rolled_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(
            dir.path(),
            LogConfig {
                retention_ms: 100,
                ..config()
            },
        );
        let deleted = model.log.enforce_retention(1_000_000).unwrap();
        assert!(deleted > 1);
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (60, 60)
        );
        assert_eq!(segment_logs(dir.path()), 1);
        let read = model.log.read(60, 1_000, i64::MAX, true).unwrap();
        assert!(read.records.is_empty());
        assert_eq!(model.log.enforce_retention(2_000_000).unwrap(), 0);
        model.log = PartitionLog::open(dir.path().to_path_buf(), config(), 0).unwrap();
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (60, 60)
        );
        model.append_records(1, 3_000_000, 10);
        assert_eq!(model.batches.last().unwrap().0.base_offset, 60);
    }

    #[test]
    fn a_log_start_inside_a_segment_deletes_below_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path(), config());
        let before = segment_logs(dir.path());
        // Offset 31 is the second record of the batch at 30, inside a segment.
        assert!(model.log.increment_log_start(31).unwrap());
        assert!(
            !model.log.increment_log_start(20).unwrap(),
            "never backwards"
        );
        assert_eq!(model.log.log_start_offset(), 31);
        let deleted = before - segment_logs(dir.path());
        assert!(deleted > 0, "segments wholly below 31 go at once");
        assert!(model.log.segments[0].base_offset() <= 30);
        assert_out_of_range_below(&model);
        // Nothing else qualifies for deletion while retention keeps everything.
        assert_eq!(model.log.enforce_retention(1_000_000).unwrap(), 0);
        let beyond = model.log.increment_log_start(61).unwrap_err();
        assert!(matches!(
            beyond,
            LogError::OffsetOutOfRange { offset: 61, .. }
        ));

        model.log = PartitionLog::open(dir.path().to_path_buf(), config(), 0).unwrap();
        assert_eq!(model.log.log_start_offset(), 31);
        assert_out_of_range_below(&model);
        // A timestamp lookup never answers below the start.
        assert_eq!(model.log.offset_for_timestamp(0).unwrap().unwrap().0, 31);

        // A damaged checkpoint is ignored: the start falls back to the first segment's
        // base (records come back; none is lost).
        let checkpoint = dir
            .path()
            .join(crate::log::log_start_checkpoint::LOG_START_CHECKPOINT_FILE);
        std::fs::write(&checkpoint, "0\n45\ncrc32c 00000000\n").unwrap();
        model.log = PartitionLog::open(dir.path().to_path_buf(), config(), 0).unwrap();
        assert_eq!(
            model.log.log_start_offset(),
            model.log.segments[0].base_offset()
        );
        model.assert_reads_from(model.log.log_start_offset());
    }

    #[test]
    fn truncating_between_the_first_segment_base_and_a_start_inside_it_cuts_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path(), config());
        assert!(model.log.increment_log_start(31).unwrap());
        let first_base = model.log.segments[0].base_offset();
        assert!(first_base < 31);
        // A follower cut below the start but inside the first segment: the segment is
        // truncated (not re-created over its own file) and the start comes down with it.
        model.log.truncate_to(first_base).unwrap();
        assert_eq!(model.log.log_end_offset(), first_base);
        assert_eq!(model.log.log_start_offset(), first_base);
        model.log = PartitionLog::open(dir.path().to_path_buf(), config(), 0).unwrap();
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (first_base, first_base)
        );
    }

    #[test]
    fn a_log_start_at_the_log_end_empties_the_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path(), config());
        assert!(model.log.increment_log_start(60).unwrap());
        assert_eq!(segment_logs(dir.path()), 1);
        let read = model.log.read(60, 1_000, i64::MAX, true).unwrap();
        assert!(read.records.is_empty());
        // The empty active segment at the start stays, pass after pass.
        assert_eq!(model.log.enforce_retention(1_000_000).unwrap(), 0);
        assert_eq!(model.log.delete_segments_below_start().unwrap(), 0);
        model.append_records(1, 5_000, 10);
        assert_eq!(model.batches.last().unwrap().0.base_offset, 60);
        model.log = PartitionLog::open(dir.path().to_path_buf(), config(), 0).unwrap();
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (60, 61)
        );
    }

    #[test]
    fn a_checkpoint_past_the_recovered_log_end_restarts_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path(), config());
        drop(model);
        crate::log::log_start_checkpoint::write(dir.path(), 75).unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config(), 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (75, 75));
        assert_eq!(segment_logs(dir.path()), 1);
    }

    #[test]
    fn the_active_segment_stays_while_it_holds_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(
            dir.path(),
            LogConfig {
                retention_ms: 100,
                ..config()
            },
        );
        // Only the newest batch (timestamp 3_900) is young enough.
        let deleted = model.log.enforce_retention(3_950).unwrap();
        assert!(deleted > 0);
        assert_eq!(segment_logs(dir.path()), 1);
        assert!(model.log.log_start_offset() < 58);
        model.assert_reads_from(model.log.log_start_offset());
    }
}
