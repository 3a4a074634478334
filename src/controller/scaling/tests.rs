//! The scaling decisions, evaluated on a simulated clock; each decision goes through a JSON
//! round trip, as it does through the mapping's status.
use super::*;
use crate::api::EventSourceMapping;

fn spec(source: serde_json::Value, extra: serde_json::Value) -> EventSourceMappingSpec {
    let mut spec = serde_json::json!({
        "source": source,
        "target": {"url": "http://target"},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(spec).unwrap()
}

fn standard(extra: serde_json::Value) -> EventSourceMappingSpec {
    spec(
        serde_json::json!({"sqs": {"queueUrl": "http://sqs/000000000000/orders"}}),
        extra,
    )
}

fn fifo(extra: serde_json::Value) -> EventSourceMappingSpec {
    spec(
        serde_json::json!({"sqs": {"queueUrl": "http://sqs/000000000000/orders.fifo"}}),
        extra,
    )
}

fn kinesis(extra: serde_json::Value) -> EventSourceMappingSpec {
    let mut extra = extra;
    extra["startingPosition"] = "LATEST".into();
    spec(
        serde_json::json!({"kinesis": {"streamName": "clicks"}}),
        extra,
    )
}

fn backlog(visible: u64) -> Signals {
    Signals::StandardQueue {
        visible,
        in_flight: 0,
        busy_batches: 0,
    }
}

fn drained() -> Signals {
    backlog(0)
}

fn shards(open: u32, readable: u32) -> Signals {
    Signals::Stream {
        open_shards: open,
        readable_shards: readable,
    }
}

fn groups(active: u32) -> Signals {
    Signals::FifoQueue {
        active_groups: active,
        visible: 100,
        in_flight: 0,
    }
}

/// A mapping evaluated every `tick` on a simulated clock.
struct Simulation {
    spec: EventSourceMappingSpec,
    settings: ScalingSettings,
    now: Timestamp,
    status: Option<ScalingStatus>,
    steps: Vec<Step>,
}

impl Simulation {
    fn new(spec: EventSourceMappingSpec) -> Self {
        Self {
            spec,
            settings: ScalingSettings::default(),
            now: "2026-11-23T10:00:00Z".parse().unwrap(),
            status: None,
            steps: Vec::new(),
        }
    }

    fn evaluate(&mut self, signals: &Signals) -> u32 {
        self.evaluate_observed(Ok(signals))
    }

    fn evaluate_observed(&mut self, observed: Observed<'_>) -> u32 {
        let decision = decide(
            &self.spec,
            observed,
            self.status.as_ref(),
            self.now,
            &self.settings,
        );
        // Through status and back, as a restarted controller would read it.
        let json = serde_json::to_string(&decision.status).unwrap();
        self.status = Some(serde_json::from_str(&json).unwrap());
        assert_eq!(self.status.as_ref(), Some(&decision.status));
        let concurrency = decision.concurrency();
        self.steps.extend(decision.step);
        concurrency
    }

    fn wait(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    /// Evaluates every 10 s for `seconds`; returns the concurrency after each.
    fn run(&mut self, seconds: i64, signals: &Signals) -> Vec<u32> {
        (0..seconds / 10)
            .map(|_| {
                self.wait(10);
                self.evaluate(signals)
            })
            .collect()
    }

    fn replicas(&self) -> i32 {
        self.status.as_ref().unwrap().desired_replicas
    }
}

#[test]
fn standard_queue_ramps_from_5_by_60_a_minute_to_the_cap() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    assert_eq!(sim.evaluate(&backlog(50_000)), 5);
    assert_eq!(sim.replicas(), 1, "5 batches fit one replica of 10");
    let first_minute = sim.run(60, &backlog(50_000));
    assert_eq!(first_minute, [15, 25, 35, 45, 55, 65]);
    assert_eq!(sim.replicas(), 7);
    let mut previous = 65;
    for concurrency in sim.run(20 * 60, &backlog(50_000)) {
        assert!(concurrency - previous <= 10, "{previous} -> {concurrency}");
        previous = concurrency;
    }
    assert_eq!(previous, 1000, "the operator's maximum");
    assert_eq!(sim.replicas(), 100);
    // (1000 - 5) / 60 per minute: the cap is reached in the 17th minute.
    let minutes_to_cap = sim.steps.iter().position(|s| s.to == 1000).unwrap() as f64 / 6.0;
    assert!((16.0..17.0).contains(&minutes_to_cap), "{minutes_to_cap}");
    assert!(
        sim.steps[1].reason.contains("50000 messages waiting"),
        "{:?}",
        sim.steps[1]
    );
}

#[test]
fn a_slow_ramp_keeps_the_seconds_it_has_not_used() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    sim.settings.ramp_per_minute = 7;
    sim.evaluate(&backlog(10));
    let grown = sim.run(120, &backlog(10));
    // 7 a minute in 10 s evaluations: no step is lost to rounding.
    assert_eq!(grown[5], 5 + 7);
    assert_eq!(grown[11], 5 + 14);
}

#[test]
fn a_ramp_survives_a_controller_restart() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    sim.evaluate(&backlog(100));
    sim.run(30, &backlog(100));
    assert_eq!(sim.status.as_ref().unwrap().concurrency, 35);
    // The controller is down for 15 s; the next one reads the status and owes that growth.
    sim.wait(15);
    assert_eq!(sim.evaluate(&backlog(100)), 50);
}

