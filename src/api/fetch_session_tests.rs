use super::*;
use crate::replica::waits::Watchers;
use kafka_protocol::protocol::StrBytes;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn fetch(topic: &str, partition: i32, fetch_offset: i64) -> PartitionFetch {
    PartitionFetch {
        topic: name(topic),
        topic_id: Uuid::nil(),
        partition,
        fetch_offset,
        max_bytes: 1024,
        log_start_offset: -1,
        current_leader_epoch: -1,
    }
}

fn sent(high_watermark: i64) -> Sent {
    Sent {
        high_watermark,
        log_start_offset: 0,
        last_stable_offset: high_watermark,
        quiet: None,
    }
}

fn answer(high_watermark: i64, has_records: bool) -> Answer {
    Answer {
        high_watermark,
        log_start_offset: 0,
        last_stable_offset: high_watermark,
        has_records,
        error: false,
        quiet: None,
    }
}

fn by_name(session_id: i32, epoch: i32) -> SessionRequest {
    SessionRequest {
        session_id,
        epoch,
        uses_topic_ids: false,
        reader: CONSUMER,
    }
}

const CONSUMER: Reader = (None, ReadBound::HighWatermark);

/// The default time between visits of every partition: fetches this far apart visit all.
const WHOLE: u64 = WHOLE_VISIT_MS_MAX;

fn none() -> SessionChanges {
    SessionChanges::default()
}

/// A cache holding one by-name session of `t-0`, `t-1`, `t-2`, all sent at HW 10.
fn three_partitions(cache: &FetchSessionCache, now_ms: u64) -> i32 {
    let partitions = (0..3).map(|p| (fetch("t", p, 10), sent(10))).collect();
    cache.create(false, false, now_ms, partitions)
}

fn incremental(context: Context) -> Incremental {
    match context {
        Context::Incremental(incremental) => incremental,
        other => panic!("not incremental: {other:?}"),
    }
}

fn error(context: Context) -> ResponseError {
    match context {
        Context::Error(error) => error,
        other => panic!("not an error: {other:?}"),
    }
}

fn order(incremental: &Incremental) -> Vec<i32> {
    (incremental.partitions.iter())
        .map(|(fetch, _)| fetch.partition)
        .collect()
}

#[test]
fn epochs_wrap_to_one() {
    assert_eq!(next_epoch(0), 1);
    assert_eq!(next_epoch(41), 42);
    assert_eq!(next_epoch(i32::MAX), 1);
    assert_eq!(next_epoch(-1), -1);
}

#[test]
fn requests_without_a_session_need_no_lock_and_no_changes() {
    let cache = FetchSessionCache::new(10, 1);
    let never = || -> SessionChanges { panic!("changes asked for") };
    assert!(matches!(
        cache.begin(by_name(0, -1), 0, never),
        Context::Sessionless
    ));
    assert!(matches!(
        cache.begin(by_name(0, 0), 0, never),
        Context::Full
    ));
    let context = cache.begin(by_name(0, 7), 0, never);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
    let context = cache.begin(by_name(12345, 1), 0, none);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
}

#[test]
fn a_session_serves_all_its_partitions_and_advances_its_epoch() {
    let cache = FetchSessionCache::new(10, 2);
    let id = three_partitions(&cache, 0);
    assert!(id > 0);
    assert_eq!(cache.sizes(), (1, 3));
    let first = incremental(cache.begin(by_name(id, 1), 5, none));
    assert_eq!((first.session_id, first.epoch), (id, 2));
    assert_eq!(order(&first), vec![0, 1, 2]);
    assert!(first.partitions.iter().all(|(_, s)| *s == sent(10)));
    // The same epoch again (a duplicate), an old or a future one: refused, no change.
    for epoch in [1, 3, 100] {
        let context = cache.begin(by_name(id, epoch), 5, none);
        assert_eq!(error(context), ResponseError::InvalidFetchSessionEpoch);
    }
    let second = incremental(cache.begin(by_name(id, 2), 6, none));
    assert_eq!(second.epoch, 3);
}

