//! What the status page shows, as plain data: gathered from the broker's state by the
//! HTTP handler, rendered by [`super::page`]. Keeping the two apart lets the page be tested
//! without a broker, and the gathering without parsing HTML.

/// One broker of the cluster as the metadata image sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerRow {
    pub node_id: i32,
    /// `host:port` of its client listener, empty if it registered none.
    pub endpoint: String,
    /// Registered and heartbeating (not fenced by the controller).
    pub alive: bool,
    pub fenced: bool,
    /// The active controller, as far as this node knows.
    pub controller: bool,
    /// The node that rendered the page.
    pub this_node: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartitionRow {
    pub index: i32,
    /// None while the partition has no leader (offline).
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Log end offset and size on disk, when this node hosts a replica.
    pub log_end_offset: Option<i64>,
    pub size_bytes: Option<u64>,
}

impl PartitionRow {
    /// Led, with fewer in-sync replicas than replicas (an offline partition counts as
    /// offline only, as Kafka's UnderReplicatedPartitions counts led partitions).
    pub fn under_replicated(&self) -> bool {
        self.leader.is_some() && self.isr.len() < self.replicas.len()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TopicRow {
    pub name: String,
    pub internal: bool,
    pub partitions: Vec<PartitionRow>,
    /// Records appended per second over the last sampling interval (replicas hosted here),
    /// None until two samples exist.
    pub messages_per_s: Option<f64>,
}

impl TopicRow {
    /// Bytes on disk over the partitions hosted here.
    pub fn size_bytes(&self) -> u64 {
        self.partitions.iter().filter_map(|p| p.size_bytes).sum()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemberRow {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// (topic, partitions) the member was assigned, when the assignment is the standard
    /// consumer protocol's; empty otherwise.
    pub assignment: Vec<(String, Vec<i32>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LagRow {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// The partition's high watermark, when this node leads it; lag is unknown otherwise.
    pub end_offset: Option<i64>,
}

impl LagRow {
    pub fn lag(&self) -> Option<i64> {
        self.end_offset
            .map(|end| (end - self.committed_offset).max(0))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupRow {
    pub group_id: String,
    pub state: String,
    pub protocol: String,
    pub members: Vec<MemberRow>,
    pub lag: Vec<LagRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRow {
    pub time_ms: i64,
    pub message: String,
}

/// Everything one rendering of the page shows.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusView {
    pub cluster_id: String,
    pub node_id: i32,
    pub version: String,
    pub generated_at_ms: i64,
    /// The page reloads itself after this many seconds.
    pub refresh_s: u32,
    pub brokers: Vec<BrokerRow>,
    pub topics: Vec<TopicRow>,
    pub groups: Vec<GroupRow>,
    /// Most recent first.
    pub errors: Vec<ErrorRow>,
}
