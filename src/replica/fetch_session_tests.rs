use super::*;

const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

fn key(topic: u128, partition: i32) -> SessionPartition {
    SessionPartition {
        topic_id: Uuid::from_u128(topic),
        partition,
    }
}

fn data(fetch_offset: i64) -> FetchData {
    FetchData {
        fetch_offset,
        log_start_offset: 0,
        current_leader_epoch: 3,
        last_fetched_epoch: -1,
        partition_max_bytes: 1 << 20,
    }
}

fn ok(session_id: i32) -> ResponseHeader {
    ResponseHeader {
        error_code: 0,
        session_id,
        throttle_time_ms: 0,
    }
}

fn error(code: i16) -> ResponseHeader {
    ResponseHeader {
        error_code: code,
        session_id: 0,
        throttle_time_ms: 0,
    }
}

fn meta(session_id: i32, epoch: i32) -> FetchMetadata {
    FetchMetadata { session_id, epoch }
}

/// A session opened by a full request for `wanted`, answered in full with session 7.
fn opened(wanted: &[(SessionPartition, FetchData)]) -> FetchSession {
    let mut session = FetchSession::new();
    let parts = session.build(wanted.to_vec());
    assert_eq!(parts.metadata, FetchMetadata::INITIAL);
    let answered = session.handle_response(ok(7), wanted.iter().map(|(k, _)| *k));
    assert_eq!(answered.map(|a| a.len()), Ok(wanted.len()));
    assert_eq!(session.next_metadata(), meta(7, 1));
    session
}

#[test]
fn starts_with_a_full_request_asking_for_a_session() {
    let mut session = FetchSession::new();
    let wanted = vec![
        (key(1, 0), data(5)),
        (key(1, 1), data(9)),
        (key(2, 0), data(0)),
    ];
    let parts = session.build(wanted.clone());
    assert_eq!(parts.metadata, meta(0, 0));
    assert!(parts.metadata.is_full());
    assert_eq!(
        parts.to_send, wanted,
        "a full request sends all, in the order given"
    );
    assert!(parts.forgotten.is_empty());
    assert_eq!(session.partitions().len(), 3);
}

#[test]
fn a_leader_declining_sessions_gets_full_requests_every_round() {
    let mut session = FetchSession::new();
    let wanted = [(key(1, 0), data(5)), (key(1, 1), data(9))];
    for round in 0..3_i64 {
        let now: Vec<_> = (wanted.iter())
            .map(|(k, d)| (*k, data(d.fetch_offset + round)))
            .collect();
        let parts = session.build(now.clone());
        assert_eq!(parts.metadata, FetchMetadata::INITIAL);
        assert_eq!(parts.to_send, now);
        let answered = session
            .handle_response(ok(0), [key(1, 1), key(1, 0)])
            .unwrap();
        assert_eq!(answered, vec![(key(1, 1), now[1].1), (key(1, 0), now[0].1)]);
        assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
    }
}

#[test]
fn after_the_full_request_only_changes_are_sent() {
    let (a, b, c) = (key(1, 0), key(1, 1), key(2, 0));
    let mut session = opened(&[(a, data(5)), (b, data(9)), (c, data(0))]);

    // Nothing changed: an empty incremental request (the leader parks it).
    let parts = session.build(vec![(a, data(5)), (b, data(9)), (c, data(0))]);
    assert_eq!(parts.metadata, meta(7, 1));
    assert!(!parts.metadata.is_full());
    assert!(parts.to_send.is_empty());
    assert!(parts.forgotten.is_empty());
    // Partitions left out of an incremental answer had nothing new.
    assert_eq!(session.handle_response(ok(7), []), Ok(vec![]));
    assert_eq!(session.next_metadata(), meta(7, 2));

    // b's fetch offset moved (records arrived), d is new, c is no longer wanted.
    let d = key(3, 4);
    let parts = session.build(vec![(a, data(5)), (b, data(12)), (d, data(0))]);
    assert_eq!(parts.metadata, meta(7, 2));
    assert_eq!(
        parts.to_send,
        vec![(d, data(0)), (b, data(12))],
        "added, then altered"
    );
    assert_eq!(parts.forgotten, vec![c]);
    let held: KeyMap<_> = [(a, data(5)), (b, data(12)), (d, data(0))]
        .into_iter()
        .collect();
    assert_eq!(session.partitions(), &held);

    // The answer names a partition not altered this round: its session data comes back.
    let answered = session.handle_response(ok(7), [a, b]).unwrap();
    assert_eq!(answered, vec![(a, data(5)), (b, data(12))]);
    assert_eq!(session.next_metadata(), meta(7, 3));
}

