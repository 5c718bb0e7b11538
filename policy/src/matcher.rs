//! The compiled matcher: a rule list turned, once, into hash maps keyed by the thing a request
//! carries (a domain suffix, an address, a masked network), so a lookup costs one probe per label of
//! the host (or per distinct prefix length of the networks), never a scan over the rules.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::IpAddr,
    sync::Arc,
};

// FxHash: SipHash's flooding resistance buys nothing here (the keys come from the operator's own
// rules), and lookups are on every request's hot path.
use rustc_hash::FxHashMap;

use crate::{
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
    domains: DomainTable,
    ips: FxHashMap<IpAddr, PortRules>,
    v4_nets: Vec<(u8, FxHashMap<u32, PortRules>)>,
    v6_nets: Vec<(u8, FxHashMap<u128, PortRules>)>,
}

/// Domain rules keyed by the hash of the domain, computed label by label from the right, so one
/// pass over a host's labels yields the key of every suffix without re-hashing any byte. A hit is
/// confirmed against the stored name, so a hash collision can never match the wrong domain.
///
/// A bit set of the keys sits in front of the map: most suffixes of most hosts match no rule, and
/// the bit set (8 bits per domain, small enough to stay in cache) turns those probes into one bit
/// test instead of a cache miss in a large map.
#[derive(Debug, Default, Clone)]
struct DomainTable {
    entries: HashMap<u64, Vec<DomainRules>, BuildHasherDefault<PrehashedKey>>,
    filter: Vec<u64>,
}

impl DomainTable {
    /// Rebuilds the bit set once all domains are in.
    fn seal(&mut self) {
        let bits = (self.entries.len() * 8).next_power_of_two().max(64);
        self.filter = vec![0; bits / 64];
        for &hash in self.entries.keys() {
            let bit = self.bit(hash);
            self.filter[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn bit(&self, hash: u64) -> usize {
        // The high bits: the low ones also pick the map's bucket.
        (hash >> 40) as usize & (self.filter.len() * 64 - 1)
    }

    fn may_contain(&self, hash: u64) -> bool {
        let bit = self.bit(hash);
        self.filter[bit / 64] & (1 << (bit % 64)) != 0
    }
}

#[derive(Debug, Default, Clone)]
struct DomainRules {
    name: Box<str>,
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
        // Room for exactly the first: a place almost always holds one rule, and `push` alone
        // would reserve four (memory at rest grows with the rule count, issue 18). Later pushes
        // grow as usual, so a place with many port rules stays linear to build.
        if self.0.is_empty() {
            self.0.reserve_exact(1);
        }
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
        // Fx, not SipHash: rules come from the config and the admin API, never from a client,
        // and hashing them was a visible part of startup with many rules (issue 18).
        let mut seen = rustc_hash::FxHashSet::default();
        for (rule, name) in rules {
            if seen.insert(rule.clone()) {
                set.insert(rule, name);
            }
        }
        set.domains.seal();
        // Longest prefix first, so the most specific network names the decision.
        set.v4_nets
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(*prefix));
        set.v6_nets
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(*prefix));
        set
    }

    fn insert(&mut self, rule: Rule, name: Arc<str>) {
        let id = RuleId::try_from(self.rules.len()).expect("fewer than 4 billion rules");
        let ports = rule.ports();
        match rule.host() {
            RuleHost::Any => self.any.push(ports, id),
            RuleHost::Exact(name) => self.domain(name).exact.push(ports, id),
            RuleHost::Subdomains(base) => self.domain(base).subdomains.push(ports, id),
            RuleHost::ApexAndSubdomains(base) => {
                self.domain(base).apex_and_subdomains.push(ports, id)
            }
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
        let mut key = 0;
        for_each_suffix(name, |_, hash| key = hash);
        let bucket = self.domains.entries.entry(key).or_default();
        match bucket.iter().position(|d| &*d.name == name) {
            Some(index) => &mut bucket[index],
            None => {
                // A bucket holds one domain unless two hash alike: no room reserved for more.
                if bucket.is_empty() {
                    bucket.reserve_exact(1);
                }
                bucket.push(DomainRules {
                    name: name.into(),
                    ..DomainRules::default()
                });
                bucket.last_mut().expect("just pushed")
            }
        }
    }

    #[inline]
    fn domain_at(&self, suffix: &str, hash: u64) -> Option<&DomainRules> {
        if !self.domains.may_contain(hash) {
            return None;
        }
        let bucket = self.domains.entries.get(&hash)?;
        bucket.iter().find(|d| &*d.name == suffix)
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
    #[cfg(test)]
    pub(crate) fn find(&self, host: &Host, port: u16) -> Option<RuleId> {
        self.find_key(&HostKey::new(host), port)
    }

    /// `find` with the host's lookup keys computed once by the caller, who may ask several sets.
    pub(crate) fn find_key(&self, key: &HostKey<'_>, port: u16) -> Option<RuleId> {
        match key {
            HostKey::Name(keys) => self.find_name(keys, port),
            HostKey::Ip(ip) => self.find_ip(*ip, port),
        }
    }

    /// Visits the suffixes shortest first (`com`, `example.com`, `a.example.com`); a match at a
    /// longer suffix replaces one at a shorter, so the most specific rule names the decision.
    fn find_name(&self, keys: &SuffixKeys<'_>, port: u16) -> Option<RuleId> {
        let mut best = None;
        if !self.domains.entries.is_empty() {
            keys.for_each(|start, hash| {
                best = self.match_suffix(keys.name, start, hash, port).or(best);
            });
        }
        best.or_else(|| self.any.find(port))
    }

    #[inline]
    fn match_suffix(&self, name: &str, start: usize, hash: u64, port: u16) -> Option<RuleId> {
        let rules = self.domain_at(&name[start..], hash)?;
        let found = match start {
            0 => rules.exact.find(port),
            _ => rules.subdomains.find(port),
        };
        found.or_else(|| rules.apex_and_subdomains.find(port))
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
            RuleHost::Exact(base)
            | RuleHost::Subdomains(base)
            | RuleHost::ApexAndSubdomains(base) => {
                for_each_suffix(base, |start, hash| {
                    if let Some(rules) = self.domain_at(&base[start..], hash) {
                        ids.extend(rules.exact.ids());
                        ids.extend(rules.subdomains.ids());
                        ids.extend(rules.apex_and_subdomains.ids());
                    }
                });
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
                    ids.extend(
                        table
                            .get(&mask_v4(v4.into(), *prefix))
                            .into_iter()
                            .flat_map(PortRules::ids),
                    );
                }
            }
            IpAddr::V6(v6) => {
                for (prefix, table) in self.v6_nets.iter().filter(|(p, _)| *p <= max_prefix) {
                    ids.extend(
                        table
                            .get(&mask_v6(v6.into(), *prefix))
                            .into_iter()
                            .flat_map(PortRules::ids),
                    );
                }
            }
        }
        ids
    }
}