#[test]
fn the_epoch_wraps_from_max_to_one() {
    let cache = FetchSessionCache::new(10, 3);
    let id = three_partitions(&cache, 0);
    cache.lock().sessions.get_mut(&id).unwrap().epoch = i32::MAX;
    let wrapped = incremental(cache.begin(by_name(id, i32::MAX), 0, none));
    assert_eq!(wrapped.epoch, 1);
    assert_eq!(incremental(cache.begin(by_name(id, 1), 0, none)).epoch, 2);
}

#[test]
fn requests_add_update_and_forget_partitions() {
    let cache = FetchSessionCache::new(10, 4);
    let id = three_partitions(&cache, 0);
    let changes = || SessionChanges {
        upserts: vec![fetch("t", 1, 55), fetch("u", 0, 7)],
        forgotten: vec![
            PartitionKey::Name(name("t"), 0),
            PartitionKey::Name(name("nope"), 9),
        ],
    };
    let next = incremental(cache.begin(by_name(id, 1), 0, changes));
    let partitions: Vec<(String, i32, i64, Sent)> = (next.partitions.iter())
        .map(|(f, s)| (f.topic.0.to_string(), f.partition, f.fetch_offset, *s))
        .collect();
    assert_eq!(
        partitions,
        vec![
            ("t".into(), 1, 55, sent(10)),
            ("t".into(), 2, 10, sent(10)),
            ("u".into(), 0, 7, Sent::NOTHING),
        ]
    );
    assert_eq!(cache.sizes(), (1, 3));
}

#[test]
fn forgetting_every_partition_closes_the_session() {
    let cache = FetchSessionCache::new(10, 5);
    let id = three_partitions(&cache, 0);
    let forget_all = || SessionChanges {
        upserts: vec![],
        forgotten: (0..3).map(|p| PartitionKey::Name(name("t"), p)).collect(),
    };
    assert!(matches!(
        cache.begin(by_name(id, 1), 0, forget_all),
        Context::Sessionless
    ));
    assert_eq!(cache.sizes(), (0, 0));
    let context = cache.begin(by_name(id, 2), 0, none);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
}

#[test]
fn full_requests_close_the_session_they_name() {
    let cache = FetchSessionCache::new(10, 6);
    let id = three_partitions(&cache, 0);
    assert!(matches!(
        cache.begin(by_name(id, -1), 0, none),
        Context::Sessionless
    ));
    assert_eq!(cache.sizes(), (0, 0));
    let id = three_partitions(&cache, 0);
    assert!(matches!(
        cache.begin(by_name(id, 0), 0, none),
        Context::Full
    ));
    assert_eq!(cache.sizes(), (0, 0));
    let context = cache.begin(by_name(id, 1), 0, none);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
}

#[test]
fn a_session_keeps_to_topic_ids_or_names() {
    let cache = FetchSessionCache::new(10, 7);
    let topic_id = Uuid::from_u128(7);
    let partition = PartitionFetch {
        topic_id,
        ..fetch("t", 0, 0)
    };
    let id = cache.create(false, true, 0, vec![(partition.clone(), sent(1))]);
    let context = cache.begin(by_name(id, 1), 0, none);
    assert_eq!(error(context), ResponseError::FetchSessionTopicIdError);
    let by_id = SessionRequest {
        uses_topic_ids: true,
        ..by_name(id, 1)
    };
    // Forgotten by id: the name plays no part.
    let forget = || SessionChanges {
        upserts: vec![],
        forgotten: vec![PartitionKey::Id(topic_id, 0)],
    };
    assert!(matches!(
        cache.begin(by_id, 0, forget),
        Context::Sessionless
    ));
    let named = cache.create(false, false, 0, vec![(partition, sent(1))]);
    let by_id = SessionRequest {
        uses_topic_ids: true,
        ..by_name(named, 1)
    };
    let context = cache.begin(by_id, 0, none);
    assert_eq!(error(context), ResponseError::FetchSessionTopicIdError);
}

