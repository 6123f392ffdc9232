//! Test helpers: a group driven with explicit times and tokens, and effect pickers.

use super::*;

pub(super) const T0: i64 = 1_000_000;
pub(super) const SESSION_MS: i32 = 10_000;
pub(super) const REBALANCE_MS: i32 = 30_000;

/// A group plus the caller-side counters a shell would keep.
pub(super) struct Harness {
    pub(super) group: Group,
    pub(super) config: GroupConfig,
    next_token: u64,
    next_uuid: u64,
}

impl Harness {
    pub(super) fn new(initial_rebalance_delay_ms: i32) -> Self {
        let config = GroupConfig {
            initial_rebalance_delay_ms,
            ..GroupConfig::default()
        };
        Self {
            group: Group::new("g", T0),
            config,
            next_token: 0,
            next_uuid: 0,
        }
    }

    /// Drives an existing group (e.g. one loaded from a snapshot).
    pub(super) fn with_group(group: Group) -> Self {
        Self {
            group,
            ..Harness::new(0)
        }
    }

    pub(super) fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        RequestToken(self.next_token)
    }

    /// Joins and returns (token used, effects); invariants are checked afterwards.
    pub(super) fn join(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
    ) -> (RequestToken, Vec<Effect>) {
        let token = self.token();
        let next_uuid = &mut self.next_uuid;
        let mut new_uuid = || {
            *next_uuid += 1;
            format!("{:04}", *next_uuid)
        };
        let effects = self
            .group
            .join(request, token, now_ms, self.config, &mut new_uuid);
        self.group.check_invariants();
        (token, effects)
    }

    pub(super) fn sync(
        &mut self,
        request: SyncRequest,
        now_ms: i64,
    ) -> (RequestToken, Vec<Effect>) {
        let token = self.token();
        let effects = self.group.sync(request, token, now_ms);
        self.group.check_invariants();
        (token, effects)
    }

    pub(super) fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let effects = self.group.tick(now_ms);
        self.group.check_invariants();
        effects
    }

    pub(super) fn leave(
        &mut self,
        members: &[(&str, Option<&str>)],
        now_ms: i64,
    ) -> (Vec<Result<(), GroupError>>, Vec<Effect>) {
        let members = members
            .iter()
            .map(|(member_id, instance_id)| {
                let member_id = Some(member_id.to_string()).filter(|id| !id.is_empty());
                (member_id, instance_id.map(str::to_string))
            })
            .collect();
        let result = self.group.leave(members, now_ms);
        self.group.check_invariants();
        result
    }

    pub(super) fn heartbeat(&mut self, member_id: &str, now_ms: i64) -> Result<(), GroupError> {
        let generation = self.group.generation();
        let result = self.group.heartbeat(member_id, None, generation, now_ms);
        self.group.check_invariants();
        result
    }

    /// Joins a dynamic member without MEMBER_ID_REQUIRED and returns its answer, which
    /// must come back in the same call.
    pub(super) fn join_now(&mut self, request: JoinRequest, now_ms: i64) -> JoinOutcome {
        let (token, effects) = self.join(request, now_ms);
        join_answer(&effects, token).expect("answered at once")
    }

    /// Every member syncs, the leader first with `assign:<member id>` for everyone.
    pub(super) fn sync_all(&mut self, now_ms: i64) -> Vec<Effect> {
        let leader = self.group.leader_id().expect("leader").to_string();
        let members: Vec<String> = self
            .group
            .members()
            .iter()
            .map(|m| m.member_id.clone())
            .collect();
        let assignments = members
            .iter()
            .map(|id| (id.clone(), assignment_for(id)))
            .collect();
        let mut effects = self
            .sync(
                sync_request(&leader, self.group.generation(), assignments),
                now_ms,
            )
            .1;
        for member_id in members.iter().filter(|id| **id != leader) {
            let generation = self.group.generation();
            effects.extend(
                self.sync(sync_request(member_id, generation, Vec::new()), now_ms)
                    .1,
            );
        }
        effects
    }
}

pub(super) fn assignment_for(member_id: &str) -> Vec<u8> {
    format!("assign:{member_id}").into_bytes()
}

pub(super) fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| (name.to_string(), format!("meta-{name}").into_bytes()))
        .collect()
}

pub(super) fn join_request(member_id: &str, client_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols: protocols(&["range"]),
        require_known_member_id: false,
        supports_skip_assignment: false,
        reason: None,
    }
}

pub(super) fn static_request(member_id: &str, instance_id: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance_id.to_string()),
        ..join_request(member_id, instance_id)
    }
}

pub(super) fn sync_request(
    member_id: &str,
    generation_id: i32,
    assignments: Vec<(String, Vec<u8>)>,
) -> SyncRequest {
    SyncRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation_id,
        protocol_type: Some("consumer".to_string()),
        protocol_name: None,
        assignments,
    }
}

pub(super) fn join_answer(effects: &[Effect], token: RequestToken) -> Option<JoinOutcome> {
    let mut answers = effects.iter().filter_map(|effect| match effect {
        Effect::JoinDone { token: t, response } if *t == token => Some(response.clone()),
        _ => None,
    });
    let answer = answers.next();
    assert!(answers.next().is_none(), "token {token:?} answered twice");
    answer
}

pub(super) fn sync_answer(effects: &[Effect], token: RequestToken) -> Option<SyncOutcome> {
    let mut answers = effects.iter().filter_map(|effect| match effect {
        Effect::SyncDone { token: t, response } if *t == token => Some(response.clone()),
        _ => None,
    });
    let answer = answers.next();
    assert!(answers.next().is_none(), "token {token:?} answered twice");
    answer
}

pub(super) fn answers(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|effect| matches!(effect, Effect::JoinDone { .. } | Effect::SyncDone { .. }))
        .count()
}

pub(super) fn wake_at(effects: &[Effect]) -> Option<i64> {
    effects.iter().rev().find_map(|effect| match effect {
        Effect::WakeAt(at_ms) => Some(*at_ms),
        _ => None,
    })
}

pub(super) fn persisted(effects: &[Effect]) -> Vec<GroupSnapshot> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Persist(snapshot) => Some(snapshot.clone()),
            _ => None,
        })
        .collect()
}
