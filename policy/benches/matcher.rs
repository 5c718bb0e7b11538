//! The compiled matcher against two baselines, at 10, 1 000 and 100 000 rules: a naive scan that
//! checks every rule in turn, and a `regex::RegexSet` of the same host patterns. Each iteration
//! decides a batch of 3–5 label hosts (hits and misses mixed), so the per-element time is the cost
//! of one `decide`.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use policy::{Policy, Protocol, Request, Rule, RuleHost, Target};
use regex::RegexSetBuilder;

const SIZES: &[usize] = &[10, 1_000, 100_000];
const BATCH: usize = 256;

/// A realistic allowlist: exact names, `*.` and `**.` wildcards, some with ports; a tenth as many
/// deny rules.
fn rule_texts(count: usize) -> (Vec<String>, Vec<String>) {
    let allow = (0..count)
        .map(|i| match i % 4 {
            0 => format!("api{i}.service{i}.com"),
            1 => format!("*.cdn{i}.net"),
            2 => format!("**.corp{i}.org"),
            _ => format!("pkg{i}.registry{i}.io:443"),
        })
        .collect();
    let deny = (0..count.div_ceil(10))
        .map(|i| format!("bad{i}.service{i}.com"))
        .collect();
    (allow, deny)
}

/// Hosts of 3–5 labels: half match a rule, half miss.
fn targets(count: usize) -> Vec<Target> {
    (0..BATCH)
        .map(|i| {
            let n = (i * 7919) % count;
            let host = match i % 6 {
                0 => format!("api{n}.service{n}.com"),
                1 => format!("img.eu.cdn{n}.net"),
                2 => format!("a.b.corp{n}.org"),
                3 => format!("miss{i}.example.com"),
                4 => format!("www.miss{i}.example.org"),
                _ => format!("x.y.z.unknown{i}.test"),
            };
            Target::parse(&host, Some(443)).expect("valid host")
        })
        .collect()
}

fn compiled(allow: &[String], deny: &[String]) -> Policy {
    let mut builder = Policy::builder();
    for rule in allow {
        builder = builder.allow(rule.parse().expect("valid rule"));
    }
    for rule in deny {
        builder = builder.deny(rule.parse().expect("valid rule"));
    }
    builder.build().expect("valid policy")
}

/// The naive baseline: every deny rule, then every allow rule, in order.
fn naive_decide(allow: &[Rule], deny: &[Rule], target: &Target) -> bool {
    let (host, port) = (target.host(), target.port());
    !deny.iter().any(|r| r.matches(host, port)) && allow.iter().any(|r| r.matches(host, port))
}

/// The regex baseline matches host names only (ports are left out, which favours it).
fn host_regex(rule: &Rule) -> String {
    match rule.host() {
        RuleHost::Exact(name) => format!("^{}$", regex::escape(name)),
        RuleHost::Subdomains(base) => format!(r"^.+\.{}$", regex::escape(base)),
        RuleHost::ApexAndSubdomains(base) => format!(r"^(?:.+\.)?{}$", regex::escape(base)),
        _ => "^$".to_owned(),
    }
}

fn bench_matchers(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    for &size in SIZES {
        let (allow_texts, deny_texts) = rule_texts(size);
        let batch = targets(size);
        let policy = compiled(&allow_texts, &deny_texts);
        group.bench_with_input(BenchmarkId::new("compiled", size), &batch, |b, batch| {
            b.iter(|| {
                for target in batch {
                    black_box(policy.decide(&Request::new(
                        black_box(target),
                        "GET",
                        Protocol::Http,
                    )));
                }
            })
        });

        let allow: Vec<Rule> = allow_texts.iter().map(|t| t.parse().unwrap()).collect();
        let deny: Vec<Rule> = deny_texts.iter().map(|t| t.parse().unwrap()).collect();
        group.bench_with_input(BenchmarkId::new("naive_scan", size), &batch, |b, batch| {
            b.iter(|| {
                for target in batch {
                    black_box(naive_decide(&allow, &deny, black_box(target)));
                }
            })
        });

        let allow_set = RegexSetBuilder::new(allow.iter().map(host_regex))
            .size_limit(1 << 30)
            .dfa_size_limit(1 << 28)
            .build()
            .expect("regex set");
        let deny_set = RegexSetBuilder::new(deny.iter().map(host_regex))
            .size_limit(1 << 30)
            .build()
            .expect("regex set");
        let names: Vec<&str> = batch.iter().filter_map(|t| t.host().name()).collect();
        group.bench_with_input(BenchmarkId::new("regex_set", size), &names, |b, names| {
            b.iter(|| {
                for name in names {
                    let name = black_box(*name);
                    black_box(!deny_set.is_match(name) && allow_set.is_match(name));
                }
            })
        });
    }
    group.finish();
}

/// Compiling the rules once is the price of the fast lookups; this shows what it costs.
fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for &size in &SIZES[..2] {
        let (allow, deny) = rule_texts(size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| compiled(black_box(&allow), black_box(&deny)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matchers, bench_compile);
criterion_main!(benches);
