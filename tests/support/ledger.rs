//! What a reliability test saw, as one line for docs/reliability.md: records put, delivered,
//! lost, duplicated, out of order, and how the mapping recovered.
use std::fmt;
use std::time::Duration;

use super::records::tally;

pub struct Ledger {
    pub scenario: String,
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
    /// How the mapping recovered (how long after the fault, what it took).
    pub recovered: String,
}

/// `duration` as the ledger writes it: "3.8 s".
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

impl Ledger {
    /// Tallies `delivered` (record data in delivery order) against the `(key, data)` records
    /// put, both in the `k{n}/{i}` form of [`super::records::keyed_records`].
    pub fn tally(
        scenario: impl Into<String>,
        put: &[(String, String)],
        delivered: &[String],
        ordered: bool,
        recovered: impl Into<String>,
    ) -> Self {
        let tally = tally(delivered, put);
        Self {
            scenario: scenario.into(),
            put: put.len(),
            delivered: tally.delivered,
            lost: tally.lost,
            duplicates: tally.duplicates,
            order_violations: ordered.then_some(tally.order_violations),
            recovered: recovered.into(),
        }
    }

    /// Prints the ledger line (`cargo test -- --nocapture` shows it).
    pub fn print(&self) {
        println!("{self}");
    }

    /// Prints the ledger line and checks what at-least-once delivery promises: nothing lost,
    /// every key in order (where order is promised), at most `max_duplicates` repeats.
    pub fn check(&self, max_duplicates: usize) {
        self.print();
        assert_eq!(self.lost, 0, "{}: records lost", self.scenario);
        assert!(
            self.order_violations.unwrap_or(0) == 0,
            "{}: keys out of order",
            self.scenario
        );
        assert!(
            self.duplicates <= max_duplicates,
            "{}: {} duplicates, more than {max_duplicates}",
            self.scenario,
            self.duplicates
        );
    }
}

impl fmt::Display for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = self.order_violations.map_or_else(
            || "n/a (no order promised)".to_owned(),
            |count| count.to_string(),
        );
        write!(
            f,
            "LEDGER | {} | put {} | delivered {} | lost {} | duplicates {} | order violations {order} | {}",
            self.scenario, self.put, self.delivered, self.lost, self.duplicates, self.recovered,
        )
    }
}
