//! The classic group state machine: one group's membership, generations and parked
//! JoinGroup/SyncGroup requests. Pure: time comes in as `now_ms`, and every outcome goes
//! out as [`Effect`]s. Follows Kafka's `ClassicGroup` and the classic parts of
//! `GroupMetadataManager` (Kafka 3.7+ new coordinator); differences are noted where made.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tracing::{debug, info, warn};

use super::effects::{Effect, GroupSnapshot, JoinOutcome, JoinedMember, SyncOutcome};
use super::error::GroupError;
use super::member::{Member, MemberDescription, dedup_protocols};
use super::request::{GroupConfig, JoinRequest, Protocol, RequestToken, SyncRequest};

/// Attempts at a member id the group does not already know. A caller's uuid generator
/// never repeats; the bound only keeps a broken generator from looping forever.
const MEMBER_ID_ATTEMPTS_MAX: usize = 8;

/// Kafka's `ClassicGroupState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka puts in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    fn may_follow(self, previous: GroupState) -> bool {
        use GroupState::*;
        match self {
            Empty => previous == PreparingRebalance,
            PreparingRebalance => matches!(previous, Stable | CompletingRebalance | Empty),
            CompletingRebalance => previous == PreparingRebalance,
            Stable => previous == CompletingRebalance,
            Dead => true,
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one pending deadline of the join phase; present exactly in PreparingRebalance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JoinTimer {
    /// First rebalance of an Empty group (Kafka's InitialDelayedJoin): wait `delay_ms`,
    /// and again while new members keep arriving, up to the rebalance timeout.
    Initial {
        at_ms: i64,
        delay_ms: i32,
        remaining_ms: i32,
    },
    /// Wait for known members to rejoin until the rebalance timeout.
    Rebalance { at_ms: i64 },
}

impl JoinTimer {
    fn at_ms(self) -> i64 {
        match self {
            JoinTimer::Initial { at_ms, .. } | JoinTimer::Rebalance { at_ms } => at_ms,
        }
    }
}

/// What the group undoes if its latest `Persist` fails to commit: the state the write
/// described must not outlive the write (Kafka's storeGroup callbacks).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Unconfirmed {
    /// The leader's assignment for this generation (Kafka's doSyncGroup callback).
    Assignment { generation_id: i32 },
    /// A static member's new id adopted without a rebalance (Kafka's
    /// updateStaticMemberAndRebalance callback): what to restore.
    StaticRejoin {
        generation_id: i32,
        old_member_id: String,
        new_member_id: String,
        protocols: Vec<Protocol>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
    },
}

/// What `fire_due` found due first.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Due {
    PendingMember(String),
    Member(String),
    Sync,
    Join,
}

/// One classic consumer group.
#[derive(Debug)]
pub struct Group {
    group_id: String,
    state: GroupState,
    previous_state: GroupState,
    state_since_ms: i64,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id, for static members.
    static_members: BTreeMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with the time they lapse.
    pending_members: BTreeMap<String, i64>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    sync_deadline_ms: Option<i64>,
    join_timer: Option<JoinTimer>,
    /// Protocol name -> number of members supporting it.
    protocol_support: BTreeMap<String, usize>,
    awaiting_join_count: usize,
    /// A member joined during the initial delay, so the delay is extended once more.
    new_member_added: bool,
    next_join_seq: u64,
    /// Settings of the latest JoinGroup; only the join phase reads them.
    config: GroupConfig,
    /// Set with a step's `Persist`: what `write_failed` undoes if that write fails. Every
    /// step starts by clearing it, so only the latest step's write can be taken back (the
    /// shell reports a failed write before it takes the next step).
    unconfirmed: Option<Unconfirmed>,
}

impl Group {
    pub fn new(group_id: impl Into<String>, now_ms: i64) -> Self {
        Self {
            group_id: group_id.into(),
            state: GroupState::Empty,
            previous_state: GroupState::Dead,
            state_since_ms: now_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            join_timer: None,
            protocol_support: BTreeMap::new(),
            awaiting_join_count: 0,
            new_member_added: false,
            next_join_seq: 0,
            config: GroupConfig::default(),
            unconfirmed: None,
        }
    }

    /// Rebuilds a group written by `Effect::Persist`. Members come back Stable with their
    /// assignments and a full session timeout from `now_ms` (Kafka's load + onLoaded). A
    /// snapshot with members but no protocol cannot be served and loads as Empty. The
    /// caller arms its timer from `next_deadline_ms`.
    pub fn from_snapshot(snapshot: GroupSnapshot, now_ms: i64) -> Self {
        let mut group = Group::new(snapshot.group_id, now_ms);
        group.generation_id = snapshot.generation_id;
        group.protocol_type = snapshot.protocol_type.filter(|t| !t.is_empty());
        group.protocol_name = snapshot.protocol_name;
        group.state_since_ms = snapshot.state_since_ms;
        let (Some(protocol_type), Some(protocol_name)) =
            (group.protocol_type.clone(), group.protocol_name.clone())
        else {
            if !snapshot.members.is_empty() {
                warn!(group = %group.group_id, "snapshot has members but no protocol: Empty");
            }
            group.protocol_name = None;
            return group;
        };
        for stored in snapshot.members {
            let taken = stored.member_id.is_empty()
                || group.members.contains_key(&stored.member_id)
                || stored
                    .group_instance_id
                    .as_ref()
                    .is_some_and(|id| group.static_members.contains_key(id));
            if taken {
                let member = &stored.member_id;
                warn!(group = %group.group_id, %member, "duplicate member in snapshot");
                continue;
            }
            let rebalance_timeout_ms = if stored.rebalance_timeout_ms < 0 {
                stored.session_timeout_ms
            } else {
                stored.rebalance_timeout_ms
            };
            let member = Member {
                member_id: stored.member_id,
                group_instance_id: stored.group_instance_id,
                client_id: stored.client_id,
                client_host: stored.client_host,
                session_timeout_ms: stored.session_timeout_ms,
                rebalance_timeout_ms,
                protocol_type: protocol_type.clone(),
                protocols: vec![(protocol_name.clone(), stored.subscription)],
                assignment: stored.assignment,
                heartbeat_deadline_ms: 0,
                join_token: None,
                sync_token: None,
                is_new: false,
                join_seq: 0,
            };
            group.insert_member(member, now_ms);
        }
        if let Some(leader) = snapshot
            .leader_id
            .filter(|id| group.members.contains_key(id))
        {
            group.leader_id = Some(leader);
        }
        if !group.members.is_empty() {
            group.state = GroupState::Stable;
        }
        group
    }

    // ----------------------------------------------------------------------------------
    // Read-only views (DescribeGroups, ListGroups, the shell's bookkeeping).

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    /// When the group entered its current state (retention of an Empty group's offsets).
    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    pub fn generation(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }

    /// Kafka's `isEmpty`: the group is in state Empty.
    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    /// Whether a member told MEMBER_ID_REQUIRED is expected back with its id.
    pub fn has_pending_members(&self) -> bool {
        !self.pending_members.is_empty()
    }

    /// Members in join order. Metadata is filled only while Stable, as Kafka's
    /// DescribeGroups does.
    pub fn members(&self) -> Vec<MemberDescription> {
        let stable_protocol = self
            .protocol_name
            .as_deref()
            .filter(|_| self.state == GroupState::Stable);
        self.members_in_join_order()
            .into_iter()
            .map(|member| member.describe(stable_protocol))
            .collect()
    }

    /// The group as `Effect::Persist` would write it now.
    pub fn snapshot(&self) -> GroupSnapshot {
        let protocol = self.protocol_name.as_deref();
        GroupSnapshot {
            group_id: self.group_id.clone(),
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            state_since_ms: self.state_since_ms,
            members: self
                .members_in_join_order()
                .into_iter()
                .map(|member| member.to_snapshot(protocol))
                .collect(),
        }
    }

    /// The earliest time `tick` has work to do, if any.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        if self.state == GroupState::Dead {
            return None;
        }
        let members = self.members.values().filter_map(Member::expiry_deadline_ms);
        let pending = self.pending_members.values().copied();
        let timers = self
            .join_timer
            .map(JoinTimer::at_ms)
            .into_iter()
            .chain(self.sync_deadline_ms);
        members.chain(pending).chain(timers).min()
    }

    // ----------------------------------------------------------------------------------
    // Validation for the offset APIs (the shell owns offsets; the group owns membership).

    /// OffsetCommit: Kafka's `ClassicGroup.validateOffsetCommit` (non-transactional).
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, false)
    }

    /// TxnOffsetCommit: the same rules, except that a commit without member and generation
    /// (old clients) is accepted in any state, and CompletingRebalance does not refuse.
    pub fn validate_txn_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, true)
    }

    /// OffsetFetch: a Dead group has no offsets to show.
    pub fn validate_offset_fetch(&self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            _ => Ok(()),
        }
    }

    fn validate_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        transactional: bool,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            // Admin client or a consumer without group management ("simple consumer").
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            self.validate_member(member_id, group_instance_id)?;
            if generation_id != self.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
        } else if !transactional && self.state != GroupState::Empty {
            // No member and no generation: only an Empty group takes such commits.
            return Err(GroupError::UnknownMemberId);
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            // The member has its JoinGroup answer but not its assignment yet.
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Kafka's `validateMember`: a static member must be the current owner of its
    /// instance id, and the member id must be known.
    fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance_id) = group_instance_id {
            match self.static_members.get(instance_id) {
                None => return Err(GroupError::UnknownMemberId),
                Some(owner) if owner != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }
}

// --------------------------------------------------------------------------------------
// JoinGroup.

impl Group {
    /// JoinGroup. The answer comes back as a `JoinDone` for `token`, now or later.
    /// `config` is remembered for the deadlines this join sets; `new_uuid` supplies the
    /// random part of generated member ids (a UUID in production, a counter in tests).
    /// Group creation is the caller's: Kafka creates the group only for a join without
    /// member id, and answers UNKNOWN_MEMBER_ID to one with an id for a missing group.
    pub fn join(
        &mut self,
        request: JoinRequest,
        token: RequestToken,
        now_ms: i64,
        config: GroupConfig,
        new_uuid: &mut impl FnMut() -> String,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.unconfirmed = None;
        self.config = config;
        self.fire_due(now_ms, &mut out);
        let mut request = request;
        request.protocols = dedup_protocols(std::mem::take(&mut request.protocols));
        if request.rebalance_timeout_ms < 0 {
            request.rebalance_timeout_ms = request.session_timeout_ms;
        }
        if let Err(error) = self.admit_join(&request) {
            let member_id = match error {
                GroupError::GroupMaxSizeReached => String::new(),
                _ => request.member_id.clone(),
            };
            out.push(join_done(token, JoinOutcome::failed(member_id, error)));
        } else if request.member_id.is_empty() {
            self.join_new_member(request, token, now_ms, new_uuid, &mut out);
        } else {
            self.join_existing_member(request, token, now_ms, &mut out);
        }
        self.fire_due(now_ms, &mut out);
        self.push_wake(&mut out);
        out
    }

