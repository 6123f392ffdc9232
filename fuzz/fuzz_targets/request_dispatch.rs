//! Whole requests through the real dispatch: each input is one frame (header and body,
//! no length prefix) handed to `api::handle_frame` on a broker opened once on a temp
//! directory. Client bytes must yield a response or a connection-closing error: a panic,
//! an abort, a hang, or a response we cannot encode is a finding.
//!
//! The broker keeps its state between inputs (topics, groups, offsets, records), so the
//! fuzzer explores sequences as well as single requests. `GRACCHUS_FUZZ_DIR` names the
//! data directory (`scripts/fuzz` points it at a tmpfs so fsyncs cost nothing); without
//! it a fresh temp directory is used.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gracchus::api::ApiError;
use gracchus::broker::Broker;
use gracchus::config::BrokerConfig;
use gracchus::controller::topic_admin::NewTopic;
use libfuzzer_sys::fuzz_target;

/// How long one request may take before it counts as a hang.
const REQUEST_TIME_MAX: Duration = Duration::from_secs(5);
/// Requests that wait on a client-supplied timeout (see `waits_by_design`) are abandoned
/// after this instead: their wait is the contract, and sitting it out only slows the run.
const WAIT_ABANDON_AFTER: Duration = Duration::from_millis(200);

struct Harness {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    // Held so the data directory lives as long as the broker.
    _dir: Option<tempfile::TempDir>,
}

fn config(dir: &std::path::Path) -> BrokerConfig {
    let settings = [
        ("log.dirs", dir.display().to_string()),
        ("listeners", "PLAINTEXT://127.0.0.1:9".into()),
        ("offsets.topic.num.partitions", "2".into()),
        ("group.initial.rebalance.delay.ms", "0".into()),
        ("log.segment.bytes", "16384".into()),
        // Bounds what one fuzzed CreateTopics/CreatePartitions can make on disk.
        ("partitions.per.request.max", "64".into()),
    ];
    let map: BTreeMap<String, String> = settings
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    BrokerConfig::from_map(map).expect("fuzz broker config is valid")
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let (dir, path) = match std::env::var_os("GRACCHUS_FUZZ_DIR") {
            Some(path) => (None, std::path::PathBuf::from(path)),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let broker = runtime.block_on(async {
            let broker = Broker::open(config(&path)).await.expect("broker opens");
            for (name, partitions) in [("t", 2), ("c2", 3)] {
                let topic = NewTopic {
                    name: name.into(),
                    num_partitions: partitions,
                    replication_factor: 1,
                    ..NewTopic::default()
                };
                // Already there when GRACCHUS_FUZZ_DIR is reused: fine.
                let _ = broker.create_topic(&topic, false).await;
            }
            broker.ensure_offsets_topic().await.expect("offsets topic");
            broker
        });
        Harness {
            runtime,
            broker,
            _dir: dir,
        }
    })
}

/// Requests whose answer waits on a timeout the client chose (Fetch max wait, a produce
/// waiting for acks, a rebalance waiting for members): a long wait is their contract,
/// not a hang.
fn waits_by_design(frame: &[u8]) -> bool {
    const PRODUCE: i16 = 0;
    const FETCH: i16 = 1;
    const JOIN_GROUP: i16 = 11;
    const SYNC_GROUP: i16 = 14;
    let api_key = match frame {
        [high, low, ..] => i16::from_be_bytes([*high, *low]),
        _ => return false,
    };
    matches!(api_key, PRODUCE | FETCH | JOIN_GROUP | SYNC_GROUP)
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let frame = bytes::Bytes::copy_from_slice(data);
    let handled = gracchus::api::handle_frame(&harness.broker, frame, "/127.0.0.1");
    let waits = waits_by_design(data);
    let limit = if waits {
        WAIT_ABANDON_AFTER
    } else {
        REQUEST_TIME_MAX
    };
    let outcome = harness
        .runtime
        .block_on(async { tokio::time::timeout(limit, handled).await });
    match outcome {
        Err(_) if waits => {}
        Err(_) => panic!("request took longer than {REQUEST_TIME_MAX:?}: a hang"),
        // A request that decoded must get an answer its version can carry: failing to
        // encode our own response would close a well-behaved client's connection.
        Ok(Err(error @ ApiError::Encode { .. })) => panic!("{error}"),
        Ok(_) => {}
    }
});
