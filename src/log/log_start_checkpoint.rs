//! `log-start-offset-checkpoint`: a log start offset that is not a segment's base offset
//! (DeleteRecords moved it into a segment, or a follower adopted its leader's), so that a
//! restart does not bring deleted records back.
//!
//! Kafka keeps one such file per log directory listing every partition; we keep one per
//! partition directory instead. The directory is bound to its topic id
//! (`partition.metadata`) and renamed aside with it on deletion, so an entry can never
//! outlive its topic and apply to a re-created one of the same name, and writing it needs no
//! lock across partitions. The text is Kafka's checkpoint layout for one entry (version 0,
//! the offset) plus a last line `crc32c <hex>` over what precedes it, as our other
//! checkpoints carry. Published by fsynced rename.
//!
//! A missing or damaged file (not one that cannot be read) means "no checkpointed start": the log starts at its first
//! segment's base offset, which shows again records a client deleted but never loses any.

use std::path::Path;

pub const LOG_START_CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
const VERSION: &str = "0";

/// The checkpointed log start offset under the partition directory `dir`, if any. A file
/// that cannot be read (out of descriptors, an I/O error) fails the open: going on without
/// it would serve records a client deleted. A damaged one is logged and ignored.
pub fn read(dir: &Path) -> std::io::Result<Option<i64>> {
    let path = dir.join(LOG_START_CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    match parse(&text) {
        Ok(offset) => Ok(Some(offset)),
        Err(reason) => {
            tracing::warn!(
                path = %path.display(), %reason,
                "ignoring a damaged log start checkpoint: the log starts at its first segment"
            );
            Ok(None)
        }
    }
}

fn parse(text: &str) -> Result<i64, String> {
    let body = super::sealed_text::unseal(text)?;
    let mut lines = body.lines();
    if lines.next() != Some(VERSION) {
        return Err("unknown version".into());
    }
    let offset: i64 = lines
        .next()
        .and_then(|line| line.parse().ok())
        .ok_or("no offset")?;
    if offset < 0 || lines.next().is_some() {
        return Err(format!("bad offset entry {offset}"));
    }
    Ok(offset)
}

fn render(offset: i64) -> String {
    super::sealed_text::seal(format!("{VERSION}\n{offset}\n"))
}

/// Durably replaces the checkpoint under `dir` with `offset`.
pub fn write(dir: &Path, offset: i64) -> std::io::Result<()> {
    assert!(offset >= 0, "log start offsets are never negative");
    super::durable::publish_file(dir, LOG_START_CHECKPOINT_FILE, render(offset).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), 1_234).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOG_START_CHECKPOINT_FILE)).unwrap();
        let checksum = format!("crc32c {:08x}\n", crc32c::crc32c(b"0\n1234\n"));
        assert_eq!(text, format!("0\n1234\n{checksum}"));
        assert_eq!(read(dir.path()).unwrap(), Some(1_234));
        write(dir.path(), 2_000).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(2_000));

        let path = dir.path().join(LOG_START_CHECKPOINT_FILE);
        let flipped = std::fs::read_to_string(&path)
            .unwrap()
            .replace("2000", "9000");
        for body in ["1\n5\n", "0\n-5\n", "0\nx\n", "0\n5\n6\n", "0\n"] {
            let checksum = format!("crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
            std::fs::write(&path, format!("{body}{checksum}")).unwrap();
            assert_eq!(read(dir.path()).unwrap(), None, "{body:?}");
        }
        for damaged in [flipped.as_str(), "0\n5\n", ""] {
            std::fs::write(&path, damaged).unwrap();
            assert_eq!(read(dir.path()).unwrap(), None, "{damaged:?}");
        }
    }

    #[test]
    fn a_checkpoint_that_cannot_be_read_fails_instead_of_being_ignored() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in its place: reading fails with an error other than NotFound.
        std::fs::create_dir(dir.path().join(LOG_START_CHECKPOINT_FILE)).unwrap();
        assert!(read(dir.path()).is_err());
    }
}