#[test]
fn maximum_concurrency_caps_the_ramp_and_a_lowered_cap_applies_at_once() {
    let mut sim = Simulation::new(standard(
        serde_json::json!({"scalingConfig": {"maximumConcurrency": 30}}),
    ));
    sim.evaluate(&backlog(500));
    let grown = sim.run(120, &backlog(500));
    assert_eq!(grown[..4], [15, 25, 30, 30]);
    assert_eq!(*grown.last().unwrap(), 30);
    assert!(
        sim.steps
            .last()
            .unwrap()
            .reason
            .contains("maximumConcurrency 30")
    );
    assert_eq!(sim.replicas(), 3);

    sim.spec.scaling_config =
        serde_json::from_value(serde_json::json!({"maximumConcurrency": 12})).unwrap();
    sim.wait(10);
    assert_eq!(
        sim.evaluate(&backlog(500)),
        12,
        "no scale-down window for a cap"
    );
    assert_eq!(sim.replicas(), 2);

    sim.spec.scaling_config =
        serde_json::from_value(serde_json::json!({"maximumConcurrency": 2})).unwrap();
    sim.wait(10);
    assert_eq!(
        sim.evaluate(&drained()),
        2,
        "the cap is below the initial 5"
    );
}

#[test]
fn standard_queue_scales_down_only_after_staying_drained_for_the_window() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    sim.evaluate(&backlog(500));
    sim.run(60, &backlog(500));
    assert_eq!(sim.status.as_ref().unwrap().concurrency, 65);
    let steps = sim.steps.len();

    // Drained for 4 minutes, then messages in flight again: the window starts over.
    assert!(sim.run(240, &drained()).iter().all(|c| *c == 65));
    let busy = Signals::StandardQueue {
        visible: 0,
        in_flight: 650,
        busy_batches: 60,
    };
    assert!(sim.run(60, &busy).iter().all(|c| *c == 65));
    assert!(sim.run(300, &drained()).iter().all(|c| *c == 65));
    assert_eq!(sim.steps.len(), steps, "no step while waiting");
    let status = sim.status.clone().unwrap();
    assert!(status.scale_down_since.is_some());
    assert_eq!(status.scale_down_to, Some(5));

    assert_eq!(sim.run(10, &drained()), [5]);
    let down = sim.steps.last().unwrap();
    assert_eq!((down.from, down.to), (65, 5));
    assert!(down.reason.contains("queue drained"), "{}", down.reason);
    assert_eq!(sim.replicas(), 1);
}

#[test]
fn standard_queue_keeps_what_is_in_use_while_nothing_waits() {
    let mut sim = Simulation::new(standard(serde_json::json!({"batchSize": 10})));
    sim.evaluate(&backlog(500));
    sim.run(60, &backlog(500));
    // Pollers keep up: 40 batches in use (400 messages in flight) of 65.
    let keeping_up = Signals::StandardQueue {
        visible: 0,
        in_flight: 400,
        busy_batches: 30,
    };
    sim.run(300, &keeping_up);
    assert_eq!(sim.run(10, &keeping_up), [40]);
    assert!(
        sim.steps
            .last()
            .unwrap()
            .reason
            .contains("40 batches in use")
    );
}

