//! `kafka-console-consumer`: prints a topic's records, one value per line, reading each
//! partition from its leader.
//!
//! Flags: `--bootstrap-server`, `--topic`, `--from-beginning`, `--max-messages N`,
//! `--timeout-ms N`, `--partition P [--offset O|earliest|latest]`, `--group G`,
//! `--property print.key=true|print.value|print.partition|print.offset|print.timestamp|
//! key.separator|line.separator|null.literal` (`--formatter-property` too),
//! `--isolation-level read_committed|read_uncommitted`.
//!
//! It never joins a consumer group: it reads every partition of the topic (or the one
//! `--partition` names) itself. With `--group G` it starts from G's committed offsets
//! and commits its position to G (every 5 s and at exit) as a simple consumer does:
//! generation -1, no member id, which the coordinator accepts only while G has no
//! members. Ctrl-C or SIGTERM stops it; "Processed a total of N messages" then goes to
//! stderr, as Kafka's tool prints it.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{RecordBatchDecoder, TimestampType};

use super::args::{self, FlagSpec, Flags, switch, valued};
use super::client::Connection;
use super::cluster::{Cluster, PartitionInfo, REQUEST_TIMEOUT_DEFAULT};
use super::error::{CliError, check_code};
use crate::log::batch::iter_batches;

const FLAGS: &[FlagSpec] = &[
    valued("bootstrap-server"),
    valued("topic"),
    switch("from-beginning"),
    valued("max-messages"),
    valued("timeout-ms"),
    valued("partition"),
    valued("offset"),
    valued("group"),
    valued("property"),
    valued("formatter-property"),
    valued("consumer-property"),
    valued("isolation-level"),
    switch("skip-message-on-error"),
    switch("help"),
];
/// How long one fetch waits at the leader for data (the consumer's `fetch.max.wait.ms`
/// is 500 ms); also bounds how late a stop signal is noticed.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes one fetch asks for, in total and per partition (a batch larger than the
/// partition share is still returned whole, as Kafka does for the first batch).
const FETCH_BYTES_MAX: i32 = 8 * 1024 * 1024;
const PARTITION_FETCH_BYTES_MAX: i32 = 1024 * 1024;
const FETCH_VERSIONS: (i16, i16) = (4, 12);
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 7);
const FIND_COORDINATOR_VERSIONS: (i16, i16) = (0, 3);
const OFFSET_FETCH_VERSIONS: (i16, i16) = (1, 7);
const OFFSET_COMMIT_VERSIONS: (i16, i16) = (2, 8);
/// The consumer's `auto.commit.interval.ms`.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

/// Where reading starts when there is no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
}

/// How a record is printed (Kafka's `DefaultMessageFormatter` properties).
#[derive(Debug, PartialEq, Eq)]
pub struct Format {
    pub print_timestamp: bool,
    pub print_partition: bool,
    pub print_offset: bool,
    pub print_key: bool,
    pub print_value: bool,
    pub key_separator: Vec<u8>,
    pub line_separator: Vec<u8>,
    pub null_literal: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub bootstrap: String,
    pub topic: String,
    pub partition: Option<i32>,
    pub start: StartAt,
    pub max_messages: Option<u64>,
    pub timeout: Option<Duration>,
    pub group: Option<String>,
    /// 0 read_uncommitted (the default), 1 read_committed.
    pub isolation_level: i8,
    pub format: Format,
}

/// One record as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<(TimestampType, i64)>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
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
    let stop = stop_on_signal();
    let mut consumer = Consumer {
        settings: &settings,
        count: 0,
        positions: BTreeMap::new(),
        committed: BTreeMap::new(),
        stop,
    };
    let outcome = consumer.run();
    if let Err(error) = consumer.commit_if_grouped() {
        eprintln!("ERROR committing offsets to group: {error}");
    }
    let code = match outcome {
        Ok(Ending::Done) => 0,
        Ok(Ending::TimedOut) => {
            eprintln!(
                "ERROR Error processing message, terminating consumer process: \
                 org.apache.kafka.common.errors.TimeoutException"
            );
            0
        }
        Ok(Ending::OutputClosed) => {
            eprintln!("Unable to write to standard out, closing consumer.");
            0
        }
        Err(error) => {
            eprintln!("ERROR Unknown error when running consumer: {error}");
            1
        }
    };
    eprintln!("Processed a total of {} messages", consumer.count);
    code
}

