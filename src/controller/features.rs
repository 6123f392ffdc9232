//! The feature levels this node supports and the cluster has finalized (KIP-584), as
//! ApiVersions v3+ advertises them and `kafka-features describe` lists them.
//!
//! The one home of these constants. The finalized levels live in the image: a feature the
//! image does not name is at its `*_FINALIZED` default below (every cluster starts there,
//! and images written before UpdateFeatures existed read so); UpdateFeatures
//! (`feature_updates`) stores a level per feature, as Kafka's `FeatureLevelRecord`.
//!
//! A level is advertised only for behaviour that exists here. `group.version` is
//! supported 0-1 (1 = KIP-848 consumer groups: ConsumerGroupHeartbeat is served, as Kafka
//! serves it, only while the finalized level is at least 1).
//! `transaction.version` is supported 0-2 (2 = KIP-890 transactions: a Java 4.0 producer
//! uses EndTxn v5 and implicit partition adds iff the finalized level is at least 2);
//! its finalized level is [`TRANSACTION_VERSION_FINALIZED`]. Kafka itself leaves out of
//! SupportedFeatures any feature whose highest supported level is 0
//! (`BrokerFeatures.defaultSupportedFeatures` keeps a feature only when its max is above
//! 0), and a node that does not list a feature counts as supporting exactly level 0: so
//! leaving one out is how Kafka says "0 only", and no client takes a missing
//! `group.version` as permission.

use super::image::MetadataImage;

pub const METADATA_VERSION: &str = "metadata.version";
pub const KRAFT_VERSION: &str = "kraft.version";
pub const TRANSACTION_VERSION: &str = "transaction.version";
pub const GROUP_VERSION: &str = "group.version";

/// `metadata.version` 3.3-IV3: the lowest level Kafka 4.0 accepts (`MetadataVersion
/// .MINIMUM_VERSION`); upgrades to 4.x start from 3.3.x.
pub const METADATA_VERSION_MIN: i16 = 7;
/// `metadata.version` 4.0-IV3: Kafka 4.0's latest production level, which a cluster
/// formatted by 4.0 finalizes.
pub const METADATA_VERSION_MAX: i16 = 25;
/// The `metadata.version` every image is at (a new Kafka 4.0 cluster's level).
pub const METADATA_VERSION_FINALIZED: i16 = METADATA_VERSION_MAX;

/// `kraft.version` 0: a static voter set (`controller.quorum.voters`). Level 1 is
/// KIP-853's dynamic voters (AddRaftVoter / RemoveRaftVoter), which are not implemented.
pub const KRAFT_VERSION_MIN: i16 = 0;
pub const KRAFT_VERSION_MAX: i16 = 0;
pub const KRAFT_VERSION_FINALIZED: i16 = 0;

/// `transaction.version`: 0 (transactions as before KIP-890), 1 (flexible
/// `__transaction_state` values), 2 (KIP-890 part 2: an epoch bump per transaction,
/// partitions added by their leaders). The coordinator serves every level's requests
/// whatever is finalized, as Kafka does (the request version names the client's version).
pub const TRANSACTION_VERSION_MIN: i16 = 0;
pub const TRANSACTION_VERSION_MAX: i16 = 2;
/// The one switch: what a new cluster finalizes, and so what Java clients use. At 2 the
/// coordinator's side of KIP-890 is in place (EndTxn v5, AddPartitionsToTxn v5 from a
/// partition leader); Kafka 4.0 formats new clusters at 2 too. It also picks the
/// `__transaction_state` value version written (1 from level 1 on, as Kafka).
pub const TRANSACTION_VERSION_FINALIZED: i16 = 2;

/// `group.version`: 0 (classic groups only) or 1 (KIP-848 consumer groups as well).
pub const GROUP_VERSION_MIN: i16 = 0;
pub const GROUP_VERSION_MAX: i16 = 1;
/// The level at which the consumer protocol is served (Kafka's `GroupVersion.GV_1`).
pub const GROUP_VERSION_CONSUMER_PROTOCOL: i16 = 1;
/// Kafka 4.0 formats new clusters at 1.
pub const GROUP_VERSION_FINALIZED: i16 = 1;

const _: () = assert!(METADATA_VERSION_MIN <= METADATA_VERSION_FINALIZED);
const _: () = assert!(GROUP_VERSION_MIN <= GROUP_VERSION_FINALIZED);
const _: () = assert!(GROUP_VERSION_FINALIZED <= GROUP_VERSION_MAX);
const _: () = assert!(METADATA_VERSION_FINALIZED <= METADATA_VERSION_MAX);
const _: () = assert!(KRAFT_VERSION_MIN <= KRAFT_VERSION_FINALIZED);
const _: () = assert!(KRAFT_VERSION_FINALIZED <= KRAFT_VERSION_MAX);
const _: () = assert!(TRANSACTION_VERSION_MIN <= TRANSACTION_VERSION_FINALIZED);
const _: () = assert!(TRANSACTION_VERSION_FINALIZED <= TRANSACTION_VERSION_MAX);