#[test]
fn fifo_concurrency_follows_active_groups_after_the_window_down() {
    let mut sim = Simulation::new(fifo(
        serde_json::json!({"poller": {"batchesPerReplica": 4}}),
    ));
    assert_eq!(sim.evaluate(&groups(12)), 12);
    assert_eq!(sim.replicas(), 3);
    assert_eq!(sim.run(10, &groups(20)), [20], "more groups apply at once");
    sim.run(150, &groups(3));
    sim.run(100, &groups(9));
    assert_eq!(sim.status.as_ref().unwrap().concurrency, 20);
    assert_eq!(sim.run(50, &groups(2)).last(), Some(&20));
    assert_eq!(sim.run(10, &groups(2)), [9], "the most of the window");
    assert_eq!(sim.replicas(), 3);
    assert_eq!(sim.run(300, &groups(0)).last(), Some(&9));
    assert_eq!(sim.run(10, &groups(0)), [1], "one poller finds new groups");
    assert_eq!(sim.replicas(), 1);
}

#[test]
fn fifo_groups_are_bounded_by_maximum_concurrency() {
    let mut sim = Simulation::new(fifo(
        serde_json::json!({"scalingConfig": {"maximumConcurrency": 50}}),
    ));
    assert_eq!(sim.evaluate(&groups(5000)), 50);
    assert!(sim.steps[0].reason.contains("5000 active message groups"));
    assert!(sim.steps[0].reason.contains("maximumConcurrency 50"));
    let mut unlimited = Simulation::new(fifo(serde_json::json!({})));
    assert_eq!(unlimited.evaluate(&groups(5000)), 1000);
}

#[test]
fn stream_concurrency_follows_shards_through_a_split_and_a_merge() {
    let mut sim = Simulation::new(kinesis(serde_json::json!({"parallelizationFactor": 2})));
    assert_eq!(sim.evaluate(&shards(2, 2)), 4);
    // Split one of two: 3 open shards; the parent drains while its children wait.
    assert_eq!(sim.run(10, &shards(3, 2)), [6]);
    assert_eq!(sim.run(10, &shards(3, 3)), [6], "the parent ended");
    // Merge two of three: both parents drain before the child is read.
    assert_eq!(sim.run(10, &shards(2, 3)), [6]);
    assert_eq!(sim.run(300, &shards(2, 2)).last(), Some(&6));
    assert_eq!(sim.run(10, &shards(2, 2)), [4]);
    let down = sim.steps.last().unwrap();
    assert_eq!((down.from, down.to), (6, 4));
    assert!(down.reason.contains("2 open shards"), "{}", down.reason);
}

#[test]
fn stream_replicas_keep_a_shards_lanes_together() {
    let mut sim = Simulation::new(kinesis(serde_json::json!({"parallelizationFactor": 3})));
    sim.evaluate(&shards(7, 7));
    // 10 batches a replica hold 3 shards of 3 lanes.
    assert_eq!(
        (sim.status.as_ref().unwrap().concurrency, sim.replicas()),
        (21, 3)
    );
    let mut wide = Simulation::new(kinesis(serde_json::json!({
        "parallelizationFactor": 10,
        "poller": {"batchesPerReplica": 4},
    })));
    wide.evaluate(&shards(5, 5));
    assert_eq!(
        wide.replicas(),
        5,
        "a replica carries at least one whole shard"
    );
    let mut single = Simulation::new(kinesis(serde_json::json!({})));
    single.evaluate(&shards(4, 4));
    assert_eq!(
        (
            single.status.as_ref().unwrap().concurrency,
            single.replicas()
        ),
        (4, 1)
    );
}

