//! Records keyed for order checks: `k{n}/{i}` is record `i` of key `k{n}`; what a target
//! received is checked for completeness, per-key order and duplicates.
use std::collections::{BTreeMap, BTreeSet};

/// `count` records over `keys` keys: key `k{n}`, data `k{n}/{i}` with `i` counting from
/// `first` per key.
pub fn keyed_records(count: usize, keys: usize, first: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let key = format!("k{}", i % keys);
            let data = format!("{key}/{}", first + i / keys);
            (key, data)
        })
        .collect()
}

/// Per key, the record numbers in delivery order.
pub fn per_key(delivered: &[String]) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for data in delivered {
        let (key, n) = data.split_once('/').unwrap();
        keys.entry(key.into()).or_default().push(n.parse().unwrap());
    }
    keys
}

/// The deliveries with every repeat of an earlier one left out: what at-least-once delivery
/// promises to be complete and in order.
pub fn first_deliveries(delivered: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    delivered
        .iter()
        .filter(|data| seen.insert(data.as_str()))
        .cloned()
        .collect()
}

/// How many deliveries repeated a record already delivered.
pub fn duplicates(delivered: &[String]) -> usize {
    delivered.len() - delivered.iter().collect::<BTreeSet<_>>().len()
}

/// At least once, with duplicates bounded: a stream record is delivered again only when a call
/// that carried it failed (a timeout on a busy machine is one) or its shard stopped without
/// writing its last checkpoint, so the duplicates cannot outnumber what those allow
/// (`Poller::redeliveries_allowed`, plus whatever duplicates an earlier phase of the test
/// already allowed). Returns the number of duplicates.
pub fn assert_duplicates_from_failed_calls(delivered: &[String], allowed: u64) -> usize {
    let duplicates = duplicates(delivered);
    assert!(
        duplicates as u64 <= allowed,
        "{duplicates} records delivered twice, but failed calls and interrupted shards allow only {allowed}"
    );
    if duplicates > 0 {
        eprintln!("{duplicates} duplicate deliveries after failed calls ({allowed} records)");
    }
    duplicates
}

/// Every record arrived, and every key's records first arrived in order (a redelivered batch
/// may repeat records already delivered).
pub fn assert_complete_and_ordered(delivered: &[String], expected: &[(String, String)]) {
    let got: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(|(_, data)| data.as_str())
        .filter(|data| !got.contains(data))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (key, numbers) in per_key(delivered) {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let deduped: Vec<usize> = numbers.iter().copied().fold(Vec::new(), |mut acc, n| {
            if acc.last().is_none_or(|last| n > *last) {
                acc.push(n);
            }
            acc
        });
        assert_eq!(deduped, sorted, "key {key} out of order: {numbers:?}");
    }
}

/// What a target received against what was put: records lost (never delivered), deliveries
/// beyond the first of a record, and records whose first delivery came after a later record of
/// their key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub order_violations: usize,
}

pub fn tally(delivered: &[String], expected: &[(String, String)]) -> Tally {
    let first_arrivals = first_deliveries(delivered);
    let distinct: BTreeSet<&str> = first_arrivals.iter().map(String::as_str).collect();
    let lost = expected
        .iter()
        .filter(|(_, data)| !distinct.contains(data.as_str()))
        .count();
    let order_violations = per_key(&first_arrivals)
        .values()
        .map(|numbers| numbers.windows(2).filter(|pair| pair[1] < pair[0]).count())
        .sum();
    Tally {
        delivered: delivered.len(),
        lost,
        duplicates: delivered.len() - first_arrivals.len(),
        order_violations,
    }
}
