//! `kafka-console-producer`: one record per line of stdin, sent to the partition leaders.
//!
//! Flags: `--bootstrap-server`, `--topic`, `--property parse.key=true`, `--property
//! key.separator=:` (default tab), `--property ignore.error=true`, `--property
//! null.marker=M`, `--producer-property acks=all|1|0` (default all, Kafka 4's -1),
//! `--producer-property max.block.ms=N|request.timeout.ms=N`, `--request-required-acks`.
//!
//! Partitions: a keyed record goes where Kafka's default partitioner puts it (murmur2 of
//! the key, [`super::partitioner`]); unkeyed records are sticky per batch, each batch to
//! the next partition in turn (round-robin), as Kafka's sticky partitioner spreads them.
//!
//! Lines are sent as soon as stdin has no more buffered input (a typed line goes at once;
//! piped input goes in batches), and every send is acknowledged (with acks=all or 1)
//! before the next one and before exit. A failed send prints Kafka's error line and exits
//! 1. Only errors the broker returns before appending (not leader, unknown partition,
//! not enough replicas) are retried, so a retry never writes a record twice; a lost
//! connection or timeout is reported as a failure, not retried.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

use super::args::{self, FlagSpec, Flags, switch, valued};
use super::cluster::{Cluster, PartitionInfo, REQUEST_TIMEOUT_DEFAULT};
use super::error::CliError;
use super::partitioner::partition_for_key;
use crate::log::batch::plain_record;
use crate::types::now_ms;

const FLAGS: &[FlagSpec] = &[
    valued("bootstrap-server"),
    valued("topic"),
    valued("property"),
    valued("reader-property"),
    valued("producer-property"),
    valued("request-required-acks"),
    switch("sync"),
    switch("help"),
];
/// Kafka's `max.block.ms` default: how long to wait for the topic's metadata.
const MAX_BLOCK_DEFAULT: Duration = Duration::from_secs(60);
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// A batch is sent when stdin has nothing more buffered, or at these sizes. The byte
/// bound stays under the broker's default `message.max.bytes` (1 MiB) for one partition.
const BATCH_RECORDS_MAX: usize = 1_000;
const BATCH_BYTES_MAX: usize = 512 * 1024;
const PRODUCE_VERSIONS: (i16, i16) = (3, 12);
/// Errors a broker returns before it appends anything: safe to retry on a fresh leader.
const RETRIABLE: [ResponseError; 4] = [
    ResponseError::NotLeaderOrFollower,
    ResponseError::UnknownTopicOrPartition,
    ResponseError::LeaderNotAvailable,
    ResponseError::NotEnoughReplicas,
];

/// How lines become records and how they are sent.
#[derive(Debug, PartialEq, Eq)]
pub struct ProducerSettings {
    pub bootstrap: String,
    pub topic: String,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    pub parse_key: bool,
    pub key_separator: Vec<u8>,
    pub ignore_error: bool,
    pub null_marker: Option<Vec<u8>>,
    pub max_block: Duration,
    pub request_timeout: Duration,
}

/// One line as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

impl LineRecord {
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len) + 16
    }
}

pub fn run(arguments: &[String]) -> i32 {
    let settings = match args::parse(arguments, FLAGS).and_then(|flags| settings(&flags)) {
        Ok(Some(settings)) => settings,
        Ok(None) => return 0,
        Err(error) => {
            eprintln!("{error}");
            return 1;
        }
    };
    match produce_stdin(&settings) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{error}");
            1
        }
    }
}

