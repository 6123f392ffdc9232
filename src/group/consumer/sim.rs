//! Randomized simulation of one consumer group: six clients (two static) join, heartbeat,
//! change subscriptions, leave, restart, crash and lose answers at random, while topics
//! appear and grow and time moves in random steps. Clients behave as Kafka's consumer
//! does: they own exactly the assignment last answered, let go of everything when
//! fenced, and report what they own.
//!
//! Persistence as the shell does it: after every step the changed records are appended;
//! now and then the append fails (the group goes back to its records and the request is
//! answered with an error) or the coordinator fails over (the group is rebuilt from its
//! records, sessions start again).
//!
//! Invariants after every step:
//! - the group's own bookkeeping holds (`check`): no partition is held by two members;
//! - the group rebuilt from its records equals it (`assert_restorable`): no step changes
//!   state without writing it;
//! - among the clients the group still counts in (up, not told to rejoin, their member
//!   still in the group, whatever epoch they know after lost answers) no partition is
//!   owned twice, and what each owns is held for its member. A client whose member is
//!   gone may still own partitions until its next heartbeat (a zombie); its commits are
//!   refused (UNKNOWN_MEMBER_ID), as Kafka refuses them.
//!
//! At the end, with faults stopped and every client heartbeating, the group becomes
//! Stable and every partition of every subscribed topic is owned by exactly one client.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::assignor::{Assignment, Assignor, TopicInfo};
use super::group::{
    Assignors, ConsumerGroup, ConsumerGroupConfig, ConsumerGroupState, HeartbeatRequest,
    TopicSource,
};
use crate::group::GroupError;
use crate::sim_rng::Rng;

const CLIENTS: usize = 6;
const STEPS: usize = 3_000;
const SEEDS: u64 = 50;
const TOPICS: [&str; 3] = ["a", "b", "c"];

#[derive(Default)]
struct Client {
    instance_id: Option<String>,
    member_id: String,
    epoch: i32,
    owned: Assignment,
    subscribed: Vec<String>,
    regex: Option<String>,
    alive: bool,
    /// Fenced or new: the next heartbeat joins with epoch 0.
    must_join: bool,
    /// A static member that left with epoch -2 and restarts under a new id.
    away: bool,
    /// The subscription changed and has not been sent yet.
    resubscribed: bool,
}

struct Sim {
    rng: Rng,
    now_ms: i64,
    group: ConsumerGroup,
    config: ConsumerGroupConfig,
    clients: Vec<Client>,
    /// Topic name -> partitions (absent: the topic does not exist yet).
    partitions: RefCell<BTreeMap<String, i32>>,
    /// Moves when `partitions` does, as the metadata image's offset.
    topics_version: i64,
    next_id: u64,
    stable_seen: usize,
}

fn topic_id(name: &str) -> Uuid {
    let index = TOPICS.iter().position(|t| *t == name).expect("a sim topic");
    Uuid::from_u128(index as u128 + 1)
}

impl Sim {
    fn new(seed: u64, assignor: Assignor) -> Sim {
        let mut rng = Rng::new(seed);
        let clients = (0..CLIENTS)
            .map(|i| {
                let (subscribed, regex) = pick_subscription(&mut rng);
                Client {
                    instance_id: (i < 2).then(|| format!("instance-{i}")),
                    subscribed,
                    regex,
                    alive: true,
                    must_join: true,
                    ..Client::default()
                }
            })
            .collect();
        let config = ConsumerGroupConfig {
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_size: 100,
            assignors: Assignors {
                first: assignor,
                second: None,
            },
            ..ConsumerGroupConfig::default()
        };
        let partitions = BTreeMap::from([("a".to_string(), 4), ("b".to_string(), 3)]);
        Sim {
            rng,
            now_ms: 1_000_000,
            group: ConsumerGroup::new("sim"),
            config,
            clients,
            partitions: RefCell::new(partitions),
            topics_version: 0,
            next_id: 0,
            stable_seen: 0,
        }
    }

