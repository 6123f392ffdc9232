//! One member of a KIP-848 consumer group and how it moves towards its target assignment
//! (Kafka's `ConsumerGroupMember` and `CurrentAssignmentBuilder`).
//!
//! A member's epoch only moves to the target epoch once it owns nothing another member is
//! targeted for: partitions leaving it are first revoked (it stays at its epoch, in
//! `UnrevokedPartitions`, until a heartbeat no longer lists them), and partitions still
//! owned by another member are withheld (`UnreleasedPartitions`) until that member lets
//! them go. So no partition is ever assigned to two members at once.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::assignor::Assignment;

/// Kafka's `MemberState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// At the target epoch with its whole target.
    Stable,
    /// Must revoke `pending_revocation` before it moves on.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions another member still owns.
    UnreleasedPartitions,
}

/// A static member's epoch while it is away (`member_epoch` -2 in its heartbeat): it keeps
/// its partitions until its session times out or its instance id rejoins.
pub const LEFT_STATIC_EPOCH: i32 = -2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    /// Topic names, sorted, without repeats.
    pub subscribed: Vec<String>,
    /// A regex subscription (v1), in addition to the names.
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub state: MemberState,
    pub member_epoch: i32,
    /// The epoch before the last bump: a heartbeat at this epoch is accepted when it owns
    /// no more than is assigned (the answer with the new epoch may have been lost).
    pub previous_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    /// The member is removed if no heartbeat comes by then.
    pub session_deadline_ms: i64,
    /// Set while `UnrevokedPartitions`: the member is removed if it has not revoked by then.
    pub revocation_deadline_ms: Option<i64>,
}

/// What reconciling a member needs from its group.
pub struct Target<'a> {
    pub epoch: i32,
    pub partitions: &'a Assignment,
    /// Whether another member owns (or is revoking) this partition.
    pub owned_elsewhere: &'a dyn Fn(Uuid, i32) -> bool,
}

impl ConsumerMember {
    /// Whether the member has reached the target epoch with all of its target.
    pub fn is_reconciled_to(&self, epoch: i32) -> bool {
        self.state == MemberState::Stable && self.member_epoch == epoch
    }

    /// Moves the member towards `target` given what its heartbeat says it owns (`None`:
    /// the heartbeat did not say, so revoked partitions count as still owned).
    pub fn reconcile(&mut self, target: &Target<'_>, owned: Option<&Assignment>) {
        match self.state {
            MemberState::Stable if self.member_epoch == target.epoch => {}
            MemberState::Stable | MemberState::UnreleasedPartitions => {
                self.next_assignment(self.member_epoch, target, owned)
            }
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &self.pending_revocation) {
                    return;
                }
                let epoch = self.member_epoch.saturating_add(1).min(target.epoch);
                self.next_assignment(epoch, target, owned);
            }
        }
    }

    fn next_assignment(&mut self, epoch: i32, target: &Target<'_>, owned: Option<&Assignment>) {
        let mut assigned = Assignment::new();
        let mut revoking = Assignment::new();
        let mut adding = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<Uuid> = target
            .partitions
            .keys()
            .chain(self.assigned.keys())
            .copied()
            .collect();
        let empty = BTreeSet::new();
        for topic in topics {
            let wanted = target.partitions.get(&topic).unwrap_or(&empty);
            let current = self.assigned.get(&topic).unwrap_or(&empty);
            let kept: BTreeSet<i32> = current.intersection(wanted).copied().collect();
            let gone: BTreeSet<i32> = current.difference(&kept).copied().collect();
            let mut new: BTreeSet<i32> = wanted.difference(&kept).copied().collect();
            let before = new.len();
            new.retain(|p| !(target.owned_elsewhere)(topic, *p));
            unreleased |= new.len() != before;
            for (map, set) in [
                (&mut assigned, kept),
                (&mut revoking, gone),
                (&mut adding, new),
            ] {
                if !set.is_empty() {
                    map.insert(topic, set);
                }
            }
        }
        if !revoking.is_empty() && owns_any(owned, &revoking) {
            // Revoke first, at the current epoch.
            self.state = MemberState::UnrevokedPartitions;
            self.set_epoch(epoch);
            self.assigned = assigned;
            self.pending_revocation = revoking;
            return;
        }
        for (topic, partitions) in adding {
            assigned.entry(topic).or_default().extend(partitions);
        }
        self.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        self.set_epoch(target.epoch);
        self.assigned = assigned;
        self.pending_revocation = Assignment::new();
    }

    /// Every reconciliation step records the epoch it left, even when the epoch stays (a
    /// revocation at the same epoch): the lost-answer rule accepts a heartbeat at the
    /// previous epoch, and after such a step that must no longer be an older one, or a
    /// delayed heartbeat could pass for the revocation's acknowledgement (Kafka's
    /// `updateMemberEpoch`).
    fn set_epoch(&mut self, epoch: i32) {
        self.previous_epoch = self.member_epoch;
        self.member_epoch = epoch;
    }

    /// Every partition the member holds: assigned, or assigned before and not yet revoked.
    pub fn holds(&self) -> impl Iterator<Item = (Uuid, i32)> + '_ {
        self.assigned
            .iter()
            .chain(self.pending_revocation.iter())
            .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (*topic, *p)))
    }
}

