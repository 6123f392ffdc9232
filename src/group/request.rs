//! What the shell hands to the state machine: decoded requests, the caller's request token,
//! and the broker's group limits. Nothing here knows the wire format.

/// Opaque id the caller gives a request that may have to wait. The group never looks
/// inside; it hands the token back in exactly one `JoinDone` / `SyncDone` effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestToken(pub u64);

/// One (name, metadata) pair of a JoinGroup request, in the member's preference order.
pub type Protocol = (String, Vec<u8>);

/// A decoded JoinGroup request plus what the connection knows about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id`: set for static members.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: the handler passes the session timeout, as Kafka does. A
    /// negative value is treated the same way.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// Supported protocols in preference order. Repeated names keep their first entry.
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and an id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader that rejoins a Stable group gets the member list
    /// with `skip_assignment = true` instead of being told someone else leads.
    pub supports_skip_assignment: bool,
    /// JoinGroup v8+ client reason, only logged.
    pub reason: Option<String>,
}

/// A decoded SyncGroup request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+; checked against the group's when both are known.
    pub protocol_type: Option<String>,
    /// SyncGroup v5+; checked against the group's when both are known.
    pub protocol_name: Option<String>,
    /// (member id, assignment) as computed by the leader; empty for followers.
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// The broker's classic-group settings, Kafka names in the comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub max_size: i32,
    /// How long a brand-new member's parked JoinGroup may wait before the member is
    /// dropped (Kafka's fixed 5 minutes, `group.classic.new.member.join.timeout.ms` in
    /// the new coordinator). New members cannot heartbeat, so nothing else would notice
    /// a client that disconnected while its first join was parked.
    pub new_member_join_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX,
            new_member_join_timeout_ms: 300_000,
        }
    }
}
