use super::*;
use crate::controller::commands::{apply, register_live_broker};

fn broker(pairs: &[(&str, &str)]) -> BrokerConfig {
    BrokerConfig::from_pairs(pairs)
}

fn image_with_topic(configs: &[(&str, &str)]) -> MetadataImage {
    let mut image = MetadataImage::default();
    register_live_broker(&mut image, 1);
    let create = MetadataCommand::CreateTopic {
        name: "t".into(),
        id: Uuid::from_u128(5),
        assignments: vec![vec![1]],
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    apply(&mut image, &create).unwrap();
    image
}

fn ops(list: &[(&str, ConfigOp)]) -> Vec<(String, ConfigOp)> {
    list.iter()
        .map(|(k, op)| (k.to_string(), op.clone()))
        .collect()
}

fn set(value: &str) -> ConfigOp {
    ConfigOp::Set(value.into())
}

fn incremental(
    image: &mut MetadataImage,
    target: ConfigTarget,
    list: &[(&str, ConfigOp)],
) -> Result<(), ControllerError> {
    let command = plan_incremental(image, &broker(&[]), target, &ops(list))?;
    apply(image, &command).map(drop)
}

fn topic_configs(image: &MetadataImage) -> Vec<(String, String)> {
    image.topics["t"].configs.clone().into_iter().collect()
}

#[test]
fn set_and_delete_change_only_the_named_keys() {
    let mut image = image_with_topic(&[("segment.bytes", "100000"), ("retention.ms", "5")]);
    let target = ConfigTarget::Topic("t");
    let list = [("retention.ms", set("60000")), ("flush.ms", set("10"))];
    incremental(&mut image, target, &list).unwrap();
    incremental(&mut image, target, &[("segment.bytes", ConfigOp::Delete)]).unwrap();
    let expected = [("flush.ms", "10"), ("retention.ms", "60000")];
    let expected: Vec<(String, String)> = (expected.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(topic_configs(&image), expected);
}

#[test]
fn append_and_subtract_edit_lists_from_the_default() {
    let mut image = image_with_topic(&[]);
    let target = ConfigTarget::Topic("t");
    let append = ConfigOp::Append("compact".into());
    incremental(&mut image, target, &[("cleanup.policy", append.clone())]).unwrap();
    assert_eq!(
        image.topics["t"].configs["cleanup.policy"],
        "delete,compact"
    );
    incremental(&mut image, target, &[("cleanup.policy", append)]).unwrap();
    assert_eq!(
        image.topics["t"].configs["cleanup.policy"],
        "delete,compact"
    );
    let subtract = ConfigOp::Subtract("delete".into());
    incremental(&mut image, target, &[("cleanup.policy", subtract)]).unwrap();
    assert_eq!(image.topics["t"].configs["cleanup.policy"], "compact");
    let error = incremental(
        &mut image,
        target,
        &[("retention.ms", ConfigOp::Append("1".into()))],
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Can't APPEND to key retention.ms because its type is not LIST."
    );
}

#[test]
fn kafka_errors_for_bad_keys_values_and_topics() {
    let mut image = image_with_topic(&[]);
    let before = image.clone();
    let target = ConfigTarget::Topic("t");
    let unknown = incremental(&mut image, target, &[("no.such", set("1"))]).unwrap_err();
    assert!(matches!(&unknown, ControllerError::InvalidConfig(m)
        if m == "Unknown topic config name: no.such"));
    let bad = incremental(&mut image, target, &[("retention.ms", set("soon"))]).unwrap_err();
    assert!(matches!(bad, ControllerError::InvalidConfig(_)));
    let missing = ConfigTarget::Topic("gone");
    let error = incremental(&mut image, missing, &[("retention.ms", set("1"))]).unwrap_err();
    assert!(matches!(error, ControllerError::UnknownTopic(name) if name == "gone"));
    assert_eq!(image, before);
}

#[test]
fn replace_all_removes_keys_not_given() {
    let mut image = image_with_topic(&[("segment.bytes", "100000"), ("retention.ms", "5")]);
    let entries = vec![("retention.ms".to_string(), "7".to_string())];
    let command = plan_replace(&image, &broker(&[]), ConfigTarget::Topic("t"), &entries).unwrap();
    apply(&mut image, &command).unwrap();
    assert_eq!(
        topic_configs(&image),
        [("retention.ms".to_string(), "7".to_string())]
    );
}

#[test]
fn a_recreated_topic_is_not_altered_by_an_old_plan() {
    let mut image = image_with_topic(&[]);
    let list = ops(&[("retention.ms", set("1"))]);
    let command = plan_incremental(&image, &broker(&[]), ConfigTarget::Topic("t"), &list).unwrap();
    let delete = MetadataCommand::DeleteTopic {
        name: "t".into(),
        id: None,
    };
    apply(&mut image, &delete).unwrap();
    let recreate = MetadataCommand::CreateTopic {
        name: "t".into(),
        id: Uuid::from_u128(6),
        assignments: vec![vec![1]],
        configs: BTreeMap::new(),
    };
    apply(&mut image, &recreate).unwrap();
    assert!(apply(&mut image, &command).is_err());
    assert!(image.topics["t"].configs.is_empty());
}

#[test]
fn broker_configs_only_the_live_ones() {
    let mut image = image_with_topic(&[]);
    let default = ConfigTarget::Broker("");
    incremental(&mut image, default, &[("log.retention.ms", set("1000"))]).unwrap();
    incremental(
        &mut image,
        ConfigTarget::Broker("1"),
        &[("message.max.bytes", set("5"))],
    )
    .unwrap();
    assert_eq!(image.broker_configs[""]["log.retention.ms"], "1000");
    assert_eq!(image.broker_configs["1"]["message.max.bytes"], "5");
    let refused = incremental(&mut image, default, &[("log.dirs", set("/x"))]).unwrap_err();
    assert!(matches!(&refused, ControllerError::InvalidRequest(m)
        if m == "Cannot update these configs dynamically: Set(log.dirs)"));
    let bad = incremental(&mut image, default, &[("log.retention.ms", set("x"))]).unwrap_err();
    assert!(matches!(bad, ControllerError::InvalidRequest(_)));
    let negative = incremental(
        &mut image,
        default,
        &[("log.cleaner.delete.retention.ms", set("-1"))],
    );
    assert!(
        matches!(negative, Err(ControllerError::InvalidRequest(m)) if m.contains("at least 0"))
    );
    // Removing a key that could not be set is a no-op, as in Kafka.
    incremental(&mut image, default, &[("log.dirs", ConfigOp::Delete)]).unwrap();
    let name = incremental(&mut image, ConfigTarget::Broker("b1"), &[]).unwrap_err();
    assert!(matches!(name, ControllerError::InvalidRequest(_)));
    incremental(
        &mut image,
        default,
        &[("log.retention.ms", ConfigOp::Delete)],
    )
    .unwrap();
    assert!(!image.broker_configs.contains_key(""));
}

#[test]
fn the_command_reads_back_from_json() {
    let command = MetadataCommand::AlterConfigs {
        resource: ConfigResource::Broker { name: "".into() },
        changes: [("a".to_string(), None), ("b".to_string(), Some("1".into()))]
            .into_iter()
            .collect(),
        expected: Some([("a".to_string(), "0".to_string())].into_iter().collect()),
    };
    let json = serde_json::to_string(&command).unwrap();
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(&json).unwrap(),
        command
    );
    // A command logged before `expected` existed reads as unchecked.
    let mut old = serde_json::to_value(&command).unwrap();
    old["AlterConfigs"]
        .as_object_mut()
        .unwrap()
        .remove("expected");
    match serde_json::from_value::<MetadataCommand>(old).unwrap() {
        MetadataCommand::AlterConfigs { expected, .. } => assert_eq!(expected, None),
        other => panic!("{other:?}"),
    }
    // An image written before dynamic broker configs existed still reads.
    let mut old = serde_json::to_value(MetadataImage::default()).unwrap();
    old.as_object_mut().unwrap().remove("broker_configs");
    let image: MetadataImage = serde_json::from_value(old).unwrap();
    assert!(image.broker_configs.is_empty());
}

#[test]
fn a_plan_on_a_config_that_changed_since_is_refused_and_replanned() {
    let mut image = image_with_topic(&[("cleanup.policy", "compact")]);
    let target = ConfigTarget::Topic("t");
    let first = ops(&[("retention.ms", set("5"))]);
    let first = plan_incremental(&image, &broker(&[]), target, &first).unwrap();
    let append = ops(&[("cleanup.policy", ConfigOp::Append("delete".into()))]);
    let second = plan_incremental(&image, &broker(&[]), target, &append).unwrap();
    // Replace-all planned before `first` would silently drop its retention.ms.
    let replace = [("flush.ms".to_string(), "5".to_string())];
    let stale = plan_replace(&image, &broker(&[]), target, &replace).unwrap();
    apply(&mut image, &first).unwrap();
    let before = image.clone();
    let refused = apply(&mut image, &second).unwrap_err();
    assert!(
        matches!(&refused, ControllerError::ConfigChanged(name) if name == "the configs of topic t")
    );
    assert!(matches!(
        apply(&mut image, &stale),
        Err(ControllerError::ConfigChanged(_))
    ));
    assert_eq!(image, before, "a refused command changes nothing");
    // Planned again against the new image, both changes stand.
    let replanned = plan_incremental(&image, &broker(&[]), target, &append).unwrap();
    apply(&mut image, &replanned).unwrap();
    let expected = [("cleanup.policy", "compact,delete"), ("retention.ms", "5")];
    let expected: Vec<(String, String)> = (expected.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(topic_configs(&image), expected);
    // The same command again (a forwarded command retried) finds its own effect.
    apply(&mut image, &replanned).unwrap();
    assert_eq!(topic_configs(&image), expected);
}

#[test]
fn broker_config_plans_are_checked_against_their_own_resource() {
    let mut image = image_with_topic(&[]);
    let default = ConfigTarget::Broker("");
    let node = ConfigTarget::Broker("1");
    let retention = ops(&[("log.retention.ms", set("1000"))]);
    let first = plan_incremental(&image, &broker(&[]), default, &retention).unwrap();
    let other = plan_incremental(&image, &broker(&[]), node, &retention).unwrap();
    let later = ops(&[("log.retention.ms", set("2000"))]);
    let stale = plan_incremental(&image, &broker(&[]), default, &later).unwrap();
    apply(&mut image, &first).unwrap();
    // Another resource's change does not make a plan stale.
    apply(&mut image, &other).unwrap();
    let refused = apply(&mut image, &stale).unwrap_err();
    assert!(
        matches!(&refused, ControllerError::ConfigChanged(name) if name == "the brokers' default configs")
    );
    assert_eq!(image.broker_configs[""]["log.retention.ms"], "1000");
    assert_eq!(image.broker_configs["1"]["log.retention.ms"], "1000");
}

/// A group's configs are validated over the broker's bounds (`group.consumer.*`), kept
/// per group whether or not the group exists, and the group's entry goes with its last key.
#[test]
fn group_configs_are_validated_kept_per_group_and_removed_with_their_last_key() {
    let mut image = MetadataImage::default();
    let target = ConfigTarget::Group("g");
    let session = "consumer.session.timeout.ms";
    incremental(&mut image, target, &[(session, set("50000"))]).unwrap();
    assert_eq!(image.group_configs["g"][session], "50000");
    // Kafka's bounds by default: 45 s to 60 s.
    let refused = incremental(&mut image, target, &[(session, set("44999"))]).unwrap_err();
    assert!(matches!(&refused, ControllerError::InvalidConfig(m) if m.contains("greater than")));
    let unknown = incremental(&mut image, target, &[("retention.ms", set("1"))]).unwrap_err();
    assert!(matches!(unknown, ControllerError::InvalidConfig(_)));
    let append = [(session, ConfigOp::Append("1".into()))];
    let not_a_list = incremental(&mut image, target, &append).unwrap_err();
    assert!(matches!(not_a_list, ControllerError::InvalidConfig(_)));
    let nameless = ConfigTarget::Group("");
    let nameless = incremental(&mut image, nameless, &[(session, set("50000"))]).unwrap_err();
    assert!(matches!(nameless, ControllerError::InvalidRequest(_)));
    // The broker's own bounds decide.
    let wide = broker(&[("group.consumer.min.session.timeout.ms", "10000")]);
    let ops = ops(&[(session, set("10000"))]);
    let command = plan_incremental(&image, &wide, target, &ops).unwrap();
    apply(&mut image, &command).unwrap();
    assert_eq!(image.group_configs["g"][session], "10000");
    incremental(&mut image, target, &[(session, ConfigOp::Delete)]).unwrap();
    assert!(image.group_configs.is_empty());
}