/// Whether `owned` (the heartbeat's owned partitions; `None` = not reported) includes any
/// partition of `partitions`.
fn owns_any(owned: Option<&Assignment>, partitions: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    partitions
        .iter()
        .any(|(topic, set)| owned.get(topic).is_some_and(|have| !have.is_disjoint(set)))
}

/// Whether every partition of `owned` is in `assigned` (a topic `assigned` does not have
/// fails even when listed with no partitions, as Kafka's `isSubset`).
pub fn is_subset(owned: &Assignment, assigned: &Assignment) -> bool {
    owned
        .iter()
        .all(|(topic, set)| assigned.get(topic).is_some_and(|have| set.is_subset(have)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Uuid {
        Uuid::from_u128(9)
    }

    fn parts(list: &[i32]) -> Assignment {
        if list.is_empty() {
            return Assignment::new();
        }
        Assignment::from([(topic(), list.iter().copied().collect())])
    }

    fn member(epoch: i32, assigned: &[i32]) -> ConsumerMember {
        ConsumerMember {
            member_id: "m".into(),
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 1000,
            subscribed: vec!["t".into()],
            subscribed_regex: None,
            server_assignor: None,
            state: MemberState::Stable,
            member_epoch: epoch,
            previous_epoch: epoch - 1,
            assigned: parts(assigned),
            pending_revocation: Assignment::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
        }
    }

    #[test]
    fn a_member_revokes_before_it_moves_to_the_new_epoch() {
        let mut m = member(3, &[0, 1, 2]);
        let target = parts(&[0]);
        let free = |_: Uuid, _: i32| false;
        let t = Target {
            epoch: 5,
            partitions: &target,
            owned_elsewhere: &free,
        };
        m.reconcile(&t, Some(&parts(&[0, 1, 2])));
        assert_eq!(m.state, MemberState::UnrevokedPartitions);
        assert_eq!(m.member_epoch, 3);
        // The step is recorded: a heartbeat at epoch 2 no longer passes for a lost answer.
        assert_eq!(m.previous_epoch, 3);
        assert_eq!(m.assigned, parts(&[0]));
        assert_eq!(m.pending_revocation, parts(&[1, 2]));
        // Still owned: no progress.
        m.reconcile(&t, Some(&parts(&[0, 1])));
        assert_eq!(m.state, MemberState::UnrevokedPartitions);
        // Unknown ownership counts as owned.
        m.reconcile(&t, None);
        assert_eq!(m.state, MemberState::UnrevokedPartitions);
        m.reconcile(&t, Some(&parts(&[0])));
        assert_eq!(m.state, MemberState::Stable);
        assert_eq!(m.member_epoch, 5);
        assert_eq!(m.previous_epoch, 3);
        assert!(m.pending_revocation.is_empty());
    }

    #[test]
    fn partitions_another_member_holds_are_withheld_until_released() {
        let mut m = member(1, &[0]);
        let target = parts(&[0, 1]);
        let taken = |_: Uuid, p: i32| p == 1;
        let t = Target {
            epoch: 2,
            partitions: &target,
            owned_elsewhere: &taken,
        };
        m.reconcile(&t, Some(&parts(&[0])));
        assert_eq!(m.state, MemberState::UnreleasedPartitions);
        assert_eq!(m.member_epoch, 2);
        assert_eq!(m.assigned, parts(&[0]));
        let free = |_: Uuid, _: i32| false;
        let t = Target {
            owned_elsewhere: &free,
            ..t
        };
        m.reconcile(&t, Some(&parts(&[0])));
        assert_eq!(m.state, MemberState::Stable);
        assert_eq!(m.assigned, parts(&[0, 1]));
    }

    #[test]
    fn a_member_that_already_let_go_skips_the_revocation() {
        let mut m = member(1, &[0, 1]);
        let target = parts(&[1]);
        let free = |_: Uuid, _: i32| false;
        let t = Target {
            epoch: 2,
            partitions: &target,
            owned_elsewhere: &free,
        };
        m.reconcile(&t, Some(&parts(&[1])));
        assert_eq!(m.state, MemberState::Stable);
        assert_eq!(m.member_epoch, 2);
        assert_eq!(m.assigned, parts(&[1]));
    }

    #[test]
    fn subsets() {
        assert!(is_subset(&parts(&[1]), &parts(&[1, 2])));
        assert!(is_subset(&Assignment::new(), &parts(&[])));
        assert!(!is_subset(&parts(&[3]), &parts(&[1, 2])));
        let listed_empty = Assignment::from([(topic(), BTreeSet::new())]);
        assert!(!is_subset(&listed_empty, &Assignment::new()));
    }
}
