//! Pure: how many batches a mapping runs at once and how many poller replicas that takes
//! (SPEC §8), from the source's signals, the previous decision (kept in status) and the
//! operator's scaling settings.
//!
//! - Streams: concurrency = shards x `parallelizationFactor`, where shards = max(open shards,
//!   readable shards). A split's children count at once (their lanes are ready when the
//!   parent ends), and closed parents still draining count too (a merge needs both parents
//!   read before the child). A replica takes whole shards: its lanes stay together.
//! - SQS FIFO: concurrency = active message groups, at least 1, at most the cap.
//! - SQS standard: starts at the initial concurrency; while messages wait to be received it
//!   grows by up to the ramp rate per minute, up to the cap; otherwise it holds what is in use.
//! - Every source: a rise applies at once; a fall only after the source needed less for the
//!   whole scale-down window, and then to the most it needed during that window (no
//!   flapping). For a standard queue that is the cooldown after it drained.
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{
    DEFAULT_MINIMUM_POLLERS, EventSourceMappingSpec, PollerBounds, ScalingSignals, ScalingStatus,
    SourceKind,
};

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// The operator's scaling settings (controller flags, Helm values `scaling.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingSettings {
    /// Standard queues: concurrency of a new mapping, and the least while enabled.
    pub initial_concurrency: u32,
    /// Standard queues: most concurrency added per minute while messages wait.
    pub ramp_per_minute: u32,
    /// Queues: most concurrency of any mapping (`scalingConfig.maximumConcurrency` may lower it).
    pub max_concurrency: u32,
    /// How long the source must need less before the concurrency drops.
    pub scale_down_window: Duration,
    /// How often the controller reads each mapping's signals.
    pub interval: Duration,
    /// How often instead for a queue with nothing waiting, nothing in flight and no busy
    /// poller: its running pollers receive what arrives at once, only scaling up waits for the
    /// next read (Lambda, too, adds queue pollers per minute). Most of an idle mapping's cost
    /// is these reads.
    pub idle_interval: Duration,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            initial_concurrency: 5,
            ramp_per_minute: 60,
            max_concurrency: 1000,
            scale_down_window: Duration::from_secs(300),
            interval: Duration::from_secs(10),
            idle_interval: Duration::from_secs(60),
        }
    }
}

/// What the controller read from the source and the pollers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signals {
    Stream {
        open_shards: u32,
        /// Shards not yet read to their end whose parents are (draining parents included,
        /// children waiting for a parent not).
        readable_shards: u32,
    },
    FifoQueue {
        active_groups: u32,
        visible: u64,
        in_flight: u64,
    },
    StandardQueue {
        visible: u64,
        in_flight: u64,
        /// Receive loops of all pollers that sent a batch recently.
        busy_batches: u32,
    },
}

/// A queue with nothing waiting, nothing in flight and no poller busy (no active FIFO group):
/// read at [`ScalingSettings::idle_interval`].
pub fn idle_queue(signals: &ScalingSignals) -> bool {
    let zero = |n: Option<u64>| n == Some(0);
    let none = |n: Option<u32>| n.is_none_or(|n| n == 0);
    zero(signals.visible_messages)
        && zero(signals.in_flight_messages)
        && none(signals.busy_batches)
        && none(signals.active_message_groups)
}

impl Signals {
    pub fn to_status(&self) -> ScalingSignals {
        match *self {
            Signals::Stream {
                open_shards,
                readable_shards,
            } => ScalingSignals {
                open_shards: Some(open_shards),
                readable_shards: Some(readable_shards),
                ..ScalingSignals::default()
            },
            Signals::FifoQueue {
                active_groups,
                visible,
                in_flight,
            } => ScalingSignals {
                active_message_groups: Some(active_groups),
                visible_messages: Some(visible),
                in_flight_messages: Some(in_flight),
                ..ScalingSignals::default()
            },
            Signals::StandardQueue {
                visible,
                in_flight,
                busy_batches,
            } => ScalingSignals {
                visible_messages: Some(visible),
                in_flight_messages: Some(in_flight),
                busy_batches: Some(busy_batches),
                ..ScalingSignals::default()
            },
        }
    }
}

