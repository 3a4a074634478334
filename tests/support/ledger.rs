//! What a reliability test saw, as one line for docs/reliability.md: records put, delivered,
//! lost, duplicated, out of order, and how long the mapping took to recover.
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use super::records::per_key;

pub struct Ledger {
    pub scenario: &'static str,
    pub put: usize,
    /// Deliveries, repeats included.
    pub delivered: usize,
    /// Records put and never delivered.
    pub lost: usize,
    /// Deliveries of a record after its first.
    pub duplicates: usize,
    /// Records that first arrived after a later record of their key; `None` where the source
    /// promises no order (standard SQS queues).
    pub order_violations: Option<usize>,
    pub recovered_in: Duration,
}

impl Ledger {
    /// Tallies `delivered` (record data in delivery order) against the `(key, data)` records
    /// put, both in the `k{n}/{i}` form of [`super::records::keyed_records`].
    pub fn tally(
        scenario: &'static str,
        put: &[(String, String)],
        delivered: &[String],
        ordered: bool,
        recovered_in: Duration,
    ) -> Self {
        let distinct: HashSet<&str> = delivered.iter().map(String::as_str).collect();
        Self {
            scenario,
            put: put.len(),
            delivered: delivered.len(),
            lost: put
                .iter()
                .filter(|(_, data)| !distinct.contains(data.as_str()))
                .count(),
            duplicates: delivered.len() - distinct.len(),
            order_violations: ordered.then(|| order_violations(delivered)),
            recovered_in,
        }
    }

    /// Prints the ledger line (`cargo test -- --nocapture` shows it).
    pub fn print(&self) {
        println!("{self}");
    }
}

impl fmt::Display for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = self
            .order_violations
            .map_or_else(|| "n/a".to_owned(), |count| count.to_string());
        write!(
            f,
            "LEDGER scenario={} put={} delivered={} lost={} duplicates={} order_violations={order} recovered_in={:.1}s",
            self.scenario,
            self.put,
            self.delivered,
            self.lost,
            self.duplicates,
            self.recovered_in.as_secs_f64(),
        )
    }
}

/// Records that first arrived after a later record of the same key had (a redelivered batch
/// repeating records already delivered is no violation).
pub fn order_violations(delivered: &[String]) -> usize {
    per_key(delivered)
        .values()
        .map(|numbers| {
            let mut seen = HashSet::new();
            let mut highest = None;
            let mut violations = 0;
            for &number in numbers {
                if !seen.insert(number) {
                    continue;
                }
                if highest.is_some_and(|highest| number < highest) {
                    violations += 1;
                }
                highest = highest.max(Some(number));
            }
            violations
        })
        .sum()
}
