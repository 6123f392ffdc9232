//! The fetcher against a scripted leader that gives out fetch sessions: what each request
//! carries, and that answers are applied by session (a partition answered without being
//! in the request is appended).

use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::client_quota::rate::RateConfig;
use crate::log::LogConfig;
use crate::log::test_support::encode_batch;

const HANG_GUARD: Duration = Duration::from_secs(30);
/// A back-off no test waits out: a request that comes sooner was not backed off.
const LONG_BACKOFF_MS: u64 = 60_000;
/// How long a request sent at once may take to arrive (a loaded test machine).
const AT_ONCE: Duration = Duration::from_secs(5);
const SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_SESSION_EPOCH: i16 = 71;

/// What the fake leader does with a request: answer it, or drop the connection unanswered.
enum Reply {
    Answer(FetchResponse),
    Hang,
}

/// A leader the test drives one request at a time.
struct FakeLeader {
    address: String,
    requests: mpsc::Receiver<FetchRequest>,
    replies: mpsc::Sender<Reply>,
}

impl FakeLeader {
    async fn start() -> FakeLeader {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (request_sender, requests) = mpsc::channel(1);
        let (replies, reply_receiver) = mpsc::channel(1);
        tokio::spawn(serve(listener, request_sender, reply_receiver));
        FakeLeader {
            address,
            requests,
            replies,
        }
    }

    async fn next(&mut self) -> FetchRequest {
        let next = tokio::time::timeout(HANG_GUARD, self.requests.recv());
        next.await
            .expect("a fetch in time")
            .expect("the leader runs")
    }

    async fn reply(&mut self, reply: Reply) {
        self.replies.send(reply).await.unwrap();
    }

    /// The next request, which must arrive within `within`.
    async fn next_within(&mut self, within: Duration) -> FetchRequest {
        let next = tokio::time::timeout(within, self.requests.recv());
        next.await
            .expect("a fetch within the time allowed")
            .expect("the leader runs")
    }

    /// Asserts that no request arrives for `quiet`.
    async fn none_for(&mut self, quiet: Duration) {
        let next = tokio::time::timeout(quiet, self.requests.recv()).await;
        assert!(next.is_err(), "a fetch came during the back-off");
    }
}

/// Serves connections one after another; Fetch v15 only. Ends quietly when the test is
/// done with it.
async fn serve(
    listener: TcpListener,
    requests: mpsc::Sender<FetchRequest>,
    mut replies: mpsc::Receiver<Reply>,
) {
    while let Ok((mut stream, _)) = listener.accept().await {
        while let Some((correlation_id, request)) = read_fetch(&mut stream).await {
            if requests.send(request).await.is_err() {
                return;
            }
            match replies.recv().await {
                Some(Reply::Answer(response)) => {
                    write_fetch(&mut stream, correlation_id, &response).await
                }
                Some(Reply::Hang) => break, // the follower sees its connection close
                None => return,
            }
        }
    }
}

async fn read_fetch(stream: &mut TcpStream) -> Option<(i32, FetchRequest)> {
    let size = stream.read_i32().await.ok()?;
    let mut frame = vec![0; usize::try_from(size).unwrap()];
    stream.read_exact(&mut frame).await.ok()?;
    let mut frame = Bytes::from(frame);
    let header_version = ApiKey::Fetch.request_header_version(FETCH_VERSION);
    let header = RequestHeader::decode(&mut frame, header_version).unwrap();
    assert_eq!(header.request_api_key, ApiKey::Fetch as i16);
    assert_eq!(header.request_api_version, FETCH_VERSION);
    Some((
        header.correlation_id,
        FetchRequest::decode(&mut frame, FETCH_VERSION).unwrap(),
    ))
}

async fn write_fetch(stream: &mut TcpStream, correlation_id: i32, response: &FetchResponse) {
    let mut body = BytesMut::new();
    let header =
        kafka_protocol::messages::ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = ApiKey::Fetch.response_header_version(FETCH_VERSION);
    header.encode(&mut body, header_version).unwrap();
    response.encode(&mut body, FETCH_VERSION).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(i32::try_from(body.len()).unwrap());
    frame.put(body);
    let _ = stream.write_all(&frame).await; // a follower gone meanwhile: nothing to do
}

const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(0xfeed);