    /// Checks made before anything else: session timeout bounds and group size. A member
    /// refused for size is dropped, as Kafka sheds members that did not rejoin in time.
    fn admit_join(&mut self, request: &JoinRequest) -> Result<(), GroupError> {
        let timeout = request.session_timeout_ms;
        if timeout < self.config.min_session_timeout_ms
            || timeout > self.config.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if self.accepts_joining_member(&request.member_id) {
            return Ok(());
        }
        let mut out = Vec::new();
        self.remove_member(&request.member_id, &mut out);
        self.pending_members.remove(&request.member_id);
        // The dropped member was not waiting (else it would have been accepted).
        assert!(out.is_empty());
        Err(GroupError::GroupMaxSizeReached)
    }

    /// Kafka's `acceptJoiningMember`.
    fn accepts_joining_member(&self, member_id: &str) -> bool {
        let max_size = usize::try_from(self.config.max_size).unwrap_or(0);
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            // Counting waiting members (not all members) lets the last to rejoin be shed
            // when the limit was lowered.
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(Member::is_awaiting_join)
                    || self.awaiting_join_count < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < max_size
            }
        }
    }

    fn join_new_member(
        &mut self,
        request: JoinRequest,
        token: RequestToken,
        now_ms: i64,
        new_uuid: &mut impl FnMut() -> String,
        out: &mut Vec<Effect>,
    ) {
        let refusal = if self.state == GroupState::Dead {
            Some(GroupError::CoordinatorNotAvailable)
        } else if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            Some(GroupError::InconsistentGroupProtocol)
        } else {
            None
        };
        if let Some(error) = refusal {
            out.push(join_done(token, JoinOutcome::failed("", error)));
            return;
        }
        let Some(member_id) = self.generate_member_id(&request, new_uuid) else {
            out.push(join_done(
                token,
                JoinOutcome::failed("", GroupError::UnknownServer),
            ));
            return;
        };
        let existing_static = request
            .group_instance_id
            .as_ref()
            .and_then(|instance_id| self.static_members.get(instance_id))
            .cloned();
        if let Some(old_member_id) = existing_static {
            self.rejoin_static_member(request, &old_member_id, member_id, token, now_ms, out);
        } else if request.group_instance_id.is_none() && request.require_known_member_id {
            // JoinGroup v4+: hand out the id and wait for the client to come back with it.
            let deadline_ms = now_ms.saturating_add(i64::from(request.session_timeout_ms));
            self.pending_members.insert(member_id.clone(), deadline_ms);
            let error = GroupError::MemberIdRequired {
                member_id: member_id.clone(),
            };
            out.push(join_done(token, JoinOutcome::failed(member_id, error)));
        } else {
            self.add_member_and_rebalance(request, member_id, token, now_ms, out);
        }
    }

    /// `{group.instance.id or client.id}-{uuid}`, as Kafka names members.
    fn generate_member_id(
        &self,
        request: &JoinRequest,
        new_uuid: &mut impl FnMut() -> String,
    ) -> Option<String> {
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        (0..MEMBER_ID_ATTEMPTS_MAX)
            .map(|_| format!("{prefix}-{}", new_uuid()))
            .find(|id| !self.members.contains_key(id) && !self.pending_members.contains_key(id))
    }

    fn join_existing_member(
        &mut self,
        request: JoinRequest,
        token: RequestToken,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let member_id = request.member_id.clone();
        let instance_id = request.group_instance_id.as_deref();
        let refusal = if self.state == GroupState::Dead {
            Some(GroupError::CoordinatorNotAvailable)
        } else if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            Some(GroupError::InconsistentGroupProtocol)
        } else {
            None
        };
        if let Some(error) = refusal {
            out.push(join_done(token, JoinOutcome::failed(member_id, error)));
        } else if self.pending_members.contains_key(&member_id) && instance_id.is_none() {
            // Coming back with the id from MEMBER_ID_REQUIRED: now it really joins.
            self.add_member_and_rebalance(request, member_id, token, now_ms, out);
        } else if let Err(error) = self.validate_member(&member_id, instance_id) {
            out.push(join_done(token, JoinOutcome::failed(member_id, error)));
        } else {
            self.rejoin_known_member(request, token, now_ms, out);
        }
    }

    /// A validated member joins again: rebalance, or repeat the current generation when
    /// nothing would change.
    fn rejoin_known_member(
        &mut self,
        request: JoinRequest,
        token: RequestToken,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let member_id = request.member_id.clone();
        let is_leader = self.is_leader(&member_id);
        let unchanged = self.members[&member_id].matches(&request.protocols);
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(request, token, now_ms, out)
            }
            // Same metadata: the member most likely lost our JoinGroup answer; repeat it.
            GroupState::CompletingRebalance if unchanged => {
                let response = self.current_generation_answer(&member_id, is_leader);
                out.push(join_done(token, response));
            }
            // A leader rejoining a Stable group asks for a new assignment (e.g. topic
            // metadata changed) even when its subscription is the same.
            GroupState::Stable if unchanged && !is_leader => {
                let response = self.current_generation_answer(&member_id, false);
                out.push(join_done(token, response));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(request, token, now_ms, out)
            }
            // Unreachable while members imply a non-Empty group; answered as Kafka does.
            GroupState::Empty | GroupState::Dead => {
                let error = GroupError::UnknownMemberId;
                out.push(join_done(token, JoinOutcome::failed(member_id, error)));
            }
        }
    }

    /// The current generation as a JoinGroup answer; the member list only if asked.
    fn current_generation_answer(&self, member_id: &str, with_members: bool) -> JoinOutcome {
        JoinOutcome {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: if with_members {
                self.joined_members()
            } else {
                Vec::new()
            },
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        request: JoinRequest,
        member_id: String,
        token: RequestToken,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let reason = request.reason.as_deref().unwrap_or("");
        debug!(group = %self.group_id, member = %member_id, reason, "adding member");
        let member = Member {
            member_id,
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            assignment: Vec::new(),
            // A new member cannot heartbeat while its first join is parked; see
            // `GroupConfig::new_member_join_timeout_ms`.
            heartbeat_deadline_ms: now_ms
                .saturating_add(i64::from(self.config.new_member_join_timeout_ms)),
            join_token: None,
            sync_token: None,
            is_new: true,
            join_seq: 0,
        };
        let member_id = member.member_id.clone();
        if self.state == GroupState::PreparingRebalance && self.previous_state == GroupState::Empty
        {
            self.new_member_added = true;
        }
        self.insert_member(member, now_ms);
        self.park_join(&member_id, token, out);
        self.maybe_prepare_rebalance_or_complete_join(now_ms, "member added", out);
    }

    fn update_member_and_rebalance(
        &mut self,
        request: JoinRequest,
        token: RequestToken,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let member_id = request.member_id.clone();
        self.update_member(&member_id, request, token, out);
        self.maybe_prepare_rebalance_or_complete_join(now_ms, "member rejoined", out);
    }

    /// A static member came back without its member id (restart, or a second process
    /// with the same instance id): the new id takes over and the old one is fenced.
    fn rejoin_static_member(
        &mut self,
        request: JoinRequest,
        old_member_id: &str,
        new_member_id: String,
        token: RequestToken,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        info!(group = %self.group_id, old = %old_member_id, new = %new_member_id,
            state = %self.state, "static member rejoined with a new member id");
        let old_leader = self.leader_id.clone().unwrap_or_default();
        let supports_skip_assignment = request.supports_skip_assignment;
        let old = &self.members[old_member_id];
        let undo = Unconfirmed::StaticRejoin {
            generation_id: self.generation_id,
            old_member_id: old_member_id.to_string(),
            new_member_id: new_member_id.clone(),
            protocols: old.protocols.clone(),
            rebalance_timeout_ms: old.rebalance_timeout_ms,
            session_timeout_ms: old.session_timeout_ms,
        };
        self.replace_static_member(old_member_id, &new_member_id, now_ms, out);
        let mut request = request;
        request.member_id = new_member_id.clone();
        self.update_member(&new_member_id, request, token, out);
        match self.state {
            GroupState::Stable => {
                if self.select_protocol() == self.protocol_name {
                    // Nothing the assignment depends on changed: no rebalance.
                    self.persist(Some(undo), out);
                    let response = self.static_rejoin_answer(
                        &new_member_id,
                        &old_leader,
                        supports_skip_assignment,
                    );
                    self.answer_join(&new_member_id, response, now_ms, out);
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(now_ms, "protocol change", out);
                }
            }
            // The leader may already be computing an assignment naming the old id.
            GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, "static member replaced", out)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(now_ms, out),
            // A static member exists, so the group is neither Empty nor Dead.
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// A static member's JoinGroup answer in a Stable group that does not rebalance.
    fn static_rejoin_answer(
        &self,
        member_id: &str,
        old_leader: &str,
        supports_skip_assignment: bool,
    ) -> JoinOutcome {
        let mut response = self.current_generation_answer(member_id, false);
        if supports_skip_assignment {
            // v9+: a returning leader learns it leads, but must not compute a new
            // assignment (a Stable group would not hand it out).
            let is_leader = self.is_leader(member_id);
            response.skip_assignment = is_leader;
            if is_leader {
                response.members = self.joined_members();
            }
        } else {
            // Older clients would assign if told they lead; naming the old leader id
            // keeps them following.
            response.leader = old_leader.to_string();
        }
        response
    }

    /// Kafka's `supportsProtocols`.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.support_count(name) == self.members.len())
    }

    fn support_count(&self, protocol_name: &str) -> usize {
        self.protocol_support
            .get(protocol_name)
            .copied()
            .unwrap_or(0)
    }

    /// Kafka's `selectProtocol`: among protocols every member supports, each member votes
    /// for its most preferred; most votes wins. Ties go to the earliest-joined voter's
    /// choice (Kafka leaves ties to hash order).
    fn select_protocol(&self) -> Option<String> {
        let candidates: BTreeSet<&str> = self
            .protocol_support
            .iter()
            .filter(|(_, count)| **count == self.members.len())
            .map(|(name, _)| name.as_str())
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for member in self.members_in_join_order() {
            let Some(choice) = member.vote(&candidates) else {
                continue;
            };
            match votes.iter_mut().find(|(name, _)| *name == choice) {
                Some((_, count)) => *count += 1,
                None => votes.push((choice, 1)),
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, best_count)| count > best_count) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }
}

// --------------------------------------------------------------------------------------
// SyncGroup, Heartbeat, LeaveGroup, DeleteGroups, unloading, ticks.

impl Group {
    /// SyncGroup. The answer comes back as a `SyncDone` for `token`, now or later.
    pub fn sync(&mut self, request: SyncRequest, token: RequestToken, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.unconfirmed = None;
        self.fire_due(now_ms, &mut out);
        match self.check_sync(&request) {
            Err(error) => out.push(sync_done(token, SyncOutcome::failed(error))),
            Ok(()) => self.sync_member(request, token, now_ms, &mut out),
        }
        self.push_wake(&mut out);
        out
    }

