//! Flags the way Kafka's tools take them (joptsimple): `--name value` or `--name=value`,
//! repeatable flags collect every value, and an unknown flag is an error. Each tool lists
//! its flags in a table, so the parser is the same everywhere and pure.

use std::collections::BTreeMap;

use super::error::CliError;

/// One flag a tool accepts: its name without the dashes, and whether a value follows.
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    pub name: &'static str,
    pub takes_value: bool,
}

pub const fn switch(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        takes_value: false,
    }
}

pub const fn valued(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        takes_value: true,
    }
}

/// The flags given, by name; a switch maps to an empty list of values.
#[derive(Debug, Default)]
pub struct Flags {
    given: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    pub fn has(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }

    /// The last value given for `name` (joptsimple's `valueOf` takes the only one; taking
    /// the last lets a wrapper script's default be overridden).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.given
            .get(name)
            .and_then(|values| values.last())
            .map(String::as_str)
    }

    pub fn values(&self, name: &str) -> &[String] {
        self.given.get(name).map_or(&[], Vec::as_slice)
    }

    /// The value of `name` as a number, if given.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, CliError> {
        let Some(text) = self.value(name) else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|_| {
            CliError::Usage(format!(
                "Cannot parse argument '{text}' of option {name}: not a valid number"
            ))
        })
    }

    pub fn required(&self, name: &str) -> Result<&str, CliError> {
        self.value(name)
            .ok_or_else(|| CliError::Usage(format!("Missing required argument \"[{name}]\"")))
    }

    /// `--property k=v` style flags as a map (later wins).
    pub fn properties(&self, name: &str) -> Result<BTreeMap<String, String>, CliError> {
        let mut map = BTreeMap::new();
        for item in self.values(name) {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                CliError::Usage(format!(
                    "Invalid {name} '{item}': all properties must be in the format \"key=val\""
                ))
            })?;
            map.insert(key.trim().to_string(), value.trim().to_string());
        }
        Ok(map)
    }
}

/// Parses `args` against `specs`. Kafka's tools print joptsimple's messages for these
/// mistakes; ours say the same things in the same words where it matters to a reader.
pub fn parse(args: &[String], specs: &[FlagSpec]) -> Result<Flags, CliError> {
    let mut flags = Flags::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(CliError::Usage(format!(
                "Found non argument parameters: {arg}"
            )));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let spec = specs
            .iter()
            .find(|spec| spec.name == name)
            .ok_or_else(|| CliError::Usage(format!("{name} is not a recognized option")))?;
        let values = flags.given.entry(spec.name).or_default();
        match (spec.takes_value, inline) {
            (false, None) => {}
            (false, Some(_)) => {
                return Err(CliError::Usage(format!(
                    "Option {name} does not take an argument"
                )));
            }
            (true, Some(value)) => values.push(value),
            (true, None) => {
                let value = args.next().ok_or_else(|| {
                    CliError::Usage(format!("Option {name} requires an argument"))
                })?;
                values.push(value.clone());
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [FlagSpec; 4] = [
        valued("topic"),
        switch("create"),
        valued("config"),
        valued("partitions"),
    ];

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn values_follow_or_are_inline_and_repeat() {
        let args = strings(&[
            "--create",
            "--topic",
            "t",
            "--config=a=1",
            "--config",
            "b=2",
            "--partitions=3",
        ]);
        let flags = parse(&args, &SPECS).unwrap();
        assert!(flags.has("create"));
        assert_eq!(flags.value("topic"), Some("t"));
        assert_eq!(flags.values("config"), ["a=1", "b=2"]);
        assert_eq!(flags.number::<i32>("partitions").unwrap(), Some(3));
        let properties = flags.properties("config").unwrap();
        assert_eq!(properties["a"], "1");
        assert_eq!(properties["b"], "2");
    }

    #[test]
    fn mistakes_are_usage_errors_naming_the_flag() {
        let unknown = parse(&strings(&["--nope"]), &SPECS).unwrap_err();
        assert_eq!(unknown.to_string(), "nope is not a recognized option");
        let missing = parse(&strings(&["--topic"]), &SPECS).unwrap_err();
        assert_eq!(missing.to_string(), "Option topic requires an argument");
        let stray = parse(&strings(&["t"]), &SPECS).unwrap_err();
        assert!(stray.to_string().contains("non argument"));
        let switch_value = parse(&strings(&["--create=yes"]), &SPECS).unwrap_err();
        assert!(switch_value.to_string().contains("does not take"));
        let flags = parse(&strings(&["--partitions", "x"]), &SPECS).unwrap();
        assert!(flags.number::<i32>("partitions").is_err());
        let flags = parse(&strings(&["--config", "novalue"]), &SPECS).unwrap();
        assert!(flags.properties("config").is_err());
    }

    #[test]
    fn a_value_may_start_with_dashes() {
        // `--offset -1`-like values are taken as the flag's argument, as joptsimple does.
        let flags = parse(&strings(&["--topic", "--weird"]), &SPECS).unwrap();
        assert_eq!(flags.value("topic"), Some("--weird"));
    }
}