/// The settings from the flags, with Kafka's rules on which go together; `None` after
/// `--help`.
pub fn settings(flags: &Flags) -> Result<Option<ConsumerSettings>, CliError> {
    if flags.has("help") {
        eprintln!(
            "This tool helps to read data from Kafka topics and outputs it to standard output."
        );
        return Ok(None);
    }
    let mut properties = flags.properties("property")?;
    properties.extend(flags.properties("formatter-property")?);
    let consumer_properties = flags.properties("consumer-property")?;
    let partition = flags.number::<i32>("partition")?;
    let from_beginning = flags.has("from-beginning");
    let start = match (flags.value("offset"), partition) {
        (Some(_), None) => {
            return Err(CliError::Usage(
                "The partition is required when offset is specified.".into(),
            ));
        }
        (Some(_), Some(_)) if from_beginning => {
            return Err(CliError::Usage(
                "Options from-beginning and offset cannot be specified together.".into(),
            ));
        }
        (Some(text), Some(_)) => parse_offset(text)?,
        (None, _) if from_beginning => StartAt::Earliest,
        (None, _) => match consumer_properties
            .get("auto.offset.reset")
            .map(String::as_str)
        {
            Some("earliest") => StartAt::Earliest,
            _ => StartAt::Latest,
        },
    };
    let isolation = flags.value("isolation-level").or(consumer_properties
        .get("isolation.level")
        .map(String::as_str));
    let isolation_level = match isolation {
        None | Some("read_uncommitted") => 0,
        Some("read_committed") => 1,
        Some(other) => {
            return Err(CliError::Usage(format!("Invalid isolation level {other}")));
        }
    };
    let max_messages = match flags.number::<i64>("max-messages")? {
        Some(count) if count >= 0 => Some(count as u64),
        _ => None,
    };
    let timeout = match flags.number::<i64>("timeout-ms")? {
        Some(ms) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
        _ => None,
    };
    let group = flags
        .value("group")
        .or(consumer_properties.get("group.id").map(String::as_str))
        .map(str::to_string);
    Ok(Some(ConsumerSettings {
        bootstrap: flags.required("bootstrap-server")?.to_string(),
        topic: flags.required("topic")?.to_string(),
        partition,
        start,
        max_messages,
        timeout,
        group,
        isolation_level,
        format: format(&properties),
    }))
}

fn parse_offset(text: &str) -> Result<StartAt, CliError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        number => match number.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(StartAt::Offset(offset)),
            _ => Err(CliError::Usage(format!(
                "The provided offset value '{text}' is incorrect. Valid values are 'earliest', \
                 'latest', or a non-negative long."
            ))),
        },
    }
}

fn format(properties: &BTreeMap<String, String>) -> Format {
    let flag = |key: &str, default: bool| {
        properties
            .get(key)
            .map_or(default, |v| v.trim().eq_ignore_ascii_case("true"))
    };
    let bytes = |key: &str, default: &str| {
        properties
            .get(key)
            .map_or(default.as_bytes().to_vec(), |v| unescape(v).into_bytes())
    };
    Format {
        print_timestamp: flag("print.timestamp", false),
        print_partition: flag("print.partition", false),
        print_offset: flag("print.offset", false),
        print_key: flag("print.key", false),
        print_value: flag("print.value", true),
        key_separator: bytes("key.separator", "\t"),
        line_separator: bytes("line.separator", "\n"),
        null_literal: bytes("null.literal", "null"),
    }
}

