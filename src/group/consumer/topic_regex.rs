//! A consumer's `SubscribedTopicRegex` (ConsumerGroupHeartbeat v1): Kafka compiles it
//! with RE2J and subscribes the member to every topic whose whole name matches.
//! regex-automata's syntax is RE2's too; topic names are ASCII, so Unicode classes are off
//! (`\d`, `\w` and `.` mean what RE2J gives them on such names).

use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// Longest pattern accepted; Kafka has no limit, but a request field is not a place for
/// a program that takes the coordinator long to compile.
const MAX_PATTERN_LEN: usize = 4096;

#[derive(Clone, Debug)]
pub struct TopicRegex {
    compiled: Regex,
}

impl TopicRegex {
    /// Compiles `pattern`; the error is the reason given to the client.
    pub fn new(pattern: &str) -> Result<TopicRegex, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "The regular expression is longer than {MAX_PATTERN_LEN}."
            ));
        }
        let config = syntax::Config::new().unicode(false).utf8(false);
        let invalid = |error: &dyn std::fmt::Display| {
            format!("Invalid regular expression {pattern}: {error}")
        };
        // The pattern must stand alone first: wrapped unchecked, `a)|(?:b` would close the
        // group below and match more than RE2J allows.
        syntax::parse_with(pattern, &config).map_err(|e| invalid(&e))?;
        // Anchored at the start by the search, at the end by `$` (end of text, as no
        // multi-line flag is set): RE2J's `matches()` wants the whole name.
        let compiled = Regex::builder()
            .syntax(config)
            .build(&format!("(?:{pattern})$"))
            .map_err(|e| invalid(&e))?;
        Ok(TopicRegex { compiled })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.compiled
            .is_match(Input::new(name).anchored(Anchored::Yes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_name_must_match() {
        let regex = TopicRegex::new("orders-.*").unwrap();
        assert!(regex.matches("orders-eu"));
        assert!(regex.matches("orders-"));
        assert!(!regex.matches("old-orders-eu"));
        let regex = TopicRegex::new("a|b").unwrap();
        assert!(regex.matches("a") && regex.matches("b"));
        assert!(!regex.matches("ab"));
        let digits = TopicRegex::new(r"t\d+").unwrap();
        assert!(digits.matches("t42") && !digits.matches("t4x"));
    }

    #[test]
    fn a_bad_pattern_is_refused_with_a_reason() {
        let error = TopicRegex::new("orders-(").unwrap_err();
        assert!(error.contains("orders-("), "{error}");
        // A pattern that only parses once wrapped is refused too.
        assert!(TopicRegex::new("a)|(?:b").is_err());
        assert!(TopicRegex::new(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
    }
}
