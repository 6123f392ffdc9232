//! The single-voter metadata log: one checksummed command per line, fsynced before the
//! command is applied or acknowledged, replayed on start.
//!
//! File `metadata.log`, one record per line: `<crc32c of the JSON, 8 hex digits> <JSON>\n`
//! (readable with `less`, checkable with any CRC-32C tool). The rules, Kafka's own:
//! - Only an incomplete final record (no terminator) is a torn tail: its fsync never
//!   returned, so it was never acknowledged; replay truncates it (and fsyncs).
//! - A complete record with a bad checksum, or one that does not apply, stops start-up
//!   with an error naming the file and byte offset: dropping it, or what follows it, would
//!   lose acknowledged metadata (a topic, a deletion, a producer-id block).
//! - A failed append (write or fsync, e.g. ENOSPC) truncates the file back to its length
//!   before the append and fsyncs it; the command is neither applied nor acknowledged. If
//!   that truncation fails too, the log is poisoned: every later append fails, so nothing
//!   is ever written after a partial record. (A restart then cuts a partial record off as
//!   a torn tail; a record written whole whose fsync failed replays, like a request that
//!   timed out but took effect: at worst a topic appears or a producer-id block is skipped.)
//!
//! The old unchecksummed `metadata.jsonl` is converted once, strictly: every complete line
//! must parse and apply (else start-up refuses, naming file and offset); only a final line
//! without its newline is dropped as a torn tail. The converted log is published by
//! rename, then the old file is renamed to `metadata.jsonl.converted` (kept, never read).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::ControllerError;
use super::commands::{self, MetadataCommand};
use super::image::MetadataImage;
use crate::log::durable::{create_dir_durably, publish_file, sync_directory};

const LOG_FILE_NAME: &str = "metadata.log";
const LEGACY_FILE_NAME: &str = "metadata.jsonl";
const LEGACY_CONVERTED_NAME: &str = "metadata.jsonl.converted";
/// Hex digits of the checksum, then one space, then the JSON.
const CRC_HEX_DIGITS: usize = 8;

/// What the log needs from its file: a seam so tests can fail any step.
pub trait LogFile {
    /// Writes all of `bytes` at the end of the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `length` bytes and makes that durable.
    fn truncate(&mut self, length: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        // The file is opened with O_APPEND: every write lands at the current end, also
        // after a truncation.
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, length: u64) -> io::Result<()> {
        self.set_len(length)?;
        self.sync_all()
    }
}

pub struct CommandLog<F: LogFile = File> {
    file: F,
    path: PathBuf,
    /// Bytes of whole, durable records: where the next record starts.
    length: u64,
    /// Why appends are refused, once a failed append could not be undone.
    poisoned: Option<String>,
}

impl CommandLog<File> {
    /// Opens (creating or converting if needed) the log under `dir` and replays it.
    pub fn open(dir: &Path) -> Result<(CommandLog, MetadataImage), ControllerError> {
        create_dir_durably(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        if !path.try_exists()? {
            create_log_file(dir)?;
        }
        set_legacy_file_aside(dir)?;
        let mut file = OpenOptions::new().read(true).append(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let replayed = replay(&bytes, &path)?;
        if replayed.length < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = replayed.length,
                torn_bytes = bytes.len() as u64 - replayed.length,
                "truncating the torn (never acknowledged) tail of the metadata log"
            );
            file.truncate(replayed.length)?;
        }
        let log = CommandLog::new(file, path, replayed.length);
        Ok((log, replayed.image))
    }
}

impl<F: LogFile> CommandLog<F> {
    fn new(file: F, path: PathBuf, length: u64) -> CommandLog<F> {
        CommandLog {
            file,
            path,
            length,
            poisoned: None,
        }
    }

    /// Appends `command` and returns once it is durable. On error nothing was added: the
    /// file is as it was, or the log is poisoned and refuses every later append.
    pub fn append(&mut self, command: &MetadataCommand) -> Result<(), ControllerError> {
        if let Some(reason) = &self.poisoned {
            return Err(ControllerError::LogPoisoned(reason.clone()));
        }
        let record = encode_record(command)?;
        // Paired with replay's check: a record that would not decode back to this command
        // would stop every later start-up, so it must never reach the disk.
        let terminator = record.len() - 1;
        assert_eq!(
            decode_record(&record[..terminator]).as_ref(),
            Ok(command),
            "an encoded record decodes back to its command"
        );
        let written = self.file.append(&record).and_then(|()| self.file.sync());
        match written {
            Ok(()) => {
                self.length += record.len() as u64;
                Ok(())
            }
            Err(error) => Err(self.roll_back(error)),
        }
    }

    /// Undoes a failed append; poisons the log if even that fails.
    fn roll_back(&mut self, cause: io::Error) -> ControllerError {
        let path = self.path.display().to_string();
        match self.file.truncate(self.length) {
            Ok(()) => {
                tracing::error!(%path, error = %cause, "metadata append failed; rolled back");
                ControllerError::AppendFailed {
                    path,
                    source: cause,
                }
            }
            Err(truncate_error) => {
                let reason = format!(
                    "{path}: an append failed ({cause}) and truncating back to {} bytes \
                     failed too ({truncate_error}); restart the broker to recover",
                    self.length
                );
                tracing::error!(%reason, "metadata log poisoned");
                self.poisoned = Some(reason.clone());
                ControllerError::LogPoisoned(reason)
            }
        }
    }
}

