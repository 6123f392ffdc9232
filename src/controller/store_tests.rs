use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use super::*;

fn create(name: &str) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        id: uuid::Uuid::new_v4(),
        assignments: vec![vec![1]],
        configs: BTreeMap::new(),
    }
}

/// Broker 1, which every topic of these tests lives on. Nil incarnation: a registration as
/// the old single-node log wrote it, registered unfenced.
fn register() -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        node_id: 1,
        incarnation_id: uuid::Uuid::nil(),
        listeners: vec![super::super::BrokerEndpoint {
            name: "PLAINTEXT".into(),
            host: "localhost".into(),
            port: 9092,
        }],
        rack: None,
    }
}

/// `register()` as the old single-node log (`metadata.jsonl`) wrote it.
const OLD_FORMAT_REGISTER: &[u8] =
    br#"{"RegisterBroker":{"node_id":1,"host":"localhost","port":9092,"rack":null}}"#;

fn topic_names(image: &MetadataImage) -> Vec<&str> {
    image.topics.keys().map(String::as_str).collect()
}

/// Offsets at which each line of `bytes` starts.
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    starts.pop(); // the position after the last newline starts no line
    starts
}

/// A log of eight records: broker 1, then topics t1..t7 (records 1..=7).
fn seven_records(dir: &Path) -> PathBuf {
    let (mut log, _) = CommandLog::open(dir).unwrap();
    log.append(&register()).unwrap();
    for index in 1..=7 {
        log.append(&create(&format!("t{index}"))).unwrap();
    }
    dir.join(LOG_FILE_NAME)
}

#[test]
fn records_round_trip_and_a_torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = CommandLog::open(dir.path()).unwrap();
    log.append(&register()).unwrap();
    log.append(&create("a")).unwrap();
    log.append(&create("b")).unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE_NAME);
    let whole = fs::read(&path).unwrap();
    assert!(whole[..8].iter().all(u8::is_ascii_hexdigit) && whole[8] == b' ');
    let torn = encode_record(&MetadataCommand::DeleteTopic {
        name: "a".into(),
        id: None,
    })
    .unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&torn[..torn.len() - 1]).unwrap(); // everything but the newline
    drop(file);

    let (mut log, image) = CommandLog::open(dir.path()).unwrap();
    assert_eq!(topic_names(&image), ["a", "b"]);
    assert_eq!(fs::read(&path).unwrap(), whole);
    log.append(&MetadataCommand::DeleteTopic {
        name: "a".into(),
        id: None,
    })
    .unwrap();
    let (_, image) = CommandLog::open(dir.path()).unwrap();
    assert_eq!(topic_names(&image), ["b"]);
    assert_eq!(image.applied_index, 4);
}

#[test]
fn a_flipped_byte_in_a_middle_record_stops_start_up_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = seven_records(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let fourth = line_starts(&bytes)[4];
    // Inside the JSON of record 4: `t4` becomes `t5`, still valid JSON, wrong checksum.
    let position = fourth + bytes[fourth..].windows(2).position(|w| w == b"t4").unwrap() + 1;
    bytes[position] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let error = CommandLog::open(dir.path())
        .err()
        .expect("start-up must refuse");
    match &error {
        ControllerError::CorruptRecord {
            path: named,
            offset,
            reason,
        } => {
            assert_eq!(named, &path.display().to_string());
            assert_eq!(*offset, fourth as u64);
            assert!(reason.contains("checksum mismatch"), "{reason}");
        }
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&format!("byte {fourth}")), "{message}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "a refused log is not modified"
    );
}

#[test]
fn a_damaged_checksum_or_terminator_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = seven_records(dir.path());
    let original = fs::read(&path).unwrap();
    let starts = line_starts(&original);

    let mut checksum = original.clone();
    checksum[starts[2]] = if checksum[starts[2]] == b'0' {
        b'1'
    } else {
        b'0'
    };
    fs::write(&path, &checksum).unwrap();
    let error = CommandLog::open(dir.path()).err().unwrap();
    assert!(
        matches!(error, ControllerError::CorruptRecord { offset, .. } if offset == starts[2] as u64),
        "{error}"
    );

    let mut terminator = original.clone();
    *terminator.last_mut().unwrap() = b'x';
    fs::write(&path, &terminator).unwrap();
    let error = CommandLog::open(dir.path()).err().unwrap();
    assert!(
        matches!(error, ControllerError::CorruptRecord { offset, .. } if offset == starts[7] as u64),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), terminator);
}

#[test]
fn a_checksummed_record_that_does_not_apply_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = seven_records(dir.path());
    let length = fs::metadata(&path).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    let orphan = MetadataCommand::DeleteTopic {
        name: "never-created".into(),
        id: None,
    };
    file.write_all(&encode_record(&orphan).unwrap()).unwrap();
    drop(file);
    let error = CommandLog::open(dir.path()).err().unwrap();
    let message = error.to_string();
    assert!(message.contains(&format!("byte {length}")), "{message}");
    assert!(message.contains("does not apply"), "{message}");
}

/// An in-memory file whose steps fail on demand.
#[derive(Default)]
struct FailingFile {
    bytes: Vec<u8>,
    /// Fail the next append after writing this many of its bytes.
    write_fails_after: Option<usize>,
    sync_fails: bool,
    truncate_fails: bool,
}