#[test]
fn responses_list_only_what_changed() {
    let base = sent(10);
    assert!(!must_respond(&base, &answer(10, false)));
    assert!(must_respond(&base, &answer(10, true)));
    assert!(must_respond(&base, &answer(11, false)));
    let log_start_moved = Answer {
        log_start_offset: 3,
        ..answer(10, false)
    };
    assert!(must_respond(&base, &log_start_moved));
    let lso_moved = Answer {
        last_stable_offset: 8,
        ..answer(10, false)
    };
    assert!(must_respond(&base, &lso_moved));
    let failed = Answer {
        error: true,
        ..answer(10, false)
    };
    assert!(must_respond(&base, &failed));
    // After an error the HW is unknown, so the partition is sent again once it clears.
    assert_eq!(Sent::after(&failed).high_watermark, -1);
    assert!(must_respond(&Sent::after(&failed), &answer(10, false)));
}

#[test]
fn answered_partitions_move_to_the_end_and_remember_what_was_sent() {
    let cache = FetchSessionCache::new(10, 8);
    let id = three_partitions(&cache, 0);
    let first = incremental(cache.begin(by_name(id, 1), 0, none));
    let answers = [answer(10, true), answer(10, false), answer(12, false)];
    let (keep, responded) = first.respond(&answers);
    assert_eq!(keep, vec![true, false, true]);
    cache.commit(&first, responded).unwrap();
    let second = incremental(cache.begin(by_name(id, 2), 0, none));
    // Only the partition that had records moves: 2 was listed for its high watermark.
    assert_eq!(order(&second), vec![1, 2, 0]);
    let sent_now: Vec<Sent> = second.partitions.iter().map(|(_, s)| *s).collect();
    assert_eq!(sent_now, vec![sent(10), sent(12), sent(10)]);
    // Nothing new: nothing listed, nothing moves.
    let idle = [answer(10, false), answer(12, false), answer(10, false)];
    let (keep, responded) = second.respond(&idle);
    assert_eq!(keep, vec![false; 3]);
    cache.commit(&second, responded).unwrap();
    let third = incremental(cache.begin(by_name(id, 3), 0, none));
    assert_eq!(order(&third), vec![1, 2, 0]);
    // Every high watermark moved but only the first partition had records (the byte
    // limit): the order still turns, so the others come first next time.
    let busy = [answer(11, true), answer(13, false), answer(11, false)];
    let (keep, responded) = third.respond(&busy);
    assert_eq!(keep, vec![true; 3]);
    cache.commit(&third, responded).unwrap();
    let fourth = incremental(cache.begin(by_name(id, 4), 0, none));
    assert_eq!(order(&fourth), vec![2, 0, 1]);
}

/// The next fetch answers a quiet partition unread from what the session remembers, so
/// the session must remember each quiet read, listed or not, and forget it once a read
/// is not quiet.
/// (Fetches a whole visit apart, so each sees every partition: see the visit tests below.)
#[test]
fn quiet_reads_are_remembered_for_partitions_left_out_too() {
    let cache = FetchSessionCache::new(10, 8);
    let id = three_partitions(&cache, 0);
    let quiet = |changes| QuietRead {
        version: crate::replica::PartitionVersion::after_changes(changes),
        fetch_offset: 10,
        current_leader_epoch: -1,
        bound: crate::replica::ReadBound::LogEnd,
        log_end_offset: 10,
    };
    let quiet_answer = |version| Answer {
        quiet: Some(quiet(version)),
        ..answer(10, false)
    };
    let first = incremental(cache.begin(by_name(id, 1), 0, none));
    let answers = [quiet_answer(5), answer(10, false), answer(11, false)];
    let (keep, responded) = first.respond(&answers);
    // Partition 0 is not listed (nothing changed that the client sees) but remembered.
    assert_eq!(keep, vec![false, false, true]);
    assert_eq!(responded.len(), 2);
    cache.commit(&first, responded).unwrap();
    let second = incremental(cache.begin(by_name(id, 2), WHOLE, none));
    let remembered: Vec<_> = second.partitions.iter().map(|(_, s)| s.quiet).collect();
    assert_eq!(remembered, vec![Some(quiet(5)), None, None]);
    assert_eq!(
        order(&second),
        vec![0, 1, 2],
        "only records move a partition"
    );
    // The same quiet read again: nothing to remember. A newer version replaces it; a read
    // that is not quiet (say, held back by the byte limit) clears it.
    let (_, responded) = second.respond(&[quiet_answer(5), answer(10, false), answer(11, false)]);
    assert!(responded.is_empty());
    let (_, responded) = second.respond(&[quiet_answer(6), answer(10, false), answer(11, false)]);
    assert_eq!(responded.len(), 1);
    cache.commit(&second, responded).unwrap();
    let third = incremental(cache.begin(by_name(id, 3), 2 * WHOLE, none));
    assert_eq!(third.partitions[0].1.quiet, Some(quiet(6)));
    let (keep, responded) =
        third.respond(&[answer(10, false), answer(10, false), answer(11, false)]);
    assert_eq!(keep, vec![false; 3]);
    cache.commit(&third, responded).unwrap();
    let fourth = incremental(cache.begin(by_name(id, 4), 3 * WHOLE, none));
    assert_eq!(fourth.partitions[0].1.quiet, None);
}

