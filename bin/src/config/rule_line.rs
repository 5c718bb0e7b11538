//! The line of a `[policy]` rule that a `PolicyError` names (`allow[2]`), found from the TOML
//! parser's own spans, so inline tables, dotted keys and multi-line arrays all point right.

use std::fmt;

use serde::{
    de::{self, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use toml::Spanned;

/// Only the rule lists, each element with its span; every other key is ignored.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    policy: Option<Lists>,
    #[serde(default)]
    upstream: Option<Upstream>,
}

#[derive(Deserialize)]
struct Upstream {
    #[serde(default)]
    no_proxy: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
struct Lists {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    allow_local: LocalRules,
}

/// `allow_local`: a flag (no rules, no spans) or a list.
#[derive(Default)]
struct LocalRules(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for LocalRules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LocalVisitor;

        impl<'de> Visitor<'de> for LocalVisitor {
            type Value = LocalRules;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a flag or a list of rules")
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LocalRules, E> {
                Ok(LocalRules::default())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LocalRules, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element()? {
                    rules.push(rule);
                }
                Ok(LocalRules(rules))
            }
        }

        deserializer.deserialize_any(LocalVisitor)
    }
}

/// The 1-based line of the rule at `key` (`allow[2]`, `deny[0]`, `allow_local[1]`) in `text`.
pub(super) fn rule_line(text: &str, key: &str) -> Option<usize> {
    let (list, index) = key.strip_suffix(']')?.split_once('[')?;
    let index: usize = index.parse().ok()?;
    let lists = toml::from_str::<File>(text).ok()?.policy?;
    let rules = match list {
        "allow" => lists.allow,
        "deny" => lists.deny,
        "allow_local" => lists.allow_local.0,
        _ => return None,
    };
    let start = rules.get(index)?.span().start;
    Some(super::line_of(text, start))
}

/// The 1-based line of `upstream.no_proxy[N]` in `text`: the parser names the array's line for
/// an element's error, which in a multi-line list is the wrong one.
pub(super) fn no_proxy_line(text: &str, key: &str) -> Option<usize> {
    let index = key.strip_prefix("upstream.no_proxy[")?.strip_suffix(']')?;
    let index: usize = index.parse().ok()?;
    let rules = toml::from_str::<File>(text).ok()?.upstream?.no_proxy;
    let start = rules.get(index)?.span().start;
    Some(super::line_of(text, start))
}
