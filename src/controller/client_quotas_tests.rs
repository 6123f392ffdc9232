use super::*;
use crate::controller::commands::apply;

fn wire(parts: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    (parts.iter())
        .map(|(kind, name)| (kind.to_string(), name.map(str::to_string)))
        .collect()
}

fn entity(parts: &[(&str, Option<&str>)]) -> QuotaEntity {
    entity_from_wire(&wire(parts)).unwrap()
}

fn set(key: &str, value: f64) -> (String, f64, bool) {
    (key.to_string(), value, false)
}

fn remove(key: &str) -> (String, f64, bool) {
    (key.to_string(), 0.0, true)
}

fn alter(
    image: &mut MetadataImage,
    target: &QuotaEntity,
    ops: &[(String, f64, bool)],
) -> Result<(), ControllerError> {
    let command = plan_alter(target.clone(), ops)?;
    apply(image, &command).map(drop)
}

fn refused_message(result: Result<(), ControllerError>) -> String {
    match result {
        Err(ControllerError::InvalidRequest(message)) => message,
        other => panic!("expected INVALID_REQUEST, got {other:?}"),
    }
}

#[test]
fn entities_are_checked_as_kafka_checks_them() {
    let refused = |parts: &[(&str, Option<&str>)]| match entity_from_wire(&wire(parts)) {
        Err(ControllerError::InvalidRequest(message)) => message,
        other => panic!("{parts:?} accepted: {other:?}"),
    };
    assert_eq!(refused(&[]), "Invalid empty client quota entity");
    assert_eq!(
        refused(&[("topic", Some("t"))]),
        "Unhandled client quota entity type: topic"
    );
    assert_eq!(refused(&[(USER, Some(""))]), "Empty user not supported");
    assert!(refused(&[(USER, Some("a")), (USER, None)]).contains("duplicate entity entry user"));
    let both = entity(&[(CLIENT_ID, None), (USER, Some("alice"))]);
    assert_eq!(both.user, Some(QuotaName::Named("alice".into())));
    assert_eq!(both.client_id, Some(QuotaName::Default));
}

#[test]
fn combinations_and_keys_follow_the_entity_type() {
    let mut image = MetadataImage::default();
    let ip_and_user = entity(&[(IP, Some("10.0.0.1")), (USER, Some("a"))]);
    let message = refused_message(alter(
        &mut image,
        &ip_and_user,
        &[set(PRODUCER_BYTE_RATE, 1.0)],
    ));
    assert_eq!(message, "Invalid empty client quota entity");
    let client = entity(&[(CLIENT_ID, Some("c"))]);
    let message = refused_message(alter(
        &mut image,
        &client,
        &[set(CONNECTION_CREATION_RATE, 5.0)],
    ));
    assert_eq!(
        message,
        "Invalid configuration key connection_creation_rate"
    );
    let ip = entity(&[(IP, Some("10.0.0.1"))]);
    let message = refused_message(alter(&mut image, &ip, &[set(PRODUCER_BYTE_RATE, 5.0)]));
    assert_eq!(message, "Invalid configuration key producer_byte_rate");
    let bad_ip = entity(&[(IP, Some("not an address"))]);
    let message = refused_message(alter(
        &mut image,
        &bad_ip,
        &[set(CONNECTION_CREATION_RATE, 5.0)],
    ));
    assert!(message.contains("is not a valid IP"), "{message}");
    assert_eq!(image, MetadataImage::default(), "refusals change nothing");
    alter(&mut image, &ip, &[set(CONNECTION_CREATION_RATE, 5.0)]).unwrap();
    let user_client = entity(&[(USER, None), (CLIENT_ID, Some("c"))]);
    alter(&mut image, &user_client, &[set(REQUEST_PERCENTAGE, 12.5)]).unwrap();
    assert_eq!(image.client_quotas.len(), 2);
}