#[test]
fn a_response_overtaken_by_a_newer_request_is_refused() {
    let cache = FetchSessionCache::new(10, 9);
    let id = three_partitions(&cache, 0);
    let older = incremental(cache.begin(by_name(id, 1), 0, none));
    let newer = incremental(cache.begin(by_name(id, 2), 0, none));
    let answers = [answer(11, true), answer(10, false), answer(10, false)];
    let (_, responded) = older.respond(&answers);
    assert_eq!(
        cache.commit(&older, responded),
        Err(ResponseError::InvalidFetchSessionEpoch)
    );
    assert_eq!(
        cache.check_epoch(&older),
        Err(ResponseError::InvalidFetchSessionEpoch)
    );
    assert_eq!(cache.check_epoch(&newer), Ok(()));
    // The refused response changed nothing.
    let (_, responded) = newer.respond(&answers);
    assert_eq!(responded.len(), 1);
    cache.commit(&newer, responded).unwrap();
    // A session evicted meanwhile: the answer stands.
    cache.lock().remove(id);
    assert_eq!(cache.commit(&newer, vec![]), Ok(()));
}

/// A session of `size` partitions of topic `topic`.
fn session_of(topic: &str, size: i32) -> Vec<(PartitionFetch, Sent)> {
    (0..size).map(|p| (fetch(topic, p, 0), sent(0))).collect()
}

#[test]
fn a_full_cache_evicts_a_stale_session_first() {
    let cache = FetchSessionCache::new(2, 10);
    let old = cache.create(true, false, 0, session_of("a", 50));
    let young = cache.create(false, false, 100_000, session_of("b", 1));
    assert_ne!(old, young);
    // Within the eviction age nobody is stale, and a consumer cannot evict anyone young.
    assert_eq!(cache.create(false, false, 110_000, session_of("c", 99)), 0);
    // Unused for longer than the eviction age: evicted, privileged and large as it is.
    let third = cache.create(false, false, EVICTION_MS + 1, session_of("c", 1));
    assert!(third > 0);
    assert_eq!(cache.sizes(), (2, 2));
    assert_eq!(cache.evictions(), 1);
    let context = cache.begin(by_name(old, 1), EVICTION_MS + 2, none);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
}

#[test]
fn followers_evict_the_smallest_consumer_session() {
    let cache = FetchSessionCache::new(2, 11);
    let small = cache.create(false, false, 0, session_of("a", 2));
    let large = cache.create(false, false, 0, session_of("b", 5));
    let follower = cache.create(true, false, 1_000, session_of("f", 1));
    assert!(follower > 0);
    assert_eq!(cache.evictions(), 1);
    let context = cache.begin(by_name(small, 1), 1_000, none);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
    assert!(matches!(
        cache.begin(by_name(large, 1), 1_000, none),
        Context::Incremental(_)
    ));
    // A young follower session cannot be evicted by another follower, a consumer's can.
    let second = cache.create(true, false, 2_000, session_of("g", 1));
    assert!(second > 0);
    let context = cache.begin(by_name(large, 2), 2_000, none);
    assert_eq!(error(context), ResponseError::FetchSessionIdNotFound);
    assert_eq!(cache.create(true, false, 3_000, session_of("h", 100)), 0);
}