/// `\t`, `\n`, `\r` and `\\` as Java's properties loading turns them into characters
/// (a shell passes them literally).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// One record's output bytes: the chosen fields joined by the key separator, then the
/// line separator (Kafka's `DefaultMessageFormatter.writeTo`).
pub fn format_record(record: &Printed, format: &Format) -> Vec<u8> {
    let field = |bytes: &Option<Bytes>| {
        bytes
            .as_ref()
            .map_or(format.null_literal.clone(), |b| b.to_vec())
    };
    let mut fields: Vec<Vec<u8>> = Vec::new();
    if format.print_timestamp {
        fields.push(match record.timestamp {
            Some((TimestampType::Creation, at)) => format!("CreateTime:{at}").into_bytes(),
            Some((TimestampType::LogAppend, at)) => format!("LogAppendTime:{at}").into_bytes(),
            None => b"NO_TIMESTAMP".to_vec(),
        });
    }
    if format.print_partition {
        fields.push(format!("Partition:{}", record.partition).into_bytes());
    }
    if format.print_offset {
        fields.push(format!("Offset:{}", record.offset).into_bytes());
    }
    if format.print_key {
        fields.push(field(&record.key));
    }
    if format.print_value {
        fields.push(field(&record.value));
    }
    if fields.is_empty() {
        return Vec::new();
    }
    let mut line = fields.join(format.key_separator.as_slice());
    line.extend_from_slice(&format.line_separator);
    line
}

/// Set when SIGINT or SIGTERM arrives: the fetch loop ends at its next turn. A thread
/// with a one-thread runtime waits for the signals (handlers need no unsafe code there).
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(runtime) = runtime {
        std::thread::spawn(move || {
            runtime.block_on(async {
                let Ok(mut terminate) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
                flag.store(true, Ordering::SeqCst);
            });
        });
    }
    stop
}

enum Ending {
    /// --max-messages reached or a stop signal.
    Done,
    /// No record for --timeout-ms.
    TimedOut,
    OutputClosed,
}

struct Consumer<'a> {
    settings: &'a ConsumerSettings,
    count: u64,
    /// Partition -> next offset to read (after the last record printed).
    positions: BTreeMap<i32, i64>,
    /// Partition -> offset last committed to the group.
    committed: BTreeMap<i32, i64>,
    stop: Arc<AtomicBool>,
}

/// The cluster plus what the loop needs from it; kept apart from `Consumer` so a commit
/// at exit can reconnect if the loop never connected.
struct Session {
    cluster: Cluster,
    partitions: Vec<PartitionInfo>,
}

