//! The single-voter command log: one JSON command per line, fsynced before a command is
//! acknowledged, replayed on start.
//!
//! A crash can leave a torn last line; it was never acknowledged (the fsync had not
//! returned), so replay drops it and truncates the file back to the last whole line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::ControllerError;
use super::commands::{self, MetadataCommand};
use super::image::MetadataImage;

const LOG_FILE_NAME: &str = "metadata.jsonl";

pub struct CommandLog {
    file: File,
    /// Length of the whole lines in the file: where the next line must start.
    valid_bytes: u64,
}

impl CommandLog {
    pub fn open(dir: &Path) -> Result<(CommandLog, MetadataImage), ControllerError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let (image, valid_bytes) = replay(&file)?;
        if valid_bytes < file.metadata()?.len() {
            tracing::warn!(path = %path.display(), valid_bytes, "truncating torn metadata log tail");
            file.set_len(valid_bytes)?;
            file.sync_all()?;
        }
        Ok((CommandLog { file, valid_bytes }, image))
    }

    /// Appends one line and fsyncs it. A failed append leaves no trace: a short write (a
    /// full disk) leaves part of the line behind, and the next line written after that
    /// fragment would not parse, so replay would stop there and lose every later command.
    pub fn append(&mut self, command: &MetadataCommand) -> Result<(), ControllerError> {
        let mut line = serde_json::to_vec(command)
            .map_err(|error| ControllerError::Corrupt(format!("encode: {error}")))?;
        line.push(b'\n');
        if self.file.metadata()?.len() != self.valid_bytes {
            // An earlier failed append whose clean-up failed too: cut its fragment now.
            self.file.set_len(self.valid_bytes)?;
        }
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            let _ = self.file.set_len(self.valid_bytes); // retried by the next append
            return Err(error.into());
        }
        self.valid_bytes += line.len() as u64;
        Ok(())
    }
}

/// Applies every whole line; returns the image and how many bytes were valid.
fn replay(file: &File) -> Result<(MetadataImage, u64), ControllerError> {
    let mut image = MetadataImage::default();
    let mut reader = BufReader::new(file);
    let mut valid_bytes = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let command: MetadataCommand = match serde_json::from_slice(&line) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%error, offset = valid_bytes, "unreadable metadata command");
                break;
            }
        };
        commands::apply(&mut image, &command).map_err(|error| {
            ControllerError::Corrupt(format!(
                "command at byte {valid_bytes} does not apply: {error}"
            ))
        })?;
        valid_bytes += read as u64;
    }
    Ok((image, valid_bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn create(name: &str) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            assignments: vec![vec![1]],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn replays_commands_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommandLog::open(dir.path()).unwrap();
        log.append(&create("a")).unwrap();
        log.append(&create("b")).unwrap();
        drop(log);
        let path = dir.path().join(LOG_FILE_NAME);
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"DeleteTopic\":{\"na").unwrap();
        drop(file);

        let (mut log, image) = CommandLog::open(dir.path()).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        log.append(&MetadataCommand::DeleteTopic { name: "a".into() })
            .unwrap();
        let (_, image) = CommandLog::open(dir.path()).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_fragment_left_by_a_failed_append_is_cut_before_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommandLog::open(dir.path()).unwrap();
        log.append(&create("a")).unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        // What a short write on a full disk leaves behind when the cut-back failed too.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"CreateTopic\":{\"name\":\"lo").unwrap();
        drop(file);
        log.append(&create("b")).unwrap();
        log.append(&create("c")).unwrap();
        drop(log);

        let (_, image) = CommandLog::open(dir.path()).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