    fn check_sync(&self, request: &SyncRequest) -> Result<(), GroupError> {
        match self.state {
            GroupState::Empty => return Err(GroupError::UnknownMemberId),
            GroupState::Dead => return Err(GroupError::CoordinatorNotAvailable),
            _ => {}
        }
        self.validate_member(&request.member_id, request.group_instance_id.as_deref())?;
        if request.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if conflicts(&request.protocol_type, &self.protocol_type)
            || conflicts(&request.protocol_name, &self.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn sync_member(
        &mut self,
        request: SyncRequest,
        token: RequestToken,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let member_id = request.member_id.as_str();
        match self.state {
            GroupState::PreparingRebalance => {
                let response = SyncOutcome::failed(GroupError::RebalanceInProgress);
                out.push(sync_done(token, response));
            }
            GroupState::CompletingRebalance => {
                self.park_sync(member_id, token, out);
                self.mark_synced(member_id);
                if self.is_leader(member_id) {
                    self.install_assignment(request.assignments, now_ms, out);
                }
            }
            GroupState::Stable => {
                self.mark_synced(member_id);
                let response = SyncOutcome {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: self.members[member_id].assignment.clone(),
                };
                out.push(sync_done(token, response));
            }
            // `check_sync` refused these.
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The leader's assignment ends the rebalance: store it, persist, answer everyone
    /// waiting. Members the leader left out get an empty assignment, as in Kafka.
    fn install_assignment(
        &mut self,
        assignments: Vec<(String, Vec<u8>)>,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let mut by_member: BTreeMap<String, Vec<u8>> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = by_member.remove(&member.member_id).unwrap_or_default();
        }
        if !by_member.is_empty() {
            let unknown: Vec<&String> = by_member.keys().collect();
            debug!(group = %self.group_id, ?unknown, "assignments for non-members");
        }
        self.transition(GroupState::Stable, now_ms);
        info!(group = %self.group_id, generation = self.generation_id,
            members = self.members.len(), "group is stable");
        let undo = Unconfirmed::Assignment {
            generation_id: self.generation_id,
        };
        self.persist(Some(undo), out);
        self.propagate_assignment(None, now_ms, out);
    }

    /// Answers every parked SyncGroup with the member's assignment, or with `error`.
    fn propagate_assignment(
        &mut self,
        error: Option<GroupError>,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let waiting: Vec<String> = self
            .members_in_join_order()
            .into_iter()
            .filter(|member| member.sync_token.is_some())
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in waiting {
            let response = match &error {
                Some(error) => SyncOutcome::failed(error.clone()),
                None => SyncOutcome {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: self.members[&member_id].assignment.clone(),
                },
            };
            self.answer_sync(&member_id, response, now_ms, out);
        }
    }

    /// The member has sent its SyncGroup for this generation, or is gone.
    fn mark_synced(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    /// Heartbeat: keeps the member's session alive and tells it about rebalances. It only
    /// ever moves a deadline later, so it returns no `WakeAt`: an earlier timer just finds
    /// nothing due.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.validate_member(member_id, group_instance_id)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let state = self.state;
        let Some(member) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        match state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                member.refresh_heartbeat(now_ms);
                Err(GroupError::RebalanceInProgress)
            }
            // Clients heartbeat between their JoinGroup answer and SyncGroup too.
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.refresh_heartbeat(now_ms);
                Ok(())
            }
        }
    }

    /// LeaveGroup (v3+ batches). Each entry is (member id, group instance id); an entry
    /// without member id removes the static member by instance id (admin removal).
    /// A Dead group refuses every entry with CoordinatorNotAvailable, which Kafka sends
    /// as the top-level error.
    pub fn leave(
        &mut self,
        members: Vec<(Option<String>, Option<String>)>,
        now_ms: i64,
    ) -> (Vec<Result<(), GroupError>>, Vec<Effect>) {
        let mut out = Vec::new();
        self.unconfirmed = None;
        if self.state == GroupState::Dead {
            let results = members
                .iter()
                .map(|_| Err(GroupError::CoordinatorNotAvailable));
            return (results.collect(), out);
        }
        self.fire_due(now_ms, &mut out);
        let results: Vec<Result<(), GroupError>> = members
            .into_iter()
            .map(|(member_id, instance_id)| {
                self.leave_one(member_id.unwrap_or_default(), instance_id, &mut out)
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            match self.state {
                GroupState::Stable | GroupState::CompletingRebalance => {
                    self.maybe_prepare_rebalance_or_complete_join(now_ms, "member left", &mut out)
                }
                GroupState::PreparingRebalance => self.maybe_complete_join_phase(now_ms, &mut out),
                GroupState::Empty | GroupState::Dead => {}
            }
        }
        self.fire_due(now_ms, &mut out);
        self.push_wake(&mut out);
        (results, out)
    }

    fn leave_one(
        &mut self,
        member_id: String,
        instance_id: Option<String>,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        let target = if member_id.is_empty() {
            let owner = instance_id.and_then(|id| self.static_members.get(&id).cloned());
            owner.ok_or(GroupError::UnknownMemberId)?
        } else if self.pending_members.remove(&member_id).is_some() {
            return Ok(());
        } else {
            self.validate_member(&member_id, instance_id.as_deref())?;
            member_id
        };
        info!(group = %self.group_id, member = %target, "member left");
        self.remove_member(&target, out);
        Ok(())
    }

    /// DeleteGroups: only an Empty group can go; the shell writes the tombstone.
    pub fn delete(&mut self) -> Result<Vec<Effect>, GroupError> {
        self.unconfirmed = None;
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::PreparingRebalance
            | GroupState::CompletingRebalance
            | GroupState::Stable => Err(GroupError::NonEmptyGroup),
            GroupState::Empty => {
                self.make_dead();
                Ok(vec![Effect::Tombstone {
                    group_id: self.group_id.clone(),
                }])
            }
        }
    }

    /// The coordinator gave up this group's partition: every parked request is answered
    /// NOT_COORDINATOR (clients find the new coordinator) and the group is Dead.
    pub fn unload(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        self.unconfirmed = None;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in ids {
            let member = self.members.get_mut(&member_id).expect("listed above");
            let join = member.join_token.take();
            let sync = member.sync_token.take();
            if let Some(token) = join {
                self.awaiting_join_count -= 1;
                let response = JoinOutcome::failed(member_id.clone(), GroupError::NotCoordinator);
                out.push(join_done(token, response));
            }
            if let Some(token) = sync {
                out.push(sync_done(
                    token,
                    SyncOutcome::failed(GroupError::NotCoordinator),
                ));
            }
        }
        self.make_dead();
        out
    }

    /// The shell could not commit the latest `Persist` (the answers carried out after it
    /// already went out as `error`). Whatever that record described is taken back, so
    /// memory holds nothing the log cannot explain, as Kafka's storeGroup callbacks do:
    /// an assignment is dropped and the group rebalances (resetAndPropagateAssignmentError,
    /// maybePrepareRebalance); a static member's new id gives way to the old one again.
    /// A failed Empty record needs nothing (Kafka only warns).
    pub fn write_failed(&mut self, error: &GroupError, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(unconfirmed) = self.unconfirmed.take() else {
            return out;
        };
        warn!(group = %self.group_id, generation = self.generation_id, %error,
            ?unconfirmed, "group metadata write failed: taking it back");
        match unconfirmed {
            Unconfirmed::Assignment { generation_id } => {
                if self.state == GroupState::Stable && generation_id == self.generation_id {
                    // The SyncGroup answers went out after the failed write, so the
                    // shell turned them into `error`; none is parked any more.
                    for member in self.members.values_mut() {
                        member.assignment.clear();
                    }
                    self.prepare_rebalance(now_ms, "storing the assignment failed", &mut out);
                }
            }
            undo @ Unconfirmed::StaticRejoin { .. } => {
                self.revert_static_rejoin(undo, now_ms, &mut out)
            }
        }
        self.fire_due(now_ms, &mut out);
        self.push_wake(&mut out);
        out
    }

    /// Puts a static member back under its old id with its old protocols and timeouts.
    fn revert_static_rejoin(&mut self, undo: Unconfirmed, now_ms: i64, out: &mut Vec<Effect>) {
        let Unconfirmed::StaticRejoin {
            generation_id,
            old_member_id,
            new_member_id,
            protocols,
            rebalance_timeout_ms,
            session_timeout_ms,
        } = undo
        else {
            return;
        };
        let current = self.state == GroupState::Stable
            && generation_id == self.generation_id
            && self.members.contains_key(&new_member_id)
            && !self.members.contains_key(&old_member_id);
        if !current {
            return;
        }
        self.replace_static_member(&new_member_id, &old_member_id, now_ms, out);
        let member = self.members.get_mut(&old_member_id).expect("just moved");
        let new_protocols = std::mem::replace(&mut member.protocols, protocols.clone());
        member.rebalance_timeout_ms = rebalance_timeout_ms;
        member.session_timeout_ms = session_timeout_ms;
        member.refresh_heartbeat(now_ms);
        self.count_protocols(&new_protocols, false);
        self.count_protocols(&protocols, true);
    }

    fn make_dead(&mut self) {
        self.previous_state = self.state;
        self.state = GroupState::Dead;
        self.join_timer = None;
        self.sync_deadline_ms = None;
        self.pending_sync.clear();
        self.pending_members.clear();
    }

    /// Expires sessions and completes timed-out phases whose deadline is at or before
    /// `now_ms`. Call it at (or after) each `WakeAt`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.unconfirmed = None;
        self.fire_due(now_ms, &mut out);
        self.push_wake(&mut out);
        out
    }

    /// Runs every deadline that has passed, earliest first. Each step removes or moves
    /// its deadline past `now_ms`, so the loop ends.
    fn fire_due(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        if self.state == GroupState::Dead {
            return;
        }
        while let Some(due) = self.first_due(now_ms) {
            match due {
                Due::PendingMember(member_id) => {
                    self.expire_pending_member(&member_id, now_ms, out)
                }
                Due::Member(member_id) => self.expire_member(&member_id, now_ms, out),
                Due::Sync => self.expire_sync(now_ms, out),
                Due::Join => self.on_join_timer(now_ms, out),
            }
        }
    }

    fn first_due(&self, now_ms: i64) -> Option<Due> {
        let pending = self
            .pending_members
            .iter()
            .map(|(id, at)| (*at, Due::PendingMember(id.clone())));
        let members = self.members.iter().filter_map(|(id, member)| {
            Some((member.expiry_deadline_ms()?, Due::Member(id.clone())))
        });
        let sync = self.sync_deadline_ms.map(|at| (at, Due::Sync));
        let join = self.join_timer.map(|timer| (timer.at_ms(), Due::Join));
        // Ties: members go before the phase deadlines, as their timers would in Kafka
        // when armed earlier; the order only decides the log lines.
        pending
            .chain(members)
            .chain(sync)
            .chain(join)
            .filter(|(at, _)| *at <= now_ms)
            .min_by_key(|(at, _)| *at)
            .map(|(_, due)| due)
    }

    fn expire_pending_member(&mut self, member_id: &str, now_ms: i64, out: &mut Vec<Effect>) {
        debug!(group = %self.group_id, member = %member_id, "pending member expired");
        self.pending_members.remove(member_id);
        if self.state == GroupState::PreparingRebalance && self.all_members_joined() {
            self.complete_join(now_ms, out);
        }
    }

    /// Session timeout (Kafka's heartbeat expiration).
    fn expire_member(&mut self, member_id: &str, now_ms: i64, out: &mut Vec<Effect>) {
        info!(group = %self.group_id, member = %member_id, "session expired, removing member");
        self.remove_member(member_id, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance_or_complete_join(now_ms, "session expired", out)
            }
            GroupState::PreparingRebalance if self.all_members_joined() => {
                self.complete_join(now_ms, out)
            }
            _ => {}
        }
    }

    /// Members that never sent SyncGroup within the rebalance timeout are dropped, and
    /// the others rebalance without them.
    fn expire_sync(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        self.sync_deadline_ms = None;
        let syncing = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if !syncing || self.pending_sync.is_empty() {
            return;
        }
        let late: Vec<String> = std::mem::take(&mut self.pending_sync).into_iter().collect();
        info!(group = %self.group_id, members = ?late, "members did not sync in time");
        for member_id in &late {
            self.remove_member(member_id, out);
        }
        self.prepare_rebalance(now_ms, "sync expired", out);
    }
}

