//! The command-line tools inside the `gracchus` binary, for images with no shell and no
//! Java: a container health check and Kafka's console tools by name.
//!
//! The binary is multi-call, as busybox is: invoked as `kafka-topics` (or `.sh`),
//! `kafka-console-producer`, `kafka-console-consumer` (argv[0]'s base name, so symlinks
//! on PATH work), or as `gracchus <tool> ...`. `main.rs` asks [`tool_named`] before it
//! does anything else, so none of this touches a broker's start or memory.
//!
//! Each tool is a blocking client ([`client`], [`cluster`]) of any Kafka-compatible
//! broker; they share the flag parser ([`args`]) and the error type ([`error`]).

pub mod args;
pub mod client;
pub mod cluster;
pub mod console_consumer;
pub mod console_producer;
pub mod error;
pub mod healthcheck;
pub mod partitioner;
pub mod topics;

/// A tool this binary can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Healthcheck,
    Topics,
    ConsoleProducer,
    ConsoleConsumer,
}

/// The tool called `name` (a program's base name or a subcommand), with or without the
/// `.sh` Kafka's scripts carry.
pub fn tool_named(name: &str) -> Option<Tool> {
    let name = name.strip_suffix(".sh").unwrap_or(name);
    match name {
        "healthcheck" => Some(Tool::Healthcheck),
        "kafka-topics" => Some(Tool::Topics),
        "kafka-console-producer" => Some(Tool::ConsoleProducer),
        "kafka-console-consumer" => Some(Tool::ConsoleConsumer),
        _ => None,
    }
}

/// Runs `tool` with its arguments (argv[0] excluded); the process exit code.
pub fn run(tool: Tool, args: &[String]) -> i32 {
    match tool {
        Tool::Healthcheck => healthcheck::run(args),
        Tool::Topics => topics::run(args),
        Tool::ConsoleProducer => console_producer::run(args),
        Tool::ConsoleConsumer => console_consumer::run(args),
    }
}

/// The base name of argv[0] (`/opt/kafka/bin/kafka-topics.sh` -> `kafka-topics.sh`).
pub fn program_name(argv0: &str) -> &str {
    argv0.rsplit('/').next().unwrap_or(argv0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_by_base_name_with_or_without_sh() {
        assert_eq!(
            program_name("/opt/kafka/bin/healthcheck.sh"),
            "healthcheck.sh"
        );
        assert_eq!(tool_named("healthcheck"), Some(Tool::Healthcheck));
        assert_eq!(tool_named("healthcheck.sh"), Some(Tool::Healthcheck));
        assert_eq!(tool_named("kafka-topics.sh"), Some(Tool::Topics));
        assert_eq!(
            tool_named("kafka-console-producer"),
            Some(Tool::ConsoleProducer)
        );
        assert_eq!(
            tool_named("kafka-console-consumer.sh"),
            Some(Tool::ConsoleConsumer)
        );
        assert_eq!(tool_named("kafka-storage.sh"), None);
        assert_eq!(tool_named("gracchus"), None);
        assert_eq!(tool_named("format"), None);
    }
}