/// One feature's supported range on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedFeature {
    pub name: &'static str,
    pub min_level: i16,
    pub max_level: i16,
}

/// Every feature this node supports, with its range.
///
/// `kraft.version` is listed at 0-0 although Kafka drops a feature whose max is 0: it is
/// a feature every KRaft node has (Kafka 4.0 lists it at 0-1), and listing it is what
/// makes `kafka-features describe` show it. ApiVersions below v4 leaves it out, as Kafka
/// does for any feature whose min is 0 (KAFKA-17492: older clients reject such ranges).
pub const SUPPORTED: &[SupportedFeature] = &[
    SupportedFeature {
        name: METADATA_VERSION,
        min_level: METADATA_VERSION_MIN,
        max_level: METADATA_VERSION_MAX,
    },
    SupportedFeature {
        name: KRAFT_VERSION,
        min_level: KRAFT_VERSION_MIN,
        max_level: KRAFT_VERSION_MAX,
    },
    SupportedFeature {
        name: TRANSACTION_VERSION,
        min_level: TRANSACTION_VERSION_MIN,
        max_level: TRANSACTION_VERSION_MAX,
    },
    SupportedFeature {
        name: GROUP_VERSION,
        min_level: GROUP_VERSION_MIN,
        max_level: GROUP_VERSION_MAX,
    },
];

/// The level a cluster finalizes `name` at until UpdateFeatures changes it (0 for a
/// feature this node does not know).
pub fn default_level(name: &str) -> i16 {
    match name {
        METADATA_VERSION => METADATA_VERSION_FINALIZED,
        KRAFT_VERSION => KRAFT_VERSION_FINALIZED,
        TRANSACTION_VERSION => TRANSACTION_VERSION_FINALIZED,
        GROUP_VERSION => GROUP_VERSION_FINALIZED,
        _ => 0,
    }
}

/// The finalized level of `name` in `image`.
pub fn finalized_level(image: &MetadataImage, name: &str) -> i16 {
    image
        .feature_levels
        .get(name)
        .copied()
        .unwrap_or_else(|| default_level(name))
}

/// The finalized level of every supported feature in `image`, level 0 included (the
/// ApiVersions encoder drops level-0 entries from the wire, as Kafka does).
pub fn finalized(image: &MetadataImage) -> Vec<(&'static str, i16)> {
    SUPPORTED
        .iter()
        .map(|feature| (feature.name, finalized_level(image, feature.name)))
        .collect()
}

/// The epoch of the finalized levels: the image's applied index, which only grows, so a
/// client never sees the epoch go back (Kafka's is the offset of the last level change;
/// ours also moves on other changes, which clients only compare for order). Never -1: -1 on the wire means "no finalized
/// features".
pub fn finalized_epoch(image: &MetadataImage) -> i64 {
    i64::try_from(image.applied_index).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finalized_level_is_within_its_supported_range() {
        let image = MetadataImage::default();
        let levels = finalized(&image);
        assert_eq!(levels.len(), SUPPORTED.len());
        for (name, level) in levels {
            let range = SUPPORTED.iter().find(|f| f.name == name).unwrap();
            assert!(
                range.min_level <= level && level <= range.max_level,
                "{name}"
            );
        }
    }

    #[test]
    fn unimplemented_features_are_not_advertised() {
        for name in ["share.version", "streams.version"] {
            assert!(SUPPORTED.iter().all(|f| f.name != name), "{name}");
        }
        let kraft = SUPPORTED.iter().find(|f| f.name == KRAFT_VERSION).unwrap();
        assert_eq!(
            kraft.max_level, 0,
            "KIP-853 dynamic voters are not implemented"
        );
        let transactions = SUPPORTED
            .iter()
            .find(|f| f.name == TRANSACTION_VERSION)
            .unwrap();
        assert_eq!((transactions.min_level, transactions.max_level), (0, 2));
        let groups = SUPPORTED.iter().find(|f| f.name == GROUP_VERSION).unwrap();
        assert_eq!((groups.min_level, groups.max_level), (0, 1));
    }

    #[test]
    fn the_image_overrides_the_default_level() {
        let mut image = MetadataImage::default();
        assert_eq!(
            finalized_level(&image, TRANSACTION_VERSION),
            TRANSACTION_VERSION_FINALIZED
        );
        image.feature_levels.insert(TRANSACTION_VERSION.into(), 0);
        assert_eq!(finalized_level(&image, TRANSACTION_VERSION), 0);
        assert!(finalized(&image).contains(&(TRANSACTION_VERSION, 0)));
        assert_eq!(finalized_level(&image, GROUP_VERSION), 1);
        assert_eq!(finalized_level(&image, "share.version"), 0);
    }

    #[test]
    fn the_epoch_follows_the_applied_index() {
        let image = MetadataImage {
            applied_index: 9,
            ..MetadataImage::default()
        };
        assert_eq!(finalized_epoch(&image), 9);
        assert_eq!(finalized_epoch(&MetadataImage::default()), 0);
    }
}
