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
        Ok((CommandLog { file }, image))
    }

    pub fn append(&mut self, command: &MetadataCommand) -> Result<(), ControllerError> {
        let mut line = serde_json::to_vec(command)
            .map_err(|error| ControllerError::Corrupt(format!("encode: {error}")))?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
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
}