#[test]
fn disabled_runs_no_replicas_and_re_enabled_starts_over() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    sim.evaluate(&backlog(500));
    sim.run(60, &backlog(500));
    sim.spec.enabled = false;
    sim.wait(10);
    assert_eq!(sim.evaluate_observed(Err("not read while disabled")), 0);
    assert_eq!(sim.status.as_ref().unwrap().signal_error, None);
    assert_eq!(sim.replicas(), 0);
    assert_eq!(sim.steps.last().unwrap().reason, "disabled");
    let steps = sim.steps.len();
    let disabled = sim.status.clone();
    sim.run(10, &backlog(500));
    assert_eq!(sim.steps.len(), steps, "disabled once");
    assert_eq!(sim.status, disabled, "nothing to write while disabled");

    sim.spec.enabled = true;
    assert_eq!(sim.run(10, &backlog(500)), [5]);
    assert_eq!(sim.replicas(), 1);
}

#[test]
fn unreadable_signals_keep_the_decision_and_say_why() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    assert_eq!(
        sim.evaluate_observed(Err("SQS GetQueueAttributes: timeout")),
        5
    );
    sim.evaluate(&backlog(500));
    sim.run(30, &backlog(500));
    let before = sim.status.clone().unwrap();
    sim.wait(10);
    assert_eq!(
        sim.evaluate_observed(Err("SQS GetQueueAttributes: timeout")),
        35
    );
    let status = sim.status.clone().unwrap();
    assert_eq!(
        status.signal_error.as_deref(),
        Some("SQS GetQueueAttributes: timeout")
    );
    assert_eq!(status.signals, before.signals, "the last signals read stay");
    assert_eq!(status.ramp_time, before.ramp_time);
    sim.wait(10);
    assert_eq!(sim.evaluate(&backlog(500)), 55, "growth owed for the gap");
    assert_eq!(sim.status.as_ref().unwrap().signal_error, None);
}

#[test]
fn unchanged_signals_give_an_identical_status() {
    let mut sim = Simulation::new(kinesis(serde_json::json!({})));
    sim.evaluate(&shards(3, 3));
    let first = sim.status.clone();
    sim.run(60, &shards(3, 3));
    assert_eq!(sim.status, first, "no write when nothing changed");
}

#[test]
fn provisioned_pollers_set_a_floor_kept_while_the_queue_is_empty() {
    let provisioned = serde_json::json!({"provisionedPollerConfig": {"minimumPollers": 20, "maximumPollers": 40}});
    let mut sim = Simulation::new(standard(provisioned));
    assert_eq!(
        sim.evaluate(&drained()),
        20,
        "starts at the minimum, not at 5"
    );
    assert_eq!(
        sim.status.as_ref().unwrap().provisioned_pollers,
        Some(PollerBounds {
            minimum: 20,
            maximum: 40
        })
    );
    let grown = sim.run(60, &backlog(10_000));
    assert_eq!(
        *grown.last().unwrap(),
        40,
        "the ramp stops at maximumPollers: {grown:?}"
    );
    assert!(grown.iter().all(|c| (20..=40).contains(c)), "{grown:?}");
    assert!(
        sim.steps
            .last()
            .unwrap()
            .reason
            .contains("maximumPollers 40")
    );
    let after = sim.run(30 * 60, &drained());
    assert_eq!(
        *after.last().unwrap(),
        20,
        "scales back to the minimum, never below"
    );
    assert!(after.iter().all(|c| *c >= 20));
}

#[test]
fn provisioned_pollers_may_go_beyond_the_operators_maximum_and_default_their_minimum() {
    let mut sim = Simulation::new(standard(
        serde_json::json!({"provisionedPollerConfig": {"maximumPollers": 1500}}),
    ));
    sim.settings.ramp_per_minute = 600;
    sim.evaluate(&backlog(100_000));
    let grown = sim.run(5 * 60, &backlog(100_000));
    assert_eq!(*grown.last().unwrap(), 1500, "above the operator's 1000");
    let mut fifo_sim = Simulation::new(fifo(
        serde_json::json!({"provisionedPollerConfig": {"maximumPollers": 4}}),
    ));
    assert_eq!(
        fifo_sim.evaluate(&groups(0)),
        2,
        "Lambda's default minimum of 2"
    );
    assert_eq!(
        fifo_sim.evaluate(&groups(9)),
        4,
        "active groups up to maximumPollers"
    );
}