    fn heartbeat(&mut self, index: usize, lose_answers: bool) {
        let client = &self.clients[index];
        let joining = client.must_join;
        let full = joining || client.resubscribed || self.rng.chance(10);
        let request = HeartbeatRequest {
            member_id: if client.away {
                String::new()
            } else {
                client.member_id.clone()
            },
            member_epoch: if joining { 0 } else { client.epoch },
            instance_id: client.instance_id.clone(),
            rack_id: None,
            rebalance_timeout_ms: if full { 5_000 } else { -1 },
            subscribed_topic_names: full.then(|| client.subscribed.clone()),
            // An empty pattern clears a regex the member had.
            subscribed_topic_regex: full.then(|| client.regex.clone().unwrap_or_default()),
            server_assignor: None,
            owned: if joining {
                Some(Assignment::new())
            } else if self.rng.chance(80) {
                Some(client.owned.clone())
            } else {
                None
            },
            client_id: format!("client-{index}"),
            client_host: "/127.0.0.1".into(),
            client_makes_member_id: false,
        };
        let topics = SimTopics(&self.partitions, self.topics_version);
        let next_id = &mut self.next_id;
        let mut new_id = || {
            *next_id += 1;
            format!("member-{next_id}")
        };
        let mut result =
            self.group
                .heartbeat(request, self.now_ms, &self.config, &topics, &mut new_id);
        if !self.persist(lose_answers) {
            result = Err(GroupError::CoordinatorNotAvailable);
        }
        let lost = lose_answers && self.rng.chance(10);
        let client = &mut self.clients[index];
        match result {
            Ok(_) if lost => {}
            Ok(answer) => {
                client.member_id = answer.member_id;
                client.epoch = answer.member_epoch;
                client.must_join = false;
                client.away = false;
                client.resubscribed &= !full;
                if let Some(assignment) = answer.assignment {
                    client.owned = assignment;
                }
            }
            Err(GroupError::UnknownMemberId | GroupError::FencedMemberEpoch) => {
                client.owned.clear();
                client.must_join = true;
            }
            // The old instance has not gone yet, or the write failed: try again later.
            Err(GroupError::UnreleasedInstanceId | GroupError::CoordinatorNotAvailable) => {}
            Err(other) => panic!("unexpected heartbeat error {other:?}"),
        }
    }

    fn leave(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if client.member_id.is_empty() {
            return; // Never joined: a consumer sends no leave.
        }
        let temporary = client.instance_id.is_some() && self.rng.chance(50);
        let request = HeartbeatRequest {
            member_id: client.member_id.clone(),
            member_epoch: if temporary { -2 } else { -1 },
            instance_id: client.instance_id.clone(),
            rebalance_timeout_ms: -1,
            ..HeartbeatRequest::default()
        };
        let result = self.group.heartbeat(
            request,
            self.now_ms,
            &self.config,
            &SimTopics(&self.partitions, self.topics_version),
            &mut String::new,
        );
        self.persist(true);
        match result {
            Ok(_) | Err(GroupError::UnknownMemberId | GroupError::FencedInstanceId) => {}
            Err(other) => panic!("unexpected leave error {other:?}"),
        }
        // Let go of everything either way; a restarting static member comes back under
        // a new id.
        let client = &mut self.clients[index];
        client.owned.clear();
        client.must_join = true;
        client.away = temporary;
        if !temporary {
            client.member_id.clear();
        }
    }

    /// The shell's write after a step: the changed records are appended, unless (with
    /// `faults`, now and then) the append fails and the group goes back to its records.
    /// Returns whether the step's changes are in the log.
    fn persist(&mut self, faults: bool) -> bool {
        let changes = self.group.take_changes(self.now_ms);
        let written = changes.is_empty() || !(faults && self.rng.chance(3));
        if written {
            self.group.appended(changes);
        } else {
            self.group.revert(self.now_ms, &self.config);
        }
        self.group.assert_restorable(&self.config);
        written
    }

    fn step(&mut self) {
        self.now_ms += self.rng.below(2_500) as i64;
        self.group.tick(self.now_ms);
        self.persist(true);
        let index = self.rng.below(CLIENTS as u64) as usize;
        let roll = self.rng.below(100);
        if self.rng.chance(1) {
            // A failover: the new coordinator has only the records.
            self.group.revert(self.now_ms, &self.config);
        }
        if !self.clients[index].alive {
            if roll < 20 {
                // A new process: nothing owned, no member id (a static one keeps its
                // instance id and takes over once the old member is gone or away).
                let client = &mut self.clients[index];
                client.alive = true;
                client.owned.clear();
                client.member_id.clear();
                client.must_join = true;
                client.away = false;
            }
        } else if roll < 2 {
            self.clients[index].alive = false;
        } else if roll < 5 {
            self.leave(index);
        } else if roll < 8 {
            let (subscribed, regex) = pick_subscription(&mut self.rng);
            let client = &mut self.clients[index];
            client.subscribed = subscribed;
            client.regex = regex;
            client.resubscribed = true;
        } else if roll < 10 {
            self.grow_topics();
        } else {
            self.heartbeat(index, true);
        }
        self.check();
    }

    fn grow_topics(&mut self) {
        let name = TOPICS[self.rng.below(TOPICS.len() as u64) as usize];
        let mut partitions = self.partitions.borrow_mut();
        let count = partitions.entry(name.to_string()).or_insert(0);
        if *count < 12 {
            *count += 1 + self.rng.below(2) as i32;
            self.topics_version += 1;
        }
    }

    /// Whether the group still counts this client in: it is up, has not been told to
    /// rejoin, and its member is in the group, whatever epoch it knows (a lost answer
    /// leaves it behind). Such a client goes on consuming what it owns, so the group must
    /// hold all of that for its member and for no one else.
    fn counted_in(&self, client: &Client) -> bool {
        client.alive
            && !client.must_join
            && self
                .group
                .members()
                .any(|m| m.member_id == client.member_id)
    }

