//! Trace context of a target call: a W3C `traceparent` on every call, so a target joins the
//! batch to a trace, and, as Lambda passes X-Ray's, the producer's `AWSTraceHeader` as
//! `X-Amzn-Trace-Id`. A batch continues the producer's trace when its first traced record
//! carries one (an SQS `AWSTraceHeader` system attribute or a `traceparent` message
//! attribute); otherwise each batch starts a new trace.

/// The headers of one target call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`: the call is a new span of the trace.
    pub traceparent: String,
    /// The producer's X-Ray header, passed on unchanged.
    pub amzn_trace_id: Option<String>,
    /// The producer's span this call continues (its W3C span id or X-Ray `Parent`), so an
    /// exported span of the call ([`crate::otlp`]) hangs under it.
    pub parent_span_id: Option<u64>,
}

/// What a record says about the trace that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerTrace<'a> {
    /// An X-Ray header: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`.
    XRay(&'a str),
    /// A W3C `traceparent`.
    W3c(&'a str),
}

impl TraceContext {
    /// A call in a trace of its own.
    pub fn new_trace() -> Self {
        Self::child_of(
            &format!("{:032x}", uuid::Uuid::new_v4().as_u128()),
            true,
            None,
            None,
        )
    }

    /// A call continuing the producer's trace, or a new trace when the producer's header cannot
    /// be read.
    pub fn continuing(producer: Option<ProducerTrace<'_>>) -> Self {
        match producer {
            Some(ProducerTrace::XRay(header)) => match xray_trace(header) {
                Some((trace_id, sampled, parent)) => {
                    Self::child_of(&trace_id, sampled, Some(header.to_owned()), parent)
                }
                None => Self::new_trace(),
            },
            Some(ProducerTrace::W3c(parent)) => match w3c_trace(parent) {
                Some((trace_id, sampled, parent)) => {
                    Self::child_of(trace_id, sampled, None, Some(parent))
                }
                None => Self::new_trace(),
            },
            None => Self::new_trace(),
        }
    }

    fn child_of(
        trace_id: &str,
        sampled: bool,
        amzn_trace_id: Option<String>,
        parent_span_id: Option<u64>,
    ) -> Self {
        // The low half of a random UUID; never all zeros (invalid in W3C).
        let span_id = (uuid::Uuid::new_v4().as_u128() as u64).max(1);
        Self {
            traceparent: format!("00-{trace_id}-{span_id:016x}-{:02x}", u8::from(sampled)),
            amzn_trace_id,
            parent_span_id,
        }
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The call's own span id (16 hex digits).
    pub fn span_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// Whether the trace is sampled (the producer's decision, or a new trace: always).
    pub fn sampled(&self) -> bool {
        self.traceparent.ends_with("-01")
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A span id of 16 hex digits, unless it is all zeros (invalid in W3C).
fn span_id(text: &str) -> Option<u64> {
    is_hex(text, 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .filter(|id| *id != 0)
}

/// The W3C trace id of an X-Ray header (its root's time and random parts), its sampling and
/// its parent span (absent or unreadable: none).
fn xray_trace(header: &str) -> Option<(String, bool, Option<u64>)> {
    let mut root = None;
    let mut sampled = true;
    let mut parent = None;
    for part in header.split(';') {
        match part.trim().split_once('=') {
            Some(("Root", value)) => root = Some(value),
            Some(("Sampled", value)) => sampled = value != "0",
            Some(("Parent", value)) => parent = span_id(value),
            _ => {}
        }
    }
    let mut pieces = root?.split('-');
    let (version, time, random) = (pieces.next()?, pieces.next()?, pieces.next()?);
    (version == "1" && is_hex(time, 8) && is_hex(random, 24) && pieces.next().is_none()).then(
        || {
            (
                format!("{time}{random}").to_ascii_lowercase(),
                sampled,
                parent,
            )
        },
    )
}

/// The trace id, sampling and span id of a W3C traceparent (version 00).
fn w3c_trace(parent: &str) -> Option<(&str, bool, u64)> {
    let mut pieces = parent.trim().split('-');
    let (version, trace_id, span_id, flags) = (
        pieces.next()?,
        pieces.next()?,
        pieces.next()?,
        pieces.next()?,
    );
    let valid = version == "00"
        && is_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && is_hex(flags, 2)
        && pieces.next().is_none();
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    let span_id = self::span_id(span_id)?;
    valid.then_some((trace_id, sampled, span_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_well_formed(context: &TraceContext) {
        let parts: Vec<&str> = context.traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{context:?}");
        assert_eq!(parts[0], "00");
        assert!(is_hex(parts[1], 32) && is_hex(parts[2], 16) && is_hex(parts[3], 2));
        assert_ne!(parts[2], "0000000000000000");
    }

    #[test]
    fn each_batch_without_a_producer_trace_starts_a_new_trace() {
        let (a, b) = (TraceContext::new_trace(), TraceContext::new_trace());
        assert_well_formed(&a);
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.amzn_trace_id, None);
        assert!(a.traceparent.ends_with("-01"), "sampled");
        assert!(a.sampled());
        assert_eq!(a.parent_span_id, None, "a root span");
    }

    #[test]
    fn an_xray_header_is_continued_and_passed_on() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let context = TraceContext::continuing(Some(ProducerTrace::XRay(header)));
        assert_well_formed(&context);
        assert_eq!(context.trace_id(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(context.amzn_trace_id.as_deref(), Some(header));
        assert_eq!(context.parent_span_id, Some(0x53995c3f42cd8ad8));
        let unsampled = TraceContext::continuing(Some(ProducerTrace::XRay(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0",
        )));
        assert!(unsampled.traceparent.ends_with("-00"));
        assert!(!unsampled.sampled());
        assert_eq!(unsampled.parent_span_id, None, "no Parent");
    }

    #[test]
    fn a_w3c_traceparent_is_continued_with_a_new_span() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = TraceContext::continuing(Some(ProducerTrace::W3c(parent)));
        assert_well_formed(&context);
        assert_eq!(context.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert!(
            !context.traceparent.contains("b7ad6b7169203331"),
            "a span of its own"
        );
        assert_eq!(context.span_id(), &context.traceparent[36..52]);
        assert_ne!(context.span_id(), "b7ad6b7169203331");
        assert_eq!(context.parent_span_id, Some(0xb7ad6b7169203331));
        assert!(context.sampled());
    }

    #[test]
    fn unreadable_producer_headers_start_a_new_trace() {
        for header in ["Root=2-5759e988-bd86", "garbage", ""] {
            let context = TraceContext::continuing(Some(ProducerTrace::XRay(header)));
            assert_well_formed(&context);
            assert_eq!(context.amzn_trace_id, None, "{header}");
        }
        for parent in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        ] {
            let context = TraceContext::continuing(Some(ProducerTrace::W3c(parent)));
            assert_ne!(
                context.trace_id(),
                "0af7651916cd43dd8448eb211c80319c",
                "{parent}"
            );
        }
    }
}
