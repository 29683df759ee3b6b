//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Certificate series come from the read models (so they survive restarts and are the
//! same on every replica); lag and projector counters from the log and this process.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use certledger_eventlog::EventLog;
use certledger_eventstream::relay::RelayStats;
use chrono::{DateTime, Utc};

use crate::error::ProjectionError;
use crate::projector::ProjectorStats;
use crate::query::{AttentionKind, AttentionPolicy};
use crate::store::ProjectionStore;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds an exposition: families with HELP and TYPE, then their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value (backslash, double quote, line feed).
pub fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_micros() as f64 / 1e6
}

/// What `/metrics` reads.
#[derive(Clone)]
pub struct MetricsSources {
    /// The read models.
    pub store: ProjectionStore,
    /// The log (head position, lag in seconds).
    pub log: Arc<dyn EventLog>,
    /// The in-process projector's counters, if it runs here.
    pub projector: Option<Arc<ProjectorStats>>,
    /// The in-process relay's counters, if it runs here.
    pub relay: Option<Arc<RelayStats>>,
    /// What counts as needing attention.
    pub policy: AttentionPolicy,
}

/// Renders every series.
pub async fn render(src: &MetricsSources, now: DateTime<Utc>) -> Result<String, ProjectionError> {
    let mut x = Exposition::default();

    let counts = src.store.status_counts(None).await?;
    x.family(
        "certledger_certificates",
        "gauge",
        "Certificates in the inventory by status and issuer.",
    );
    for c in &counts {
        x.sample(
            "certledger_certificates",
            &[("status", &c.status), ("issuer", &c.issuer)],
            c.count as f64,
        );
    }

    let expirations = src.store.expirations_all_tenants().await?;
    x.family(
        "certledger_certificate_expiration_timestamp_seconds",
        "gauge",
        "The not-after time of each issued certificate, in seconds since the epoch.",
    );
    for (e, issuer, name) in &expirations {
        x.sample(
            "certledger_certificate_expiration_timestamp_seconds",
            &[
                ("certificate_id", &e.certificate_id),
                ("tenant", &e.tenant),
                ("issuer", issuer),
                ("common_name", name),
                ("auto_renew", if e.auto_renew { "true" } else { "false" }),
            ],
            seconds(e.not_after),
        );
    }
    x.family(
        "certledger_certificate_renewal_due_timestamp_seconds",
        "gauge",
        "When each issued certificate's renewal window opens, in seconds since the epoch.",
    );
    for (e, issuer, name) in &expirations {
        x.sample(
            "certledger_certificate_renewal_due_timestamp_seconds",
            &[
                ("certificate_id", &e.certificate_id),
                ("tenant", &e.tenant),
                ("issuer", issuer),
                ("common_name", name),
            ],
            seconds(e.renewal_opens_at),
        );
    }

    let failures = src.store.failure_totals().await?;
    let mut by_kind: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for ((kind, issuer), n) in &failures {
        by_kind
            .entry(kind.as_str())
            .or_default()
            .push((issuer.as_str(), *n));
    }
    for (kind, what) in [
        ("validation", "Validation failures and operator rejections"),
        ("issuance", "Issuance failures"),
        ("deployment", "Deployment failures"),
        ("renewal", "Renewal failures"),
    ] {
        let name = format!("certledger_{kind}_failures_total");
        x.family(
            &name,
            "counter",
            &format!("{what} recorded in the log, by issuer."),
        );
        for (issuer, n) in by_kind.get(kind).map(Vec::as_slice).unwrap_or(&[]) {
            x.sample(&name, &[("issuer", issuer)], *n as f64);
        }
    }

    let attention = src.store.attention_all_tenants(now, &src.policy).await?;
    x.family(
        "certledger_needs_attention",
        "gauge",
        "Items in the needs-attention list by kind, over every tenant.",
    );
    for kind in AttentionKind::ALL {
        let n = attention.iter().filter(|a| a.kind == kind).count();
        x.sample(
            "certledger_needs_attention",
            &[("kind", kind.name())],
            n as f64,
        );
    }

    let head = src.log.head_position().await?;
    let checkpoints = src.store.checkpoints().await?;
    x.family(
        "certledger_log_head_position",
        "gauge",
        "The highest position in the event log.",
    );
    x.sample("certledger_log_head_position", &[], head as f64);
    x.family(
        "certledger_projection_checkpoint_position",
        "gauge",
        "The log position each read model reflects.",
    );
    for c in &checkpoints {
        x.sample(
            "certledger_projection_checkpoint_position",
            &[("projection", c.model.name())],
            c.position as f64,
        );
    }
    x.family(
        "certledger_projection_lag_events",
        "gauge",
        "Events in the log not yet reflected by each read model (head minus checkpoint).",
    );
    for c in &checkpoints {
        x.sample(
            "certledger_projection_lag_events",
            &[("projection", c.model.name())],
            head.saturating_sub(c.position) as f64,
        );
    }
    x.family(
        "certledger_projection_lag_seconds",
        "gauge",
        "Age of the oldest event each read model has not reflected yet (0 when caught up).",
    );
    let mut oldest_unseen: BTreeMap<u64, f64> = BTreeMap::new();
    for c in &checkpoints {
        let lag = if c.position >= head {
            0.0
        } else if let Some(lag) = oldest_unseen.get(&c.position) {
            *lag
        } else {
            let next = src.log.read_all(c.position, 1).await?;
            let lag = next
                .first()
                .map(|e| ((now - e.recorded_at).num_milliseconds() as f64 / 1e3).max(0.0))
                .unwrap_or(0.0);
            oldest_unseen.insert(c.position, lag);
            lag
        };
        x.sample(
            "certledger_projection_lag_seconds",
            &[("projection", c.model.name())],
            lag,
        );
    }
    x.family(
        "certledger_projection_rebuilding",
        "gauge",
        "1 while a rebuild replays the log into the read model.",
    );
    for c in &checkpoints {
        x.sample(
            "certledger_projection_rebuilding",
            &[("projection", c.model.name())],
            if c.rebuilding { 1.0 } else { 0.0 },
        );
    }

    if let Some(p) = &src.projector {
        for (name, help, v) in [
            (
                "certledger_projector_events_total",
                "Events handled by this process's projector.",
                &p.events,
            ),
            (
                "certledger_projector_duplicates_total",
                "Deliveries already reflected (at-least-once repeats).",
                &p.duplicates,
            ),
            (
                "certledger_projector_undecodable_total",
                "Events skipped because this build cannot decode them.",
                &p.undecodable,
            ),
            (
                "certledger_projector_stream_writes_total",
                "Read-model rows rewritten (per read model and stream).",
                &p.stream_writes,
            ),
            (
                "certledger_projector_errors_total",
                "Failed projection attempts (retried).",
                &p.errors,
            ),
        ] {
            x.family(name, "counter", help);
            x.sample(name, &[], v.load(Ordering::Relaxed) as f64);
        }
    }
    if let Some(r) = &src.relay {
        let checkpoint = r.checkpoint.load(Ordering::Relaxed);
        x.family(
            "certledger_relay_lag_events",
            "gauge",
            "Events in the log not yet published to JetStream by the relay.",
        );
        x.sample(
            "certledger_relay_lag_events",
            &[],
            head.saturating_sub(checkpoint) as f64,
        );
        x.family(
            "certledger_relay_published_total",
            "counter",
            "Events the relay published that JetStream stored for the first time.",
        );
        x.sample(
            "certledger_relay_published_total",
            &[],
            r.published.load(Ordering::Relaxed) as f64,
        );
        x.family(
            "certledger_relay_duplicates_total",
            "counter",
            "Events the relay republished that JetStream already had.",
        );
        x.sample(
            "certledger_relay_duplicates_total",
            &[],
            r.duplicates.load(Ordering::Relaxed) as f64,
        );
    }
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        let mut x = Exposition::default();
        x.family("m", "gauge", "help with \\ and\nnewline");
        x.sample("m", &[("a", "q\"uote\\back\nline")], 1.5);
        x.sample("m", &[], f64::INFINITY);
        assert_eq!(
            x.finish(),
            "# HELP m help with \\\\ and\\nnewline\n# TYPE m gauge\nm{a=\"q\\\"uote\\\\back\\nline\"} 1.5\nm +Inf\n"
        );
    }
}