// --------------------------------------------------------------------------------------
// Rebalance phases.

impl Group {
    fn maybe_prepare_rebalance_or_complete_join(
        &mut self,
        now_ms: i64,
        reason: &str,
        out: &mut Vec<Effect>,
    ) {
        if GroupState::PreparingRebalance.may_follow(self.state) {
            self.prepare_rebalance(now_ms, reason, out);
        } else {
            self.maybe_complete_join_phase(now_ms, out);
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, reason: &str, out: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            // Whatever the leader computes now is for a generation that will not be.
            for member in self.members.values_mut() {
                member.assignment.clear();
            }
            self.propagate_assignment(Some(GroupError::RebalanceInProgress), now_ms, out);
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let initial = self.state == GroupState::Empty;
        if initial {
            let delay_ms = self.config.initial_rebalance_delay_ms.max(0);
            let remaining_ms = self.rebalance_timeout_ms().saturating_sub(delay_ms).max(0);
            let at_ms = now_ms.saturating_add(i64::from(delay_ms));
            self.join_timer = Some(JoinTimer::Initial {
                at_ms,
                delay_ms,
                remaining_ms,
            });
        }
        info!(group = %self.group_id, generation = self.generation_id, from = %self.state,
            reason, "preparing to rebalance");
        self.transition(GroupState::PreparingRebalance, now_ms);
        if initial {
            return;
        }
        if self.all_members_joined() {
            self.complete_join(now_ms, out);
        } else {
            let at_ms = now_ms.saturating_add(i64::from(self.rebalance_timeout_ms()));
            self.join_timer = Some(JoinTimer::Rebalance { at_ms });
        }
    }

    /// Completes the join phase early once everyone is in, except during the initial
    /// delay, which exists precisely to gather more members.
    fn maybe_complete_join_phase(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && self.previous_state != GroupState::Empty
            && self.all_members_joined()
        {
            self.complete_join(now_ms, out);
        }
    }

    fn on_join_timer(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(timer) = self.join_timer.take() else {
            return;
        };
        match timer {
            JoinTimer::Initial {
                at_ms,
                delay_ms,
                remaining_ms,
            } if self.new_member_added && remaining_ms != 0 => {
                // Someone arrived during the delay: wait once more, within the budget.
                self.new_member_added = false;
                let next_delay_ms = self
                    .config
                    .initial_rebalance_delay_ms
                    .max(0)
                    .min(remaining_ms);
                self.join_timer = Some(JoinTimer::Initial {
                    at_ms: at_ms.saturating_add(i64::from(next_delay_ms)),
                    delay_ms: next_delay_ms,
                    remaining_ms: remaining_ms.saturating_sub(delay_ms).max(0),
                });
            }
            JoinTimer::Initial { .. } | JoinTimer::Rebalance { .. } => {
                self.complete_join(now_ms, out)
            }
        }
    }

    /// Ends the join phase: dynamic members that did not rejoin are dropped (static ones
    /// stay until their session expires), then the next generation starts.
    fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        assert_eq!(self.state, GroupState::PreparingRebalance);
        self.join_timer = None;
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|member| !member.is_awaiting_join() && member.group_instance_id.is_none())
            .map(|member| member.member_id.clone())
            .collect();
        if !absent.is_empty() {
            info!(group = %self.group_id, ?absent, "removing members that did not rejoin");
        }
        for member_id in &absent {
            self.remove_member(member_id, out);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Only absent static members are left: wait for them (or their sessions).
            let wait_ms = self.rebalance_timeout_ms().max(1);
            let at_ms = now_ms.saturating_add(i64::from(wait_ms));
            self.join_timer = Some(JoinTimer::Rebalance { at_ms });
            return;
        }
        self.start_next_generation(now_ms, out);
    }

    /// Keeps the leader if it rejoined, else picks the earliest-joined member that did.
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.as_deref() else {
            return false;
        };
        if self
            .members
            .get(leader)
            .is_some_and(Member::is_awaiting_join)
        {
            return true;
        }
        let joined = self
            .members_in_join_order()
            .into_iter()
            .find(|member| member.is_awaiting_join())
            .map(|member| member.member_id.clone());
        match joined {
            Some(new_leader) => {
                info!(group = %self.group_id, %new_leader, "leader did not rejoin: replaced");
                self.leader_id = Some(new_leader);
                true
            }
            None => false,
        }
    }

    fn start_next_generation(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let previous_generation = self.generation_id;
        self.generation_id = self.generation_id.saturating_add(1);
        assert!(self.generation_id >= previous_generation);
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty, now_ms);
            info!(group = %self.group_id, generation = self.generation_id, "group is empty");
            // Nothing to undo if this write fails (Kafka only warns): no member holds
            // this generation, and a reload's members from the last record expire.
            self.persist(None, out);
            return;
        }
        let protocol = self.select_protocol();
        // Every join checks its protocols against all members, so some protocol is common.
        assert!(
            protocol.is_some(),
            "no common protocol in group {}",
            self.group_id
        );
        self.protocol_name = protocol;
        self.transition(GroupState::CompletingRebalance, now_ms);
        info!(group = %self.group_id, generation = self.generation_id,
            protocol = ?self.protocol_name, members = self.members.len(), "join phase complete");
        let leader_view = self.joined_members();
        let ids: Vec<String> = self
            .members_in_join_order()
            .iter()
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in ids {
            let is_leader = self.is_leader(&member_id);
            let mut response = self.current_generation_answer(&member_id, false);
            if is_leader {
                response.members = leader_view.clone();
            }
            self.answer_join(&member_id, response, now_ms, out);
            let member = self.members.get_mut(&member_id).expect("listed above");
            member.refresh_heartbeat(now_ms);
            member.is_new = false;
            self.pending_sync.insert(member_id);
        }
        let sync_wait_ms = i64::from(self.rebalance_timeout_ms());
        self.sync_deadline_ms = Some(now_ms.saturating_add(sync_wait_ms));
    }

    fn all_members_joined(&self) -> bool {
        self.members.len() == self.awaiting_join_count && self.pending_members.is_empty()
    }

    /// The group's rebalance timeout: the largest of its members'.
    fn rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|member| member.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn transition(&mut self, to: GroupState, now_ms: i64) {
        assert!(
            to.may_follow(self.state),
            "group {}: {} -> {to}",
            self.group_id,
            self.state
        );
        self.previous_state = self.state;
        self.state = to;
        self.state_since_ms = now_ms;
    }
}

// --------------------------------------------------------------------------------------
// Member bookkeeping: the only code that touches `members` and the counts kept beside it.

impl Group {
    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    fn members_in_join_order(&self) -> Vec<&Member> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|member| member.join_seq);
        members
    }

    /// The leader's view: every member with its metadata for the chosen protocol.
    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members_in_join_order()
            .into_iter()
            .map(|member| JoinedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                metadata: member.metadata(protocol).unwrap_or_default().to_vec(),
            })
            .collect()
    }

    /// Kafka's `ClassicGroup.add` (the parked join is attached by `park_join`).
    fn insert_member(&mut self, mut member: Member, now_ms: i64) {
        assert!(!self.members.contains_key(&member.member_id));
        assert!(member.join_token.is_none() && member.sync_token.is_none());
        if let Some(instance_id) = &member.group_instance_id {
            assert!(!self.static_members.contains_key(instance_id));
            self.static_members
                .insert(instance_id.clone(), member.member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if !member.is_new {
            member.refresh_heartbeat(now_ms);
        }
        member.join_seq = self.next_join_seq;
        self.next_join_seq += 1;
        self.count_protocols(&member.protocols, true);
        self.pending_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Kafka's `ClassicGroup.remove`, plus answering whatever the member had parked with
    /// UNKNOWN_MEMBER_ID so no request is left hanging.
    fn remove_member(&mut self, member_id: &str, out: &mut Vec<Effect>) {
        self.mark_synced(member_id);
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        self.count_protocols(&member.protocols, false);
        if let Some(token) = member.join_token {
            self.awaiting_join_count -= 1;
            out.push(join_done(
                token,
                JoinOutcome::failed("", GroupError::UnknownMemberId),
            ));
        }
        if let Some(token) = member.sync_token {
            out.push(sync_done(
                token,
                SyncOutcome::failed(GroupError::UnknownMemberId),
            ));
        }
        if let Some(instance_id) = &member.group_instance_id
            && self.static_members.get(instance_id).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance_id);
        }
        if self.is_leader(member_id) {
            self.leader_id = self
                .members_in_join_order()
                .first()
                .map(|m| m.member_id.clone());
        }
    }

    /// Moves a static member to a new member id, fencing whatever the old id had parked.
    fn replace_static_member(
        &mut self,
        old_member_id: &str,
        new_member_id: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let mut member = self
            .members
            .remove(old_member_id)
            .expect("static member is a member");
        if let Some(token) = member.join_token.take() {
            self.awaiting_join_count -= 1;
            let response = JoinOutcome::failed(old_member_id, GroupError::FencedInstanceId);
            out.push(join_done(token, response));
        }
        if let Some(token) = member.sync_token.take() {
            out.push(sync_done(
                token,
                SyncOutcome::failed(GroupError::FencedInstanceId),
            ));
        }
        member.member_id = new_member_id.to_string();
        member.is_new = false;
        member.refresh_heartbeat(now_ms);
        if let Some(instance_id) = &member.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), new_member_id.to_string());
        }
        if self.is_leader(old_member_id) {
            self.leader_id = Some(new_member_id.to_string());
        }
        // Kafka leaves the old id in the pending-sync set, which makes the sync timer
        // rebalance for a member that no longer exists; the new id owes the sync instead.
        if self.pending_sync.remove(old_member_id) {
            self.pending_sync.insert(new_member_id.to_string());
        }
        self.members.insert(new_member_id.to_string(), member);
    }

    /// Kafka's `updateMember`: new protocols and timeouts, and the join now parked.
    fn update_member(
        &mut self,
        member_id: &str,
        request: JoinRequest,
        token: RequestToken,
        out: &mut Vec<Effect>,
    ) {
        let member = self.members.get_mut(member_id).expect("validated member");
        let old_protocols = std::mem::replace(&mut member.protocols, request.protocols);
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        let new_protocols = member.protocols.clone();
        self.count_protocols(&old_protocols, false);
        self.count_protocols(&new_protocols, true);
        self.park_join(member_id, token, out);
    }

    fn count_protocols(&mut self, protocols: &[Protocol], add: bool) {
        for (name, _) in protocols {
            let count = self.protocol_support.entry(name.clone()).or_insert(0);
            if add {
                *count += 1;
            } else {
                assert!(*count > 0, "protocol count underflow for {name}");
                *count -= 1;
                if *count == 0 {
                    self.protocol_support.remove(name);
                }
            }
        }
    }

    /// Parks a JoinGroup. A join the member already had parked is superseded (the client
    /// gave up on it and retried); it is answered so that no token is left hanging.
    fn park_join(&mut self, member_id: &str, token: RequestToken, out: &mut Vec<Effect>) {
        let member = self
            .members
            .get_mut(member_id)
            .expect("parking for a member");
        match member.join_token.replace(token) {
            Some(old) => {
                let response = JoinOutcome::failed(member_id, GroupError::RebalanceInProgress);
                out.push(join_done(old, response));
            }
            None => self.awaiting_join_count += 1,
        }
    }

    /// Parks a SyncGroup, superseding an earlier one like `park_join`.
    fn park_sync(&mut self, member_id: &str, token: RequestToken, out: &mut Vec<Effect>) {
        let member = self
            .members
            .get_mut(member_id)
            .expect("parking for a member");
        if let Some(old) = member.sync_token.replace(token) {
            out.push(sync_done(
                old,
                SyncOutcome::failed(GroupError::RebalanceInProgress),
            ));
        }
    }

    /// Answers the member's parked JoinGroup, if any; its session restarts now.
    fn answer_join(
        &mut self,
        member_id: &str,
        response: JoinOutcome,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if let Some(token) = member.join_token.take() {
            member.refresh_heartbeat(now_ms);
            self.awaiting_join_count -= 1;
            out.push(join_done(token, response));
        }
    }

    /// Answers the member's parked SyncGroup, if any; its session restarts now.
    fn answer_sync(
        &mut self,
        member_id: &str,
        response: SyncOutcome,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if let Some(token) = member.sync_token.take() {
            member.refresh_heartbeat(now_ms);
            out.push(sync_done(token, response));
        }
    }

    /// Asks for the group's metadata record, remembering what to undo if it fails.
    fn persist(&mut self, undo: Option<Unconfirmed>, out: &mut Vec<Effect>) {
        out.push(Effect::Persist(self.snapshot()));
        self.unconfirmed = undo;
    }

    fn push_wake(&self, out: &mut Vec<Effect>) {
        if let Some(at_ms) = self.next_deadline_ms() {
            out.push(Effect::WakeAt(at_ms));
        }
    }
}

