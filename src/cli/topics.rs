//! `kafka-topics`: create, list, describe, alter (partition count) and delete topics,
//! with Kafka 4's flags, output lines and error wording (its `TopicCommand`).
//!
//! Not supported: `--command-config`, `--replica-assignment`, `--topic-id`, the
//! `--*-partitions` report filters, `--topics-with-overrides`. `--topic` is a topic name
//! or a comma-separated list of names, not a regular expression.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::args::{self, FlagSpec, Flags, switch, valued};
use super::cluster::{Cluster, REQUEST_TIMEOUT_DEFAULT, ids};
use super::error::{CliError, check_code};
use crate::types::kafka_uuid_string;

/// `println!` that ignores a closed stdout (`kafka-topics --list | head -1`) instead of
/// panicking on it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

const FLAGS: &[FlagSpec] = &[
    valued("bootstrap-server"),
    switch("list"),
    switch("create"),
    switch("delete"),
    switch("alter"),
    switch("describe"),
    valued("topic"),
    valued("partitions"),
    valued("replication-factor"),
    valued("config"),
    switch("if-not-exists"),
    switch("if-exists"),
    switch("exclude-internal"),
    switch("help"),
];
const ACTIONS: [&str; 5] = ["list", "describe", "create", "alter", "delete"];
/// How long the broker may take over a create, delete or partition change (Kafka's
/// admin client waits `default.api.timeout.ms`, 60 s; its requests carry 30 s).
const ADMIN_TIMEOUT_MS: i32 = 30_000;
const CREATE_TOPICS_VERSIONS: (i16, i16) = (2, 7);
const DELETE_TOPICS_VERSIONS: (i16, i16) = (1, 6);
/// DeleteTopics v6 names topics in `topics` (name or id) instead of `topic_names`.
const DELETE_TOPICS_BY_STATE_VERSION: i16 = 6;
const CREATE_PARTITIONS_VERSIONS: (i16, i16) = (0, 3);
const DESCRIBE_CONFIGS_VERSIONS: (i16, i16) = (1, 4);
/// `ConfigSource.DEFAULT_CONFIG`: the entries `--describe` leaves out of "Configs:".
const CONFIG_SOURCE_DEFAULT: i8 = 5;
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// The admin client's `partitionSizeLimitPerResponse` default for `--describe`.
const PARTITIONS_PER_RESPONSE: i32 = 2000;

/// How a failure is shown: Kafka's `TopicCommand` prints argument problems alone on
/// stderr, everything else as "Error while executing topic command : ..." on stdout.
enum Failure {
    Argument(String),
    Command(String),
}

impl From<CliError> for Failure {
    fn from(error: CliError) -> Failure {
        match error {
            CliError::Usage(message) => Failure::Argument(message),
            other => Failure::Command(other.to_string()),
        }
    }
}

pub fn run(arguments: &[String]) -> i32 {
    match execute(arguments) {
        Ok(()) => 0,
        Err(Failure::Argument(message)) => {
            eprintln!("{message}");
            1
        }
        Err(Failure::Command(message)) => {
            say!("Error while executing topic command : {message}");
            1
        }
    }
}

fn execute(arguments: &[String]) -> Result<(), Failure> {
    let flags = args::parse(arguments, FLAGS)?;
    if flags.has("help") {
        eprintln!("{}", usage());
        return Ok(());
    }
    let action = action(&flags)?;
    let bootstrap = flags.required("bootstrap-server")?;
    let command = TopicCommand::from_flags(&flags, action)?;
    let mut cluster = Cluster::connect(bootstrap, REQUEST_TIMEOUT_DEFAULT)?;
    match action {
        "create" => command.create(&mut cluster),
        "list" => command.list(&mut cluster),
        "describe" => command.describe(&mut cluster),
        "alter" => command.alter(&mut cluster),
        _ => command.delete(&mut cluster),
    }
}

fn action(flags: &Flags) -> Result<&'static str, Failure> {
    let given: Vec<&str> = ACTIONS.into_iter().filter(|a| flags.has(a)).collect();
    match given.as_slice() {
        [one] => Ok(one),
        _ => Err(Failure::Argument(
            "Command must include exactly one action: --list, --describe, --create, --alter \
             or --delete"
                .into(),
        )),
    }
}