impl Consumer<'_> {
    fn run(&mut self) -> Result<Ending, CliError> {
        let mut session = Session {
            cluster: Cluster::connect(&self.settings.bootstrap, REQUEST_TIMEOUT_DEFAULT)?,
            partitions: Vec::new(),
        };
        let started = Instant::now();
        let mut last_record = Instant::now();
        if !self.wait_for_topic(&mut session, started)? {
            return Ok(self.idle_ending());
        }
        self.initial_positions(&mut session)?;
        let mut last_commit = Instant::now();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        loop {
            if self.stop.load(Ordering::SeqCst) || self.reached_max() {
                return Ok(Ending::Done);
            }
            if let Some(timeout) = self.settings.timeout
                && last_record.elapsed() > timeout
            {
                return Ok(Ending::TimedOut);
            }
            let printed = match self.fetch_round(&mut session, &mut out) {
                Ok(printed) => printed,
                Err(FetchProblem::OutputClosed) => return Ok(Ending::OutputClosed),
                Err(FetchProblem::Cluster(error)) => {
                    self.recover(&mut session, error)?;
                    0
                }
            };
            if printed > 0 {
                last_record = Instant::now();
                if out.flush().is_err() {
                    return Ok(Ending::OutputClosed);
                }
            }
            if self.settings.group.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit(&mut session.cluster)?;
                last_commit = Instant::now();
            }
        }
    }

    fn idle_ending(&self) -> Ending {
        if self.stop.load(Ordering::SeqCst) {
            Ending::Done
        } else {
            Ending::TimedOut
        }
    }

    fn reached_max(&self) -> bool {
        self.settings
            .max_messages
            .is_some_and(|max| self.count >= max)
    }

    /// Waits for the topic's metadata (it may not exist yet, as the Java consumer waits
    /// for it); false if the timeout or a stop signal came first.
    fn wait_for_topic(
        &mut self,
        session: &mut Session,
        started: Instant,
    ) -> Result<bool, CliError> {
        let topic = [self.settings.topic.clone()];
        loop {
            let topics = session.cluster.metadata(Some(&topic), false)?;
            if let Some(info) = topics.into_iter().find(|t| {
                t.name == self.settings.topic && t.error_code == 0 && !t.partitions.is_empty()
            }) {
                if let Some(wanted) = self.settings.partition
                    && !info.partitions.iter().any(|p| p.partition == wanted)
                {
                    return Err(CliError::Failed(format!(
                        "partition {wanted} of topic {} does not exist",
                        self.settings.topic
                    )));
                }
                session.partitions = info.partitions;
                return Ok(true);
            }
            let timed_out = self.settings.timeout.is_some_and(|t| started.elapsed() > t);
            if timed_out || self.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
    }

    /// The partitions this consumer reads.
    fn assigned(&self, session: &Session) -> Vec<i32> {
        match self.settings.partition {
            Some(partition) => vec![partition],
            None => session.partitions.iter().map(|p| p.partition).collect(),
        }
    }

    /// Committed offsets of the group where there are some; the start position elsewhere.
    fn initial_positions(&mut self, session: &mut Session) -> Result<(), CliError> {
        let assigned = self.assigned(session);
        if self.settings.group.is_some() {
            let committed = self.fetch_committed(&mut session.cluster, &assigned)?;
            for (&partition, &offset) in &committed {
                self.positions.insert(partition, offset);
            }
            self.committed = committed;
        }
        let missing: Vec<i32> = assigned
            .into_iter()
            .filter(|p| !self.positions.contains_key(p))
            .collect();
        match self.settings.start {
            StartAt::Offset(offset) => {
                for partition in missing {
                    self.positions.insert(partition, offset);
                }
                Ok(())
            }
            StartAt::Earliest => self.reset(session, &missing, EARLIEST_TIMESTAMP),
            StartAt::Latest => self.reset(session, &missing, LATEST_TIMESTAMP),
        }
    }

    /// The reset policy's timestamp: earliest with --from-beginning (or --offset
    /// earliest), else latest (the consumer's `auto.offset.reset` default).
    fn reset_timestamp(&self) -> i64 {
        match self.settings.start {
            StartAt::Earliest => EARLIEST_TIMESTAMP,
            _ => LATEST_TIMESTAMP,
        }
    }

    /// Sets `partitions`' positions with ListOffsets at each partition's leader.
    fn reset(
        &mut self,
        session: &mut Session,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<(), CliError> {
        for (leader, led) in by_leader(&session.partitions, partitions) {
            if leader < 0 {
                return Err(CliError::from_code(
                    ResponseError::LeaderNotAvailable.code(),
                    None,
                ));
            }
            let connection = session.cluster.node(leader)?;
            for (partition, offset) in list_offsets(
                connection,
                &self.settings.topic,
                &led,
                timestamp,
                self.settings.isolation_level,
            )? {
                self.positions.insert(partition, offset);
            }
        }
        Ok(())
    }

    /// One fetch from each leader; the records printed.
    fn fetch_round(
        &mut self,
        session: &mut Session,
        out: &mut impl Write,
    ) -> Result<u64, FetchProblem> {
        let assigned = self.assigned(session);
        let leaders = by_leader(&session.partitions, &assigned);
        let wait_ms = (FETCH_WAIT_MS / leaders.len().max(1) as i32).max(50);
        let mut printed = 0;
        for (leader, led) in leaders {
            if leader < 0 {
                return Err(FetchProblem::Cluster(CliError::from_code(
                    ResponseError::LeaderNotAvailable.code(),
                    None,
                )));
            }
            let request = self.fetch_request(&led, wait_ms);
            let connection = session
                .cluster
                .node(leader)
                .map_err(FetchProblem::Cluster)?;
            let version = connection
                .version(ApiKey::Fetch, FETCH_VERSIONS.0, FETCH_VERSIONS.1)
                .map_err(FetchProblem::Cluster)?;
            let response: FetchResponse = match connection.call(ApiKey::Fetch, version, &request) {
                Ok(response) => response,
                Err(error) => {
                    session.cluster.drop_node(leader);
                    return Err(FetchProblem::Cluster(error));
                }
            };
            check_code(response.error_code, None).map_err(FetchProblem::Cluster)?;
            for topic in response.responses {
                for data in topic.partitions {
                    printed += self.take_partition_data(session, data, out)?;
                    if self.reached_max() {
                        return Ok(printed);
                    }
                }
            }
        }
        Ok(printed)
    }

    fn fetch_request(&self, partitions: &[i32], wait_ms: i32) -> FetchRequest {
        let partitions = partitions
            .iter()
            .map(|&partition| {
                FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_last_fetched_epoch(-1)
                    .with_fetch_offset(self.positions.get(&partition).copied().unwrap_or(0))
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(PARTITION_FETCH_BYTES_MAX)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_isolation_level(self.settings.isolation_level)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic_name(&self.settings.topic))
                    .with_partitions(partitions),
            ])
    }

    /// Prints one partition's records from the fetch position on; advances the position.
    fn take_partition_data(
        &mut self,
        session: &mut Session,
        data: kafka_protocol::messages::fetch_response::PartitionData,
        out: &mut impl Write,
    ) -> Result<u64, FetchProblem> {
        let partition = data.partition_index;
        let Some(&position) = self.positions.get(&partition) else {
            return Ok(0);
        };
        if data.error_code == ResponseError::OffsetOutOfRange.code() {
            let timestamp = self.reset_timestamp();
            self.reset(session, &[partition], timestamp)
                .map_err(FetchProblem::Cluster)?;
            return Ok(0);
        }
        check_code(data.error_code, None).map_err(FetchProblem::Cluster)?;
        let Some(bytes) = data.records else {
            return Ok(0);
        };
        let aborted = aborted_producers(&data.aborted_transactions);
        let mut printed = 0;
        for item in iter_batches(&bytes) {
            let (at, header) =
                item.map_err(|e| FetchProblem::Cluster(CliError::Protocol(e.to_string())))?;
            let next = header.last_offset() + 1;
            if next <= position || header.is_control() {
                self.advance(partition, next);
                continue;
            }
            let skip_aborted = self.settings.isolation_level == 1
                && header.is_transactional()
                && aborted
                    .iter()
                    .any(|&(id, first)| id == header.producer_id && first <= header.last_offset());
            if !skip_aborted {
                let mut batch = bytes.slice(at..at + header.total_bytes());
                let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
                    FetchProblem::Cluster(CliError::Protocol(format!("cannot decode records: {e}")))
                })?;
                for record in set.records {
                    if record.offset < position || self.reached_max() {
                        continue;
                    }
                    let printed_record = Printed {
                        partition,
                        offset: record.offset,
                        timestamp: Some((record.timestamp_type, record.timestamp)),
                        key: record.key,
                        value: record.value,
                    };
                    out.write_all(&format_record(&printed_record, &self.settings.format))
                        .map_err(|_| FetchProblem::OutputClosed)?;
                    self.count += 1;
                    printed += 1;
                    self.advance(partition, record.offset + 1);
                }
                if self.reached_max() {
                    return Ok(printed);
                }
            }
            self.advance(partition, next);
        }
        Ok(printed)
    }

    fn advance(&mut self, partition: i32, next: i64) {
        let position = self.positions.entry(partition).or_insert(next);
        *position = (*position).max(next);
    }

    /// After a failed fetch: back off, learn the leaders again.
    fn recover(&mut self, session: &mut Session, error: CliError) -> Result<(), CliError> {
        let retriable = matches!(
            error,
            CliError::Io { .. } | CliError::TimedOut { .. } | CliError::Connect { .. }
        ) || error.kafka_error().is_some_and(|e| e.is_retriable());
        if !retriable {
            return Err(error);
        }
        std::thread::sleep(RETRY_BACKOFF);
        let topic = [self.settings.topic.clone()];
        if let Some(info) = session
            .cluster
            .metadata(Some(&topic), false)?
            .into_iter()
            .find(|t| t.name == self.settings.topic && t.error_code == 0)
        {
            session.partitions = info.partitions;
        }
        Ok(())
    }

    fn coordinator<'c>(
        &self,
        cluster: &'c mut Cluster,
        group: &str,
    ) -> Result<&'c mut Connection, CliError> {
        let connection = cluster.any();
        let version = connection.version(
            ApiKey::FindCoordinator,
            FIND_COORDINATOR_VERSIONS.0,
            FIND_COORDINATOR_VERSIONS.1,
        )?;
        let request =
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
        let response: FindCoordinatorResponse =
            connection.call(ApiKey::FindCoordinator, version, &request)?;
        check_code(response.error_code, response.error_message.as_deref())?;
        let id = response.node_id.0;
        // The coordinator may be a broker the last Metadata did not list yet.
        if !cluster.broker_ids().contains(&id) {
            cluster.metadata(Some(&[]), false)?;
        }
        cluster.node(id)
    }

    fn fetch_committed(
        &self,
        cluster: &mut Cluster,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, CliError> {
        let group = self.settings.group.as_deref().expect("only with a group");
        let connection = self.coordinator(cluster, group)?;
        let version = connection.version(
            ApiKey::OffsetFetch,
            OFFSET_FETCH_VERSIONS.0,
            OFFSET_FETCH_VERSIONS.1,
        )?;
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(&self.settings.topic))
                    .with_partition_indexes(partitions.to_vec()),
            ]));
        let response: OffsetFetchResponse =
            connection.call(ApiKey::OffsetFetch, version, &request)?;
        check_code(response.error_code, None)?;
        let mut committed = BTreeMap::new();
        for topic in response.topics {
            for partition in topic.partitions {
                check_code(partition.error_code, None)?;
                if partition.committed_offset >= 0 {
                    committed.insert(partition.partition_index, partition.committed_offset);
                }
            }
        }
        Ok(committed)
    }

    /// Commits positions that moved since the last commit (simple-consumer commit).
    fn commit(&mut self, cluster: &mut Cluster) -> Result<(), CliError> {
        let Some(group) = self.settings.group.as_deref() else {
            return Ok(());
        };
        let changed: Vec<(i32, i64)> = self
            .positions
            .iter()
            .filter(|&(partition, offset)| self.committed.get(partition) != Some(offset))
            .map(|(&partition, &offset)| (partition, offset))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let connection = self.coordinator(cluster, group)?;
        let version = connection.version(
            ApiKey::OffsetCommit,
            OFFSET_COMMIT_VERSIONS.0,
            OFFSET_COMMIT_VERSIONS.1,
        )?;
        let partitions = changed
            .iter()
            .map(|&(partition, offset)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::from_static_str("")))
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(topic_name(&self.settings.topic))
                    .with_partitions(partitions),
            ]);
        let response: OffsetCommitResponse =
            connection.call(ApiKey::OffsetCommit, version, &request)?;
        for topic in response.topics {
            for partition in topic.partitions {
                check_code(partition.error_code, None)?;
            }
        }
        self.committed.extend(changed);
        Ok(())
    }

    /// The final commit, on a fresh connection (the loop's may be gone).
    fn commit_if_grouped(&mut self) -> Result<(), CliError> {
        if self.settings.group.is_none() || self.positions.is_empty() {
            return Ok(());
        }
        let mut cluster = Cluster::connect(&self.settings.bootstrap, REQUEST_TIMEOUT_DEFAULT)?;
        self.commit(&mut cluster)
    }
}

