use super::*;
use crate::controller::commands::apply;
use crate::controller::features::{
    KRAFT_VERSION, METADATA_VERSION_FINALIZED, TRANSACTION_VERSION, TRANSACTION_VERSION_FINALIZED,
};

fn update(name: &str, level: i16, upgrade: Option<UpgradeType>) -> FeatureUpdate {
    FeatureUpdate {
        name: name.into(),
        level,
        upgrade,
    }
}

fn run(image: &mut MetadataImage, updates: &[FeatureUpdate]) -> Result<(), String> {
    let planned = plan_update_features(image, 1, updates).map_err(|e| e.to_string())?;
    match planned {
        Some(command) => apply(image, &command).map(drop).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

const UPGRADE: Option<UpgradeType> = Some(UpgradeType::Upgrade);
const SAFE: Option<UpgradeType> = Some(UpgradeType::SafeDowngrade);
const UNSAFE: Option<UpgradeType> = Some(UpgradeType::UnsafeDowngrade);

#[test]
fn transaction_version_goes_down_and_up_with_the_right_upgrade_type() {
    let mut image = MetadataImage::default();
    assert_eq!(TRANSACTION_VERSION_FINALIZED, 2);
    let refused = run(&mut image, &[update(TRANSACTION_VERSION, 1, UPGRADE)]).unwrap_err();
    assert_eq!(
        refused,
        "Invalid update version 1 for feature transaction.version. Can't downgrade the \
         version of this feature without setting the upgrade type to either safe or unsafe \
         downgrade."
    );
    run(&mut image, &[update(TRANSACTION_VERSION, 0, SAFE)]).unwrap();
    assert_eq!(finalized_level(&image, TRANSACTION_VERSION), 0);
    let refused = run(&mut image, &[update(TRANSACTION_VERSION, 2, SAFE)]).unwrap_err();
    assert!(
        refused.ends_with("Can't downgrade to a newer version."),
        "{refused}"
    );
    run(&mut image, &[update(TRANSACTION_VERSION, 2, UPGRADE)]).unwrap();
    assert_eq!(finalized_level(&image, TRANSACTION_VERSION), 2);
    // The same level again is a no-op that succeeds.
    run(&mut image, &[update(TRANSACTION_VERSION, 2, UPGRADE)]).unwrap();
    let too_high = run(&mut image, &[update(TRANSACTION_VERSION, 3, UPGRADE)]).unwrap_err();
    assert_eq!(
        too_high,
        "Invalid update version 3 for feature transaction.version. Local controller 1 only \
         supports versions SupportedVersionRange[min_version:0, max_version:2]"
    );
}

#[test]
fn metadata_version_stays_at_the_level_this_node_implements() {
    let mut image = MetadataImage::default();
    let current = METADATA_VERSION_FINALIZED;
    run(&mut image, &[update(METADATA_VERSION, current, UPGRADE)]).unwrap();
    let safe = run(&mut image, &[update(METADATA_VERSION, current - 1, SAFE)]).unwrap_err();
    assert_eq!(
        safe,
        format!(
            "Invalid metadata.version {}. Refusing to perform the requested downgrade because \
             it might delete metadata information.",
            current - 1
        )
    );
    let unsafe_ = run(&mut image, &[update(METADATA_VERSION, current - 1, UNSAFE)]).unwrap_err();
    assert!(unsafe_.ends_with("Unsafe metadata downgrade is not supported in this version."));
    let up = run(
        &mut image,
        &[update(METADATA_VERSION, current + 1, UPGRADE)],
    )
    .unwrap_err();
    assert!(up.contains("only supports versions"), "{up}");
    assert_eq!(finalized_level(&image, METADATA_VERSION), current);
}

#[test]
fn unknown_features_only_at_zero_and_kraft_version_only_at_zero() {
    let mut image = MetadataImage::default();
    run(&mut image, &[update("share.version", 0, UPGRADE)]).unwrap();
    assert!(!image.feature_levels.contains_key("share.version"));
    let share = run(&mut image, &[update("share.version", 1, UPGRADE)]).unwrap_err();
    assert_eq!(
        share,
        "Invalid update version 1 for feature share.version. Local controller 1 does not \
         support this feature."
    );
    let kraft = run(&mut image, &[update(KRAFT_VERSION, 1, UPGRADE)]).unwrap_err();
    assert!(kraft.contains("only supports versions"), "{kraft}");
}

#[test]
fn bad_requests_refuse_the_whole_request() {
    let mut image = MetadataImage::default();
    let unknown_type = run(&mut image, &[update(TRANSACTION_VERSION, 1, None)]).unwrap_err();
    assert!(unknown_type.ends_with("The controller does not support the given upgrade type."));
    let negative = run(&mut image, &[update(TRANSACTION_VERSION, -1, SAFE)]).unwrap_err();
    assert!(negative.ends_with("A feature version cannot be less than 0."));
    // One bad update refuses the good one beside it.
    let mixed = [
        update(TRANSACTION_VERSION, 1, SAFE),
        update("share.version", 1, UPGRADE),
    ];
    assert!(run(&mut image, &mixed).is_err());
    assert_eq!(image, MetadataImage::default());
}

#[test]
fn apply_refuses_levels_this_node_cannot_run_at() {
    let mut image = MetadataImage::default();
    let before = image.clone();
    for (name, level) in [
        (TRANSACTION_VERSION, 9),
        (METADATA_VERSION, METADATA_VERSION_FINALIZED - 1),
        ("group.version", 2),
        ("share.version", 1),
    ] {
        let command = MetadataCommand::UpdateFeatures {
            levels: [(name.to_string(), level)].into_iter().collect(),
            expected: None,
        };
        let refused = apply(&mut image, &command).unwrap_err();
        assert!(matches!(refused, ControllerError::InvalidUpdateVersion(_)));
        assert_eq!(image, before);
    }
    // The command reads back from the log's JSON.
    let command = MetadataCommand::UpdateFeatures {
        levels: [(TRANSACTION_VERSION.to_string(), 1)].into_iter().collect(),
        expected: Some([(TRANSACTION_VERSION.to_string(), 2)].into_iter().collect()),
    };
    let json = serde_json::to_string(&command).unwrap();
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(&json).unwrap(),
        command
    );
}

#[test]
fn unknown_features_at_zero_plan_nothing() {
    let image = MetadataImage::default();
    let many: Vec<FeatureUpdate> = (0..1000)
        .map(|i| update(&format!("no.such.feature.{i}"), 0, UPGRADE))
        .collect();
    assert_eq!(plan_update_features(&image, 1, &many).unwrap(), None);
}

#[test]
fn a_plan_on_a_level_that_changed_since_is_refused_unless_already_done() {
    let mut image = MetadataImage::default();
    let to_one = [update(TRANSACTION_VERSION, 1, SAFE)];
    let stale = plan_update_features(&image, 1, &to_one).unwrap().unwrap();
    run(&mut image, &[update(TRANSACTION_VERSION, 0, SAFE)]).unwrap();
    let before = image.clone();
    // Planned as a downgrade from 2, it would now be an upgrade from 0.
    let refused = apply(&mut image, &stale).unwrap_err();
    assert!(
        matches!(refused, ControllerError::ConfigChanged(_)),
        "{refused}"
    );
    assert_eq!(image, before);
    // Applied twice (a retried command), the second finds its own effect.
    let mut image = MetadataImage::default();
    let command = plan_update_features(&image, 1, &to_one).unwrap().unwrap();
    apply(&mut image, &command).unwrap();
    apply(&mut image, &command).unwrap();
    assert_eq!(finalized_level(&image, TRANSACTION_VERSION), 1);
}