/// `<crc32c hex> <json>\n`.
fn encode_record(command: &MetadataCommand) -> Result<Vec<u8>, ControllerError> {
    let json = serde_json::to_vec(command)
        .map_err(|error| ControllerError::Corrupt(format!("encode {command:?}: {error}")))?;
    // Compact serde_json escapes control characters, so a record is exactly one line.
    assert!(!json.contains(&b'\n'), "a JSON record holds no raw newline");
    let mut record = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    record.extend_from_slice(&json);
    record.push(b'\n');
    Ok(record)
}

/// Decodes one record without its terminator; the error says what is wrong with it.
fn decode_record(line: &[u8]) -> Result<MetadataCommand, String> {
    if line.len() <= CRC_HEX_DIGITS || line[CRC_HEX_DIGITS] != b' ' {
        return Err("not a `<crc32c> <json>` record".into());
    }
    let (crc_hex, json) = (&line[..CRC_HEX_DIGITS], &line[CRC_HEX_DIGITS + 1..]);
    let expected = std::str::from_utf8(crc_hex)
        .ok()
        .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("the checksum is not 8 hex digits")?;
    let actual = crc32c::crc32c(json);
    if actual != expected {
        return Err(format!(
            "checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        ));
    }
    serde_json::from_slice(json)
        .map_err(|error| format!("checksum matches but JSON does not parse: {error}"))
}

struct Replayed {
    image: MetadataImage,
    /// Bytes of whole records; anything after is a torn tail.
    length: u64,
}

/// Applies every whole record of `bytes` (the content of `path`); a bad one is an error.
fn replay(bytes: &[u8], path: &Path) -> Result<Replayed, ControllerError> {
    let mut image = MetadataImage::default();
    let mut offset = 0;
    while let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') {
        let line = &bytes[offset..offset + end];
        let command = decode_record(line).map_err(|reason| corrupt(path, offset, reason))?;
        apply_at(&mut image, &command, path, offset)?;
        offset += end + 1;
    }
    check_torn_tail(&bytes[offset..], path, offset)?;
    Ok(Replayed {
        image,
        length: offset as u64,
    })
}

/// A tail without a newline is torn, unless it is a whole valid record whose terminator
/// byte was damaged: that record may have been acknowledged, so it must not be dropped.
fn check_torn_tail(tail: &[u8], path: &Path, offset: usize) -> Result<(), ControllerError> {
    match tail.split_last() {
        Some((_, body)) if decode_record(body).is_ok() => Err(corrupt(
            path,
            offset,
            "a whole record ends in a damaged terminator".into(),
        )),
        _ => Ok(()),
    }
}

fn apply_at(
    image: &mut MetadataImage,
    command: &MetadataCommand,
    path: &Path,
    offset: usize,
) -> Result<(), ControllerError> {
    // The entry's index: apply reads it (broker epochs) and never sets it.
    image.applied_index += 1;
    commands::apply(image, command)
        .map(drop)
        .map_err(|error| corrupt(path, offset, format!("record does not apply: {error}")))
}

fn corrupt(path: &Path, offset: usize, reason: String) -> ControllerError {
    ControllerError::CorruptRecord {
        path: path.display().to_string(),
        offset: offset as u64,
        reason,
    }
}

/// Creates `metadata.log`: converted from the old `metadata.jsonl` if there is one,
/// otherwise empty; published by rename either way, so it is never half-written.
fn create_log_file(dir: &Path) -> Result<(), ControllerError> {
    let legacy_path = dir.join(LEGACY_FILE_NAME);
    let records = match std::fs::read(&legacy_path) {
        Ok(bytes) => convert_legacy(&bytes, &legacy_path)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    publish_file(dir, LOG_FILE_NAME, &records)?;
    Ok(())
}

/// Re-encodes every command of an old-format log with checksums, refusing any bad line.
fn convert_legacy(bytes: &[u8], path: &Path) -> Result<Vec<u8>, ControllerError> {
    let mut image = MetadataImage::default();
    let mut records = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    let mut offset = 0;
    while let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') {
        let command: MetadataCommand = serde_json::from_slice(&bytes[offset..offset + end])
            .map_err(|error| {
                corrupt(path, offset, format!("unreadable old-format line: {error}"))
            })?;
        apply_at(&mut image, &command, path, offset)?;
        records.extend_from_slice(&encode_record(&command)?);
        offset += end + 1;
    }
    tracing::warn!(
        path = %path.display(),
        commands = image.applied_index,
        torn_bytes = bytes.len() - offset,
        "converted the old metadata log to checksummed records"
    );
    Ok(records)
}

/// Once `metadata.log` exists the old file is never read again; rename it so nobody
/// mistakes it for the live log (kept, not deleted: it is the operator's to remove).
fn set_legacy_file_aside(dir: &Path) -> Result<(), ControllerError> {
    let legacy_path = dir.join(LEGACY_FILE_NAME);
    if legacy_path.try_exists()? {
        std::fs::rename(&legacy_path, dir.join(LEGACY_CONVERTED_NAME))?;
        sync_directory(dir)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