enum FetchProblem {
    Cluster(CliError),
    OutputClosed,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// `partitions` grouped by their leader (-1: no leader known).
fn by_leader(infos: &[PartitionInfo], partitions: &[i32]) -> BTreeMap<i32, Vec<i32>> {
    let mut grouped: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &partition in partitions {
        let leader = infos
            .iter()
            .find(|info| info.partition == partition)
            .map_or(-1, |info| info.leader);
        grouped.entry(leader).or_default().push(partition);
    }
    grouped
}

fn aborted_producers(
    aborted: &Option<Vec<kafka_protocol::messages::fetch_response::AbortedTransaction>>,
) -> Vec<(i64, i64)> {
    aborted
        .iter()
        .flatten()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect()
}

/// ListOffsets for `partitions` at their leader: partition -> offset.
fn list_offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    isolation_level: i8,
) -> Result<Vec<(i32, i64)>, CliError> {
    let version = connection.version(
        ApiKey::ListOffsets,
        LIST_OFFSETS_VERSIONS.0,
        LIST_OFFSETS_VERSIONS.1,
    )?;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                ),
        ]);
    let response: ListOffsetsResponse = connection.call(ApiKey::ListOffsets, version, &request)?;
    let mut offsets = Vec::new();
    for topic in response.topics {
        for partition in topic.partitions {
            check_code(partition.error_code, None)?;
            offsets.push((partition.partition_index, partition.offset));
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(items: &[&str]) -> Result<ConsumerSettings, CliError> {
        let mut all = vec!["--bootstrap-server", "h:1", "--topic", "t"];
        all.extend_from_slice(items);
        let items: Vec<String> = all.iter().map(|item| item.to_string()).collect();
        settings(&args::parse(&items, FLAGS)?).map(|s| s.unwrap())
    }

    #[test]
    fn start_positions_follow_kafkas_rules() {
        assert_eq!(settings_of(&[]).unwrap().start, StartAt::Latest);
        assert_eq!(
            settings_of(&["--from-beginning"]).unwrap().start,
            StartAt::Earliest
        );
        let at = settings_of(&["--partition", "2", "--offset", "17"]).unwrap();
        assert_eq!((at.partition, at.start), (Some(2), StartAt::Offset(17)));
        let earliest = settings_of(&["--partition", "0", "--offset", "earliest"]).unwrap();
        assert_eq!(earliest.start, StartAt::Earliest);
        assert!(settings_of(&["--offset", "3"]).is_err());
        assert!(settings_of(&["--partition", "0", "--offset", "3", "--from-beginning"]).is_err());
        assert!(settings_of(&["--partition", "0", "--offset", "-5"]).is_err());
    }

    #[test]
    fn limits_group_and_isolation() {
        let s = settings_of(&[
            "--max-messages",
            "5",
            "--timeout-ms",
            "1000",
            "--group",
            "g",
        ])
        .unwrap();
        assert_eq!(s.max_messages, Some(5));
        assert_eq!(s.timeout, Some(Duration::from_millis(1000)));
        assert_eq!(s.group.as_deref(), Some("g"));
        assert_eq!(s.isolation_level, 0);
        let s = settings_of(&["--isolation-level", "read_committed"]).unwrap();
        assert_eq!(s.isolation_level, 1);
        assert!(settings_of(&["--isolation-level", "x"]).is_err());
    }

    #[test]
    fn records_print_as_the_default_formatter_does() {
        let record = Printed {
            partition: 1,
            offset: 42,
            timestamp: Some((TimestampType::Creation, 1000)),
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
        };
        let plain = format(&BTreeMap::new());
        assert_eq!(format_record(&record, &plain), b"v\n");
        let mut properties = BTreeMap::new();
        properties.insert("print.key".to_string(), "true".to_string());
        properties.insert("key.separator".to_string(), ":".to_string());
        assert_eq!(format_record(&record, &format(&properties)), b"k:v\n");
        properties.insert("print.partition".to_string(), "true".to_string());
        properties.insert("print.offset".to_string(), "true".to_string());
        properties.insert("print.timestamp".to_string(), "true".to_string());
        assert_eq!(
            format_record(&record, &format(&properties)),
            b"CreateTime:1000:Partition:1:Offset:42:k:v\n"
        );
        let keyless = Printed {
            key: None,
            ..record
        };
        let mut key_only = BTreeMap::new();
        key_only.insert("print.key".to_string(), "true".to_string());
        key_only.insert("print.value".to_string(), "false".to_string());
        assert_eq!(format_record(&keyless, &format(&key_only)), b"null\n");
        assert_eq!(unescape("a\\tb"), "a\tb");
    }
}
