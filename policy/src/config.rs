//! Serde types for the `[policy]` table of the config file (SPEC §10). Reading files is `bin`'s job.

use std::fmt;

use serde::{
    de::{self, SeqAccess, Visitor},
    Deserialize, Deserializer, Serialize, Serializer,
};

/// The `[policy]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Allow rules (SPEC §1.1).
    pub allow: Vec<String>,
    /// Deny rules; deny always wins.
    pub deny: Vec<String>,
    /// `false`, `true`, or a list of IP, CIDR and `localhost` rules.
    pub allow_local: AllowLocalConfig,
}

/// `allow_local`: a flag, or a list of narrow exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowLocalConfig {
    /// `false` (default) or `true`.
    Flag(bool),
    /// `["127.0.0.1:8000", "10.1.0.0/16", "localhost"]`.
    Rules(Vec<String>),
}

impl Default for AllowLocalConfig {
    fn default() -> Self {
        AllowLocalConfig::Flag(false)
    }
}

impl Serialize for AllowLocalConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AllowLocalConfig::Flag(flag) => serializer.serialize_bool(*flag),
            AllowLocalConfig::Rules(rules) => rules.serialize(serializer),
        }
    }
}

/// Hand-written so that a wrong value says what is expected, not "did not match any variant".
impl<'de> Deserialize<'de> for AllowLocalConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AllowLocalVisitor;

        impl<'de> Visitor<'de> for AllowLocalVisitor {
            type Value = AllowLocalConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a list of IP, CIDR or `localhost` rules")
            }

            fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Self::Value, E> {
                Ok(AllowLocalConfig::Flag(flag))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<String>()? {
                    rules.push(rule);
                }
                Ok(AllowLocalConfig::Rules(rules))
            }
        }

        deserializer.deserialize_any(AllowLocalVisitor)
    }
}