#[test]
fn every_field_of_the_fetch_data_alters_a_partition() {
    let a = key(1, 0);
    let base = data(5);
    let changes = [
        FetchData {
            log_start_offset: 2,
            ..base
        },
        FetchData {
            current_leader_epoch: 4,
            ..base
        },
        FetchData {
            last_fetched_epoch: 3,
            ..base
        },
        FetchData {
            partition_max_bytes: 1,
            ..base
        },
    ];
    for changed in changes {
        let mut session = opened(&[(a, base)]);
        let parts = session.build(vec![(a, changed)]);
        assert_eq!(parts.to_send, vec![(a, changed)]);
    }
}

#[test]
fn a_removed_partition_is_added_back_in_full() {
    let (a, b) = (key(1, 0), key(1, 1));
    let mut session = opened(&[(a, data(5)), (b, data(9))]);
    // b backs off this round: forgotten.
    let parts = session.build(vec![(a, data(5))]);
    assert_eq!(parts.forgotten, vec![b]);
    session.handle_response(ok(7), []).unwrap();
    // Back again with the same data: added, so sent.
    let parts = session.build(vec![(a, data(5)), (b, data(9))]);
    assert_eq!(parts.to_send, vec![(b, data(9))]);
    assert!(parts.forgotten.is_empty());
}

#[test]
fn a_recreated_topic_is_forgotten_and_added_under_its_new_id() {
    let (old, new) = (key(1, 0), key(9, 0));
    let mut session = opened(&[(old, data(5))]);
    let parts = session.build(vec![(new, data(0))]);
    assert_eq!(parts.to_send, vec![(new, data(0))]);
    assert_eq!(parts.forgotten, vec![old]);
}

#[test]
fn a_partition_wanted_twice_is_sent_once() {
    let a = key(1, 0);
    let mut session = FetchSession::new();
    let parts = session.build(vec![(a, data(5)), (a, data(6))]);
    assert_eq!(parts.to_send, vec![(a, data(5))]);
    assert_eq!(session.handle_response(ok(7), [a]), Ok(vec![(a, data(5))]));
}

#[test]
fn session_id_not_found_starts_over_without_a_session() {
    let a = key(1, 0);
    let mut session = opened(&[(a, data(5))]);
    session.build(vec![(a, data(5))]);
    let refused = session.handle_response(error(FETCH_SESSION_ID_NOT_FOUND), []);
    assert_eq!(refused, Err(Rejection::Error(FETCH_SESSION_ID_NOT_FOUND)));
    assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
    let parts = session.build(vec![(a, data(5))]);
    assert_eq!(parts.to_send, vec![(a, data(5))], "full again");
}

#[test]
fn other_errors_close_the_session_and_ask_a_new_one() {
    for code in [
        INVALID_FETCH_SESSION_EPOCH,
        FETCH_SESSION_TOPIC_ID_ERROR,
        -1,
    ] {
        let a = key(1, 0);
        let mut session = opened(&[(a, data(5))]);
        session.build(vec![(a, data(5))]);
        assert_eq!(
            session.handle_response(error(code), [a]),
            Err(Rejection::Error(code))
        );
        assert_eq!(session.next_metadata(), meta(7, 0));
        let parts = session.build(vec![(a, data(5))]);
        assert_eq!(parts.metadata, meta(7, 0));
        assert!(parts.metadata.is_full());
        assert_eq!(parts.to_send, vec![(a, data(5))]);
        // The leader opens a new session.
        session.handle_response(ok(8), [a]).unwrap();
        assert_eq!(session.next_metadata(), meta(8, 1));
    }
}

#[test]
fn an_error_to_the_first_request_keeps_asking_for_a_session() {
    let mut session = FetchSession::new();
    session.build(vec![(key(1, 0), data(5))]);
    assert!(
        session
            .handle_response(error(INVALID_FETCH_SESSION_EPOCH), [])
            .is_err()
    );
    assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
}

#[test]
fn the_leader_closing_the_session_starts_over() {
    let a = key(1, 0);
    let mut session = opened(&[(a, data(5))]);
    session.build(vec![(a, data(6))]);
    let answered = session.handle_response(ok(INVALID_SESSION_ID), [a]);
    assert_eq!(
        answered,
        Ok(vec![(a, data(6))]),
        "the answer itself still counts"
    );
    assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
}

