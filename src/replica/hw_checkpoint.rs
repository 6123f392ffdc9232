//! `replication-offset-checkpoint`: every hosted partition's high watermark, one file per
//! log directory, in Kafka's format (version 0, a count, then `topic partition offset`
//! lines) plus a last line `crc32c <hex>` over everything before it, which Kafka's file
//! lacks: a flipped digit must not raise a high watermark. Published by fsynced rename.
//!
//! The file only saves work: a partition whose entry is missing or unreadable starts from
//! high watermark 0 (clamped to its log start), and a leader moves it up again as soon as
//! its in-sync replicas fetch. So a damaged file is logged and ignored, never fatal, and it
//! never causes data to be deleted. Kafka writes it every
//! `replica.high.watermark.checkpoint.interval.ms` (5 s) and at shutdown; so do we.

use std::collections::HashMap;
use std::path::Path;

use crate::types::TopicPartition;

pub const HW_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";
const VERSION: &str = "0";

/// The checkpointed high watermarks under `dir` (empty if there is no usable file).
pub fn read(dir: &Path) -> HashMap<TopicPartition, i64> {
    let path = dir.join(HW_CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "high-watermark checkpoint unreadable");
            return HashMap::new();
        }
    };
    parse(&text).unwrap_or_else(|reason| {
        tracing::warn!(
            path = %path.display(), %reason,
            "ignoring a malformed high-watermark checkpoint: leaders recompute it"
        );
        HashMap::new()
    })
}

fn parse(text: &str) -> Result<HashMap<TopicPartition, i64>, String> {
    let body = crate::log::sealed_text::unseal(text)?;
    let mut lines = body.lines();
    if lines.next() != Some(VERSION) {
        return Err("unknown version".into());
    }
    let count: usize = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or("no entry count")?;
    let mut entries = HashMap::with_capacity(count.min(1 << 16));
    for line in lines.by_ref().take(count) {
        let fields: Vec<&str> = line.split(' ').collect();
        let [topic, partition, offset] = fields[..] else {
            return Err(format!("bad entry {line:?}"));
        };
        let partition: i32 = partition
            .parse()
            .map_err(|_| format!("bad entry {line:?}"))?;
        let offset: i64 = offset.parse().map_err(|_| format!("bad entry {line:?}"))?;
        entries.insert(TopicPartition::new(topic, partition), offset);
    }
    if entries.len() != count || lines.next().is_some() {
        return Err(format!("expected {count} entries"));
    }
    Ok(entries)
}

fn render(entries: &[(TopicPartition, i64)]) -> String {
    use std::fmt::Write as _;
    // One growing string, no string per line: at a thousand partitions this runs every
    // 5 s. Writing to a String cannot fail.
    let mut text = String::with_capacity(16 + entries.len() * 32);
    let _ = write!(text, "{VERSION}\n{}\n", entries.len());
    for (tp, offset) in entries {
        let _ = writeln!(text, "{} {} {offset}", tp.topic, tp.partition);
    }
    crate::log::sealed_text::seal(text)
}

/// Replaces the checkpoint under `dir` with `entries`.
pub fn write(dir: &Path, entries: &[(TopicPartition, i64)]) -> std::io::Result<()> {
    crate::log::durable::publish_file(dir, HW_CHECKPOINT_FILE, render(entries).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_kafkas_format_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
        let entries = vec![
            (TopicPartition::new("orders", 0), 42),
            (TopicPartition::new("__consumer_offsets", 17), 0),
        ];
        write(dir.path(), &entries).unwrap();
        let text = std::fs::read_to_string(dir.path().join(HW_CHECKPOINT_FILE)).unwrap();
        let body = "0\n2\norders 0 42\n__consumer_offsets 17 0\n";
        let checksum = format!("crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
        assert_eq!(text, format!("{body}{checksum}"));
        let read_back = read(dir.path());
        assert_eq!(read_back.len(), 2);
        assert_eq!(read_back[&TopicPartition::new("orders", 0)], 42);

        let flipped = text.replace("orders 0 42", "orders 0 92");
        for body in [
            "1\n0\n",
            "0\n2\norders 0 42\n",
            "0\n1\norders x 1\n",
            "0\n1\na 0 1\nb 0 2\n",
        ] {
            let checksum = format!("crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
            std::fs::write(
                dir.path().join(HW_CHECKPOINT_FILE),
                format!("{body}{checksum}"),
            )
            .unwrap();
            assert!(read(dir.path()).is_empty(), "{body:?}");
        }
        for damaged in [flipped.as_str(), "0\n0\n", ""] {
            std::fs::write(dir.path().join(HW_CHECKPOINT_FILE), damaged).unwrap();
            assert!(read(dir.path()).is_empty(), "{damaged:?}");
        }
    }
}