fn follower(dir: &std::path::Path, index: i32) -> (TopicPartition, Followed) {
    let tp = TopicPartition::new("t", index);
    let path = dir.join(format!("t-{index}"));
    let last_shutdown = crate::log::LastShutdown::Unclean;
    let config = LogConfig::default();
    let partition = Partition::open(tp.clone(), TOPIC_ID, path, config, 0, 0, last_shutdown);
    let partition = Arc::new(partition.unwrap());
    partition.become_follower(1).unwrap(); // node 1 leads at epoch 1
    let followed = Followed {
        partition,
        leader_epoch: 1,
        truncated: false,
        caught_up: Arc::default(),
        retry_at: None,
    };
    (tp, followed)
}

fn settings(backoff_ms: u64) -> ReplicationConfig {
    let backoff = (
        "replica.fetch.backoff.ms".to_string(),
        backoff_ms.to_string(),
    );
    ReplicationConfig::parse(&BTreeMap::from([backoff])).unwrap()
}

/// A fetcher task running until `stop`.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(fetcher: FetcherTask) -> Running {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(fetcher.run(Shutdown::from_receiver(stopped)));
        Running { stop, task }
    }

    /// Stops the fetcher and waits for its task to end.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        let ended = tokio::time::timeout(HANG_GUARD, self.task).await;
        ended.expect("the fetcher stops in time").unwrap();
    }
}

fn task(address: String, followed: &[(TopicPartition, Followed)]) -> FetcherTask {
    task_backing_off(address, followed, 10)
}

fn task_backing_off(
    address: String,
    followed: &[(TopicPartition, Followed)],
    backoff_ms: u64,
) -> FetcherTask {
    let shared = Arc::new(Shared::default());
    shared
        .partitions
        .lock()
        .unwrap()
        .extend(followed.iter().cloned());
    FetcherTask {
        leader: 1,
        address,
        node_id: 0,
        settings: settings(backoff_ms),
        quotas: Arc::new(ReplicationQuotas::new(0, RateConfig::default())),
        shared,
        connection: None,
        session: FetchSession::new(),
        order: RoundOrder::default(),
        rounds: 0,
        throttled_until: None,
        whole_walk: WHOLE_WALK,
    }
}

/// (session id, epoch, the (partition, fetch offset) pairs sent, the partitions forgotten)
type Seen = (i32, i32, Vec<(i32, i64)>, Vec<i32>);

fn seen(request: &FetchRequest) -> Seen {
    let mut sent: Vec<(i32, i64)> = (request.topics.iter())
        .inspect(|topic| assert_eq!(topic.topic_id, TOPIC_ID))
        .flat_map(|topic| topic.partitions.iter())
        .map(|p| (p.partition, p.fetch_offset))
        .collect();
    sent.sort();
    let mut forgotten: Vec<i32> = (request.forgotten_topics_data.iter())
        .flat_map(|topic| topic.partitions.iter().copied())
        .collect();
    forgotten.sort();
    (request.session_id, request.session_epoch, sent, forgotten)
}

/// An answer for `partitions` (index, records, high watermark) under `session_id`.
fn answer(session_id: i32, partitions: Vec<(i32, Option<Bytes>, i64)>) -> Reply {
    let partitions = (partitions.into_iter())
        .map(|(index, records, high_watermark)| {
            PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(high_watermark)
                .with_log_start_offset(0)
                .with_records(records)
        })
        .collect();
    let topic = FetchableTopicResponse::default()
        .with_topic_id(TOPIC_ID)
        .with_partitions(partitions);
    Reply::Answer(
        FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(vec![topic]),
    )
}

fn refusal(error_code: i16) -> Reply {
    Reply::Answer(FetchResponse::default().with_error_code(error_code))
}

fn throttled(reply: Reply, throttle_time_ms: i32) -> Reply {
    match reply {
        Reply::Answer(response) => Reply::Answer(response.with_throttle_time_ms(throttle_time_ms)),
        Reply::Hang => Reply::Hang,
    }
}

