//! Durable file-system steps for files and directories the broker must find again, exactly
//! as it left them, after a crash: publish-by-rename, creating a directory, and renaming a
//! partition directory aside (Kafka's `-delete` and `-stray` names).
//!
//! The rule every helper here keeps: a rename or creation is durable only once the parent
//! directory is fsynced, and a file is fsynced before the rename that publishes it, so a
//! crash leaves either the old file or the whole new one, never an empty or partial one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::types::TopicPartition;

pub(crate) use super::segment::sync_directory;

/// Suffix of a partition directory whose topic deletion is durable; removed at start-up.
pub const DELETE_DIR_SUFFIX: &str = "-delete";
/// Suffix of a partition directory no topic in the metadata claims; kept for an operator.
pub const STRAY_DIR_SUFFIX: &str = "-stray";
/// Kafka caps renamed-aside names at 255 bytes (a common file-name limit) by shortening the
/// topic part (`LocalLog.logDirNameWithSuffixCappedLength`).
const DIR_NAME_BYTES_MAX: usize = 255;
/// A UUID without its dashes, the unique part of a renamed-aside name.
const UNIQUE_HEX_DIGITS: usize = 32;

/// Writes `bytes` to `<dir>/<name>` through `<name>.tmp`: write, fsync the file, rename,
/// fsync the directory.
pub fn publish_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, dir.join(name))?;
    sync_directory(dir)
}

/// Creates `dir` (and missing parents) and fsyncs each parent that gained an entry, so a
/// file created inside survives a crash together with its directory.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent != dir {
        create_dir_durably(&parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another creator won the race; its entry is what we wanted.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(error) => return Err(error),
    }
    sync_directory(&parent)
}

/// The directory holding `path`'s entry: `.` for a bare relative name, `/` for `/`.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => PathBuf::from("."),
        Some(parent) => parent.to_path_buf(),
        None => path.to_path_buf(),
    }
}

/// Kafka's `LocalLog.logDeleteDirName` / `logStrayDirName`:
/// `<topic>-<partition>.<uuid without dashes><suffix>`, at most 255 bytes.
pub fn aside_dir_name(tp: &TopicPartition, suffix: &str) -> String {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let full_suffix = format!("-{}.{unique}{suffix}", tp.partition);
    let topic_bytes = tp
        .topic
        .len()
        .min(DIR_NAME_BYTES_MAX.saturating_sub(full_suffix.len()));
    // Topic names are ASCII (validated at creation), so any byte index is a char boundary;
    // `get` keeps a non-ASCII name from a foreign directory from panicking all the same.
    let topic = tp.topic.get(..topic_bytes).unwrap_or("stray");
    format!("{topic}{full_suffix}")
}

/// True for names [`aside_dir_name`] makes with `suffix` (`....<32 hex digits><suffix>`),
/// so start-up never removes an operator's directory that merely ends in `-delete`.
pub fn is_aside_dir_name(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(_, unique)| {
            unique.len() == UNIQUE_HEX_DIGITS && unique.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Renames the partition directory `dir` aside with `suffix` and fsyncs its parent;
/// returns the new path. Directories not named `<topic>-<partition>` keep their name as
/// the topic part.
pub fn rename_aside(dir: &Path, suffix: &str) -> io::Result<PathBuf> {
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tp = TopicPartition::from_dir_name(&name).unwrap_or_else(|| TopicPartition::new(name, 0));
    let parent = parent_of(dir);
    let target = parent.join(aside_dir_name(&tp, suffix));
    fs::rename(dir, &target)?;
    sync_directory(&parent)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_names_are_never_partition_names_and_fit_255_bytes() {
        let tp = TopicPartition::new("orders.v1-2", 17);
        let name = aside_dir_name(&tp, STRAY_DIR_SUFFIX);
        assert!(name.starts_with("orders.v1-2-17."), "{name}");
        assert!(name.ends_with("-stray"));
        assert_eq!(TopicPartition::from_dir_name(&name), None);
        assert!(is_aside_dir_name(&name, STRAY_DIR_SUFFIX));
        assert!(!is_aside_dir_name(&name, DELETE_DIR_SUFFIX));
        assert!(!is_aside_dir_name("backups-to-delete", DELETE_DIR_SUFFIX));
        assert!(!is_aside_dir_name("x-0.abc-delete", DELETE_DIR_SUFFIX));
        let long = TopicPartition::new("t".repeat(249), 123_456);
        let name = aside_dir_name(&long, DELETE_DIR_SUFFIX);
        assert_eq!(name.len(), DIR_NAME_BYTES_MAX);
        assert!(is_aside_dir_name(&name, DELETE_DIR_SUFFIX));
        assert_eq!(TopicPartition::from_dir_name(&name), None);
    }

    #[test]
    fn rename_aside_keeps_the_contents() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("events-3");
        create_dir_durably(&dir).unwrap();
        publish_file(&dir, "00000000000000000000.log", b"records").unwrap();
        let moved = rename_aside(&dir, STRAY_DIR_SUFFIX).unwrap();
        assert!(!dir.exists());
        let name = moved.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("events-3.") && name.ends_with("-stray"),
            "{name}"
        );
        let kept = fs::read(moved.join("00000000000000000000.log")).unwrap();
        assert_eq!(kept, b"records");
        assert!(!moved.join("00000000000000000000.log.tmp").exists());
    }

    #[test]
    fn create_dir_durably_makes_nested_and_existing_directories() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a").join("b").join("c");
        create_dir_durably(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_durably(&nested).unwrap();
        assert_eq!(parent_of(Path::new("data")), PathBuf::from("."));
        assert_eq!(parent_of(Path::new("/")), PathBuf::from("/"));
    }
}
