//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: thin adapters from the wire to the
//! group state machine (via `group::GroupRegistry`), and back.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::{coordinator_error, group_error};
use super::group_offsets::coordinator_partition;
use crate::broker::Broker;
use crate::group::{CoordinatorError, JoinOutcome, JoinRequest, SyncOutcome, SyncRequest};
use crate::types::now_ms;

fn text(value: Option<String>) -> Option<StrBytes> {
    value.map(StrBytes::from_string)
}

pub async fn join_group(
    broker: &Broker,
    context: &RequestContext,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let failed = |error: ResponseError| {
        JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1)
            .with_member_id(StrBytes::from_string(member_id.clone()))
    };
    if group.is_empty() {
        return failed(ResponseError::InvalidGroupId);
    }
    let log = match coordinator_partition(broker, &group) {
        Ok(log) => log,
        Err(error) => return failed(coordinator_error(&error)),
    };
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
        client_id: context.client_id_text(),
        client_host: context.client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if context.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: context.version >= 4,
        supports_skip_assignment: context.version >= 9,
        reason: request.reason.as_ref().map(|r| r.to_string()),
    };
    let outcome = broker
        .groups
        .registry
        .join(&log, &group, join, now_ms())
        .await;
    join_response(outcome, context.version)
}

fn join_response(outcome: JoinOutcome, version: i16) -> JoinGroupResponse {
    let members = outcome
        .members
        .into_iter()
        .map(|member| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(member.member_id))
                .with_group_instance_id(if version >= 5 {
                    text(member.group_instance_id)
                } else {
                    None
                })
                .with_metadata(Bytes::from(member.metadata))
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(outcome.error.as_ref().map_or(0, |e| group_error(e).code()))
        .with_generation_id(outcome.generation_id)
        .with_protocol_name(text(outcome.protocol_name))
        .with_leader(StrBytes::from_string(outcome.leader))
        .with_member_id(StrBytes::from_string(outcome.member_id))
        .with_members(members);
    let response = if version >= 7 {
        response.with_protocol_type(text(outcome.protocol_type))
    } else {
        response
    };
    if version >= 9 {
        response.with_skip_assignment(outcome.skip_assignment)
    } else {
        response
    }
}

pub async fn sync_group(
    broker: &Broker,
    context: &RequestContext,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let failed = |error: ResponseError| SyncGroupResponse::default().with_error_code(error.code());
    if group.is_empty() {
        return failed(ResponseError::InvalidGroupId);
    }
    let log = match coordinator_partition(broker, &group) {
        Ok(log) => log,
        Err(error) => return failed(coordinator_error(&error)),
    };
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|p| p.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect(),
    };
    let outcome = broker
        .groups
        .registry
        .sync(&log, &group, sync, now_ms())
        .await;
    sync_response(outcome, context.version)
}

fn sync_response(outcome: SyncOutcome, version: i16) -> SyncGroupResponse {
    let response = SyncGroupResponse::default()
        .with_error_code(outcome.error.as_ref().map_or(0, |e| group_error(e).code()))
        .with_assignment(Bytes::from(outcome.assignment));
    if version >= 5 {
        response
            .with_protocol_type(text(outcome.protocol_type))
            .with_protocol_name(text(outcome.protocol_name))
    } else {
        response
    }
}

pub async fn heartbeat(
    broker: &Broker,
    _context: &RequestContext,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    let code = match coordinator_partition(broker, &group) {
        // Kafka answers a heartbeat for a group still loading blindly with NONE: the
        // member is not told to rediscover a coordinator that is about to serve it.
        Err(CoordinatorError::LoadInProgress) => 0,
        Err(error) => coordinator_error(&error).code(),
        Ok(_) => {
            let instance = request.group_instance_id.as_ref().map(|id| id.as_str());
            let result = broker
                .groups
                .registry
                .heartbeat(
                    &group,
                    request.member_id.as_str(),
                    instance,
                    request.generation_id,
                    now_ms(),
                )
                .await;
            result.err().map_or(0, |e| group_error(&e).code())
        }
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub async fn leave_group(
    broker: &Broker,
    context: &RequestContext,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    // v3+ leaves a batch of members (static ones by instance id); v0-2 one member id.
    let members: Vec<(Option<String>, Option<String>)> = if context.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                let member_id = Some(m.member_id.to_string()).filter(|id| !id.is_empty());
                (
                    member_id,
                    m.group_instance_id.as_ref().map(|id| id.to_string()),
                )
            })
            .collect()
    } else {
        vec![(Some(request.member_id.to_string()), None)]
    };
    let log = match coordinator_partition(broker, &group) {
        Ok(log) => log,
        Err(error) => {
            return LeaveGroupResponse::default().with_error_code(coordinator_error(&error).code());
        }
    };
    let results = broker
        .groups
        .registry
        .leave(&log, &group, members.clone(), now_ms())
        .await;
    if context.version < 3 {
        let code = results
            .first()
            .and_then(|r| r.as_ref().err())
            .map_or(0, |e| group_error(e).code());
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let responses = members
        .into_iter()
        .zip(results)
        .map(|((member_id, instance_id), result)| {
            MemberResponse::default()
                .with_member_id(StrBytes::from_string(member_id.unwrap_or_default()))
                .with_group_instance_id(text(instance_id))
                .with_error_code(result.err().map_or(0, |e| group_error(&e).code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(responses)
}