#[test]
fn older_sessions_give_way_to_larger_ones() {
    let cache = FetchSessionCache::new(1, 12);
    let id = cache.create(false, false, 0, session_of("a", 3));
    // Used recently but created long ago: evictable by all, by a larger session only.
    let used_at = EVICTION_MS + 10;
    incremental(cache.begin(by_name(id, 1), used_at, none));
    assert_eq!(
        cache.create(false, false, used_at + 1, session_of("b", 3)),
        0
    );
    let larger = cache.create(false, false, used_at + 1, session_of("b", 4));
    assert!(larger > 0);
    assert_eq!(cache.sizes(), (1, 4));
}

#[test]
fn no_slots_no_sessions() {
    let cache = FetchSessionCache::new(0, 13);
    assert_eq!(cache.create(true, false, 0, session_of("a", 1)), 0);
    assert_eq!(cache.sizes(), (0, 0));
}

#[test]
fn the_partition_bound_holds_over_all_sessions() {
    let cache = FetchSessionCache::with_partitions_max(10, 5, 14);
    let id = cache.create(false, false, 0, session_of("a", 3));
    assert_eq!(cache.create(false, false, 0, session_of("b", 3)), 0);
    // Growing past the bound closes the session and serves the request without one.
    let grow = || SessionChanges {
        upserts: (0..3).map(|p| fetch("c", p, 0)).collect(),
        forgotten: vec![],
    };
    assert!(matches!(
        cache.begin(by_name(id, 1), 0, grow),
        Context::Sessionless
    ));
    assert_eq!(cache.sizes(), (0, 0));
}

#[test]
fn session_ids_are_positive_and_distinct() {
    let cache = FetchSessionCache::new(1000, 15);
    let mut ids = std::collections::BTreeSet::new();
    for topic in 0..1000 {
        let id = cache.create(false, false, 0, session_of(&topic.to_string(), 1));
        assert!(id > 0);
        assert!(ids.insert(id));
    }
    assert_eq!(cache.sizes(), (1000, 1000));
}

// ---------------------------------------------------------------- visits

/// When the tests' partitions change: the sessions' clocks are these tests' own (a change
/// long after a session's last use would find it lapsed).
const CHANGE_MS: u64 = 100;

/// A session of `size` partitions of `t`, each last answered with a quiet read (settled).
fn settled_session(cache: &FetchSessionCache, size: i32) -> i32 {
    let quiet = Sent {
        quiet: Some(QuietRead {
            version: crate::replica::PartitionVersion::after_changes(1),
            fetch_offset: 0,
            current_leader_epoch: -1,
            bound: ReadBound::HighWatermark,
            log_end_offset: 0,
        }),
        ..sent(0)
    };
    let partitions = (0..size).map(|p| (fetch("t", p, 0), quiet)).collect();
    cache.create(false, false, 0, partitions)
}

/// Stands every slot of `incremental` registered with one partition's watchers each, as
/// the fetch does; by partition index.
fn stand(incremental: &Incremental) -> std::collections::BTreeMap<i32, Watchers> {
    let pairs = incremental.partitions.iter().zip(&incremental.slots);
    pairs
        .map(|((fetch, _), slot)| {
            let mut watchers = Watchers::default();
            watchers.stand(incremental.watch.as_ref().unwrap(), *slot);
            (fetch.partition, watchers)
        })
        .collect()
}

fn changes(upserts: Vec<PartitionFetch>, forgotten: Vec<PartitionKey>) -> SessionChanges {
    SessionChanges { upserts, forgotten }
}

