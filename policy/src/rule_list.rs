//! A list of rules compiled for matching alone, outside a policy: for lists that select rather
//! than decide (the upstream proxy's `no_proxy`, SPEC §16), in the same grammar and with the same
//! matcher as the policy's own lists.

use std::net::IpAddr;

use crate::{
    matcher::{HostKey, RuleSet},
    Rule, Target,
};

/// Rules of SPEC §1.1 compiled once; `matches` is a handful of probes whatever their number.
#[derive(Debug, Default)]
pub struct RuleList {
    set: RuleSet,
}

impl RuleList {
    /// Compiles `rules` (duplicates merged).
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> RuleList {
        RuleList {
            set: RuleSet::new(rules),
        }
    }

    /// Whether a rule matches `target` (its host as written: a name is not resolved here).
    pub fn matches(&self, target: &Target) -> bool {
        self.set
            .find_key(&HostKey::new(target.host()), target.port())
            .is_some()
    }

    /// Whether a rule matches the address `ip` on `port` (a name's resolved address).
    pub fn matches_ip(&self, ip: IpAddr, port: u16) -> bool {
        self.set.find_ip(ip, port).is_some()
    }

    /// The rules, as compiled.
    pub fn rules(&self) -> &[Rule] {
        self.set.rules()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(rules: &[&str], target: &str, expected: bool) {
        let list = RuleList::new(rules.iter().map(|r| r.parse::<Rule>().expect("a rule")));
        let target = Target::parse(target, None).expect("a target");
        assert_eq!(list.matches(&target), expected, "{rules:?} vs {target}");
    }

    #[test]
    fn names_networks_and_ports_match_as_in_the_policy() {
        check(&["**.corp.example"], "git.corp.example:443", true);
        check(&["**.corp.example"], "corp.example:80", true);
        check(&["*.corp.example"], "corp.example:80", false);
        check(&["10.0.0.0/8"], "10.1.2.3:22", true);
        check(&["10.0.0.0/8"], "11.1.2.3:22", false);
        check(&["intranet.test:8080"], "intranet.test:8080", true);
        check(&["intranet.test:8080"], "intranet.test:80", false);
        check(&["[fd00::]/8"], "[fd00::1]:443", true);
        check(&[], "anything.test:443", false);
        check(&["*"], "anything.test:443", true);
    }

    #[test]
    fn an_address_matches_by_network_and_port() {
        let list = RuleList::new(["10.0.0.0/8:443".parse::<Rule>().expect("a rule")]);
        assert!(list.matches_ip("10.9.9.9".parse().expect("ip"), 443));
        assert!(!list.matches_ip("10.9.9.9".parse().expect("ip"), 80));
        assert!(!list.matches_ip("192.0.2.1".parse().expect("ip"), 443));
    }
}