/// The settings from the flags; `None` after `--help`.
pub fn settings(flags: &Flags) -> Result<Option<ProducerSettings>, CliError> {
    if flags.has("help") {
        eprintln!("This tool reads lines from standard input and publishes them to Kafka.");
        return Ok(None);
    }
    let mut reader = flags.properties("property")?;
    reader.extend(flags.properties("reader-property")?);
    let producer = flags.properties("producer-property")?;
    for key in producer.keys() {
        if !matches!(key.as_str(), "acks" | "max.block.ms" | "request.timeout.ms") {
            eprintln!("WARNING: producer property {key} is not supported by this tool; ignored");
        }
    }
    let acks_text = flags
        .value("request-required-acks")
        .or(producer.get("acks").map(String::as_str))
        .unwrap_or("all");
    let acks = match acks_text.trim() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => return Err(CliError::Usage(format!("Invalid value {other} for acks"))),
    };
    let millis = |key: &str, default: Duration| -> Result<Duration, CliError> {
        match producer.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| CliError::Usage(format!("Invalid value {text} for {key}"))),
        }
    };
    let flag = |key: &str| {
        reader
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    Ok(Some(ProducerSettings {
        bootstrap: flags.required("bootstrap-server")?.to_string(),
        topic: flags.required("topic")?.to_string(),
        acks,
        parse_key: flag("parse.key"),
        key_separator: reader
            .get("key.separator")
            .map_or(b"\t".to_vec(), |s| s.as_bytes().to_vec()),
        ignore_error: flag("ignore.error"),
        null_marker: reader.get("null.marker").map(|s| s.as_bytes().to_vec()),
        max_block: millis("max.block.ms", MAX_BLOCK_DEFAULT)?,
        request_timeout: millis("request.timeout.ms", REQUEST_TIMEOUT_DEFAULT)?,
    }))
}

/// One line (without its line ending) as a record, as Kafka's `LineMessageReader` reads
/// it. `number` is the 1-based line number, for the error message.
pub fn parse_line(
    line: &[u8],
    number: u64,
    settings: &ProducerSettings,
) -> Result<LineRecord, CliError> {
    let field = |bytes: &[u8]| -> Option<Bytes> {
        match &settings.null_marker {
            Some(marker) if marker.as_slice() == bytes => None,
            _ => Some(Bytes::copy_from_slice(bytes)),
        }
    };
    if !settings.parse_key {
        return Ok(LineRecord {
            key: None,
            value: field(line),
        });
    }
    let separator = &settings.key_separator;
    let found = (!separator.is_empty())
        .then(|| {
            line.windows(separator.len())
                .position(|w| w == separator.as_slice())
        })
        .flatten();
    match found {
        Some(at) => Ok(LineRecord {
            key: field(&line[..at]),
            value: field(&line[at + separator.len()..]),
        }),
        None if settings.ignore_error => Ok(LineRecord {
            key: None,
            value: field(line),
        }),
        None => Err(CliError::Failed(format!(
            "No key separator found on line number {number}: '{}'",
            String::from_utf8_lossy(line)
        ))),
    }
}

/// Strips `\n`, `\r\n` (Java's `readLine` line endings).
fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn produce_stdin(settings: &ProducerSettings) -> Result<(), CliError> {
    let cluster = Cluster::connect(&settings.bootstrap, settings.request_timeout)?;
    let mut producer = Producer {
        cluster,
        settings,
        partitions: Vec::new(),
        next_unkeyed: 0,
    };
    producer.refresh(Instant::now() + settings.max_block)?;
    let stdin = std::io::stdin();
    let mut reader = BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut pending: Vec<LineRecord> = Vec::new();
    let mut pending_bytes = 0;
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| CliError::Io {
                address: "stdin".into(),
                source,
            })?;
        if read > 0 {
            number += 1;
            let record = parse_line(strip_line_ending(&line), number, settings)?;
            pending_bytes += record.size();
            pending.push(record);
        }
        let input_waits = read == 0 || reader.buffer().is_empty();
        let full = pending.len() >= BATCH_RECORDS_MAX || pending_bytes >= BATCH_BYTES_MAX;
        if !pending.is_empty() && (input_waits || full) {
            producer.send(std::mem::take(&mut pending))?;
            pending_bytes = 0;
        }
        if read == 0 {
            return Ok(());
        }
    }
}