fn usage() -> String {
    let names: Vec<String> = FLAGS
        .iter()
        .map(|flag| format!("--{}", flag.name))
        .collect();
    format!(
        "This tool helps to create, delete, describe, or change a topic.\nOptions: {}",
        names.join(" ")
    )
}

/// What one invocation asks for, checked before any connection is made.
#[derive(Debug, PartialEq, Eq)]
pub struct TopicCommand {
    /// `--topic`: names (comma-separated in the flag); empty means every topic.
    pub topics: Vec<String>,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
    pub if_not_exists: bool,
    pub if_exists: bool,
    pub exclude_internal: bool,
}

impl TopicCommand {
    fn from_flags(flags: &Flags, action: &str) -> Result<TopicCommand, CliError> {
        let topics: Vec<String> = flags
            .value("topic")
            .map(|value| {
                value
                    .split(',')
                    .map(|name| name.trim().trim_matches('"').to_string())
                    .filter(|name| !name.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if matches!(action, "create" | "alter" | "delete") && topics.is_empty() {
            return Err(CliError::Usage(
                "Missing required argument \"[topic]\"".into(),
            ));
        }
        if action == "create" && topics.len() != 1 {
            return Err(CliError::Usage("--create takes exactly one --topic".into()));
        }
        let partitions = flags.number::<i32>("partitions")?;
        if action == "alter" && partitions.is_none() {
            return Err(CliError::Usage(
                "--alter needs --partitions (topic configs are changed with kafka-configs)".into(),
            ));
        }
        let replication_factor = match flags.number::<i32>("replication-factor")? {
            Some(factor) if !(1..=i16::MAX as i32).contains(&factor) => {
                return Err(CliError::Usage(format!(
                    "The replication factor must be between 1 and {} inclusive",
                    i16::MAX
                )));
            }
            factor => factor.map(|factor| factor as i16),
        };
        if partitions.is_some_and(|count| count < 1) {
            return Err(CliError::Usage(
                "The partitions must be greater than 0".into(),
            ));
        }
        Ok(TopicCommand {
            topics,
            partitions,
            replication_factor,
            configs: parse_configs(flags.values("config"))?,
            if_not_exists: flags.has("if-not-exists"),
            if_exists: flags.has("if-exists"),
            exclude_internal: flags.has("exclude-internal"),
        })
    }

    fn create(&self, cluster: &mut Cluster) -> Result<(), Failure> {
        let name = &self.topics[0];
        if name.contains('.') || name.contains('_') {
            say!(
                "WARNING: Due to limitations in metric names, topics with a period ('.') or \
                 underscore ('_') could collide. To avoid issues it is best to use either, \
                 but not both."
            );
        }
        let configs = self
            .configs
            .iter()
            .map(|(key, value)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_value(Some(StrBytes::from_string(value.clone())))
            })
            .collect();
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(self.partitions.unwrap_or(-1))
            .with_replication_factor(self.replication_factor.unwrap_or(-1))
            .with_configs(configs);
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let (low, high) = CREATE_TOPICS_VERSIONS;
        let connection = cluster.any();
        let version = connection.version(ApiKey::CreateTopics, low, high)?;
        let response: CreateTopicsResponse =
            connection.call(ApiKey::CreateTopics, version, &request)?;
        let result = response
            .topics
            .first()
            .ok_or_else(|| CliError::Protocol("CreateTopics answered no topic".into()))?;
        let message = result.error_message.as_deref();
        match check_code(result.error_code, message) {
            Ok(()) => {
                say!("Created topic {name}.");
                Ok(())
            }
            Err(error)
                if self.if_not_exists
                    && error.kafka_error() == Some(ResponseError::TopicAlreadyExists) =>
            {
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    fn list(&self, cluster: &mut Cluster) -> Result<(), Failure> {
        let names = self.matching_topics(cluster)?;
        // Kafka prints the names joined by newlines with println: an empty line if none.
        say!("{}", names.join("\n"));
        Ok(())
    }

    fn delete(&self, cluster: &mut Cluster) -> Result<(), Failure> {
        let names = self.existing_topics(cluster)?;
        if names.is_empty() {
            return Ok(());
        }
        let (low, high) = DELETE_TOPICS_VERSIONS;
        let connection = cluster.any();
        let version = connection.version(ApiKey::DeleteTopics, low, high)?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
        if version >= DELETE_TOPICS_BY_STATE_VERSION {
            request.topics = names
                .iter()
                .map(|name| DeleteTopicState::default().with_name(Some(topic_name(name))))
                .collect();
        } else {
            request.topic_names = names.iter().map(|name| topic_name(name)).collect();
        }
        let response: DeleteTopicsResponse =
            connection.call(ApiKey::DeleteTopics, version, &request)?;
        for result in &response.responses {
            check_code(result.error_code, result.error_message.as_deref())?;
        }
        Ok(())
    }

    fn alter(&self, cluster: &mut Cluster) -> Result<(), Failure> {
        let names = self.existing_topics(cluster)?;
        if names.is_empty() {
            return Ok(());
        }
        let count = self.partitions.expect("checked in from_flags");
        let topics = names
            .iter()
            .map(|name| {
                CreatePartitionsTopic::default()
                    .with_name(topic_name(name))
                    .with_count(count)
                    .with_assignments(None)
            })
            .collect();
        let request = CreatePartitionsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let (low, high) = CREATE_PARTITIONS_VERSIONS;
        let connection = cluster.any();
        let version = connection.version(ApiKey::CreatePartitions, low, high)?;
        let response: CreatePartitionsResponse =
            connection.call(ApiKey::CreatePartitions, version, &request)?;
        for result in &response.results {
            check_code(result.error_code, result.error_message.as_deref())?;
        }
        Ok(())
    }

    fn describe(&self, cluster: &mut Cluster) -> Result<(), Failure> {
        let names = self.existing_topics(cluster)?;
        if names.is_empty() {
            return Ok(());
        }
        let mut descriptions = describe_partitions(cluster, &names)?;
        descriptions.sort_by(|a, b| a.name.cmp(&b.name));
        let configs = describe_configs(cluster, &names)?;
        for description in &descriptions {
            let configs = configs.get(&description.name).map_or("", String::as_str);
            let text = format_description(description, configs);
            say!("{}", text.trim_end_matches('\n'));
        }
        Ok(())
    }

    /// Sorted topic names matching `--topic` (all if not given), as `getTopics` does.
    fn matching_topics(&self, cluster: &mut Cluster) -> Result<Vec<String>, CliError> {
        let mut names: Vec<String> = cluster
            .metadata(None, false)?
            .into_iter()
            .filter(|topic| topic.error_code == 0)
            .filter(|topic| !(self.exclude_internal && is_internal(topic.is_internal, &topic.name)))
            .map(|topic| topic.name)
            .filter(|name| self.topics.is_empty() || self.topics.contains(name))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Like `matching_topics`, but a named topic that is missing is an error unless
    /// `--if-exists` (Kafka's `ensureTopicExists`).
    fn existing_topics(&self, cluster: &mut Cluster) -> Result<Vec<String>, CliError> {
        let names = self.matching_topics(cluster)?;
        if names.is_empty() && !self.topics.is_empty() && !self.if_exists {
            return Err(CliError::Usage(format!(
                "Topic '{}' does not exist as expected",
                self.topics.join(",")
            )));
        }
        Ok(names)
    }
}

/// `--config k=v` pairs: exactly one `=` each, as `parseTopicConfigsToBeAdded` requires.
fn parse_configs(items: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut configs = BTreeMap::new();
    for item in items {
        let parts: Vec<&str> = item.split('=').collect();
        let [key, value] = parts.as_slice() else {
            return Err(CliError::Usage(
                "requirement failed: Invalid topic config: all configs to be added must be in \
                 the format \"key=val\"."
                    .into(),
            ));
        };
        configs.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(configs)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Kafka's `Topic.isInternal`: the flag the broker sets, or one of its two internal names.
fn is_internal(flagged: bool, name: &str) -> bool {
    flagged || name == "__consumer_offsets" || name == "__transaction_state"
}

/// One topic for `--describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `None` when the broker does not report ELRs (printed "N/A", as Kafka does).
    pub elr: Option<Vec<i32>>,
    pub last_known_elr: Option<Vec<i32>>,
}

/// Kafka 4's `--describe` lines for one topic: the topic line, then one per partition.
pub fn format_description(topic: &TopicDescription, configs: &str) -> String {
    let mut text = format!("Topic: {}", topic.name);
    if !topic.topic_id.is_nil() {
        text += &format!("\tTopicId: {}", kafka_uuid_string(&topic.topic_id));
    }
    let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
    text += &format!(
        "\tPartitionCount: {}\tReplicationFactor: {replication_factor}\tConfigs: {configs}\n",
        topic.partitions.len()
    );
    for partition in &topic.partitions {
        let leader = match partition.leader {
            id if id < 0 => "none".to_string(),
            id => id.to_string(),
        };
        text += &format!(
            "\tTopic: {}\tPartition: {}\tLeader: {leader}\tReplicas: {}\tIsr: {}\tElr: {}\t\
             LastKnownElr: {}\n",
            topic.name,
            partition.partition,
            join(&partition.replicas),
            join(&partition.isr),
            partition.elr.as_deref().map_or("N/A".to_string(), join),
            partition
                .last_known_elr
                .as_deref()
                .map_or("N/A".to_string(), join),
        );
    }
    text
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Partitions with leaders, replicas, ISR and ELRs: DescribeTopicPartitions when the
/// broker has it (Kafka 4's admin client uses it, and it carries the ELRs), else Metadata.
fn describe_partitions(
    cluster: &mut Cluster,
    names: &[String],
) -> Result<Vec<TopicDescription>, CliError> {
    if cluster
        .any()
        .version(ApiKey::DescribeTopicPartitions, 0, 0)
        .is_err()
    {
        return describe_by_metadata(cluster, names);
    }
    let mut topics: BTreeMap<String, TopicDescription> = BTreeMap::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let request = DescribeTopicPartitionsRequest::default()
            .with_topics(
                names
                    .iter()
                    .map(|name| TopicRequest::default().with_name(topic_name(name)))
                    .collect(),
            )
            .with_response_partition_limit(PARTITIONS_PER_RESPONSE)
            .with_cursor(cursor.take());
        let response: DescribeTopicPartitionsResponse =
            cluster
                .any()
                .call(ApiKey::DescribeTopicPartitions, 0, &request)?;
        for topic in response.topics {
            check_code(topic.error_code, None)?;
            let name = topic
                .name
                .map(|name| name.0.to_string())
                .unwrap_or_default();
            let entry = topics
                .entry(name.clone())
                .or_insert_with(|| TopicDescription {
                    name,
                    topic_id: topic.topic_id,
                    partitions: Vec::new(),
                });
            entry
                .partitions
                .extend(topic.partitions.into_iter().map(|p| PartitionDescription {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    elr: p.eligible_leader_replicas.as_deref().map(ids),
                    last_known_elr: p.last_known_elr.as_deref().map(ids),
                }));
        }
        match response.next_cursor {
            Some(next) => {
                cursor = Some(
                    Cursor::default()
                        .with_topic_name(next.topic_name)
                        .with_partition_index(next.partition_index),
                );
            }
            None => break,
        }
    }
    let mut descriptions: Vec<TopicDescription> = topics.into_values().collect();
    for description in &mut descriptions {
        description.partitions.sort_by_key(|p| p.partition);
    }
    Ok(descriptions)
}

fn describe_by_metadata(
    cluster: &mut Cluster,
    names: &[String],
) -> Result<Vec<TopicDescription>, CliError> {
    let mut descriptions = Vec::new();
    for topic in cluster.metadata(Some(names), false)? {
        check_code(topic.error_code, None)?;
        descriptions.push(TopicDescription {
            name: topic.name,
            topic_id: topic.topic_id,
            partitions: topic
                .partitions
                .into_iter()
                .map(|p| PartitionDescription {
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas,
                    isr: p.isr,
                    elr: None,
                    last_known_elr: None,
                })
                .collect(),
        });
    }
    Ok(descriptions)
}

/// Each topic's non-default configs as "k=v,k=v" (the order the broker lists them).
fn describe_configs(
    cluster: &mut Cluster,
    names: &[String],
) -> Result<BTreeMap<String, String>, CliError> {
    let resources = names
        .iter()
        .map(|name| {
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configuration_keys(None)
        })
        .collect();
    let request = DescribeConfigsRequest::default().with_resources(resources);
    let (low, high) = DESCRIBE_CONFIGS_VERSIONS;
    let connection = cluster.any();
    let version = connection.version(ApiKey::DescribeConfigs, low, high)?;
    let response: DescribeConfigsResponse =
        connection.call(ApiKey::DescribeConfigs, version, &request)?;
    let mut configs = BTreeMap::new();
    for result in response.results {
        check_code(result.error_code, result.error_message.as_deref())?;
        let line: Vec<String> = result
            .configs
            .iter()
            .filter(|entry| entry.config_source != CONFIG_SOURCE_DEFAULT)
            .map(|entry| {
                let value = entry.value.as_deref().unwrap_or("null");
                format!("{}={value}", entry.name.as_str())
            })
            .collect();
        configs.insert(result.resource_name.to_string(), line.join(","));
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(items: &[&str]) -> Flags {
        let items: Vec<String> = items.iter().map(|item| item.to_string()).collect();
        args::parse(&items, FLAGS).unwrap()
    }

    #[test]
    fn create_flags_become_a_command() {
        let parsed = flags(&[
            "--bootstrap-server",
            "h:9092",
            "--create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "2",
            "--config",
            "cleanup.policy=compact",
            "--config",
            "retention.ms = 1000",
            "--if-not-exists",
        ]);
        assert_eq!(action(&parsed).ok(), Some("create"));
        let command = TopicCommand::from_flags(&parsed, "create").unwrap();
        assert_eq!(command.topics, ["orders"]);
        assert_eq!(command.partitions, Some(3));
        assert_eq!(command.replication_factor, Some(2));
        assert_eq!(command.configs["cleanup.policy"], "compact");
        assert_eq!(command.configs["retention.ms"], "1000");
        assert!(command.if_not_exists);
    }

    #[test]
    fn bad_commands_are_refused_before_connecting() {
        assert!(action(&flags(&["--list", "--describe"])).is_err());
        assert!(action(&flags(&["--topic", "t"])).is_err());
        let no_topic = TopicCommand::from_flags(&flags(&["--create"]), "create").unwrap_err();
        assert_eq!(
            no_topic.to_string(),
            "Missing required argument \"[topic]\""
        );
        let zero = flags(&["--create", "--topic", "t", "--partitions", "0"]);
        assert!(TopicCommand::from_flags(&zero, "create").is_err());
        let factor = flags(&["--create", "--topic", "t", "--replication-factor", "40000"]);
        assert!(TopicCommand::from_flags(&factor, "create").is_err());
        let config = flags(&["--create", "--topic", "t", "--config", "a=b=c"]);
        assert!(TopicCommand::from_flags(&config, "create").is_err());
        let alter = flags(&["--alter", "--topic", "t"]);
        assert!(TopicCommand::from_flags(&alter, "alter").is_err());
    }

    #[test]
    fn describe_lines_match_kafka_4() {
        let topic = TopicDescription {
            name: "t".into(),
            topic_id: uuid::Uuid::nil(),
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: 1,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    elr: Some(vec![]),
                    last_known_elr: Some(vec![]),
                },
                PartitionDescription {
                    partition: 1,
                    leader: -1,
                    replicas: vec![2, 3, 1],
                    isr: vec![],
                    elr: None,
                    last_known_elr: None,
                },
            ],
        };
        let text = format_description(&topic, "cleanup.policy=compact");
        assert_eq!(
            text,
            "Topic: t\tPartitionCount: 2\tReplicationFactor: 3\tConfigs: cleanup.policy=compact\n\
             \tTopic: t\tPartition: 0\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2,3\tElr: \t\
             LastKnownElr: \n\
             \tTopic: t\tPartition: 1\tLeader: none\tReplicas: 2,3,1\tIsr: \tElr: N/A\t\
             LastKnownElr: N/A\n"
        );
    }
}