#[test]
fn values_must_be_positive_and_whole_for_long_keys() {
    let mut image = MetadataImage::default();
    let client = entity(&[(CLIENT_ID, Some("c"))]);
    for value in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let message = refused_message(alter(
            &mut image,
            &client,
            &[set(PRODUCER_BYTE_RATE, value)],
        ));
        assert!(
            message.contains("must be greater than 0"),
            "{value}: {message}"
        );
    }
    let message = refused_message(alter(&mut image, &client, &[set(PRODUCER_BYTE_RATE, 1.5)]));
    assert_eq!(
        message,
        "Configuration producer_byte_rate must be a Long value"
    );
    // A DOUBLE key takes fractions; a whole-number LONG is fine.
    let ops = [
        set(REQUEST_PERCENTAGE, 1.5),
        set(PRODUCER_BYTE_RATE, 1024.0),
    ];
    alter(&mut image, &client, &ops).unwrap();
    let message = refused_message(alter(
        &mut image,
        &client,
        &[set(CONSUMER_BYTE_RATE, 1.0), remove(CONSUMER_BYTE_RATE)],
    ));
    assert!(
        message.starts_with("Duplicate quota key consumer_byte_rate"),
        "{message}"
    );
    // One bad key refuses the whole entity: the good key beside it is not applied.
    let ops = [set(CONSUMER_BYTE_RATE, 10.0), set(PRODUCER_BYTE_RATE, -5.0)];
    refused_message(alter(&mut image, &client, &ops));
    assert!(!image.client_quotas[&client].contains_key(CONSUMER_BYTE_RATE));
}

#[test]
fn apply_sets_and_removes_keys_and_is_idempotent() {
    let mut image = MetadataImage::default();
    let client = entity(&[(CLIENT_ID, Some("c"))]);
    let command = plan_alter(client.clone(), &[set(PRODUCER_BYTE_RATE, 100.0)]).unwrap();
    apply(&mut image, &command).unwrap();
    let once = image.clone();
    assert_eq!(apply(&mut image, &command).unwrap(), CommandOutcome::Done);
    assert_eq!(image, once, "a retried command changes nothing more");
    assert_eq!(image.client_quotas[&client][PRODUCER_BYTE_RATE], 100.0);
    let removal = plan_alter(client.clone(), &[remove(PRODUCER_BYTE_RATE)]).unwrap();
    apply(&mut image, &removal).unwrap();
    assert!(
        image.client_quotas.is_empty(),
        "an entity without keys is dropped"
    );
    apply(&mut image, &removal).unwrap();
    assert!(image.client_quotas.is_empty());
    // Removing a key that was never set leaves no empty entity behind.
    let absent = plan_alter(client, &[remove(CONSUMER_BYTE_RATE)]).unwrap();
    apply(&mut image, &absent).unwrap();
    assert!(image.client_quotas.is_empty());
}

#[test]
fn an_invalid_command_in_the_log_is_refused_at_apply() {
    // A command built by hand (an older planner, a corrupt forwarder) is checked again.
    let mut image = MetadataImage::default();
    let command = MetadataCommand::AlterClientQuotas {
        entity: QuotaEntity::default(),
        changes: [(PRODUCER_BYTE_RATE.to_string(), Some(1.0))].into(),
    };
    assert!(apply(&mut image, &command).is_err());
    assert_eq!(image, MetadataImage::default());
}

#[test]
fn the_image_and_command_survive_json() {
    let mut image = MetadataImage::default();
    let target = entity(&[(USER, Some("u")), (CLIENT_ID, None)]);
    let command = plan_alter(target, &[set(REQUEST_PERCENTAGE, 0.25)]).unwrap();
    apply(&mut image, &command).unwrap();
    let json = serde_json::to_string(&image).unwrap();
    let back: MetadataImage = serde_json::from_str(&json).unwrap();
    assert_eq!(back, image);
    let json = serde_json::to_string(&command).unwrap();
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(&json).unwrap(),
        command
    );
    // An image written before client quotas existed reads as having none.
    let mut old: serde_json::Value = serde_json::to_value(MetadataImage::default()).unwrap();
    old.as_object_mut().unwrap().remove("client_quotas");
    let old: MetadataImage = serde_json::from_value(old).unwrap();
    assert!(old.client_quotas.is_empty());
}