/// A host as the rule sets look it up: an address, or a name with the keys of all its suffixes.
#[derive(Debug)]
pub(crate) enum HostKey<'a> {
    Name(SuffixKeys<'a>),
    Ip(IpAddr),
}

impl<'a> HostKey<'a> {
    #[inline]
    pub(crate) fn new(host: &'a Host) -> HostKey<'a> {
        match host {
            Host::Name(name) => HostKey::Name(SuffixKeys::new(name)),
            Host::Ip(ip) => HostKey::Ip(*ip),
            Host::ScopedIp(ip) => HostKey::Ip(IpAddr::V6(*ip)),
        }
    }
}

/// Most names have a handful of labels; their keys are kept inline. Longer names (up to 127
/// labels) are re-hashed on every visit instead of allocating.
const INLINE_KEYS: usize = 8;

/// The suffix keys of a name, computed once per decision and shared by the deny, allow and
/// `allow_local` sets.
#[derive(Debug)]
pub(crate) struct SuffixKeys<'a> {
    name: &'a str,
    hashes: [u64; INLINE_KEYS],
    starts: [u8; INLINE_KEYS],
    len: usize,
}

impl<'a> SuffixKeys<'a> {
    #[inline]
    fn new(name: &'a str) -> SuffixKeys<'a> {
        let mut keys = SuffixKeys {
            name,
            hashes: [0; INLINE_KEYS],
            starts: [0; INLINE_KEYS],
            len: 0,
        };
        for_each_suffix(name, |start, hash| {
            if keys.len < INLINE_KEYS {
                // A name of at most 253 bytes: every start fits a byte.
                keys.starts[keys.len] = start as u8;
                keys.hashes[keys.len] = hash;
            }
            keys.len += 1;
        });
        keys
    }

    #[inline]
    fn for_each(&self, mut f: impl FnMut(usize, u64)) {
        match self.len <= INLINE_KEYS {
            true => (0..self.len).for_each(|i| f(usize::from(self.starts[i]), self.hashes[i])),
            false => for_each_suffix(self.name, f),
        }
    }
}

/// Calls `f(start, hash)` for every suffix of `name`, shortest first: `com`, `example.com`, …
/// `hash` folds the suffix's labels from the right, so it is the same for a suffix of a host and
/// for a rule's domain with the same labels.
fn for_each_suffix(name: &str, mut f: impl FnMut(usize, u64)) {
    // Each label is folded in eight-byte words, then a marker, so `ab.c` and `a.bc` differ. A
    // collision only costs a string compare. No multiply per byte: this loop runs on every request.
    const LABEL_END: u64 = 1 << 63;
    let bytes = name.as_bytes();
    let (mut hash, mut end) = (0u64, bytes.len());
    loop {
        let start = bytes[..end]
            .iter()
            .rposition(|&b| b == b'.')
            .map_or(0, |dot| dot + 1);
        for chunk in bytes[start..end].chunks(8) {
            let word = chunk
                .iter()
                .fold(0u64, |word, &b| (word << 8) | u64::from(b));
            hash = fold(hash, word);
        }
        hash = fold(hash, LABEL_END);
        f(start, hash);
        if start == 0 {
            break;
        }
        end = start - 1;
    }
}

fn fold(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// A hasher for keys that already are good hashes.
#[derive(Debug, Default, Clone, Copy)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn net_table<K>(
    tables: &mut Vec<(u8, FxHashMap<K, PortRules>)>,
    prefix: u8,
) -> &mut FxHashMap<K, PortRules> {
    let index = match tables.iter().position(|(p, _)| *p == prefix) {
        Some(index) => index,
        None => {
            tables.push((prefix, FxHashMap::default()));
            tables.len() - 1
        }
    };
    &mut tables[index].1
}