/// A request's protocol type or name disagrees with the group's (both must be known).
fn conflicts(asked: &Option<String>, ours: &Option<String>) -> bool {
    matches!((asked, ours), (Some(asked), Some(ours)) if asked != ours)
}

fn join_done(token: RequestToken, response: JoinOutcome) -> Effect {
    Effect::JoinDone { token, response }
}

fn sync_done(token: RequestToken, response: SyncOutcome) -> Effect {
    Effect::SyncDone { token, response }
}

#[cfg(test)]
impl Group {
    /// Every structural invariant, checked from scratch. Tests call it after each step.
    pub(super) fn check_invariants(&self) {
        let awaiting = self
            .members
            .values()
            .filter(|m| m.is_awaiting_join())
            .count();
        assert_eq!(self.awaiting_join_count, awaiting, "awaiting join count");
        let mut support: BTreeMap<String, usize> = BTreeMap::new();
        for member in self.members.values() {
            for (name, _) in &member.protocols {
                *support.entry(name.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(self.protocol_support, support, "protocol support counts");
        self.check_static_members();
        self.check_leader();
        self.check_phase();
        for member_id in self.pending_members.keys() {
            assert!(
                !self.members.contains_key(member_id),
                "pending {member_id} is a member"
            );
        }
    }

    fn check_static_members(&self) {
        let with_instance = self
            .members
            .values()
            .filter(|m| m.group_instance_id.is_some());
        assert_eq!(
            with_instance.count(),
            self.static_members.len(),
            "static member count"
        );
        for (instance_id, member_id) in &self.static_members {
            let member = &self.members[member_id];
            assert_eq!(member.group_instance_id.as_ref(), Some(instance_id));
        }
    }

    fn check_leader(&self) {
        match &self.leader_id {
            Some(leader) => assert!(self.members.contains_key(leader), "leader {leader} gone"),
            None => assert!(self.members.is_empty(), "members without a leader"),
        }
    }

    fn check_phase(&self) {
        use GroupState::*;
        let state = self.state;
        assert_eq!(
            self.join_timer.is_some(),
            state == PreparingRebalance,
            "join timer"
        );
        if matches!(state, Empty | Dead) {
            assert!(
                self.members.is_empty() || state == Dead,
                "members in {state}"
            );
        }
        for member in self.members.values() {
            if member.join_token.is_some() {
                assert_eq!(state, PreparingRebalance, "parked join in {state}");
            }
            if member.sync_token.is_some() {
                assert_eq!(state, CompletingRebalance, "parked sync in {state}");
            }
            if member.is_new && state != Dead {
                assert!(
                    member.join_token.is_some(),
                    "new member {} not waiting",
                    member.member_id
                );
            }
        }
        for member_id in &self.pending_sync {
            assert!(
                self.members.contains_key(member_id),
                "pending sync {member_id}"
            );
            assert!(matches!(state, CompletingRebalance | Stable));
        }
        assert_eq!(
            self.sync_deadline_ms.is_some(),
            !self.pending_sync.is_empty(),
            "sync timer"
        );
        if matches!(state, CompletingRebalance | Stable) {
            let protocol = self.protocol_name.as_deref().expect("protocol chosen");
            assert!(self.protocol_type.is_some());
            for member in self.members.values() {
                assert!(
                    member.metadata(protocol).is_some(),
                    "member lacks the protocol"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    /// Two dynamic members joining an Empty group inside the initial delay: one
    /// generation with both, Stable after SyncGroup. Returns (harness, a, b, now).
    fn stable_pair() -> (Harness, String, String, i64) {
        let mut h = Harness::new(3_000);
        let (token_a, _) = h.join(join_request("", "a"), T0);
        let (token_b, _) = h.join(join_request("", "b"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let a = join_answer(&effects, token_a)
            .expect("a answered")
            .member_id;
        let b = join_answer(&effects, token_b)
            .expect("b answered")
            .member_id;
        let now = T0 + 6_000;
        h.sync_all(now);
        assert_eq!(h.group.state(), GroupState::Stable);
        assert_eq!(h.group.generation(), 1);
        (h, a, b, now)
    }

    #[test]
    fn one_member_waits_for_the_initial_delay() {
        let mut h = Harness::new(3_000);
        let (token, effects) = h.join(join_request("", "a"), T0);
        assert_eq!(answers(&effects), 0);
        assert_eq!(wake_at(&effects), Some(T0 + 3_000));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(answers(&h.tick(T0 + 2_999)), 0);
        let effects = h.tick(T0 + 3_000);
        let answer = join_answer(&effects, token).expect("answered at the delay");
        assert_eq!(answer.error, None);
        assert_eq!(answer.generation_id, 1);
        assert_eq!(answer.member_id, "a-0001");
        assert_eq!(answer.leader, "a-0001");
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn members_joining_within_the_delay_share_the_first_generation() {
        let mut h = Harness::new(3_000);
        let (token_a, _) = h.join(join_request("", "a"), T0);
        let (token_b, effects) = h.join(join_request("", "b"), T0 + 1_000);
        assert_eq!(answers(&effects), 0);
        // A member arrived during the delay, so it is extended once (Kafka's
        // InitialDelayedJoin), up to the rebalance timeout.
        let effects = h.tick(T0 + 3_000);
        assert_eq!(answers(&effects), 0);
        assert_eq!(wake_at(&effects), Some(T0 + 6_000));
        let effects = h.tick(T0 + 6_000);
        let a = join_answer(&effects, token_a).expect("a answered");
        let b = join_answer(&effects, token_b).expect("b answered");
        assert_eq!((a.generation_id, b.generation_id), (1, 1));
        assert_eq!(a.leader, a.member_id);
        assert_eq!(b.leader, a.member_id);
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        assert_eq!(a.protocol_type.as_deref(), Some("consumer"));
        let listed: Vec<&str> = a.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(listed, [a.member_id.as_str(), b.member_id.as_str()]);
        assert!(a.members.iter().all(|m| m.metadata == b"meta-range"));
        assert!(b.members.is_empty());

        // The follower's SyncGroup waits for the leader's.
        let now = T0 + 6_000;
        let (follower, effects) = h.sync(sync_request(&b.member_id, 1, Vec::new()), now);
        assert_eq!(sync_answer(&effects, follower), None);
        let plan = vec![
            (a.member_id.clone(), assignment_for(&a.member_id)),
            (b.member_id.clone(), assignment_for(&b.member_id)),
        ];
        let (leader, effects) = h.sync(sync_request(&a.member_id, 1, plan), now);
        assert!(
            matches!(effects[0], Effect::Persist(_)),
            "persist before answering"
        );
        let stored = &persisted(&effects)[0];
        assert_eq!(stored.generation_id, 1);
        assert_eq!(stored.members[1].assignment, assignment_for(&b.member_id));
        let leader_answer = sync_answer(&effects, leader).expect("leader answered");
        let follower_answer = sync_answer(&effects, follower).expect("follower answered");
        assert_eq!(leader_answer.assignment, assignment_for(&a.member_id));
        assert_eq!(follower_answer.assignment, assignment_for(&b.member_id));
        assert_eq!(follower_answer.protocol_name.as_deref(), Some("range"));
        assert_eq!(h.group.state(), GroupState::Stable);
    }

    /// With no initial delay Kafka completes the join phase as soon as everyone known has
    /// joined, which for the first member is at once; the second member then causes a
    /// second rebalance.
    #[test]
    fn zero_delay_completes_as_soon_as_all_known_members_joined() {
        let mut h = Harness::new(0);
        let a = h.join_now(join_request("", "a"), T0);
        assert_eq!(
            (a.generation_id, a.leader.as_str()),
            (1, a.member_id.as_str())
        );
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
        let (token_b, effects) = h.join(join_request("", "b"), T0);
        assert_eq!(answers(&effects), 0);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        let (token_a, effects) = h.join(join_request(&a.member_id, "a"), T0);
        let a2 = join_answer(&effects, token_a).expect("a answered");
        let b = join_answer(&effects, token_b).expect("b answered");
        assert_eq!((a2.generation_id, b.generation_id), (2, 2));
        assert_eq!(a2.members.len(), 2);
        h.sync_all(T0);
        assert_eq!(h.group.state(), GroupState::Stable);
    }

    #[test]
    fn members_join_and_leave_a_stable_group() {
        let (mut h, a, b, now) = stable_pair();
        let (token_c, effects) = h.join(join_request("", "c"), now + 100);
        assert_eq!(answers(&effects), 0);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.heartbeat(&a, now + 200),
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(
            h.heartbeat(&b, now + 200),
            Err(GroupError::RebalanceInProgress)
        );
        let (token_a, effects) = h.join(join_request(&a, "a"), now + 300);
        assert_eq!(answers(&effects), 0);
        let (token_b, effects) = h.join(join_request(&b, "b"), now + 400);
        let answer_a = join_answer(&effects, token_a).expect("a answered");
        let answer_b = join_answer(&effects, token_b).expect("b answered");
        let answer_c = join_answer(&effects, token_c).expect("c answered");
        assert_eq!(answer_a.generation_id, 2);
        assert_eq!(answer_a.leader, a, "the leader rejoined and stays leader");
        assert_eq!(answer_a.members.len(), 3);
        assert!(answer_b.members.is_empty() && answer_c.members.is_empty());
        h.sync_all(now + 500);
        assert_eq!(h.group.state(), GroupState::Stable);
        assert_eq!(h.group.members().len(), 3);

        let (results, effects) = h.leave(&[(&b, None)], now + 600);
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(answers(&effects), 0);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        let (token_a, _) = h.join(join_request(&a, "a"), now + 700);
        let (token_c, effects) = h.join(join_request(&answer_c.member_id, "c"), now + 700);
        assert_eq!(
            join_answer(&effects, token_a).map(|r| r.generation_id),
            Some(3)
        );
        assert_eq!(
            join_answer(&effects, token_c).map(|r| r.members.len()),
            Some(0)
        );
        assert_eq!(h.group.members().len(), 2);
        assert_eq!(h.heartbeat(&b, now + 800), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn session_expiry_removes_the_member_and_rebalances() {
        let (mut h, a, b, now) = stable_pair();
        assert_eq!(
            h.group.next_deadline_ms(),
            Some(now + i64::from(SESSION_MS))
        );
        assert_eq!(h.heartbeat(&a, now + 9_000), Ok(()));
        assert_eq!(answers(&h.tick(now + 9_999)), 0);
        assert_eq!(h.group.members().len(), 2);
        h.tick(now + 10_000);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.heartbeat(&b, now + 10_001),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            h.heartbeat(&a, now + 10_001),
            Err(GroupError::RebalanceInProgress)
        );
        let answer = h.join_now(join_request(&a, "a"), now + 10_002);
        assert_eq!((answer.generation_id, answer.members.len()), (2, 1));
    }

    #[test]
    fn rebalance_timeout_drops_members_that_did_not_rejoin() {
        let (mut h, a, b, now) = stable_pair();
        let (token_c, _) = h.join(join_request("", "c"), now);
        let (token_a, _) = h.join(join_request(&a, "a"), now);
        // b stays alive but never rejoins.
        for step in 1..=5 {
            let at = now + step * 5_000;
            assert_eq!(h.heartbeat(&b, at), Err(GroupError::RebalanceInProgress));
            assert_eq!(answers(&h.tick(at)), 0);
        }
        assert_eq!(answers(&h.tick(now + 29_999)), 0);
        let effects = h.tick(now + 30_000);
        assert_eq!(
            join_answer(&effects, token_a).map(|r| r.generation_id),
            Some(2)
        );
        assert_eq!(
            join_answer(&effects, token_c).map(|r| r.generation_id),
            Some(2)
        );
        assert_eq!(h.group.members().len(), 2);
        assert_eq!(
            h.heartbeat(&b, now + 30_001),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn new_member_whose_join_waits_too_long_is_dropped() {
        let (mut h, a, b, now) = stable_pair();
        let slow = JoinRequest {
            rebalance_timeout_ms: 600_000,
            ..join_request("", "c")
        };
        let (token_c, _) = h.join(slow, now);
        h.join(join_request(&a, "a"), now);
        let mut at = now;
        let mut effects = Vec::new();
        while at < now + 300_000 {
            at += 5_000;
            let _ = h.heartbeat(&b, at);
            effects.extend(h.tick(at));
        }
        let answer = join_answer(&effects, token_c).expect("c answered");
        assert_eq!(answer.error, Some(GroupError::UnknownMemberId));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.members().len(), 2);
    }

    #[test]
    fn member_id_required_round_trip() {
        let mut h = Harness::new(0);
        let first = JoinRequest {
            require_known_member_id: true,
            ..join_request("", "a")
        };
        let (token, effects) = h.join(first.clone(), T0);
        let answer = join_answer(&effects, token).expect("answered at once");
        let required = GroupError::MemberIdRequired {
            member_id: "a-0001".into(),
        };
        assert_eq!(answer.error, Some(required));
        assert_eq!(answer.member_id, "a-0001");
        assert_eq!(h.group.state(), GroupState::Empty);
        assert_eq!(wake_at(&effects), Some(T0 + i64::from(SESSION_MS)));
        let again = JoinRequest {
            member_id: answer.member_id.clone(),
            ..first.clone()
        };
        let joined = h.join_now(again, T0 + 10);
        assert_eq!((joined.error, joined.generation_id), (None, 1));
        assert_eq!(joined.member_id, "a-0001");

        let unknown = h.join_now(join_request("made-up", "z"), T0 + 20);
        assert_eq!(unknown.error, Some(GroupError::UnknownMemberId));
        assert_eq!(unknown.member_id, "made-up");

        // An id handed out but never used lapses after the session timeout.
        let (token, effects) = h.join(
            JoinRequest {
                client_id: "b".into(),
                ..first
            },
            T0 + 30,
        );
        let lapsed = join_answer(&effects, token).expect("answered").member_id;
        h.tick(T0 + 30 + i64::from(SESSION_MS));
        let late = h.join_now(join_request(&lapsed, "b"), T0 + 40 + i64::from(SESSION_MS));
        assert_eq!(late.error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn pending_member_holds_the_rebalance_until_it_lapses() {
        let mut h = Harness::new(0);
        let a = h.join_now(join_request("", "a"), T0).member_id;
        h.sync_all(T0);
        let first = JoinRequest {
            require_known_member_id: true,
            ..join_request("", "b")
        };
        h.join(first, T0 + 100);
        assert_eq!(h.group.state(), GroupState::Stable);
        // The leader rejoins: everyone known is in, but the pending id may still come.
        let (token, effects) = h.join(join_request(&a, "a"), T0 + 200);
        assert_eq!(answers(&effects), 0);
        let effects = h.tick(T0 + 100 + i64::from(SESSION_MS));
        assert_eq!(
            join_answer(&effects, token).map(|r| r.generation_id),
            Some(2)
        );
    }

    /// Builds Stable {static "i1", dynamic "d"} at generation 2 with i1 leading.
    fn static_and_dynamic() -> (Harness, String, String, i64) {
        let mut h = Harness::new(0);
        let s = h.join_now(static_request("", "i1"), T0).member_id;
        assert_eq!(s, "i1-0001");
        h.sync_all(T0);
        let (token_d, _) = h.join(join_request("", "d"), T0);
        let (_, effects) = h.join(static_request(&s, "i1"), T0);
        let d = join_answer(&effects, token_d)
            .expect("d answered")
            .member_id;
        h.sync_all(T0);
        assert_eq!(
            (h.group.state(), h.group.generation()),
            (GroupState::Stable, 2)
        );
        (h, s, d, T0)
    }

    #[test]
    fn static_member_restart_keeps_its_assignment_without_rebalance() {
        let (mut h, old, _d, now) = static_and_dynamic();
        let (token, effects) = h.join(static_request("", "i1"), now + 1_000);
        let answer = join_answer(&effects, token).expect("answered at once");
        let new = answer.member_id.clone();
        assert_ne!(new, old);
        assert_eq!((answer.error, answer.generation_id), (None, 2));
        // An old client is not told it leads, so it does not compute an assignment.
        assert_eq!(answer.leader, old);
        assert!(!answer.skip_assignment && answer.members.is_empty());
        let stored = persisted(&effects);
        assert_eq!(stored.len(), 1, "the new member id is persisted");
        assert!(stored[0].members.iter().any(|m| m.member_id == new));
        assert_eq!(
            (h.group.state(), h.group.generation()),
            (GroupState::Stable, 2)
        );
        assert_eq!(h.group.leader_id(), Some(new.as_str()));

        let mut sync = sync_request(&new, 2, Vec::new());
        sync.group_instance_id = Some("i1".into());
        let (token, effects) = h.sync(sync, now + 1_100);
        let assignment = sync_answer(&effects, token).expect("answered").assignment;
        assert_eq!(
            assignment,
            assignment_for(&old),
            "the assignment moved with the instance"
        );

        let fenced = h.group.heartbeat(&old, Some("i1"), 2, now + 1_200);
        assert_eq!(fenced, Err(GroupError::FencedInstanceId));
        let rejoin = h.join_now(static_request(&old, "i1"), now + 1_300);
        assert_eq!(rejoin.error, Some(GroupError::FencedInstanceId));
        assert_eq!(h.group.heartbeat(&new, Some("i1"), 2, now + 1_400), Ok(()));
        assert_eq!(h.group.generation(), 2);
    }

    #[test]
    fn static_leader_restart_with_skip_assignment_learns_it_leads() {
        let (mut h, old, d, now) = static_and_dynamic();
        let request = JoinRequest {
            supports_skip_assignment: true,
            ..static_request("", "i1")
        };
        let (token, effects) = h.join(request, now + 1_000);
        let answer = join_answer(&effects, token).expect("answered at once");
        assert_eq!(answer.leader, answer.member_id);
        assert!(answer.skip_assignment);
        let listed: Vec<&str> = answer
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(listed, [answer.member_id.as_str(), d.as_str()]);
        assert!(!listed.contains(&old.as_str()));
        assert_eq!(h.group.generation(), 2);
    }

    #[test]
    fn static_rejoin_that_changes_the_protocol_rebalances() {
        let mut h = Harness::new(0);
        let s = h.join_now(static_request("", "i1"), T0).member_id;
        h.sync_all(T0);
        let request = JoinRequest {
            protocols: protocols(&["roundrobin", "range"]),
            ..static_request("", "i1")
        };
        let answer = h.join_now(request, T0 + 10);
        assert_ne!(answer.member_id, s);
        assert_eq!(answer.generation_id, 2);
        assert_eq!(answer.protocol_name.as_deref(), Some("roundrobin"));
    }

    #[test]
    fn second_process_with_the_same_instance_id_fences_the_first() {
        let mut h = Harness::new(3_000);
        let (first, _) = h.join(static_request("", "i1"), T0);
        let (second, effects) = h.join(static_request("", "i1"), T0 + 100);
        let fenced = join_answer(&effects, first).expect("first fenced");
        assert_eq!(fenced.error, Some(GroupError::FencedInstanceId));
        assert_eq!(fenced.member_id, "i1-0001");
        assert_eq!(join_answer(&effects, second), None);
        // A replacement is not a new member: the initial delay is not extended.
        let effects = h.tick(T0 + 3_000);
        let answer = join_answer(&effects, second).expect("second answered");
        assert_eq!(
            (answer.member_id.as_str(), answer.generation_id),
            ("i1-0002", 1)
        );
        let stale = h.join_now(static_request("i1-0001", "i1"), T0 + 3_100);
        assert_eq!(stale.error, Some(GroupError::FencedInstanceId));
        let stale = h.group.heartbeat("i1-0001", Some("i1"), 1, T0 + 3_100);
        assert_eq!(stale, Err(GroupError::FencedInstanceId));
    }

    #[test]
    fn protocol_is_chosen_by_vote_among_common_protocols() {
        let mut h = Harness::new(3_000);
        let with = |names: &[&str], client: &str| JoinRequest {
            protocols: protocols(names),
            ..join_request("", client)
        };
        let (token, _) = h.join(with(&["range", "roundrobin", "sticky"], "a"), T0);
        h.join(with(&["roundrobin", "range"], "b"), T0);
        h.join(with(&["roundrobin", "range", "sticky"], "c"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let answer = join_answer(&effects, token).expect("answered");
        assert_eq!(answer.protocol_name.as_deref(), Some("roundrobin"));
        assert!(
            answer
                .members
                .iter()
                .all(|m| m.metadata == b"meta-roundrobin")
        );

        let refused = h.join_now(with(&["sticky"], "d"), T0 + 6_100);
        assert_eq!(refused.error, Some(GroupError::InconsistentGroupProtocol));
        assert_eq!(refused.member_id, "");
        let other_type = JoinRequest {
            protocol_type: "connect".into(),
            ..join_request("", "e")
        };
        let refused = h.join_now(other_type, T0 + 6_100);
        assert_eq!(refused.error, Some(GroupError::InconsistentGroupProtocol));
        assert_eq!(h.group.members().len(), 3);
    }

    #[test]
    fn tied_vote_goes_to_the_earliest_member_and_empty_groups_need_protocols() {
        let mut h = Harness::new(3_000);
        let with = |names: &[&str], client: &str| JoinRequest {
            protocols: protocols(names),
            ..join_request("", client)
        };
        let (token, _) = h.join(with(&["range", "roundrobin"], "a"), T0);
        h.join(with(&["roundrobin", "range"], "b"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let answer = join_answer(&effects, token).expect("answered");
        assert_eq!(answer.protocol_name.as_deref(), Some("range"));

        let mut empty = Harness::new(0);
        let no_type = JoinRequest {
            protocol_type: String::new(),
            ..join_request("", "a")
        };
        let refused = empty.join_now(no_type, T0);
        assert_eq!(refused.error, Some(GroupError::InconsistentGroupProtocol));
        let refused = empty.join_now(with(&[], "a"), T0);
        assert_eq!(refused.error, Some(GroupError::InconsistentGroupProtocol));
    }

    #[test]
    fn sync_refusals() {
        let mut fresh = Harness::new(0);
        let (token, effects) = fresh.sync(sync_request("x", 0, Vec::new()), T0);
        let answer = sync_answer(&effects, token).expect("answered");
        assert_eq!(answer.error, Some(GroupError::UnknownMemberId));

        let (mut h, a, _b, now) = stable_pair();
        let cases = [
            (
                sync_request(&a, 0, Vec::new()),
                GroupError::IllegalGeneration,
            ),
            (
                sync_request(&a, 2, Vec::new()),
                GroupError::IllegalGeneration,
            ),
            (
                sync_request("nobody", 1, Vec::new()),
                GroupError::UnknownMemberId,
            ),
            (
                SyncRequest {
                    protocol_name: Some("sticky".into()),
                    ..sync_request(&a, 1, vec![])
                },
                GroupError::InconsistentGroupProtocol,
            ),
        ];
        for (request, error) in cases {
            let (token, effects) = h.sync(request, now);
            assert_eq!(
                sync_answer(&effects, token).and_then(|r| r.error),
                Some(error)
            );
        }
        h.join(join_request("", "c"), now);
        let (token, effects) = h.sync(sync_request(&a, 1, Vec::new()), now);
        let answer = sync_answer(&effects, token).expect("answered");
        assert_eq!(answer.error, Some(GroupError::RebalanceInProgress));
    }

    #[test]
    fn leader_leaving_during_completing_rebalance() {
        let mut h = Harness::new(3_000);
        let (token_a, _) = h.join(join_request("", "a"), T0);
        let (token_b, _) = h.join(join_request("", "b"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let a = join_answer(&effects, token_a).expect("a").member_id;
        let b = join_answer(&effects, token_b).expect("b").member_id;
        let now = T0 + 6_000;
        assert_eq!(
            h.heartbeat(&b, now + 10),
            Ok(()),
            "heartbeats are fine while completing"
        );
        let (parked, effects) = h.sync(sync_request(&b, 1, Vec::new()), now + 20);
        assert_eq!(answers(&effects), 0);
        let (results, effects) = h.leave(&[(&a, None)], now + 30);
        assert_eq!(results, vec![Ok(())]);
        let answer = sync_answer(&effects, parked).expect("parked sync answered");
        assert_eq!(answer.error, Some(GroupError::RebalanceInProgress));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.leader_id(), Some(b.as_str()));
        let answer = h.join_now(join_request(&b, "b"), now + 40);
        assert_eq!(
            (answer.generation_id, answer.leader.as_str()),
            (2, b.as_str())
        );
        assert_eq!(answer.members.len(), 1);
    }

    #[test]
    fn late_sync_drops_the_member_and_rebalances() {
        let mut h = Harness::new(3_000);
        let (token_a, _) = h.join(join_request("", "a"), T0);
        let (token_b, _) = h.join(join_request("", "b"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let a = join_answer(&effects, token_a).expect("a").member_id;
        let b = join_answer(&effects, token_b).expect("b").member_id;
        let now = T0 + 6_000;
        let plan = vec![(a.clone(), vec![1]), (b.clone(), vec![2])];
        h.sync(sync_request(&a, 1, plan), now);
        assert_eq!(h.group.state(), GroupState::Stable);
        // b heartbeats but never syncs.
        for step in 1..=6 {
            assert_eq!(h.heartbeat(&b, now + step * 5_000), Ok(()));
            assert_eq!(h.heartbeat(&a, now + step * 5_000), Ok(()));
        }
        h.tick(now + i64::from(REBALANCE_MS));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.heartbeat(&b, now + 30_001),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn snapshot_round_trip() {
        let (mut h, old, d, now) = static_and_dynamic();
        let effects = h.sync_all(now);
        assert!(
            persisted(&effects).is_empty(),
            "a Stable group's syncs write nothing"
        );
        let stored = h.group.snapshot();
        let later = now + 60_000;
        let loaded = Group::from_snapshot(stored.clone(), later);
        loaded.check_invariants();
        assert_eq!(loaded.state(), GroupState::Stable);
        assert_eq!(loaded.generation(), 2);
        assert_eq!(loaded.protocol_name(), Some("range"));
        assert_eq!(loaded.protocol_type(), Some("consumer"));
        assert_eq!(loaded.leader_id(), Some(old.as_str()));
        assert_eq!(loaded.members(), h.group.members());
        assert_eq!(loaded.snapshot(), stored);
        assert_eq!(
            loaded.next_deadline_ms(),
            Some(later + i64::from(SESSION_MS))
        );

        let mut h2 = Harness::with_group(loaded);
        assert_eq!(h2.group.heartbeat(&old, Some("i1"), 2, later), Ok(()));
        let same = h2.join_now(join_request(&d, "d"), later);
        assert_eq!(
            (same.error, same.generation_id),
            (None, 2),
            "follower rejoin is a no-op"
        );
        let restarted = h2.join_now(static_request("", "i1"), later);
        assert_eq!(
            restarted.generation_id, 2,
            "static restart after reload keeps Stable"
        );
    }

    #[test]
    fn empty_snapshots_and_unusable_snapshots_load_empty() {
        let (mut h, a, b, now) = stable_pair();
        let unusable = GroupSnapshot {
            protocol_name: None,
            ..h.group.snapshot()
        };
        let loaded = Group::from_snapshot(unusable, now);
        loaded.check_invariants();
        assert_eq!(
            loaded.state(),
            GroupState::Empty,
            "members without a protocol are dropped"
        );

        let (_, effects) = h.leave(&[(&a, None), (&b, None)], now);
        assert_eq!(h.group.state(), GroupState::Empty);
        let stored = persisted(&effects).pop().expect("empty group persisted");
        assert_eq!((stored.generation_id, stored.members.len()), (2, 0));
        assert_eq!(stored.protocol_name, None);
        assert_eq!(stored.state_since_ms, now);
        let loaded = Group::from_snapshot(stored, now + 1);
        assert_eq!(
            (loaded.state(), loaded.generation()),
            (GroupState::Empty, 2)
        );
        assert_eq!(loaded.state_since_ms(), now);
        assert_eq!(loaded.next_deadline_ms(), None);
    }

    #[test]
    fn delete_rules() {
        let (mut h, a, b, now) = stable_pair();
        assert_eq!(h.group.delete(), Err(GroupError::NonEmptyGroup));
        h.leave(&[(&a, None), (&b, None)], now);
        assert!(h.group.is_empty());
        let effects = h.group.delete().expect("empty group deletes");
        assert_eq!(
            effects,
            vec![Effect::Tombstone {
                group_id: "g".into()
            }]
        );
        assert_eq!(h.group.state(), GroupState::Dead);
        assert_eq!(h.group.delete(), Err(GroupError::GroupIdNotFound));
        let refused = h.join_now(join_request("", "c"), now);
        assert_eq!(refused.error, Some(GroupError::CoordinatorNotAvailable));
        let refused = h.group.heartbeat(&a, None, 2, now);
        assert_eq!(refused, Err(GroupError::CoordinatorNotAvailable));
        let (results, _) = h.leave(&[(&a, None)], now);
        assert_eq!(results, vec![Err(GroupError::CoordinatorNotAvailable)]);
        assert_eq!(
            h.group.validate_offset_fetch(),
            Err(GroupError::GroupIdNotFound)
        );
    }

    #[test]
    fn offset_commit_rules() {
        let mut h = Harness::new(3_000);
        assert_eq!(
            h.group.validate_offset_commit("", None, -1),
            Ok(()),
            "simple consumer"
        );
        let (token, _) = h.join(join_request("", "a"), T0);
        let a = join_answer(&h.tick(T0 + 3_000), token)
            .expect("answered")
            .member_id;
        let g = &h.group;
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(
            g.validate_offset_commit(&a, None, 1),
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(g.validate_txn_offset_commit(&a, None, 1), Ok(()));
        h.sync_all(T0 + 3_000);
        let g = &h.group;
        assert_eq!(g.validate_offset_commit(&a, None, 1), Ok(()));
        assert_eq!(
            g.validate_offset_commit(&a, None, 0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.validate_offset_commit("zz", None, 1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            g.validate_offset_commit("", None, -1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(g.validate_txn_offset_commit("", None, -1), Ok(()));
        assert_eq!(
            g.validate_offset_commit(&a, Some("i9"), 1),
            Err(GroupError::UnknownMemberId)
        );

        let (h, _s, _d, _now) = static_and_dynamic();
        let fenced = h.group.validate_offset_commit("other", Some("i1"), 2);
        assert_eq!(fenced, Err(GroupError::FencedInstanceId));
    }

    #[test]
    fn join_admission_limits() {
        let (mut h, a, b, now) = stable_pair();
        h.config.max_size = 2;
        let full = h.join_now(join_request("", "c"), now);
        assert_eq!(full.error, Some(GroupError::GroupMaxSizeReached));
        assert_eq!(full.member_id, "");
        assert_eq!(
            h.join_now(join_request(&b, "b"), now).error,
            None,
            "members still rejoin"
        );
        // While rebalancing, only waiting members count: c gets in, and b, which has not
        // rejoined yet, is the one shed when it comes back.
        let (token_a, _) = h.join(join_request(&a, "a"), now);
        let (token_c, _) = h.join(join_request("", "c"), now);
        let shed = h.join_now(join_request(&b, "b"), now);
        assert_eq!(shed.error, Some(GroupError::GroupMaxSizeReached));
        let effects = h.tick(now + i64::from(REBALANCE_MS));
        assert_eq!(
            join_answer(&effects, token_a).map(|r| r.members.len()),
            Some(2)
        );
        assert_eq!(
            join_answer(&effects, token_c).map(|r| r.generation_id),
            Some(2)
        );
    }

    #[test]
    fn session_timeout_bounds() {
        let mut h = Harness::new(0);
        for timeout in [5_999, 1_800_001, -1] {
            let request = JoinRequest {
                session_timeout_ms: timeout,
                ..join_request("m", "a")
            };
            let answer = h.join_now(request, T0);
            assert_eq!(answer.error, Some(GroupError::InvalidSessionTimeout));
            assert_eq!(answer.member_id, "m");
        }
        let request = JoinRequest {
            session_timeout_ms: 6_000,
            ..join_request("", "a")
        };
        assert_eq!(h.join_now(request, T0).error, None);
    }

    #[test]
    fn followers_rejoining_unchanged_get_the_current_generation() {
        let (mut h, a, b, now) = stable_pair();
        let same = h.join_now(join_request(&b, "b"), now + 10);
        assert_eq!((same.error, same.generation_id), (None, 1));
        assert_eq!(same.leader, a);
        assert_eq!(h.group.state(), GroupState::Stable);
        let changed = JoinRequest {
            protocols: protocols(&["range", "sticky"]),
            ..join_request(&b, "b")
        };
        let (token, effects) = h.join(changed, now + 20);
        assert_eq!(join_answer(&effects, token), None);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn leader_rejoin_forces_a_rebalance_and_a_repeated_join_supersedes() {
        let (mut h, a, b, now) = stable_pair();
        let (first, effects) = h.join(join_request(&a, "a"), now + 10);
        assert_eq!(answers(&effects), 0);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        let (second, effects) = h.join(join_request(&a, "a"), now + 20);
        let old = join_answer(&effects, first).expect("superseded join answered");
        assert_eq!(old.error, Some(GroupError::RebalanceInProgress));
        let (_, effects) = h.join(join_request(&b, "b"), now + 30);
        assert_eq!(
            join_answer(&effects, second).map(|r| r.generation_id),
            Some(2)
        );
    }

    #[test]
    fn absent_static_member_holds_the_rebalance_until_its_session_ends() {
        let (mut h, s, d, now) = static_and_dynamic();
        h.leave(&[(&d, None)], now);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        // The static member keeps heartbeating but never rejoins: it is not dropped at
        // the rebalance timeout, and with nobody joined the phase is extended.
        let mut at = now;
        for _ in 0..8 {
            at += 5_000;
            assert_eq!(h.heartbeat(&s, at), Err(GroupError::RebalanceInProgress));
            assert_eq!(answers(&h.tick(at)), 0);
        }
        assert!(at > now + i64::from(REBALANCE_MS));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.members().len(), 1);
        let effects = h.tick(at + i64::from(SESSION_MS));
        assert_eq!(h.group.state(), GroupState::Empty);
        assert_eq!(persisted(&effects).len(), 1);
        assert_eq!(h.group.generation(), 3);
    }

    /// The effects as a shell carries them out when the first `Persist` among them fails
    /// with `error`: later answers turn into `error`, and the group is told.
    fn fail_first_persist(
        h: &mut Harness,
        effects: Vec<Effect>,
        error: GroupError,
        now: i64,
    ) -> Vec<Effect> {
        let at = effects
            .iter()
            .position(|effect| matches!(effect, Effect::Persist(_)))
            .expect("a persist to fail");
        let mut carried: Vec<Effect> = effects[..at].to_vec();
        carried.extend(
            effects[at + 1..]
                .iter()
                .map(|e| e.clone().after_failed_write(&error)),
        );
        carried.extend(h.group.write_failed(&error, now));
        h.group.check_invariants();
        carried
    }

    #[test]
    fn a_failed_assignment_write_hands_out_nothing_and_rebalances() {
        let mut h = Harness::new(3_000);
        let (token_a, _) = h.join(join_request("", "a"), T0);
        let (token_b, _) = h.join(join_request("", "b"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let a = join_answer(&effects, token_a).unwrap().member_id;
        let b = join_answer(&effects, token_b).unwrap().member_id;
        let now = T0 + 6_000;
        // b (a follower) syncs first and parks; then the leader's assignment, whose
        // record fails to commit.
        let (token_b, effects) = h.sync(sync_request(&b, 1, Vec::new()), now);
        assert_eq!(sync_answer(&effects, token_b), None);
        let assignments = vec![
            (a.clone(), assignment_for(&a)),
            (b.clone(), assignment_for(&b)),
        ];
        let (token_a, effects) = h.sync(sync_request(&a, 1, assignments), now);
        assert_eq!(persisted(&effects).len(), 1);
        let error = GroupError::CoordinatorNotAvailable;
        let carried = fail_first_persist(&mut h, effects, error.clone(), now);
        for token in [token_a, token_b] {
            let answer = sync_answer(&carried, token).expect("answered");
            assert_eq!(answer, SyncOutcome::failed(error.clone()));
        }
        // Memory holds no assignment the log does not: the group rebalances, as Kafka's
        // doSyncGroup does after resetAndPropagateAssignmentError.
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.generation(), 1);
        assert!(h.group.members().iter().all(|m| m.assignment.is_empty()));
        assert_eq!(
            h.heartbeat(&a, now + 100),
            Err(GroupError::RebalanceInProgress)
        );
        let (token, effects) = h.sync(sync_request(&b, 1, Vec::new()), now + 100);
        let late = sync_answer(&effects, token).expect("answered at once");
        assert_eq!(late.error, Some(GroupError::RebalanceInProgress));
        // Both rejoin; the next generation's assignment, committed this time, is handed out.
        let (token_a, _) = h.join(join_request(&a, "a"), now + 200);
        let (token_b, effects) = h.join(join_request(&b, "b"), now + 200);
        assert_eq!(join_answer(&effects, token_a).unwrap().generation_id, 2);
        assert_eq!(join_answer(&effects, token_b).unwrap().generation_id, 2);
        let effects = h.sync_all(now + 300);
        assert_eq!(persisted(&effects).len(), 1);
        assert_eq!(h.group.state(), GroupState::Stable);
        assert_eq!(
            h.group.write_failed(&GroupError::UnknownServer, now + 400),
            Vec::new()
        );
    }

    #[test]
    fn a_failed_static_rejoin_write_gives_the_instance_back_to_its_old_id() {
        let (mut h, old, d, now) = static_and_dynamic();
        let before = h.group.snapshot();
        let (token, effects) = h.join(static_request("", "i1"), now + 1_000);
        let new = join_answer(&effects, token).unwrap().member_id;
        assert_ne!(new, old);
        let error = GroupError::NotCoordinator;
        let carried = fail_first_persist(&mut h, effects, error.clone(), now + 1_000);
        let answer = join_answer(&carried, token).expect("answered");
        assert_eq!(answer.error, Some(error));
        // As the log says: the old id owns the instance, nothing rebalanced (Kafka's
        // updateStaticMemberAndRebalance callback reverts the replacement).
        assert_eq!(h.group.snapshot(), before);
        assert_eq!(h.group.state(), GroupState::Stable);
        assert_eq!(h.group.leader_id(), Some(old.as_str()));
        assert_eq!(h.group.heartbeat(&old, Some("i1"), 2, now + 1_100), Ok(()));
        let gone = h.group.heartbeat(&new, Some("i1"), 2, now + 1_100);
        assert_eq!(gone, Err(GroupError::FencedInstanceId));
        assert_eq!(h.heartbeat(&d, now + 1_100), Ok(()));
        // The retry adopts a newer id, and this time the record commits.
        let (token, effects) = h.join(static_request("", "i1"), now + 1_200);
        assert_eq!(join_answer(&effects, token).unwrap().error, None);
        assert_eq!(persisted(&effects).len(), 1);
    }

    #[test]
    fn a_failed_empty_write_leaves_the_group_empty() {
        let mut h = Harness::new(0);
        let a = h.join_now(join_request("", "a"), T0).member_id;
        h.sync_all(T0);
        let (_, effects) = h.leave(&[(a.as_str(), None)], T0 + 10);
        assert_eq!(persisted(&effects).len(), 1);
        let carried = fail_first_persist(&mut h, effects, GroupError::UnknownServer, T0 + 10);
        assert_eq!(answers(&carried), 0);
        // Kafka only warns: no member holds the empty generation.
        assert_eq!(h.group.state(), GroupState::Empty);
    }

    #[test]
    fn repeated_sync_supersedes_the_parked_one() {
        let mut h = Harness::new(3_000);
        let (token_a, _) = h.join(join_request("", "a"), T0);
        let (token_b, _) = h.join(join_request("", "b"), T0);
        h.tick(T0 + 3_000);
        let effects = h.tick(T0 + 6_000);
        let a = join_answer(&effects, token_a).expect("a").member_id;
        let b = join_answer(&effects, token_b).expect("b").member_id;
        let now = T0 + 6_000;
        let (first, _) = h.sync(sync_request(&b, 1, Vec::new()), now);
        let (second, effects) = h.sync(sync_request(&b, 1, Vec::new()), now);
        let old = sync_answer(&effects, first).expect("superseded");
        assert_eq!(old.error, Some(GroupError::RebalanceInProgress));
        let plan = vec![(b.clone(), vec![7])];
        let (_, effects) = h.sync(sync_request(&a, 1, plan), now);
        assert_eq!(
            sync_answer(&effects, second).map(|r| r.assignment),
            Some(vec![7])
        );
        assert_eq!(
            h.group.members()[0].assignment,
            Vec::<u8>::new(),
            "left out: empty"
        );
    }

    #[test]
    fn leave_by_instance_id_and_unknown_entries() {
        let (mut h, s, d, now) = static_and_dynamic();
        let (results, _) = h.leave(&[("", Some("i1")), ("", Some("i9")), ("ghost", None)], now);
        let expected = vec![
            Ok(()),
            Err(GroupError::UnknownMemberId),
            Err(GroupError::UnknownMemberId),
        ];
        assert_eq!(results, expected);
        assert_eq!(h.heartbeat(&s, now), Err(GroupError::UnknownMemberId));
        let fenced = h.leave(&[(&d, Some("i1"))], now).0;
        assert_eq!(
            fenced,
            vec![Err(GroupError::UnknownMemberId)],
            "instance no longer known"
        );
        let answer = h.join_now(join_request(&d, "d"), now + 1);
        assert_eq!((answer.generation_id, answer.members.len()), (3, 1));
    }

    #[test]
    fn unload_answers_everything_parked() {
        let mut h = Harness::new(3_000);
        let (token, _) = h.join(join_request("", "a"), T0);
        let effects = h.group.unload();
        let answer = join_answer(&effects, token).expect("answered");
        assert_eq!(answer.error, Some(GroupError::NotCoordinator));
        assert_eq!(h.group.state(), GroupState::Dead);
        h.group.check_invariants();
        assert_eq!(h.group.next_deadline_ms(), None);
    }

    #[test]
    fn describe_shows_metadata_only_when_stable() {
        let (mut h, _a, _b, now) = stable_pair();
        let members = h.group.members();
        assert!(members.iter().all(|m| m.metadata == b"meta-range"));
        assert!(
            members
                .iter()
                .all(|m| m.assignment == assignment_for(&m.member_id))
        );
        assert_eq!(members[0].client_host, "/127.0.0.1");
        h.join(join_request("", "c"), now);
        assert!(h.group.members().iter().all(|m| m.metadata.is_empty()));
        assert_eq!(h.group.state().to_string(), "PreparingRebalance");
    }
}