/// The signals of one evaluation, or why they could not be read.
pub type Observed<'a> = Result<&'a Signals, &'a str>;

/// A change of concurrency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What status says, and what the next evaluation starts from.
    pub status: ScalingStatus,
    /// Set when the concurrency changed.
    pub step: Option<Step>,
}

impl Decision {
    pub fn concurrency(&self) -> u32 {
        self.status.concurrency
    }

    pub fn replicas(&self) -> i32 {
        self.status.desired_replicas
    }
}

/// What the source needs now, before the scale-down window applies.
struct Need {
    concurrency: u32,
    reason: String,
    ramp_time: Option<Timestamp>,
}

/// Decides the concurrency and replicas of a mapping. `previous` is the last decision (from
/// status); without signals the previous concurrency stays. A disabled mapping needs none
/// (`observed` is not looked at).
pub fn decide(
    spec: &EventSourceMappingSpec,
    observed: Observed<'_>,
    previous: Option<&ScalingStatus>,
    now: Timestamp,
    settings: &ScalingSettings,
) -> Decision {
    let mut decision = decide_concurrency(spec, observed, previous, now, settings);
    let kind = spec.source_kind();
    decision.status.provisioned_pollers = spec.provisioned_poller_config.map(|_| PollerBounds {
        minimum: floor(spec, kind, settings),
        maximum: cap(spec, kind, settings),
    });
    decision
}

fn decide_concurrency(
    spec: &EventSourceMappingSpec,
    observed: Observed<'_>,
    previous: Option<&ScalingStatus>,
    now: Timestamp,
    settings: &ScalingSettings,
) -> Decision {
    let kind = spec.source_kind();
    let floor = floor(spec, kind, settings);
    let cap = cap(spec, kind, settings);
    let signals = observed
        .ok()
        .map(Signals::to_status)
        .or_else(|| previous.map(|p| p.signals.clone()))
        .unwrap_or_default();
    let signal_error = observed.err().map(str::to_owned);
    let running = previous.filter(|p| p.concurrency > 0);
    if !spec.enabled {
        let (step, last_scale_time, last_scale_reason) = match running {
            Some(running) => (
                Some(Step {
                    from: running.concurrency,
                    to: 0,
                    reason: "disabled".into(),
                }),
                Some(Time(now)),
                Some("disabled".into()),
            ),
            None => (
                None,
                previous.and_then(|p| p.last_scale_time.clone()),
                previous.and_then(|p| p.last_scale_reason.clone()),
            ),
        };
        return Decision {
            step,
            status: ScalingStatus {
                concurrency: 0,
                desired_replicas: 0,
                signals,
                last_scale_time,
                last_scale_reason,
                ..ScalingStatus::default()
            },
        };
    }
    let Some(previous) = running else {
        // A new (or re-enabled) mapping starts from what its signals ask for, or the floor.
        let need = match observed {
            Ok(signals) => need(spec, signals, floor, floor, cap, None, now, settings),
            Err(_) => Need {
                concurrency: floor,
                reason: "started; signals not read yet".into(),
                ramp_time: None,
            },
        };
        let (concurrency, reason) = (need.concurrency, need.reason);
        return Decision {
            step: Some(Step {
                from: 0,
                to: concurrency,
                reason: reason.clone(),
            }),
            status: ScalingStatus {
                concurrency,
                desired_replicas: replicas(spec, kind, concurrency),
                signals,
                last_scale_time: Some(Time(now)),
                last_scale_reason: Some(reason),
                ramp_time: need.ramp_time.map(MicroTime),
                scale_down_since: None,
                scale_down_to: None,
                signal_error,
                provisioned_pollers: None,
            },
        };
    };
    let mut status = ScalingStatus {
        signals,
        signal_error,
        ..previous.clone()
    };
    let current = previous.concurrency;
    let to = |status: &mut ScalingStatus, concurrency: u32, reason: String| {
        status.concurrency = concurrency;
        status.last_scale_time = Some(Time(now));
        status.last_scale_reason = Some(reason.clone());
        status.scale_down_since = None;
        status.scale_down_to = None;
        Some(Step {
            from: current,
            to: concurrency,
            reason,
        })
    };
    let step = if current > cap {
        // A lowered cap is a limit, not a wish: it applies at once.
        status.ramp_time = None;
        to(&mut status, cap, cap_reason(spec, settings))
    } else if current < floor {
        to(
            &mut status,
            floor,
            format!("raised to the least concurrency, {floor}"),
        )
    } else {
        match observed {
            // Unknown: keep the decision and its clocks as they were.
            Err(_) => None,
            Ok(signals) => {
                let ramp_time = previous.ramp_time.as_ref().map(|t| t.0);
                let need = need(spec, signals, current, floor, cap, ramp_time, now, settings);
                status.ramp_time = need.ramp_time.map(MicroTime);
                if need.concurrency > current {
                    to(&mut status, need.concurrency, need.reason)
                } else if need.concurrency == current {
                    status.scale_down_since = None;
                    status.scale_down_to = None;
                    None
                } else {
                    let since = previous.scale_down_since.as_ref().map_or(now, |t| t.0);
                    let most = previous
                        .scale_down_to
                        .filter(|_| previous.scale_down_since.is_some())
                        .map_or(need.concurrency, |m| m.max(need.concurrency));
                    if elapsed(since, now) >= settings.scale_down_window {
                        let reason = format!(
                            "needed at most {most} for {}s: {}",
                            settings.scale_down_window.as_secs(),
                            need.reason
                        );
                        to(&mut status, most, reason)
                    } else {
                        status.scale_down_since = Some(Time(since));
                        status.scale_down_to = Some(most);
                        None
                    }
                }
            }
        }
    };
    status.desired_replicas = replicas(spec, kind, status.concurrency);
    Decision { status, step }
}