fn log_end(followed: &Followed) -> i64 {
    followed.partition.offsets().unwrap().2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_fetches_through_the_leaders_session() {
    let dir = tempfile::tempdir().unwrap();
    let followed: Vec<_> = (0..3).map(|index| follower(dir.path(), index)).collect();
    let mut leader = FakeLeader::start().await;
    let fetcher = task(leader.address.clone(), &followed);
    let running = Running::start(fetcher);
    let all_at = |offsets: [i64; 3]| (0..3).zip(offsets).collect::<Vec<_>>();

    // A full request asking for a session; the leader opens session 42.
    let first = leader.next().await;
    assert_eq!(seen(&first), (0, 0, all_at([0, 0, 0]), vec![]));
    leader
        .reply(answer(42, vec![(0, None, 0), (1, None, 0), (2, None, 0)]))
        .await;

    // Nothing moved: an empty incremental request. The leader answers partition 1 only,
    // with records: it is in the session, so they are appended.
    let second = leader.next().await;
    assert_eq!(seen(&second), (42, 1, vec![], vec![]));
    let records = encode_batch(&[1, 2], Compression::None).freeze();
    leader.reply(answer(42, vec![(1, Some(records), 2)])).await;

    // Partition 1 moved: only it is sent, at its new offset.
    let third = leader.next().await;
    assert_eq!(seen(&third), (42, 2, vec![(1, 2)], vec![]));
    assert_eq!(log_end(&followed[1].1), 2);
    assert_eq!(
        followed[1].1.partition.offsets().unwrap().1,
        2,
        "high watermark followed"
    );
    assert_eq!((log_end(&followed[0].1), log_end(&followed[2].1)), (0, 0));
    // The leader lost the session: at once a full request without one.
    leader.reply(refusal(SESSION_ID_NOT_FOUND)).await;
    let fourth = leader.next().await;
    assert_eq!(seen(&fourth), (0, 0, all_at([0, 2, 0]), vec![]));
    leader
        .reply(answer(43, vec![(0, None, 0), (1, None, 2), (2, None, 0)]))
        .await;

    // The connection breaks under an incremental request: the next one, on a new
    // connection, closes session 43 and asks a new one, in full.
    let fifth = leader.next().await;
    assert_eq!(seen(&fifth), (43, 1, vec![], vec![]));
    leader.reply(Reply::Hang).await;
    let sixth = leader.next().await;
    assert_eq!(seen(&sixth), (43, 0, all_at([0, 2, 0]), vec![]));
    // Session 0 in answer to a full request: no session, full requests from now on.
    leader
        .reply(answer(0, vec![(0, None, 0), (1, None, 2), (2, None, 0)]))
        .await;
    let seventh = leader.next().await;
    assert_eq!(seen(&seventh), (0, 0, all_at([0, 2, 0]), vec![]));

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_no_longer_fetched_is_forgotten_then_added_back() {
    let dir = tempfile::tempdir().unwrap();
    let followed: Vec<_> = (0..2).map(|index| follower(dir.path(), index)).collect();
    let mut leader = FakeLeader::start().await;
    let fetcher = task(leader.address.clone(), &followed);
    let shared = Arc::clone(&fetcher.shared);
    let running = Running::start(fetcher);

    let first = leader.next().await;
    assert_eq!(seen(&first), (0, 0, vec![(0, 0), (1, 0)], vec![]));
    leader
        .reply(answer(42, vec![(0, None, 0), (1, None, 0)]))
        .await;
    // Partition 1 is not wanted for a while (as when it backs off, is throttled or
    // truncates): the next request forgets it.
    let second = leader.next().await;
    assert_eq!(seen(&second), (42, 1, vec![], vec![]));
    shared.partitions.lock().unwrap().remove(&followed[1].0);
    leader.reply(answer(42, vec![])).await;
    let third = leader.next().await;
    assert_eq!(seen(&third), (42, 2, vec![], vec![1]));
    // Wanted again: added, though its fetch data is what the session had before.
    shared
        .partitions
        .lock()
        .unwrap()
        .extend([followed[1].clone()]);
    leader.reply(answer(42, vec![])).await;
    let fourth = leader.next().await;
    assert_eq!(seen(&fourth), (42, 3, vec![(1, 0)], vec![]));

    running.stop().await;
}

/// `fetcher` with no whole walk after the first that takes every partition: what a round
/// sends then comes from the marks alone.
fn marks_only(mut fetcher: FetcherTask) -> FetcherTask {
    fetcher.whole_walk = Duration::from_secs(3600);
    fetcher
}

fn whole_walks(shared: &Shared) -> usize {
    shared.whole_walks.load(Ordering::Relaxed)
}

/// An answer with `error_code` for partition `index` under `session_id`.
fn partition_error(session_id: i32, index: i32, error_code: i16) -> Reply {
    let partition = PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error_code)
        .with_high_watermark(-1);
    let topic = FetchableTopicResponse::default()
        .with_topic_id(TOPIC_ID)
        .with_partitions(vec![partition]);
    Reply::Answer(
        FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(vec![topic]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_backing_off_is_forgotten_and_added_back_between_whole_walks() {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let dir = tempfile::tempdir().unwrap();
    let followed: Vec<_> = (0..3).map(|index| follower(dir.path(), index)).collect();
    let mut leader = FakeLeader::start().await;
    // Long enough that no pause of a loaded machine ends it before the next round.
    let backoff = Duration::from_secs(2);
    let backoff_ms = u64::try_from(backoff.as_millis()).unwrap();
    let fetcher = marks_only(task_backing_off(
        leader.address.clone(),
        &followed,
        backoff_ms,
    ));
    let shared = Arc::clone(&fetcher.shared);
    let running = Running::start(fetcher);

    let first = leader.next().await;
    assert_eq!(seen(&first), (0, 0, vec![(0, 0), (1, 0), (2, 0)], vec![]));
    leader
        .reply(answer(42, vec![(0, None, 0), (1, None, 0), (2, None, 0)]))
        .await;
    let second = leader.next().await;
    assert_eq!(seen(&second), (42, 1, vec![], vec![]));
    // Partition 1 is refused: it backs off, so the next request forgets it.
    leader
        .reply(partition_error(42, 1, NOT_LEADER_OR_FOLLOWER))
        .await;
    let third = leader.next().await;
    assert_eq!(seen(&third), (42, 2, vec![], vec![1]));
    // Once its back-off ends, a round adds it back: its return moves nothing a mark sees.
    // The rounds meanwhile are held 50 ms each by the leader's throttle time.
    let backing_off = std::time::Instant::now();
    let mut epoch = 2;
    loop {
        assert!(
            backing_off.elapsed() < backoff + AT_ONCE,
            "not added back in time"
        );
        leader.reply(throttled(answer(42, vec![]), 50)).await;
        let next = leader.next_within(AT_ONCE).await;
        epoch += 1;
        match seen(&next) {
            (42, e, sent, forgotten) if e == epoch && sent.is_empty() && forgotten.is_empty() => {}
            other => {
                assert_eq!(other, (42, epoch, vec![(1, 0)], vec![]));
                break;
            }
        }
    }
    // Then every partition is in the session again: rounds read only the marks.
    let walked = whole_walks(&shared);
    for _ in 0..2 {
        leader.reply(answer(42, vec![])).await;
        let next = leader.next_within(AT_ONCE).await;
        epoch += 1;
        assert_eq!(seen(&next), (42, epoch, vec![], vec![]));
    }
    assert_eq!(whole_walks(&shared), walked);

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_a_round_that_named_nothing_backs_every_partition_off() {
    const UNKNOWN_SERVER_ERROR: i16 = -1;
    let dir = tempfile::tempdir().unwrap();
    let followed: Vec<_> = (0..3).map(|index| follower(dir.path(), index)).collect();
    let mut leader = FakeLeader::start().await;
    let backing_off = task_backing_off(leader.address.clone(), &followed, LONG_BACKOFF_MS);
    let running = Running::start(marks_only(backing_off));

    let first = leader.next().await;
    assert_eq!(seen(&first).2.len(), 3);
    leader
        .reply(answer(42, vec![(0, None, 0), (1, None, 0), (2, None, 0)]))
        .await;
    // An incremental request that names no partition, refused as a whole: every partition
    // of the session backs off, not only those the request named.
    let second = leader.next().await;
    assert_eq!(seen(&second), (42, 1, vec![], vec![]));
    leader.reply(refusal(UNKNOWN_SERVER_ERROR)).await;
    leader.none_for(Duration::from_secs(1)).await;

    running.stop().await;
}

#[test]
fn a_retain_moves_the_generation_only_when_it_drops_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (tp, followed) = follower(dir.path(), 0);
    let mut set = FollowedSet::default();
    set.insert(tp.clone(), followed);
    let before = set.generation;
    set.retain(|_, _| true);
    assert_eq!(set.generation, before);
    set.retain(|kept, _| *kept != tp);
    assert_ne!(set.generation, before);
    assert_eq!(set.len(), 0);
}

/// (partition, fetch offset, log start offset) of every partition a request sends.
fn sent_with_log_start(request: &FetchRequest) -> Vec<(i32, i64, i64)> {
    let mut sent: Vec<_> = (request.topics.iter())
        .flat_map(|topic| topic.partitions.iter())
        .map(|p| (p.partition, p.fetch_offset, p.log_start_offset))
        .collect();
    sent.sort();
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_whole_walks_a_round_sends_what_its_partitions_marked() {
    let dir = tempfile::tempdir().unwrap();
    let followed: Vec<_> = (0..20).map(|index| follower(dir.path(), index)).collect();
    let mut leader = FakeLeader::start().await;
    let fetcher = marks_only(task(leader.address.clone(), &followed));
    let shared = Arc::clone(&fetcher.shared);
    let running = Running::start(fetcher);

    let first = leader.next().await;
    assert_eq!(sent_with_log_start(&first).len(), 20);
    let all = (0..20).map(|index| (index, None, 0)).collect();
    leader.reply(answer(42, all)).await;
    let second = leader.next().await;
    assert_eq!(seen(&second), (42, 1, vec![], vec![]));
    let records = encode_batch(&[1, 2, 3], Compression::None).freeze();
    leader
        .reply(answer(42, vec![(7, Some(records.clone()), 3)]))
        .await;
    // The fetcher's own append moved partition 7.
    let third = leader.next().await;
    assert_eq!(sent_with_log_start(&third), vec![(7, 3, 0)]);
    leader.reply(answer(42, vec![(12, Some(records), 3)])).await;
    let fourth = leader.next().await;
    assert_eq!(sent_with_log_start(&fourth), vec![(12, 3, 0)]);
    // A change the round did not make: partition 7's log start moves (as retention
    // moves it) while the fetch is out. It is sent once, with its new start.
    let source = (1, 1);
    assert!(followed[7].1.partition.follow_log_start(2, source).unwrap());
    leader.reply(answer(42, vec![])).await;
    let fifth = leader.next().await;
    assert_eq!(sent_with_log_start(&fifth), vec![(7, 3, 2)]);
    leader.reply(answer(42, vec![])).await;
    let sixth = leader.next().await;
    assert_eq!(seen(&sixth), (42, 5, vec![], vec![]));
    assert_eq!(log_end(&followed[7].1), 3);
    assert_eq!(log_end(&followed[12].1), 3);
    assert_eq!(
        whole_walks(&shared),
        1,
        "only the first round walked every partition"
    );

    running.stop().await;
}

/// The bytes a round costs on the wire, for 1000 partitions of which 10 moved.
#[test]
fn an_incremental_request_carries_only_what_moved() {
    let task = task("unused".to_string(), &[]);
    let mut session = FetchSession::new();
    let key = |partition| SessionPartition {
        topic_id: TOPIC_ID,
        partition,
    };
    let data = |fetch_offset| FetchData {
        fetch_offset,
        log_start_offset: 0,
        current_leader_epoch: 1,
        last_fetched_epoch: -1,
        partition_max_bytes: 1 << 20,
    };
    let wanted = |moved: i32| {
        (0..1000)
            .map(|p| (key(p), data(i64::from(p < moved) * 5)))
            .collect()
    };
    let size = |parts: &FetchRequestParts| task.fetch_request(parts).compute_size(FETCH_VERSION);
    let full = session.build(wanted(0));
    session
        .handle_response(
            SessionResponseHeader {
                error_code: 0,
                session_id: 42,
                throttle_time_ms: 0,
            },
            (0..1000).map(key),
        )
        .unwrap();
    let incremental = session.build(wanted(10));
    assert_eq!(incremental.to_send.len(), 10);
    let (full_bytes, incremental_bytes) = (size(&full).unwrap(), size(&incremental).unwrap());
    eprintln!(
        "fetch v15 request bytes, 1000 partitions: full {full_bytes}, 10 moved {incremental_bytes}"
    );
    assert!(full_bytes > 1000 * 30, "{full_bytes}");
    assert!(incremental_bytes < 500, "{incremental_bytes}");
}

#[test]
fn only_a_refusal_that_would_repeat_backs_off() {
    let metadata = |session_id, epoch| FetchMetadata { session_id, epoch };
    let (initial, close_42, incremental_42) = (metadata(0, 0), metadata(42, 0), metadata(42, 5));
    let stranger = SessionPartition {
        topic_id: TOPIC_ID,
        partition: 9,
    };
    let refused = Rejection::Error;
    let (not_found, bad_epoch) = (SESSION_ID_NOT_FOUND, INVALID_SESSION_EPOCH);
    let cases = [
        // (rejection, sent, next, backs off)
        (refused(not_found), incremental_42, initial, false),
        (refused(bad_epoch), incremental_42, close_42, false),
        // A full request refused: Kafka asks again at once, now for a new session.
        (refused(not_found), close_42, initial, false),
        // ... unless that is the request just refused.
        (refused(not_found), initial, initial, true),
        (refused(bad_epoch), close_42, close_42, true),
        (Rejection::Throttled(300), initial, initial, false),
        (Rejection::Extra(stranger), incremental_42, close_42, false),
        (Rejection::Extra(stranger), initial, initial, true),
        (Rejection::Omitted(stranger), initial, initial, true),
        (refused(3), incremental_42, close_42, true),
        (refused(3), initial, initial, true),
    ];
    for (rejection, sent, next, expected) in cases {
        let decided = backs_off(&rejection, sent, next);
        assert_eq!(
            decided, expected,
            "{rejection:?} of {sent:?}, next {next:?}"
        );
    }
}

/// A fetcher of two partitions (in `dir`) whose back-off no test waits out, and its leader,
/// which has received the first request (full, asking for a session) and not answered.
async fn asked_in_full_backing_off_long(dir: &std::path::Path) -> (FakeLeader, Running) {
    let followed: Vec<_> = (0..2).map(|index| follower(dir, index)).collect();
    let mut leader = FakeLeader::start().await;
    let fetcher = task_backing_off(leader.address.clone(), &followed, LONG_BACKOFF_MS);
    let running = Running::start(fetcher);
    let first = leader.next().await;
    assert_eq!(seen(&first), (0, 0, vec![(0, 0), (1, 0)], vec![]));
    (leader, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_request_refused_for_its_session_is_followed_at_once_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, running) = asked_in_full_backing_off_long(dir.path()).await;
    let both_at_0 = vec![(0, 0), (1, 0)];
    leader
        .reply(answer(42, vec![(0, None, 0), (1, None, 0)]))
        .await;
    // An answer for a partition not in the session: the next request, at once, closes
    // session 42 and asks for a new one, in full.
    let second = leader.next().await;
    assert_eq!(seen(&second), (42, 1, vec![], vec![]));
    leader.reply(answer(42, vec![(9, None, 0)])).await;
    let third = leader.next_within(AT_ONCE).await;
    assert_eq!(seen(&third), (42, 0, both_at_0.clone(), vec![]));
    // The leader no longer knows session 42: a full request without one, at once.
    leader.reply(refusal(SESSION_ID_NOT_FOUND)).await;
    let fourth = leader.next_within(AT_ONCE).await;
    assert_eq!(seen(&fourth), (0, 0, both_at_0.clone(), vec![]));
    // Refused as well: asking the same again at once could go on for ever; back off.
    leader.reply(refusal(SESSION_ID_NOT_FOUND)).await;
    leader.none_for(Duration::from_secs(1)).await;

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_response_holds_the_next_request_for_its_throttle_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, running) = asked_in_full_backing_off_long(dir.path()).await;
    let both_at_0 = vec![(0, 0), (1, 0)];
    let throttle = Duration::from_millis(300);
    let throttle_ms = i32::try_from(throttle.as_millis()).unwrap();

    // KIP-219: an empty full response carrying a throttle time. Not a back-off: a new full
    // request once the throttle time has passed.
    let replied = std::time::Instant::now();
    leader
        .reply(throttled(answer(0, vec![]), throttle_ms))
        .await;
    let second = leader.next_within(AT_ONCE).await;
    assert!(replied.elapsed() >= throttle, "{:?}", replied.elapsed());
    assert_eq!(seen(&second), (0, 0, both_at_0.clone(), vec![]));
    // A throttle time on an answer that is used holds the next request too.
    let replied = std::time::Instant::now();
    let answered = answer(42, vec![(0, None, 0), (1, None, 0)]);
    leader.reply(throttled(answered, throttle_ms)).await;
    let third = leader.next_within(AT_ONCE).await;
    assert!(replied.elapsed() >= throttle, "{:?}", replied.elapsed());
    assert_eq!(seen(&third), (42, 1, vec![], vec![]));

    running.stop().await;
}
