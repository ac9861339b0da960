//! OpenTelemetry traces over OTLP/HTTP (JSON encoding), without an SDK: a
//! `tracing` layer turns every closed span into an OTLP span (trace and
//! span IDs, parent, start and end, the span's fields as attributes), and
//! an exporter task POSTs them in batches to `<endpoint>/v1/traces`.
//!
//! The spans are the ones the code opens anyway: `request` for each API
//! request (kind SERVER), `session.create` and `runtime.create` inside a
//! create, and a root `session` span per session actor with its
//! `session.start`, `session.turn` and `session.end`. A field named
//! `otel.kind` sets the span kind and is not an attribute. Spans carry IDs
//! and outcomes, never a secret: no field the code records holds one.
//!
//! Export is best effort: a full queue drops spans (counted in the log),
//! and a collector that does not answer costs a warning, never a request.

use cc_core::identity::hex;
use serde_json::{json, Value};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Spans waiting for export; beyond this, new ones are dropped.
const QUEUE: usize = 8192;
/// Spans per request to the collector.
const BATCH: usize = 512;
/// Longest a closed span waits for its batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// An attribute's value, as OTLP types it.
#[derive(Debug, Clone, PartialEq)]
enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl AttrValue {
    fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => json!({ "stringValue": s }),
            // OTLP's JSON encodes 64-bit integers as strings.
            Self::Int(i) => json!({ "intValue": i.to_string() }),
            Self::Float(f) => json!({ "doubleValue": f }),
            Self::Bool(b) => json!({ "boolValue": b }),
        }
    }
}

/// A span as the layer keeps it (in the registry's extensions) until it
/// closes.
#[derive(Debug, Clone)]
struct SpanData {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &'static str,
    server: bool,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<(&'static str, AttrValue)>,
}

struct Fields<'a>(&'a mut SpanData);

impl Fields<'_> {
    fn set(&mut self, field: &Field, value: AttrValue) {
        let name = field.name();
        if name == "otel.kind" {
            self.0.server = matches!(value, AttrValue::Str(ref s) if s == "server");
            return;
        }
        let attrs = &mut self.0.attributes;
        match attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => attrs.push((name, value)),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, AttrValue::Str(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, AttrValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.set(field, AttrValue::Int(v)),
            Err(_) => self.set(field, AttrValue::Str(value.to_string())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, AttrValue::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, AttrValue::Bool(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.set(field, AttrValue::Str(format!("{value:?}")));
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("operating system random number generator failed");
    b
}

/// The layer: hands closed spans to the exporter.
pub struct OtlpLayer {
    tx: mpsc::Sender<SpanData>,
    /// Spans the full queue turned away (the exporter logs them).
    dropped: Arc<AtomicU64>,
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<SpanData>()
                .map(|d| (d.trace_id, d.span_id))
        });
        let now = SystemTime::now();
        let mut data = SpanData {
            trace_id: parent.map_or_else(random, |(t, _)| t),
            span_id: random(),
            parent: parent.map(|(_, s)| s),
            name: span.name(),
            server: false,
            start: now,
            end: now,
            attributes: Vec::new(),
        };
        attrs.record(&mut Fields(&mut data));
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(data) = span.extensions_mut().get_mut::<SpanData>() {
                values.record(&mut Fields(data));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(mut data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        data.end = SystemTime::now();
        if self.tx.try_send(data).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The layer for `endpoint` (the collector's base URL, e.g.
/// `http://otel-collector:4318`), and its exporter, spawned on the current
/// Tokio runtime.
pub fn layer(endpoint: &str, service: &str) -> OtlpLayer {
    let (tx, rx) = mpsc::channel(QUEUE);
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let dropped = Arc::new(AtomicU64::new(0));
    tokio::spawn(export(rx, url, service.to_owned(), dropped.clone()));
    OtlpLayer { tx, dropped }
}

async fn export(
    mut rx: mpsc::Receiver<SpanData>,
    url: String,
    service: String,
    dropped: Arc<AtomicU64>,
) {
    let http = match reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("OpenTelemetry export disabled: {e}");
            return;
        }
    };
    let mut failing = false;
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let body = encode(&service, &batch);
        let outcome = http.post(&url).json(&body).send().await;
        let ok = matches!(&outcome, Ok(r) if r.status().is_success());
        // One warning per outage, not one per batch.
        if !ok && !failing {
            let why = match outcome {
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(%url, error = %why, spans = batch.len(), "OpenTelemetry export failed; spans dropped until it works again");
        }
        failing = !ok;
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                spans = lost,
                "OpenTelemetry export fell behind; spans dropped"
            );
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn encode(service: &str, spans: &[SpanData]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut v = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": s.name,
                // SPAN_KIND_SERVER or SPAN_KIND_INTERNAL.
                "kind": if s.server { 2 } else { 1 },
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter()
                    .map(|(k, v)| json!({ "key": k, "value": v.to_json() }))
                    .collect::<Vec<_>>(),
            });
            if let Some(p) = s.parent {
                v["parentSpanId"] = hex(&p).into();
            }
            v
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service } },
                { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } }
            ] },
            "scopeSpans": [{
                "scope": { "name": "claudecluster", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans
            }]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[tokio::test]
    async fn spans_become_otlp_spans_with_their_parents_and_fields() {
        let (tx, mut rx) = mpsc::channel(16);
        let layer = OtlpLayer {
            tx,
            dropped: Arc::default(),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!("request", otel.kind = "server", method = "POST");
            let _in = root.enter();
            let child = tracing::info_span!("session.create", session.id = tracing::field::Empty);
            child.record("session.id", "s-1");
            child.in_scope(|| {});
            drop(child);
        });
        let child = rx.recv().await.expect("the child closes first");
        let root = rx.recv().await.expect("then the root");
        assert_eq!((child.name, root.name), ("session.create", "request"));
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent, Some(root.span_id));
        assert_eq!(root.parent, None);
        assert!(root.server && !child.server);
        assert_eq!(
            child.attributes,
            vec![("session.id", AttrValue::Str("s-1".into()))]
        );
        let body = encode("cc", &[child, root]);
        let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(spans[0]["parentSpanId"], spans[1]["spanId"]);
        assert_eq!(spans[1]["kind"], 2);
        assert!(spans[1].get("parentSpanId").is_none());
        assert_eq!(spans[1]["attributes"][0]["key"], "method");
        assert_eq!(spans[0]["traceId"].as_str().unwrap().len(), 32);
    }
}
