//! [`Flags`]: an ordered list of `kusari train` flags with their values.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// One `kusari train` flag (its name without the leading `--`) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub name: String,
    pub value: String,
}

/// `kusari train` flags in a fixed order; setting a flag that is already
/// there replaces its value in place, so the order stays that of the base.
/// Two lists are equal when they set the same flags to the same values, in
/// any order (the order changes no run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flags(Vec<Flag>);

impl PartialEq for Flags {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .all(|f| other.get(&f.name) == Some(f.value.as_str()))
    }
}

impl Eq for Flags {}

impl Flags {
    /// Flags from `(name, value)` pairs, later pairs replacing earlier ones.
    #[cfg(test)]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut flags = Self::default();
        for (name, value) in pairs {
            flags.set(name, value);
        }
        flags
    }

    /// Sets `--name value`, replacing an earlier value of the same flag.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(flag) => flag.value = value.to_string(),
            None => self.0.push(Flag {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
    }

    /// Every flag of `other`, set on top of these.
    pub fn with(&self, other: &Flags) -> Flags {
        let mut out = self.clone();
        for flag in &other.0 {
            out.set(&flag.name, &flag.value);
        }
        out
    }

    /// These flags without `--name`.
    pub fn without(&self, name: &str) -> Flags {
        Flags(self.0.iter().filter(|f| f.name != name).cloned().collect())
    }

    /// The value of `--name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flag> {
        self.0.iter()
    }

    /// Command-line arguments: `--name value …`; a flag with an empty value
    /// (a switch such as `--spectral-norm`) is given without one.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![];
        for flag in &self.0 {
            args.push(format!("--{}", flag.name));
            if !flag.value.is_empty() {
                args.push(flag.value.clone());
            }
        }
        args
    }

    /// The arguments as one line, for documents: `--units-g 512 --bn joint`.
    pub fn command_text(&self) -> String {
        self.args().join(" ")
    }

    /// Reads `--name value` and `--name=value` pairs (the tail after `--` of
    /// `cargo xtask experiment`).
    pub fn parse(args: &[String]) -> Result<Flags> {
        let mut flags = Flags::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--").filter(|n| !n.is_empty()) else {
                bail!("`{arg}` is not a kusari flag; after `--` give flags such as `--units-g 64`");
            };
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => {
                    let Some(value) = args.next() else {
                        bail!("`{arg}` needs a value (e.g. `{arg} 64`)");
                    };
                    (name.to_string(), value.clone())
                }
            };
            flags.set(&name, &value);
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn setting_again_replaces_in_place() {
        let mut flags = Flags::from_pairs([("units-g", "512"), ("bn", "separate")]);
        flags.set("units-g", "64");
        flags.set("margin", "5");
        assert_eq!(
            flags.args(),
            strings(&["--units-g", "64", "--bn", "separate", "--margin", "5"])
        );
        assert_eq!(flags.get("bn"), Some("separate"));
        assert_eq!(flags.get("lr"), None);
        let joint = flags.with(&Flags::from_pairs([("bn", "joint")]));
        assert_eq!(joint.command_text(), "--units-g 64 --bn joint --margin 5");
    }

    #[test]
    fn parses_both_spellings_and_rejects_the_rest() -> Result<()> {
        let flags = Flags::parse(&strings(&["--units-g", "64", "--units-d=32"]))?;
        assert_eq!(flags.command_text(), "--units-g 64 --units-d 32");
        assert!(Flags::parse(&strings(&["units-g", "64"])).is_err());
        assert!(Flags::parse(&strings(&["--units-g"])).is_err());
        assert!(Flags::parse(&strings(&["--", "1"])).is_err());
        Ok(())
    }
}
