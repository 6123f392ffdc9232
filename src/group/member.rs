//! One member of a classic group: identity, timeouts, protocols, assignment, and which of
//! its requests are parked. Mirrors Kafka's `ClassicGroupMember`.

use std::collections::BTreeSet;

use super::effects::MemberSnapshot;
use super::request::{Protocol, RequestToken};

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the chosen protocol while the group is Stable, else empty (as Kafka).
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout_ms: i32,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) protocol_type: String,
    /// Preference order; names are unique.
    pub(super) protocols: Vec<Protocol>,
    pub(super) assignment: Vec<u8>,
    /// When the member is removed unless it heartbeats (or is excused, see `can_expire`).
    pub(super) heartbeat_deadline_ms: i64,
    pub(super) join_token: Option<RequestToken>,
    pub(super) sync_token: Option<RequestToken>,
    /// Added by a JoinGroup that is still parked: it has no id yet from the client's
    /// point of view, so it cannot heartbeat and its deadline is the new-member timeout.
    pub(super) is_new: bool,
    /// Order of arrival; gives leader election and member lists a stable order.
    pub(super) join_seq: u64,
}

impl Member {
    pub(super) fn is_awaiting_join(&self) -> bool {
        self.join_token.is_some()
    }

    /// Kafka's `hasSatisfiedHeartbeat` inverted: a member waiting on the coordinator
    /// cannot be blamed for not heartbeating, unless it is new.
    pub(super) fn can_expire(&self) -> bool {
        self.is_new || (self.join_token.is_none() && self.sync_token.is_none())
    }

    /// The deadline `tick` must honour, if any.
    pub(super) fn expiry_deadline_ms(&self) -> Option<i64> {
        self.can_expire().then_some(self.heartbeat_deadline_ms)
    }

    pub(super) fn refresh_heartbeat(&mut self, now_ms: i64) {
        self.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(self.session_timeout_ms));
    }

    /// Same protocols with the same metadata in the same order.
    pub(super) fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    pub(super) fn metadata(&self, protocol_name: &str) -> Option<&[u8]> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol_name)
            .map(|(_, metadata)| metadata.as_slice())
    }

    /// The member's most preferred protocol among `candidates`.
    pub(super) fn vote<'a>(&'a self, candidates: &BTreeSet<&str>) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| candidates.contains(name))
    }

    pub(super) fn describe(&self, stable_protocol: Option<&str>) -> MemberDescription {
        let metadata = stable_protocol
            .and_then(|name| self.metadata(name))
            .unwrap_or_default();
        MemberDescription {
            member_id: self.member_id.clone(),
            group_instance_id: self.group_instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            metadata: metadata.to_vec(),
            assignment: self.assignment.clone(),
        }
    }

    pub(super) fn to_snapshot(&self, protocol_name: Option<&str>) -> MemberSnapshot {
        let subscription = protocol_name
            .and_then(|name| self.metadata(name))
            .unwrap_or_default();
        MemberSnapshot {
            member_id: self.member_id.clone(),
            group_instance_id: self.group_instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            session_timeout_ms: self.session_timeout_ms,
            subscription: subscription.to_vec(),
            assignment: self.assignment.clone(),
        }
    }
}

/// Keeps the first entry of each protocol name: Kafka keys the request's protocol
/// collection by name, and the support counts in `Group` assume unique names.
pub(super) fn dedup_protocols(protocols: Vec<Protocol>) -> Vec<Protocol> {
    let mut seen = BTreeSet::new();
    protocols
        .into_iter()
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(protocols: &[&str]) -> Member {
        Member {
            member_id: "m".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), p.as_bytes().to_vec()))
                .collect(),
            assignment: Vec::new(),
            heartbeat_deadline_ms: 0,
            join_token: None,
            sync_token: None,
            is_new: false,
            join_seq: 0,
        }
    }

    #[test]
    fn vote_picks_first_preference_among_candidates() {
        let m = member(&["range", "roundrobin", "sticky"]);
        let candidates: BTreeSet<&str> = ["sticky", "roundrobin"].into_iter().collect();
        assert_eq!(m.vote(&candidates), Some("roundrobin"));
        assert_eq!(m.vote(&BTreeSet::new()), None);
    }

    #[test]
    fn waiting_members_are_excused_unless_new() {
        let mut m = member(&["range"]);
        assert!(m.can_expire());
        m.join_token = Some(RequestToken(1));
        assert!(!m.can_expire());
        assert_eq!(m.expiry_deadline_ms(), None);
        m.is_new = true;
        assert!(m.can_expire());
        m.is_new = false;
        m.join_token = None;
        m.sync_token = Some(RequestToken(2));
        assert!(!m.can_expire());
    }

    #[test]
    fn matches_is_order_sensitive_and_metadata_sensitive() {
        let m = member(&["range", "sticky"]);
        assert!(m.matches(&m.protocols.clone()));
        let mut swapped = m.protocols.clone();
        swapped.reverse();
        assert!(!m.matches(&swapped));
        let mut changed = m.protocols.clone();
        changed[0].1 = b"other".to_vec();
        assert!(!m.matches(&changed));
    }

    #[test]
    fn dedup_keeps_first_entry_per_name() {
        let protocols = vec![
            ("a".to_string(), vec![1]),
            ("b".to_string(), vec![2]),
            ("a".to_string(), vec![3]),
        ];
        let unique = dedup_protocols(protocols);
        assert_eq!(
            unique,
            vec![("a".to_string(), vec![1]), ("b".to_string(), vec![2])]
        );
    }

    #[test]
    fn snapshot_and_description_use_the_chosen_protocol() {
        let mut m = member(&["range", "sticky"]);
        m.assignment = vec![9];
        let snapshot = m.to_snapshot(Some("sticky"));
        assert_eq!(snapshot.subscription, b"sticky".to_vec());
        assert_eq!(snapshot.assignment, vec![9]);
        assert!(m.describe(None).metadata.is_empty());
        assert_eq!(m.describe(Some("range")).metadata, b"range".to_vec());
        m.refresh_heartbeat(5);
        assert_eq!(m.heartbeat_deadline_ms, 10_005);
    }
}