/// The concurrency the signals ask for, with the ramp's clock for standard queues.
#[allow(clippy::too_many_arguments)]
fn need(
    spec: &EventSourceMappingSpec,
    signals: &Signals,
    current: u32,
    floor: u32,
    cap: u32,
    ramp_time: Option<Timestamp>,
    now: Timestamp,
    settings: &ScalingSettings,
) -> Need {
    match *signals {
        Signals::Stream {
            open_shards,
            readable_shards,
        } => {
            let factor = spec.effective_parallelization_factor();
            let shards = open_shards.max(readable_shards).max(1);
            Need {
                concurrency: shards.saturating_mul(factor),
                reason: format!(
                    "{open_shards} open shards, {readable_shards} readable, x parallelizationFactor {factor}"
                ),
                ramp_time: None,
            }
        }
        Signals::FifoQueue { active_groups, .. } => {
            let concurrency = active_groups.clamp(floor, cap);
            let mut reason = format!("{active_groups} active message groups");
            if active_groups > cap {
                reason = format!("{reason}; {}", cap_reason(spec, settings));
            }
            Need {
                concurrency,
                reason,
                ramp_time: None,
            }
        }
        Signals::StandardQueue { visible, .. } if visible > 0 => {
            if current >= cap {
                // No growth is owed at the cap: the clock restarts when there is room again.
                return Need {
                    concurrency: cap,
                    reason: format!("{visible} messages waiting; {}", cap_reason(spec, settings)),
                    ramp_time: Some(now),
                };
            }
            let since = ramp_time.unwrap_or(now);
            let rate = i64::from(settings.ramp_per_minute.max(1));
            let micros = now.duration_since(since).as_micros().max(0) as i64;
            let added = micros.saturating_mul(rate) / MICROS_PER_MINUTE;
            if added == 0 {
                return Need {
                    concurrency: current,
                    reason: format!("{visible} messages waiting"),
                    ramp_time: Some(since),
                };
            }
            let concurrency = i64::from(current).saturating_add(added).min(i64::from(cap)) as u32;
            let mut reason = format!(
                "{visible} messages waiting: +{} at up to {rate} a minute",
                concurrency - current
            );
            if concurrency == cap {
                reason = format!("{reason}; {}", cap_reason(spec, settings));
            }
            // Only the time the added steps took is used up: the rest is still owed.
            let used = SignedDuration::from_micros(added * MICROS_PER_MINUTE / rate);
            Need {
                concurrency,
                reason,
                ramp_time: Some(since + used),
            }
        }
        Signals::StandardQueue {
            in_flight,
            busy_batches,
            ..
        } => {
            let batch_size = u64::from(spec.effective_batch_size().max(1));
            let in_flight_batches =
                u32::try_from(in_flight.div_ceil(batch_size)).unwrap_or(u32::MAX);
            let in_use = busy_batches.max(in_flight_batches);
            Need {
                concurrency: in_use.clamp(floor, current.max(floor)),
                reason: if in_flight == 0 && busy_batches == 0 {
                    "queue drained".into()
                } else {
                    format!("no messages waiting; {in_use} batches in use")
                },
                ramp_time: None,
            }
        }
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

/// The least concurrency of an enabled mapping.
fn floor(
    spec: &EventSourceMappingSpec,
    kind: Option<SourceKind>,
    settings: &ScalingSettings,
) -> u32 {
    let cap = cap(spec, kind, settings);
    let provisioned = spec
        .provisioned_poller_config
        .map(|p| p.minimum_pollers.unwrap_or(DEFAULT_MINIMUM_POLLERS));
    match kind {
        Some(SourceKind::Sqs) => provisioned
            .map_or(settings.initial_concurrency, |minimum| {
                minimum.max(settings.initial_concurrency)
            })
            .clamp(1, cap),
        Some(SourceKind::Kinesis | SourceKind::DynamoDBStreams) => {
            spec.effective_parallelization_factor()
        }
        Some(SourceKind::SqsFifo) => provisioned.unwrap_or(1).clamp(1, cap),
        None => 1,
    }
}

/// The most concurrency: queues are capped (by `maximumConcurrency`, and by `maximumPollers` or
/// else the operator's maximum), streams need a reader per shard.
fn cap(spec: &EventSourceMappingSpec, kind: Option<SourceKind>, settings: &ScalingSettings) -> u32 {
    match kind {
        Some(SourceKind::Kinesis | SourceKind::DynamoDBStreams) => u32::MAX,
        _ => {
            let ceiling = maximum_pollers(spec).unwrap_or(settings.max_concurrency);
            spec.maximum_concurrency()
                .map_or(ceiling, |m| m.min(ceiling))
                .max(1)
        }
    }
}

fn maximum_pollers(spec: &EventSourceMappingSpec) -> Option<u32> {
    spec.provisioned_poller_config?.maximum_pollers
}

/// The concurrency cap of a queue mapping; `None` for streams, which have none.
pub fn queue_cap(spec: &EventSourceMappingSpec, settings: &ScalingSettings) -> Option<u32> {
    let kind = spec.source_kind();
    (!kind.is_some_and(SourceKind::is_stream)).then(|| cap(spec, kind, settings))
}

fn cap_reason(spec: &EventSourceMappingSpec, settings: &ScalingSettings) -> String {
    let ceiling = maximum_pollers(spec).unwrap_or(settings.max_concurrency);
    match (spec.maximum_concurrency(), maximum_pollers(spec)) {
        (Some(m), _) if m <= ceiling => format!("capped by maximumConcurrency {m}"),
        (_, Some(m)) => format!("capped by maximumPollers {m}"),
        _ => format!(
            "capped by the operator's maximum concurrency {}",
            settings.max_concurrency
        ),
    }
}

/// Replicas for `concurrency`: batches / batchesPerReplica, rounded up; for streams whole
/// shards per replica, so a shard's lanes stay on one replica (a replica carries at least one
/// shard, even when parallelizationFactor exceeds batchesPerReplica).
fn replicas(spec: &EventSourceMappingSpec, kind: Option<SourceKind>, concurrency: u32) -> i32 {
    let per_replica = spec.batches_per_replica().max(1);
    let replicas = match kind {
        Some(SourceKind::Kinesis | SourceKind::DynamoDBStreams) => {
            let factor = spec.effective_parallelization_factor();
            let shards = concurrency.div_ceil(factor);
            shards.div_ceil((per_replica / factor).max(1))
        }
        _ => concurrency.div_ceil(per_replica),
    };
    i32::try_from(replicas).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests;