struct Producer<'a> {
    cluster: Cluster,
    settings: &'a ProducerSettings,
    /// The topic's partitions, by index.
    partitions: Vec<PartitionInfo>,
    /// The partition the next batch of unkeyed records goes to (an index, modulo count).
    next_unkeyed: usize,
}

impl Producer<'_> {
    /// Waits until the topic has partitions, each with a leader (the broker may be
    /// creating it), or `deadline`.
    fn refresh(&mut self, deadline: Instant) -> Result<(), CliError> {
        let topic = [self.settings.topic.clone()];
        loop {
            let topics = self.cluster.metadata(Some(&topic), true)?;
            let found = topics.into_iter().find(|t| t.name == self.settings.topic);
            if let Some(info) = found.filter(|t| t.error_code == 0 && !t.partitions.is_empty()) {
                let ready = info.partitions.iter().all(|p| p.leader >= 0);
                self.partitions = info.partitions;
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(CliError::Failed(format!(
                    "Topic {} not present in metadata after {} ms.",
                    self.settings.topic,
                    self.settings.max_block.as_millis()
                )));
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
    }

    /// Sends `records`, acknowledged, in order within each partition.
    fn send(&mut self, records: Vec<LineRecord>) -> Result<(), CliError> {
        let count = self.partitions.len() as i32;
        let sticky = (self.next_unkeyed % self.partitions.len()) as i32;
        self.next_unkeyed = self.next_unkeyed.wrapping_add(1);
        let mut pending: BTreeMap<i32, Vec<LineRecord>> = BTreeMap::new();
        for record in records {
            let partition = match &record.key {
                Some(key) => partition_for_key(key, count),
                None => sticky,
            };
            pending.entry(partition).or_default().push(record);
        }
        let deadline = Instant::now() + self.settings.request_timeout;
        loop {
            let retry = self.send_to_leaders(&mut pending)?;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (partition, records) = pending.into_iter().next().expect("not empty");
                return Err(self.send_failure(partition, &records[0], &retry));
            }
            std::thread::sleep(RETRY_BACKOFF);
            self.refresh(deadline)?;
        }
    }

    /// One Produce per leader. Acknowledged partitions leave `pending`; those with a
    /// retriable error stay (the last such error is returned); any other error fails.
    fn send_to_leaders(
        &mut self,
        pending: &mut BTreeMap<i32, Vec<LineRecord>>,
    ) -> Result<CliError, CliError> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in pending.keys() {
            let leader = self
                .partitions
                .get(partition as usize)
                .map_or(-1, |info| info.leader);
            by_leader.entry(leader).or_default().push(partition);
        }
        let mut last = CliError::from_code(ResponseError::LeaderNotAvailable.code(), None);
        for (leader, partitions) in by_leader {
            if leader < 0 {
                continue;
            }
            let request = self.request(&partitions, pending)?;
            let connection = self.cluster.node(leader)?;
            let version =
                connection.version(ApiKey::Produce, PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1)?;
            if self.settings.acks == 0 {
                connection.send_only(ApiKey::Produce, version, &request)?;
                partitions.iter().for_each(|p| drop(pending.remove(p)));
                continue;
            }
            let response: ProduceResponse = connection.call(ApiKey::Produce, version, &request)?;
            for topic in response.responses {
                for answer in topic.partition_responses {
                    let Some(records) = pending.get(&answer.index) else {
                        continue;
                    };
                    if answer.error_code == 0 {
                        pending.remove(&answer.index);
                        continue;
                    }
                    let error =
                        CliError::from_code(answer.error_code, answer.error_message.as_deref());
                    if !error.kafka_error().is_some_and(|e| RETRIABLE.contains(&e)) {
                        return Err(self.send_failure(answer.index, &records[0], &error));
                    }
                    last = error;
                }
            }
        }
        Ok(last)
    }

    fn request(
        &self,
        partitions: &[i32],
        pending: &BTreeMap<i32, Vec<LineRecord>>,
    ) -> Result<ProduceRequest, CliError> {
        let timestamp_ms = now_ms();
        let mut partition_data = Vec::new();
        for &partition in partitions {
            let records: Vec<_> = pending[&partition]
                .iter()
                .enumerate()
                .map(|(index, r)| {
                    plain_record(index as i64, timestamp_ms, r.key.clone(), r.value.clone())
                })
                .collect();
            let mut batch = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            };
            RecordBatchEncoder::encode(&mut batch, &records, &options)
                .map_err(|error| CliError::Protocol(format!("cannot encode records: {error}")))?;
            partition_data.push(
                PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.freeze())),
            );
        }
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(
                self.settings.topic.clone(),
            )))
            .with_partition_data(partition_data);
        Ok(ProduceRequest::default()
            .with_acks(self.settings.acks)
            .with_timeout_ms(
                self.settings
                    .request_timeout
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
            )
            .with_topic_data(vec![topic]))
    }

    /// Kafka's `ErrorLoggingCallback` line for the first record that was not written.
    fn send_failure(&self, partition: i32, record: &LineRecord, error: &CliError) -> CliError {
        let describe = |field: &Option<Bytes>| {
            field
                .as_ref()
                .map_or("null".to_string(), |bytes| format!("{} bytes", bytes.len()))
        };
        CliError::Failed(format!(
            "ERROR Error when sending message to topic {} (partition {partition}) with key: {}, \
             value: {} with error: {error}",
            self.settings.topic,
            describe(&record.key),
            describe(&record.value)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(items: &[&str]) -> ProducerSettings {
        let items: Vec<String> = items.iter().map(|item| item.to_string()).collect();
        settings(&args::parse(&items, FLAGS).unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn defaults_are_kafka_4s() {
        let settings = settings_of(&["--bootstrap-server", "h:1", "--topic", "t"]);
        assert_eq!(settings.acks, -1);
        assert!(!settings.parse_key);
        assert_eq!(settings.key_separator, b"\t");
        assert_eq!(settings.max_block, MAX_BLOCK_DEFAULT);
    }

    #[test]
    fn properties_set_keys_and_acks() {
        let settings = settings_of(&[
            "--bootstrap-server",
            "h:1",
            "--topic",
            "t",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
            "--producer-property",
            "acks=1",
        ]);
        assert_eq!(settings.acks, 1);
        let record = parse_line(b"k1:v:1", 1, &settings).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v:1"[..]));
        let missing = parse_line(b"novalue", 7, &settings).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "No key separator found on line number 7: 'novalue'"
        );
        let acks0 = settings_of(&[
            "--bootstrap-server",
            "h:1",
            "--topic",
            "t",
            "--request-required-acks",
            "0",
        ]);
        assert_eq!(acks0.acks, 0);
    }

    #[test]
    fn lines_keep_their_bytes() {
        let settings = settings_of(&["--bootstrap-server", "h:1", "--topic", "t"]);
        assert_eq!(strip_line_ending(b"a\r\n"), b"a");
        assert_eq!(strip_line_ending(b"a\n"), b"a");
        assert_eq!(strip_line_ending(b"a"), b"a");
        let record = parse_line(b"\xff\tx", 1, &settings).unwrap();
        assert_eq!(record.key, None);
        assert_eq!(record.value.as_deref(), Some(&b"\xff\tx"[..]));
        let empty = parse_line(b"", 1, &settings).unwrap();
        assert_eq!(empty.value.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn bad_settings_are_refused() {
        let items: Vec<String> = ["--topic", "t"].iter().map(|s| s.to_string()).collect();
        assert!(settings(&args::parse(&items, FLAGS).unwrap()).is_err());
        let items: Vec<String> = [
            "--bootstrap-server",
            "h:1",
            "--topic",
            "t",
            "--producer-property",
            "acks=2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(settings(&args::parse(&items, FLAGS).unwrap()).is_err());
    }
}