fn described(
    quotas: &ClientQuotas,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Vec<String> {
    let components: Vec<(String, i8, Option<String>)> = (components.iter())
        .map(|(kind, match_type, name)| (kind.to_string(), *match_type, name.map(str::to_string)))
        .collect();
    let found = describe(quotas, &components, strict).unwrap();
    found.iter().map(|(entity, _)| entity.describe()).collect()
}

#[test]
fn describe_matches_exact_default_and_specified_as_kafka() {
    let mut image = MetadataImage::default();
    let entities = [
        entity(&[(USER, Some("alice"))]),
        entity(&[(USER, None)]),
        entity(&[(USER, Some("alice")), (CLIENT_ID, Some("app"))]),
        entity(&[(CLIENT_ID, Some("app"))]),
        entity(&[(CLIENT_ID, None)]),
        entity(&[(IP, Some("10.0.0.1"))]),
    ];
    for target in &entities {
        let key = if target.ip.is_some() {
            CONNECTION_CREATION_RATE
        } else {
            PRODUCER_BYTE_RATE
        };
        alter(&mut image, target, &[set(key, 10.0)]).unwrap();
    }
    let quotas = &image.client_quotas;
    assert_eq!(
        described(quotas, &[], false).len(),
        6,
        "no filter, not strict: all"
    );
    assert!(
        described(quotas, &[], true).is_empty(),
        "strict empty filter: none"
    );
    let alice = described(quotas, &[(USER, MATCH_EXACT, Some("alice"))], false);
    assert_eq!(alice.len(), 2, "{alice:?}");
    let alice = described(quotas, &[(USER, MATCH_EXACT, Some("alice"))], true);
    assert_eq!(alice, ["ClientQuotaEntity(entries={user=alice})"]);
    let default_user = described(quotas, &[(USER, MATCH_DEFAULT, None)], false);
    assert_eq!(
        default_user,
        ["ClientQuotaEntity(entries={user=<default>})"]
    );
    // SPECIFIED: the type present with any name, the default included (as Kafka's image).
    let any_client = described(quotas, &[(CLIENT_ID, MATCH_SPECIFIED, None)], true);
    assert_eq!(any_client.len(), 2, "{any_client:?}");
    let pair = [
        (USER, MATCH_SPECIFIED, None),
        (CLIENT_ID, MATCH_EXACT, Some("app")),
    ];
    assert_eq!(described(quotas, &pair, true).len(), 1);
    assert_eq!(
        described(quotas, &[(IP, MATCH_SPECIFIED, None)], false).len(),
        1
    );
}

#[test]
fn describe_refuses_malformed_filters_with_kafka_errors() {
    let quotas = ClientQuotas::new();
    let run = |components: &[(&str, i8, Option<&str>)]| {
        let components: Vec<(String, i8, Option<String>)> = (components.iter())
            .map(|(k, m, n)| (k.to_string(), *m, n.map(str::to_string)))
            .collect();
        describe(&quotas, &components, false).map(drop)
    };
    assert!(matches!(
        run(&[("topic", MATCH_EXACT, Some("x"))]),
        Err(FilterError::Unsupported(_))
    ));
    assert!(matches!(
        run(&[(USER, 7, None)]),
        Err(FilterError::Unsupported(_))
    ));
    assert!(matches!(
        run(&[("", MATCH_EXACT, Some("x"))]),
        Err(FilterError::Invalid(_))
    ));
    assert!(matches!(
        run(&[(USER, MATCH_EXACT, None)]),
        Err(FilterError::Invalid(_))
    ));
    assert!(matches!(
        run(&[(USER, MATCH_DEFAULT, Some("x"))]),
        Err(FilterError::Invalid(_))
    ));
    assert!(matches!(
        run(&[(USER, MATCH_SPECIFIED, Some("x"))]),
        Err(FilterError::Invalid(_))
    ));
    let twice = [(USER, MATCH_SPECIFIED, None), (USER, MATCH_DEFAULT, None)];
    assert!(matches!(run(&twice), Err(FilterError::Invalid(_))));
    let mixed = [
        (IP, MATCH_SPECIFIED, None),
        (CLIENT_ID, MATCH_DEFAULT, None),
    ];
    assert!(matches!(run(&mixed), Err(FilterError::Invalid(_))));
}