#[test]
fn the_epoch_wraps_to_one() {
    assert_eq!(next_epoch(1), 2);
    assert_eq!(next_epoch(i32::MAX), 1);
    assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
    let a = key(1, 0);
    let mut session = opened(&[(a, data(5))]);
    session.next = meta(7, i32::MAX);
    let parts = session.build(vec![(a, data(5))]);
    assert_eq!(parts.metadata, meta(7, i32::MAX));
    session.handle_response(ok(7), []).unwrap();
    assert_eq!(session.next_metadata(), meta(7, 1));
}

#[test]
fn a_lost_request_closes_the_session_and_sends_in_full() {
    let (a, b) = (key(1, 0), key(1, 1));
    let mut session = opened(&[(a, data(5)), (b, data(9))]);
    session.build(vec![(a, data(6)), (b, data(9))]);
    session.handle_error();
    assert_eq!(session.next_metadata(), meta(7, 0));
    let parts = session.build(vec![(a, data(6)), (b, data(9))]);
    assert_eq!(parts.to_send, vec![(a, data(6)), (b, data(9))]);
    assert!(parts.forgotten.is_empty());
    // Lost before any session: still a plain initial request.
    let mut fresh = FetchSession::new();
    fresh.build(vec![(a, data(0))]);
    fresh.handle_error();
    assert_eq!(fresh.next_metadata(), FetchMetadata::INITIAL);
}

#[test]
fn a_full_answer_naming_a_partition_not_asked_is_ignored() {
    let (a, b) = (key(1, 0), key(1, 1));
    let mut session = FetchSession::new();
    session.build(vec![(a, data(5))]);
    assert_eq!(
        session.handle_response(ok(7), [a, b]),
        Err(Rejection::Extra(b))
    );
    assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
}

#[test]
fn a_full_answer_leaving_a_partition_out_is_ignored() {
    let (a, b) = (key(1, 0), key(1, 1));
    let mut session = FetchSession::new();
    session.build(vec![(a, data(5)), (b, data(9))]);
    assert_eq!(
        session.handle_response(ok(7), [a, a]),
        Err(Rejection::Omitted(b))
    );
    assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
}

#[test]
fn an_incremental_answer_naming_a_partition_not_in_the_session_is_ignored() {
    let (a, b) = (key(1, 0), key(1, 1));
    let mut session = opened(&[(a, data(5)), (b, data(9))]);
    session.build(vec![(a, data(5))]); // b forgotten
    assert_eq!(
        session.handle_response(ok(7), [a, b]),
        Err(Rejection::Extra(b))
    );
    assert_eq!(
        session.next_metadata(),
        meta(7, 0),
        "close it and ask a new one"
    );
}

#[test]
fn an_empty_throttled_full_answer_is_not_used() {
    let mut session = FetchSession::new();
    session.build(vec![(key(1, 0), data(5))]);
    let throttled = ResponseHeader {
        error_code: 0,
        session_id: 7,
        throttle_time_ms: 100,
    };
    assert_eq!(
        session.handle_response(throttled, []),
        Err(Rejection::Throttled(100))
    );
    assert_eq!(session.next_metadata(), FetchMetadata::INITIAL);
}

#[test]
fn a_full_request_for_nothing_answered_with_nothing_opens_the_session() {
    let mut session = FetchSession::new();
    let parts = session.build(vec![]);
    assert!(parts.to_send.is_empty());
    assert_eq!(session.handle_response(ok(7), []), Ok(vec![]));
    assert_eq!(session.next_metadata(), meta(7, 1));
}

#[test]
fn a_round_of_changed_partitions_builds_what_the_whole_round_would() {
    let wanted: Vec<_> = (0..10).map(|p| (key(1, p), data(0))).collect();
    let mut whole = opened(&wanted);
    let mut changed_only = opened(&wanted);
    let mut next = wanted.clone();
    next[3].1 = data(4);
    next[8].1.log_start_offset = 1;
    let changed = vec![next[8], next[3], next[5]]; // 5 marked, but its data is the same
    let from_changed = changed_only.build_changed(changed).expect("incremental");
    let from_whole = whole.build(next);
    assert_eq!(from_changed.metadata, from_whole.metadata);
    let sorted = |mut sent: Vec<(SessionPartition, FetchData)>| {
        sent.sort_by_key(|(key, _)| key.partition);
        sent
    };
    assert_eq!(sorted(from_changed.to_send), sorted(from_whole.to_send));
    assert!(from_changed.forgotten.is_empty());
    assert_eq!(changed_only.partitions(), whole.partitions());

    // A full request names every partition: only a whole round can build it.
    changed_only.handle_error();
    assert!(
        changed_only
            .build_changed(vec![(key(1, 3), data(9))])
            .is_none()
    );
    assert_eq!(changed_only.partitions(), whole.partitions(), "untouched");
}
