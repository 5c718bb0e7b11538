//! The compiled matcher: a rule list turned, once, into hash maps keyed by the thing a request
//! carries (a domain suffix, an address, a masked network), so a lookup costs one probe per label of
//! the host (or per distinct prefix length of the networks), never a scan over the rules.

use std::{collections::HashSet, net::IpAddr, sync::Arc};

use crate::{
    fxhash::FxHashMap,
    host::Host,
    net::{mask_v4, mask_v6},
    rule::{PortRange, Rule, RuleHost},
};

/// An index into a `RuleSet`'s rules.
pub(crate) type RuleId = u32;

/// The rules one list holds, compiled.
#[derive(Debug, Default, Clone)]
pub(crate) struct RuleSet {
    rules: Vec<Rule>,
    names: Vec<Arc<str>>,
    any: PortRules,
    domains: FxHashMap<Box<str>, DomainRules>,
    ips: FxHashMap<IpAddr, PortRules>,
    v4_nets: Vec<(u8, FxHashMap<u32, PortRules>)>,
    v6_nets: Vec<(u8, FxHashMap<u128, PortRules>)>,
}

#[derive(Debug, Default, Clone)]
struct DomainRules {
    exact: PortRules,
    subdomains: PortRules,
    apex_and_subdomains: PortRules,
}

/// The rules keyed at one place, each with its ports; almost always one or two entries.
#[derive(Debug, Default, Clone)]
struct PortRules(Vec<(Option<PortRange>, RuleId)>);

impl PortRules {
    fn find(&self, port: u16) -> Option<RuleId> {
        self.0
            .iter()
            .find(|(ports, _)| ports.is_none_or(|range| range.contains(port)))
            .map(|&(_, id)| id)
    }

    fn push(&mut self, ports: Option<PortRange>, id: RuleId) {
        self.0.push((ports, id));
    }

    fn ids(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.0.iter().map(|&(_, id)| id)
    }
}

impl RuleSet {
    /// Compiles `rules`, merging duplicates.
    pub(crate) fn new(rules: impl IntoIterator<Item = Rule>) -> RuleSet {
        RuleSet::with_names(rules.into_iter().map(|rule| {
            let name = rule.shared_name();
            (rule, name)
        }))
    }

    /// Compiles rules that decisions name by another spelling (`allow_local`'s `localhost` stands
    /// for several loopback rules, each named `localhost`).
    pub(crate) fn with_names(rules: impl IntoIterator<Item = (Rule, Arc<str>)>) -> RuleSet {
        let mut set = RuleSet::default();
        let mut seen = HashSet::new();
        for (rule, name) in rules {
            if seen.insert(rule.clone()) {
                set.insert(rule, name);
            }
        }
        // Longest prefix first, so the most specific network names the decision.
        set.v4_nets.sort_by(|a, b| b.0.cmp(&a.0));
        set.v6_nets.sort_by(|a, b| b.0.cmp(&a.0));
        set
    }

    fn insert(&mut self, rule: Rule, name: Arc<str>) {
        let id = RuleId::try_from(self.rules.len()).expect("fewer than 4 billion rules");
        let ports = rule.ports();
        match rule.host() {
            RuleHost::Any => self.any.push(ports, id),
            RuleHost::Exact(name) => self.domain(name).exact.push(ports, id),
            RuleHost::Subdomains(base) => self.domain(base).subdomains.push(ports, id),
            RuleHost::ApexAndSubdomains(base) => self.domain(base).apex_and_subdomains.push(ports, id),
            RuleHost::Ip(ip) => self.ips.entry(*ip).or_default().push(ports, id),
            RuleHost::Net(net) => match net.addr() {
                IpAddr::V4(v4) => net_table(&mut self.v4_nets, net.prefix())
                    .entry(u32::from(v4))
                    .or_default()
                    .push(ports, id),
                IpAddr::V6(v6) => net_table(&mut self.v6_nets, net.prefix())
                    .entry(u128::from(v6))
                    .or_default()
                    .push(ports, id),
            },
        }
        self.names.push(name);
        self.rules.push(rule);
    }

    fn domain(&mut self, name: &str) -> &mut DomainRules {
        self.domains.entry(name.into()).or_default()
    }