    fn check(&mut self) {
        self.group.check();
        let mut owners: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
        for (index, client) in self.clients.iter().enumerate() {
            if !client.alive {
                continue;
            }
            for (topic, partitions) in &client.owned {
                for partition in partitions {
                    if let Some(other) = owners.insert((*topic, *partition), index) {
                        let both = [other, index].map(|i| self.counted_in(&self.clients[i]));
                        assert!(
                            !(both[0] && both[1]),
                            "clients {other} and {index} both own {topic}:{partition} \
                             and are both counted in"
                        );
                    }
                }
            }
            if self.counted_in(client) {
                let member = self
                    .group
                    .members()
                    .find(|m| m.member_id == client.member_id)
                    .expect("a counted client is a member");
                let holds: BTreeSet<(Uuid, i32)> = member.holds().collect();
                for (topic, partitions) in &client.owned {
                    for partition in partitions {
                        assert!(
                            holds.contains(&(*topic, *partition)),
                            "client {index} owns {topic}:{partition} its member does not hold"
                        );
                    }
                }
            }
        }
        if self.group.state() == ConsumerGroupState::Stable {
            self.stable_seen += 1;
        }
    }

    /// Faults stop; every client comes back and heartbeats until the group settles.
    fn settle(&mut self) {
        for client in &mut self.clients {
            if !client.alive {
                client.alive = true;
                client.owned.clear();
                client.member_id.clear();
                client.must_join = true;
                client.away = false;
            }
        }
        // Crashed members' sessions end; every live client keeps heartbeating meanwhile.
        for round in 0..40 {
            self.now_ms += 500;
            self.group.tick(self.now_ms);
            self.persist(false);
            for index in 0..CLIENTS {
                self.heartbeat(index, false);
            }
            self.check();
            if round > 25 && self.group.state() == ConsumerGroupState::Stable {
                break;
            }
        }
        assert_eq!(self.group.state(), ConsumerGroupState::Stable);
        let partitions = self.partitions.borrow();
        let regexes: Vec<&str> = self
            .clients
            .iter()
            .filter_map(|c| c.regex.as_deref())
            .collect();
        let subscribed: BTreeSet<&String> = partitions
            .keys()
            .filter(|name| {
                let by_name = self.clients.iter().any(|c| c.subscribed.contains(name));
                // The sim's regexes are alternations of whole topic names.
                by_name
                    || regexes
                        .iter()
                        .any(|r| r.split('|').any(|t| t == name.as_str()))
            })
            .collect();
        let mut owned: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
        for (index, client) in self.clients.iter().enumerate() {
            assert!(!client.must_join, "client {index} never got back in");
            for (topic, list) in &client.owned {
                for partition in list {
                    assert!(owned.insert((*topic, *partition), index).is_none());
                }
            }
        }
        let expected: BTreeSet<(Uuid, i32)> = partitions
            .iter()
            .filter(|(name, _)| subscribed.contains(name))
            .flat_map(|(name, count)| (0..*count).map(|p| (topic_id(name), p)))
            .collect();
        let got: BTreeSet<(Uuid, i32)> = owned.keys().copied().collect();
        assert_eq!(
            got, expected,
            "every subscribed partition owned exactly once"
        );
    }
}

/// Topic names and maybe a regex (matching whole names, as Kafka's do).
fn pick_subscription(rng: &mut Rng) -> (Vec<String>, Option<String>) {
    match rng.below(6) {
        0 => (vec!["a".into()], None),
        1 => (vec!["a".into(), "b".into()], None),
        2 => (vec!["b".into(), "c".into()], None),
        3 => (vec!["a".into(), "c".into()], None),
        4 => (vec![], Some("a|c".into())),
        _ => (vec!["b".into()], Some("c|x".into())),
    }
}

struct SimTopics<'a>(&'a RefCell<BTreeMap<String, i32>>, i64);

impl TopicSource for SimTopics<'_> {
    fn lookup(&self, name: &str) -> Option<TopicInfo> {
        let count = *self.0.borrow().get(name)?;
        Some(TopicInfo {
            id: topic_id(name),
            partitions: count,
        })
    }

    fn names(&self) -> Vec<String> {
        self.0.borrow().keys().cloned().collect()
    }

    fn version(&self) -> i64 {
        self.1
    }
}

#[test]
fn consumer_group_simulation_keeps_partitions_single_owned_and_settles() {
    for seed in 0..SEEDS {
        let assignor = if seed % 2 == 0 {
            Assignor::Uniform
        } else {
            Assignor::Range
        };
        let mut sim = Sim::new(seed, assignor);
        for _ in 0..STEPS {
            sim.step();
        }
        assert!(
            sim.stable_seen > 0,
            "seed {seed}: never stable during the run"
        );
        sim.settle();
    }
}
