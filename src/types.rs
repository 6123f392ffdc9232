//! Small shared vocabulary: the names every layer uses for the same things.
//!
//! Abbreviations used across the code base, defined once here:
//! `tp` = topic-partition, `hw` = high watermark (first offset not yet committed to all
//! in-sync replicas), `leo` = log end offset (next offset to be written), `isr` = in-sync
//! replica set.

use std::fmt;
use std::sync::Arc;

/// A broker / controller node id (`node.id`).
pub type NodeId = i32;

/// A topic name and partition index: the key of everything partition-scoped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// The directory name Kafka uses for this partition's log: `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Inverse of [`TopicPartition::dir_name`]; `None` for names that are not partition dirs.
    pub fn from_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        let partition: i32 = partition.parse().ok()?;
        // Kafka's `<tp>.<uuid>-delete` directories end in a non-number, so they fail above.
        if topic.is_empty() || partition < 0 {
            return None;
        }
        Some(TopicPartition::new(topic, partition))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Kafka prints ids (topic ids, cluster ids) as URL-safe base64 without padding.
pub fn kafka_uuid_string(id: &uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut text = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let word =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            text.push(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_like_kafka() {
        assert_eq!(
            kafka_uuid_string(&uuid::Uuid::nil()),
            "AAAAAAAAAAAAAAAAAAAAAA"
        );
        let id = uuid::Uuid::from_bytes([0xff; 16]);
        assert_eq!(kafka_uuid_string(&id), "_____________________w");
    }

    #[test]
    fn dir_name_round_trips_topics_with_dashes() {
        let tp = TopicPartition::new("my-topic.v1", 12);
        assert_eq!(tp.dir_name(), "my-topic.v1-12");
        assert_eq!(TopicPartition::from_dir_name("my-topic.v1-12"), Some(tp));
        assert_eq!(TopicPartition::from_dir_name("nopartition"), None);
        assert_eq!(TopicPartition::from_dir_name("-3"), None);
        assert_eq!(TopicPartition::from_dir_name("t-0.abc-delete"), None);
    }
}