/// After a first fetch that visits every partition (they stood registered with nothing
/// before it), a fetch visits only the partitions marked since the last one, those the
/// request names, and those whose last answer was not a quiet read.
#[test]
fn a_fetch_visits_what_changed_what_it_names_and_what_was_not_quiet() {
    let cache = FetchSessionCache::new(10, 16).with_tracked_min(0);
    let id = settled_session(&cache, 6);
    let first = incremental(cache.begin(by_name(id, 1), 10, none));
    assert!(first.whole);
    assert_eq!(order(&first), vec![0, 1, 2, 3, 4, 5]);
    let mut partitions = stand(&first);
    let second = incremental(cache.begin(by_name(id, 2), 20, none));
    assert!(!second.whole);
    assert_eq!(order(&second), Vec::<i32>::new(), "nothing changed");
    // Partitions 4 and 1 change (4 twice); the request names 2.
    partitions.get_mut(&4).unwrap().mark_standing_at(CHANGE_MS);
    partitions.get_mut(&1).unwrap().mark_standing_at(CHANGE_MS);
    partitions.get_mut(&4).unwrap().mark_standing_at(CHANGE_MS);
    let named = || changes(vec![fetch("t", 2, 0)], vec![]);
    let third = incremental(cache.begin(by_name(id, 3), 30, named));
    assert_eq!(order(&third), vec![1, 2, 4], "in the session's order");
    // 1's high watermark moved, 2 had records (it moves to the end), 4's read was quiet:
    // 1 and 2 are visited until a read of them is quiet again, 4 only when marked.
    let quiet = Answer {
        quiet: third.partitions[2].1.quiet,
        ..answer(0, false)
    };
    let answers = [answer(5, false), answer(0, true), quiet];
    let (_, responded) = third.respond(&answers);
    cache.commit(&third, responded).unwrap();
    let fourth = incremental(cache.begin(by_name(id, 4), 40, none));
    assert_eq!(
        order(&fourth),
        vec![1, 2],
        "not quiet, in the session's order"
    );
}

/// Every partition is visited again a whole-visit interval after the last such visit,
/// when the reader changes (a consumer switching isolation level), and after a fetch whose
/// visit was not recorded.
#[test]
fn whole_visits_come_on_time_for_a_new_reader_and_after_an_unrecorded_fetch() {
    let cache = FetchSessionCache::new(10, 17)
        .with_whole_visit_ms(500)
        .with_tracked_min(0);
    let id = settled_session(&cache, 3);
    assert!(incremental(cache.begin(by_name(id, 1), 1_000, none)).whole);
    assert!(!incremental(cache.begin(by_name(id, 2), 1_499, none)).whole);
    let due = incremental(cache.begin(by_name(id, 3), 1_500, none));
    assert!(due.whole);
    assert_eq!(order(&due), vec![0, 1, 2]);
    let read_committed = SessionRequest {
        reader: (None, ReadBound::LastStableOffset),
        ..by_name(id, 4)
    };
    assert!(incremental(cache.begin(read_committed, 1_600, none)).whole);
    assert!(
        !incremental(cache.begin(
            SessionRequest {
                epoch: 5,
                ..read_committed
            },
            1_700,
            none
        ))
        .whole
    );
    cache.revisit(id);
    let after = incremental(cache.begin(
        SessionRequest {
            epoch: 6,
            ..read_committed
        },
        1_800,
        none,
    ));
    assert!(after.whole);
    // The interval is capped: a follower's fetch time at the leader must not go stale.
    let capped = FetchSessionCache::new(10, 18)
        .with_whole_visit_ms(60_000)
        .with_tracked_min(0);
    let id = settled_session(&capped, 1);
    assert!(incremental(capped.begin(by_name(id, 1), 0, none)).whole);
    let late = WHOLE_VISIT_MS_MAX;
    assert!(incremental(capped.begin(by_name(id, 2), late, none)).whole);
}

