//! Kafka's clean-shutdown marker: `.kafka_cleanshutdown` in the log directory.
//!
//! Written at shutdown after every log was flushed, so its presence at start-up means each
//! active segment ends exactly where its last append ended and its index files were
//! written in full: logs open from their indexes without a CRC scan (`recovery`). It is
//! removed (and the removal made durable) at start-up, before the broker accepts a write,
//! so a later crash is never mistaken for a clean stop.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
/// Kafka 3.7+ writes this JSON (`CleanShutdownFileHandler`); only presence matters here.
const MARKER_CONTENT: &[u8] = b"{\"version\":0,\"brokerEpoch\":-1}";

/// How the logs of a directory were last closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastShutdown {
    /// Flushed and closed: active segments can be trusted like sealed ones.
    Clean,
    /// Killed, crashed or unknown: active segments are CRC-scanned.
    Unclean,
}

/// Reads and removes the marker (durably); what it says about the last shutdown.
pub fn take_marker(log_dir: &Path) -> io::Result<LastShutdown> {
    let path = log_dir.join(CLEAN_SHUTDOWN_FILE);
    match fs::remove_file(&path) {
        Ok(()) => {
            File::open(log_dir)?.sync_all()?;
            Ok(LastShutdown::Clean)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(LastShutdown::Unclean),
        Err(error) => Err(error),
    }
}

/// Writes the marker durably (file, then directory). Call only after every log in
/// `log_dir` was flushed and no more appends can happen.
pub fn write_marker(log_dir: &Path) -> io::Result<()> {
    let path = log_dir.join(CLEAN_SHUTDOWN_FILE);
    let mut file = File::create(&path)?;
    file.write_all(MARKER_CONTENT)?;
    file.sync_all()?;
    File::open(log_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_marker(dir.path()).unwrap(), LastShutdown::Unclean);
        write_marker(dir.path()).unwrap();
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert_eq!(take_marker(dir.path()).unwrap(), LastShutdown::Clean);
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert_eq!(take_marker(dir.path()).unwrap(), LastShutdown::Unclean);
    }
}