impl LogFile for FailingFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.write_fails_after.take() {
            Some(written) => {
                self.bytes
                    .extend_from_slice(&bytes[..written.min(bytes.len())]);
                Err(io::ErrorKind::StorageFull.into())
            }
            None => {
                self.bytes.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.sync_fails) {
            return Err(io::Error::other("fsync failed"));
        }
        Ok(())
    }

    fn truncate(&mut self, length: u64) -> io::Result<()> {
        if self.truncate_fails {
            return Err(io::Error::other("truncate failed"));
        }
        self.bytes.truncate(length as usize);
        Ok(())
    }
}

fn failing_log() -> CommandLog<FailingFile> {
    CommandLog::new(
        FailingFile::default(),
        PathBuf::from("test/metadata.log"),
        0,
    )
}

#[test]
fn a_failed_write_or_fsync_leaves_the_log_byte_identical() {
    let mut log = failing_log();
    log.append(&register()).unwrap();
    log.append(&create("a")).unwrap();
    let before = log.file.bytes.clone();

    log.file.write_fails_after = Some(10);
    let error = log.append(&create("b")).err().unwrap();
    assert!(
        matches!(error, ControllerError::AppendFailed { .. }),
        "{error}"
    );
    assert_eq!(log.file.bytes, before);

    log.file.sync_fails = true;
    assert!(log.append(&create("b")).is_err());
    assert_eq!(log.file.bytes, before);

    log.append(&create("c")).unwrap();
    let replayed = replay(&log.file.bytes, Path::new("test")).unwrap();
    assert_eq!(topic_names(&replayed.image), ["a", "c"]);
    assert_eq!(replayed.length, log.file.bytes.len() as u64);
}

#[test]
fn a_rollback_that_fails_poisons_the_log() {
    let mut log = failing_log();
    log.append(&register()).unwrap();
    log.append(&create("a")).unwrap();
    log.file.write_fails_after = Some(5);
    log.file.truncate_fails = true;
    let error = log.append(&create("b")).err().unwrap();
    assert!(matches!(error, ControllerError::LogPoisoned(_)), "{error}");
    let garbage = log.file.bytes.clone();

    // Even once the disk works again nothing is appended after the partial record.
    log.file.truncate_fails = false;
    let error = log.append(&create("c")).err().unwrap();
    assert!(error.to_string().contains("test/metadata.log"), "{error}");
    assert_eq!(log.file.bytes, garbage);
}

#[test]
fn an_old_format_log_is_converted_once_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = OLD_FORMAT_REGISTER.to_vec();
    old.push(b'\n');
    for command in [create("a"), create("b")] {
        old.extend_from_slice(&serde_json::to_vec(&command).unwrap());
        old.push(b'\n');
    }
    old.extend_from_slice(b"{\"DeleteTopic\":{\"na"); // torn, never acknowledged
    fs::write(dir.path().join(LEGACY_FILE_NAME), &old).unwrap();

    let (_, image) = CommandLog::open(dir.path()).unwrap();
    assert_eq!(topic_names(&image), ["a", "b"]);
    assert_eq!(image.brokers[&1].port, 9092);
    assert!(!dir.path().join(LEGACY_FILE_NAME).exists());
    assert_eq!(
        fs::read(dir.path().join(LEGACY_CONVERTED_NAME)).unwrap(),
        old
    );
    let (_, again) = CommandLog::open(dir.path()).unwrap();
    assert_eq!(again, image);
}

#[test]
fn an_old_format_log_with_a_bad_line_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut good = OLD_FORMAT_REGISTER.to_vec();
    good.push(b'\n');
    good.extend_from_slice(&serde_json::to_vec(&create("a")).unwrap());
    let mut old = good.clone();
    old.extend_from_slice(b"\n{\"CreateTop\n");
    old.extend_from_slice(&serde_json::to_vec(&create("b")).unwrap());
    old.push(b'\n');
    let legacy = dir.path().join(LEGACY_FILE_NAME);
    fs::write(&legacy, &old).unwrap();

    let error = CommandLog::open(dir.path()).err().unwrap();
    let message = error.to_string();
    assert!(message.contains(&legacy.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("byte {}", good.len() + 1)),
        "{message}"
    );
    assert_eq!(fs::read(&legacy).unwrap(), old);
    assert!(!dir.path().join(LOG_FILE_NAME).exists());
}

/// A small tmpfs for the real ENOSPC path; `None` (with the reason printed) where this
/// process may not mount.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match status {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            Ok(output) => {
                let reason = String::from_utf8_lossy(&output.stderr);
                println!("skipped: cannot mount a tmpfs: {reason}");
                None
            }
            Err(error) => {
                println!("skipped: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes a ballast file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_the_file_as_it_was() {
    let Some(tmpfs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = tmpfs.dir.path().join("__cluster_metadata-0");
    let (mut log, _) = CommandLog::open(&dir).unwrap();
    log.append(&register()).unwrap();
    log.append(&create("a")).unwrap();
    let path = dir.join(LOG_FILE_NAME);
    let before = fs::read(&path).unwrap();
    let ballast = fill(tmpfs.dir.path());
    // A record larger than a page needs a new page, which the full file system refuses.
    let big = MetadataCommand::CreateTopic {
        name: "big".into(),
        id: uuid::Uuid::new_v4(),
        assignments: vec![vec![1]],
        configs: BTreeMap::from([("x".to_string(), "y".repeat(20_000))]),
    };
    let error = log.append(&big).expect_err("the disk is full");
    assert!(
        matches!(error, ControllerError::AppendFailed { .. }),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);

    fs::remove_file(ballast).unwrap();
    log.append(&create("c")).unwrap();
    drop(log);
    let (_, image) = CommandLog::open(&dir).unwrap();
    assert_eq!(topic_names(&image), ["a", "c"]);
}