/// A parked fetch takes in the partitions marked since it began that it does not visit
/// yet, with what was last sent of them; not once its session has moved on.
#[test]
fn a_parked_fetch_takes_in_marked_partitions() {
    let cache = FetchSessionCache::new(10, 19).with_tracked_min(0);
    let id = settled_session(&cache, 4);
    let first = incremental(cache.begin(by_name(id, 1), 0, none));
    let mut partitions = stand(&first);
    let named = || changes(vec![fetch("t", 1, 0)], vec![]);
    let mut parked = incremental(cache.begin(by_name(id, 2), 10, named));
    assert_eq!(order(&parked), vec![1]);
    partitions.get_mut(&3).unwrap().mark_standing_at(CHANGE_MS);
    partitions.get_mut(&1).unwrap().mark_standing_at(CHANGE_MS);
    let marked = parked.watch.as_ref().unwrap().drain_marks(10);
    let added = cache.extend(&mut parked, marked);
    assert_eq!(added, Some(1), "1 was visited already");
    assert_eq!(order(&parked), vec![1, 3]);
    assert_eq!(parked.slots.len(), 2);
    assert_eq!(
        parked.partitions[1].1.quiet.map(|q| q.fetch_offset),
        Some(0)
    );
    // Overtaken by the next request: nothing more joins, and the fetch knows it.
    assert!(cache.is_current(&parked));
    let _next = incremental(cache.begin(by_name(id, 3), 20, none));
    assert!(!cache.is_current(&parked));
    partitions.get_mut(&0).unwrap().mark_standing_at(CHANGE_MS);
    let marked = parked.watch.as_ref().unwrap().drain_marks(20);
    assert_eq!(marked.len(), 1);
    assert_eq!(cache.extend(&mut parked, marked), None, "moved on");
}

/// A forgotten partition's slot is dropped from its partition's registrations at the
/// partition's next change, and a session gone drops them all.
#[test]
fn forgotten_slots_and_closed_sessions_leave_the_partitions() {
    let cache = FetchSessionCache::new(10, 20).with_tracked_min(0);
    let id = settled_session(&cache, 2);
    let first = incremental(cache.begin(by_name(id, 1), 0, none));
    let mut partitions = stand(&first);
    drop(first);
    let forget = || changes(vec![], vec![PartitionKey::Name(name("t"), 0)]);
    incremental(cache.begin(by_name(id, 2), 10, forget));
    let zero = partitions.get_mut(&0).unwrap();
    assert_eq!(zero.standing_len(), 1);
    zero.mark_standing_at(CHANGE_MS);
    assert_eq!(zero.standing_len(), 0, "forgotten");
    // Partition 1 still stands; once the session closes, its next change drops it.
    let one = partitions.get_mut(&1).unwrap();
    one.mark_standing_at(CHANGE_MS);
    assert_eq!(one.standing_len(), 1);
    assert!(matches!(
        cache.begin(by_name(id, -1), 20, none),
        Context::Sessionless
    ));
    one.mark_standing_at(CHANGE_MS);
    assert_eq!(one.standing_len(), 0, "session closed");
}

/// Sessions under the tracked size visit every partition at every fetch and do not track;
/// one that grows to it starts tracking with a whole visit.
#[test]
fn small_sessions_visit_everything_untracked() {
    let cache = FetchSessionCache::new(10, 21).with_tracked_min(4);
    let id = settled_session(&cache, 3);
    for epoch in 1..4 {
        let small = incremental(cache.begin(by_name(id, epoch), 10 * epoch as u64, none));
        assert!(small.whole && small.watch.is_none());
        assert_eq!(order(&small), vec![0, 1, 2]);
    }
    let grow = || changes(vec![fetch("t", 3, 0)], vec![]);
    let grown = incremental(cache.begin(by_name(id, 4), 40, grow));
    assert!(
        grown.whole && grown.watch.is_some(),
        "a whole visit registers them all"
    );
    assert_eq!(order(&grown), vec![0, 1, 2, 3]);
    let quiet = Answer {
        quiet: grown.partitions[0].1.quiet,
        ..answer(0, false)
    };
    let (_, responded) = grown.respond(&[quiet; 4]);
    cache.commit(&grown, responded).unwrap();
    let tracked = incremental(cache.begin(by_name(id, 5), 50, none));
    assert!(!tracked.whole && tracked.watch.is_some());
    assert_eq!(order(&tracked), Vec::<i32>::new());
}