    /// The rules, in load order without duplicates.
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id as usize]
    }

    /// The canonical name of a rule, shared (no allocation per decision).
    pub(crate) fn name(&self, id: RuleId) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// The most specific rule that matches `host` on `port`.
    pub(crate) fn find(&self, host: &Host, port: u16) -> Option<RuleId> {
        match host {
            Host::Name(name) => self.find_name(name, port),
            Host::Ip(ip) => self.find_ip(*ip, port),
            Host::ScopedIp(ip) => self.find_ip(IpAddr::V6(*ip), port),
        }
    }

    fn find_name(&self, name: &str, port: u16) -> Option<RuleId> {
        if let Some(rules) = self.domains.get(name) {
            let found = rules.exact.find(port).or_else(|| rules.apex_and_subdomains.find(port));
            if found.is_some() {
                return found;
            }
        }
        // Walk the proper suffixes, longest first: `b.example.com`, `example.com`, `com`.
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(rules) = self.domains.get(rest) {
                let found = rules.subdomains.find(port).or_else(|| rules.apex_and_subdomains.find(port));
                if found.is_some() {
                    return found;
                }
            }
        }
        self.any.find(port)
    }

    /// The most specific rule for an address: exact, then networks longest prefix first, then `*`.
    pub(crate) fn find_ip(&self, ip: IpAddr, port: u16) -> Option<RuleId> {
        if let Some(found) = self.ips.get(&ip).and_then(|rules| rules.find(port)) {
            return Some(found);
        }
        let in_nets = match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4_nets
                    .iter()
                    .find_map(|(prefix, table)| table.get(&mask_v4(bits, *prefix))?.find(port))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6_nets
                    .iter()
                    .find_map(|(prefix, table)| table.get(&mask_v6(bits, *prefix))?.find(port))
            }
        };
        in_nets.or_else(|| self.any.find(port))
    }

    /// The rules that could cover `rule` (same key or a wider one); `lint` filters them with
    /// `Rule::covers`. Each lookup is keyed, so linting stays linear in the number of rules.
    pub(crate) fn candidates(&self, rule: &RuleHost) -> Vec<RuleId> {
        let mut ids: Vec<RuleId> = self.any.ids().collect();
        match rule {
            RuleHost::Any => {}
            RuleHost::Exact(base) | RuleHost::Subdomains(base) | RuleHost::ApexAndSubdomains(base) => {
                let mut rest: &str = base;
                loop {
                    if let Some(rules) = self.domains.get(rest) {
                        ids.extend(rules.exact.ids());
                        ids.extend(rules.subdomains.ids());
                        ids.extend(rules.apex_and_subdomains.ids());
                    }
                    match rest.find('.') {
                        Some(dot) => rest = &rest[dot + 1..],
                        None => break,
                    }
                }
            }
            RuleHost::Ip(ip) => {
                ids.extend(self.ips.get(ip).into_iter().flat_map(PortRules::ids));
                ids.extend(self.nets_containing(*ip, 128));
            }
            RuleHost::Net(net) => ids.extend(self.nets_containing(net.addr(), net.prefix())),
        }
        ids
    }

    fn nets_containing(&self, ip: IpAddr, max_prefix: u8) -> Vec<RuleId> {
        let mut ids = Vec::new();
        match ip {
            IpAddr::V4(v4) => {
                for (prefix, table) in self.v4_nets.iter().filter(|(p, _)| *p <= max_prefix) {
                    ids.extend(table.get(&mask_v4(v4.into(), *prefix)).into_iter().flat_map(PortRules::ids));
                }
            }
            IpAddr::V6(v6) => {
                for (prefix, table) in self.v6_nets.iter().filter(|(p, _)| *p <= max_prefix) {
                    ids.extend(table.get(&mask_v6(v6.into(), *prefix)).into_iter().flat_map(PortRules::ids));
                }
            }
        }
        ids
    }
}

fn net_table<K>(tables: &mut Vec<(u8, FxHashMap<K, PortRules>)>, prefix: u8) -> &mut FxHashMap<K, PortRules> {
    let index = match tables.iter().position(|(p, _)| *p == prefix) {
        Some(index) => index,
        None => {
            tables.push((prefix, FxHashMap::default()));
            tables.len() - 1
        }
    };
    &mut tables[index].1
}
