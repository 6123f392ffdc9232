//! Kafka's rules for topic names (`org.apache.kafka.common.internals.Topic`).

pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// The controller's own log; clients may not create or delete it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_LENGTH_MAX {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_LENGTH_MAX} characters, \
             topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII \
             alphanumerics, '.', '_' and '-'"
        ));
    }
    if name == METADATA_TOPIC {
        return Err(format!("Creation of internal topic {name} is prohibited."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_name_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in [
            "",
            ".",
            "..",
            "bad/name",
            "sp ace",
            "ünï",
            &"a".repeat(250),
            METADATA_TOPIC,
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