#[test]
fn mappings_without_provisioned_pollers_scale_as_before() {
    let mut sim = Simulation::new(standard(serde_json::json!({})));
    assert_eq!(sim.evaluate(&drained()), 5);
    assert_eq!(sim.status.as_ref().unwrap().provisioned_pollers, None);
    let mut fifo_sim = Simulation::new(fifo(serde_json::json!({})));
    assert_eq!(fifo_sim.evaluate(&groups(0)), 1);
}

/// A mapping as a poller replica sees it: `spec` with the controller's decision in status.
fn decided(
    spec: EventSourceMappingSpec,
    concurrency: u32,
    desired: i32,
    ready: i32,
) -> EventSourceMapping {
    let mut mapping = EventSourceMapping::new("orders", spec);
    mapping.status = Some(crate::api::EventSourceMappingStatus {
        ready_replicas: Some(ready),
        scaling: Some(ScalingStatus {
            concurrency,
            desired_replicas: desired,
            ..ScalingStatus::default()
        }),
        ..Default::default()
    });
    mapping
}

#[test]
fn replicas_share_the_concurrency_and_never_exceed_it_together() {
    let capped = standard(serde_json::json!({"scalingConfig": {"maximumConcurrency": 2}}));
    assert_eq!(
        decided(capped, 2, 1, 1).replica_loops(),
        2,
        "one replica of batchesPerReplica 10 runs only the cap"
    );
    for per_replica in [1, 3, 4, 10, 100] {
        let spec = standard(serde_json::json!({"poller": {"batchesPerReplica": per_replica}}));
        for concurrency in 1..=1000 {
            let replicas = replicas(&spec, spec.source_kind(), concurrency);
            let loops = decided(spec.clone(), concurrency, replicas, replicas).replica_loops();
            assert!(
                loops as u32 <= per_replica,
                "{concurrency} over {replicas}: {loops}"
            );
            assert!(
                loops as i64 * i64::from(replicas) <= i64::from(concurrency),
                "{replicas} replicas x {loops} loops exceed concurrency {concurrency}"
            );
            assert!(loops >= 1);
        }
    }
}

#[test]
fn replica_loops_divide_by_the_replicas_still_running() {
    let spec = standard(serde_json::json!({"poller": {"batchesPerReplica": 10}}));
    assert_eq!(decided(spec.clone(), 15, 2, 2).replica_loops(), 7);
    // Scaling down from 3 to 2: while 3 are ready, each keeps a third.
    assert_eq!(decided(spec.clone(), 15, 2, 3).replica_loops(), 5);
    // Disabled: one loop (the engine does not run anyway).
    assert_eq!(decided(spec.clone(), 0, 0, 0).replica_loops(), 1);
    // No decision yet (a poller started by hand): batchesPerReplica, at most the cap.
    assert_eq!(EventSourceMapping::new("orders", spec).replica_loops(), 10);
    let capped = standard(serde_json::json!({"scalingConfig": {"maximumConcurrency": 3}}));
    assert_eq!(EventSourceMapping::new("orders", capped).replica_loops(), 3);
}

#[test]
fn only_an_empty_quiet_queue_is_read_at_the_idle_interval() {
    let queue = |visible, in_flight, busy| ScalingSignals {
        visible_messages: Some(visible),
        in_flight_messages: Some(in_flight),
        busy_batches: Some(busy),
        ..ScalingSignals::default()
    };
    assert!(idle_queue(&queue(0, 0, 0)));
    assert!(!idle_queue(&queue(1, 0, 0)), "messages waiting");
    assert!(!idle_queue(&queue(0, 3, 0)), "messages in flight");
    assert!(
        !idle_queue(&queue(0, 0, 2)),
        "pollers busy in the last minute"
    );
    let fifo = ScalingSignals {
        active_message_groups: Some(4),
        ..queue(0, 0, 0)
    };
    assert!(!idle_queue(&fifo), "FIFO groups active");
    let stream = ScalingSignals {
        open_shards: Some(4),
        readable_shards: Some(4),
        ..ScalingSignals::default()
    };
    assert!(
        !idle_queue(&stream),
        "streams keep the interval (resharding)"
    );
    assert!(
        !idle_queue(&ScalingSignals::default()),
        "unread signals are no reason to wait"
    );
}
