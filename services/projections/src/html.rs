//! Server-rendered pages: plain HTML and CSS, no scripts, no build step. Every value
//! that came from an event or a request goes through [`esc`].

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::history::HistoryItem;
use crate::http::DEFAULT_TENANT;
use crate::model::{ExpiryRow, InventoryRow};
use crate::query::{
    AttentionItem, CertificateDetail, RevocationStatus, Severity, StatusCount, human_duration,
};
use crate::store::Checkpoint;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL path segment (everything but RFC 3986 unreserved characters).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map(time).unwrap_or_else(|| "—".to_owned())
}

const CSS: &str = r#"
:root { color-scheme: light; --bad: #b3261e; --warn: #8a5a00; --ok: #1b6e3a; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #202124; background: #f8f9fa; }
header { background: #202124; color: #fff; padding: 12px 24px; display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header a { color: #fff; }
header .tenant { color: #bdc1c6; }
main { padding: 16px 24px 48px; max-width: 1400px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 16px 0; }
h2 { font-size: 16px; margin: 4px 0 12px; }
h2 .count { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.sev { display: inline-block; border-radius: 4px; padding: 0 6px; font-size: 12px; font-weight: 600; }
.sev-critical { background: #fce8e6; color: var(--bad); }
.sev-warning { background: #fef7e0; color: var(--warn); }
tr.critical td:first-child { border-left: 4px solid var(--bad); }
tr.warning td:first-child { border-left: 4px solid #f9ab00; }
.status { display: inline-block; border-radius: 10px; padding: 0 8px; background: #e8eaed; font-size: 12px; }
.status-issued { background: #e6f4ea; color: var(--ok); }
.status-succeeded { background: #e6f4ea; color: var(--ok); }
.status-failed, .status-revoked, .status-expired, .status-serving_revoked, .status-serving_expired, .status-drifted { background: #fce8e6; color: var(--bad); }
.chips { display: flex; gap: 8px; flex-wrap: wrap; }
.chip { border: 1px solid var(--line); border-radius: 16px; padding: 2px 10px; background: #fff; }
.empty { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; }
ol.timeline { list-style: none; padding: 0; margin: 0; }
ol.timeline li { border-left: 2px solid var(--line); padding: 4px 0 8px 14px; position: relative; }
ol.timeline li::before { content: ""; position: absolute; left: -6px; top: 9px; width: 10px; height: 10px; border-radius: 50%; background: #5f6368; }
ol.timeline .type { font-weight: 600; }
ol.timeline .when { color: var(--muted); font-size: 12px; margin-left: 8px; }
.facts { color: #3c4043; }
footer { color: var(--muted); font-size: 12px; padding: 0 24px 24px; }
"#;

fn page(title: &str, tenant: &str, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 4096);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\
         <header><h1><a href=\"/?tenant={}\">certledger</a></h1><span class=\"tenant\">tenant <strong>{}</strong></span>\
         <span><a href=\"/metrics\">metrics</a> · <a href=\"/api/attention\">JSON</a></span></header>\
         <main>{body}</main></body></html>\n",
        esc(title),
        esc(&query_value(tenant)),
        esc(tenant),
    );
    s
}

fn cert_link(tenant: &str, id: &str) -> String {
    format!(
        "<a class=\"mono\" href=\"/certificates/{}?tenant={}\">{}</a>",
        esc(&path_segment(id)),
        esc(&query_value(tenant)),
        esc(id)
    )
}

fn domains(list: &[String]) -> String {
    if list.is_empty() {
        "<span class=\"empty\">—</span>".to_owned()
    } else {
        esc(&list.join(", "))
    }
}

fn status(s: &str) -> String {
    format!("<span class=\"status status-{}\">{}</span>", esc(s), esc(s))
}

fn severity(s: Severity) -> (&'static str, &'static str) {
    match s {
        Severity::Critical => ("critical", "critical"),
        Severity::Warning => ("warning", "warning"),
    }
}

fn attention_table(tenant: &str, items: &[AttentionItem], with_cert: bool) -> String {
    if items.is_empty() {
        return "<p class=\"empty\" id=\"attention-empty\">Nothing needs attention.</p>".to_owned();
    }
    let mut s = String::from("<table id=\"attention\"><thead><tr><th>Severity</th><th>What</th>");
    if with_cert {
        s.push_str("<th>Certificate</th><th>Names</th>");
    }
    s.push_str("<th>Details</th><th>When</th></tr></thead><tbody>");
    for a in items {
        let (class, label) = severity(a.severity);
        let _ = write!(
            s,
            "<tr class=\"attention {class}\" data-kind=\"{}\" data-certificate=\"{}\"><td><span class=\"sev sev-{class}\">{label}</span></td><td>{}</td>",
            esc(a.kind.name()),
            esc(&a.certificate_id),
            esc(a.kind.label()),
        );
        if with_cert {
            let _ = write!(
                s,
                "<td>{}</td><td>{}</td>",
                cert_link(tenant, &a.certificate_id),
                domains(&a.domains)
            );
        }
        let _ = write!(
            s,
            "<td>{}</td><td>{}</td></tr>",
            esc(&a.message),
            esc(&time(a.since))
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn expiring_table(
    tenant: &str,
    rows: &[ExpiryRow],
    names: &dyn Fn(&str) -> Vec<String>,
    now: DateTime<Utc>,
) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">Nothing expires in the next 30 days.</p>".to_owned();
    }
    let mut s = String::from(
        "<table id=\"expiring\"><thead><tr><th>Certificate</th><th>Names</th><th>Expires</th><th>Left</th><th>Renewal window</th><th>Auto-renew</th><th>Successor</th></tr></thead><tbody>",
    );
    for e in rows {
        let left = e.not_after - now;
        let left = if left > chrono::TimeDelta::zero() {
            human_duration(left)
        } else {
            format!("expired {} ago", human_duration(left))
        };
        let _ = write!(
            s,
            "<tr data-certificate=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.certificate_id),
            cert_link(tenant, &e.certificate_id),
            domains(&names(&e.certificate_id)),
            esc(&time(e.not_after)),
            esc(&left),
            esc(&format!("opens {}", time(e.renewal_opens_at))),
            if e.auto_renew {
                "on"
            } else {
                "<strong>off</strong>"
            },
            e.successor_id
                .as_deref()
                .map(|id| cert_link(tenant, id))
                .unwrap_or_else(|| "—".to_owned()),
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn revocations_table(tenant: &str, rows: &[RevocationStatus]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">No revocations.</p>".to_owned();
    }
    let mut s = String::from(
        "<table id=\"revocations\"><thead><tr><th>Certificate</th><th>Reason</th><th>Requested</th><th>Revoked</th><th>Revocation (24 h)</th><th>CRL published</th><th>CRL (24 h)</th></tr></thead><tbody>",
    );
    for r in rows {
        let v = &r.revocation;
        let _ = write!(
            s,
            "<tr data-certificate=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.certificate_id),
            cert_link(tenant, &v.certificate_id),
            esc(&v.reason),
            esc(&opt_time(v.requested_at)),
            esc(&opt_time(v.revoked_at)),
            esc(&r.revoke_compliance),
            esc(&opt_time(v.crl_published_at)),
            esc(&r.crl_compliance),
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn inventory_table(tenant: &str, rows: &[InventoryRow]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">No certificates.</p>".to_owned();
    }
    let mut s = String::from(
        "<table id=\"certificates\"><thead><tr><th>Certificate</th><th>Status</th><th>Names</th><th>Issuer</th><th>Key</th><th>Expires</th><th>Auto-renew</th><th>Deployed on</th></tr></thead><tbody>",
    );
    for c in rows {
        let _ = write!(
            s,
            "<tr data-certificate=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.certificate_id),
            cert_link(tenant, &c.certificate_id),
            status(&c.status),
            domains(&c.domains),
            esc(&c.issuer),
            esc(&c.key_algorithm),
            esc(&opt_time(c.not_after)),
            if c.auto_renew { "on" } else { "off" },
            if c.deployment_targets.is_empty() {
                "—".to_owned()
            } else {
                esc(&c.deployment_targets.join(", "))
            },
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// Everything the dashboard shows.
pub(crate) struct DashboardData<'a> {
    pub tenant: &'a str,
    pub now: DateTime<Utc>,
    pub attention: &'a [AttentionItem],
    pub expiring: &'a [ExpiryRow],
    pub counts: &'a [StatusCount],
    pub certificates: &'a [InventoryRow],
    pub more_certificates: bool,
    pub revocations: &'a [RevocationStatus],
    pub checkpoints: &'a [Checkpoint],
    pub head: u64,
}

/// The dashboard: needs attention first, then what expires soon, revocations, and the
/// inventory.
pub(crate) fn dashboard(d: &DashboardData<'_>) -> String {
    let mut body = String::new();
    let critical = d
        .attention
        .iter()
        .filter(|a| a.severity == Severity::Critical)
        .count();
    let _ = write!(
        body,
        "<section id=\"needs-attention\"><h2>Needs attention <span class=\"count\">{} ({} critical)</span></h2>{}</section>",
        d.attention.len(),
        critical,
        attention_table(d.tenant, d.attention, true)
    );
    let names = |id: &str| -> Vec<String> {
        d.certificates
            .iter()
            .find(|c| c.certificate_id == id)
            .map(|c| c.domains.clone())
            .or_else(|| {
                d.attention
                    .iter()
                    .find(|a| a.certificate_id == id)
                    .map(|a| a.domains.clone())
            })
            .unwrap_or_default()
    };
    let _ = write!(
        body,
        "<section id=\"expiring-soon\"><h2>Expiring in the next 30 days <span class=\"count\">{}</span></h2>{}</section>",
        d.expiring.len(),
        expiring_table(d.tenant, d.expiring, &names, d.now)
    );
    let _ = write!(
        body,
        "<section id=\"revocation-clock\"><h2>Revocations <span class=\"count\">{}</span></h2>{}</section>",
        d.revocations.len(),
        revocations_table(d.tenant, d.revocations)
    );
    let mut by_status: std::collections::BTreeMap<&str, i64> = Default::default();
    for c in d.counts {
        *by_status.entry(c.status.as_str()).or_default() += c.count;
    }
    let total: i64 = by_status.values().sum();
    let mut chips = String::from("<div class=\"chips\">");
    for (s, n) in &by_status {
        let _ = write!(
            chips,
            "<span class=\"chip\">{} <strong>{n}</strong></span>",
            esc(s)
        );
    }
    chips.push_str("</div>");
    let _ = write!(
        body,
        "<section id=\"inventory\"><h2>Certificates <span class=\"count\">{total}</span></h2>{chips}<p></p>{}{}</section>",
        inventory_table(d.tenant, d.certificates),
        if d.more_certificates {
            format!(
                "<p class=\"empty\">Showing the first {}; the full list is at <a href=\"/api/certificates\">/api/certificates</a>.</p>",
                d.certificates.len()
            )
        } else {
            String::new()
        }
    );
    let lag: Vec<String> = d
        .checkpoints
        .iter()
        .map(|c| {
            format!(
                "{} at {}{}",
                c.model.name(),
                c.position,
                if c.rebuilding { " (rebuilding)" } else { "" }
            )
        })
        .collect();
    let _ = write!(
        body,
        "<footer>Log head {}; read models: {}. Rendered {}.</footer>",
        d.head,
        esc(&lag.join(", ")),
        esc(&time(d.now))
    );
    page("certledger — dashboard", d.tenant, &body)
}

/// One certificate: facts, what needs attention, deployments, revocation, timeline.
pub(crate) fn certificate(
    tenant: &str,
    d: &CertificateDetail,
    history: &[HistoryItem],
    now: DateTime<Utc>,
) -> String {
    let c = &d.certificate;
    let mut body = String::new();
    let _ = write!(
        body,
        "<section id=\"facts\"><h2>Certificate <span class=\"mono\">{}</span> {}</h2><dl>",
        esc(&c.certificate_id),
        status(&c.status)
    );
    let mut fact = |k: &str, v: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact("Names", domains(&c.domains));
    fact("Issuer", esc(&c.issuer));
    fact("Key algorithm", esc(&c.key_algorithm));
    fact("Validation", esc(&c.validation_method));
    fact(
        "Auto-renew",
        if c.auto_renew { "on" } else { "off" }.to_owned(),
    );
    fact(
        "Serial",
        c.serial
            .as_deref()
            .map(|s| format!("<code>{}</code>", esc(s)))
            .unwrap_or_else(|| "—".to_owned()),
    );
    fact(
        "Valid",
        match (c.not_before, c.not_after) {
            (Some(a), Some(b)) => esc(&format!("{} to {}", time(a), time(b))),
            _ => "—".to_owned(),
        },
    );
    if let Some(e) = &d.expiry {
        fact("Renewal window opens", esc(&time(e.renewal_opens_at)));
    }
    fact(
        "Fingerprint (SHA-256)",
        c.fingerprint
            .as_deref()
            .map(|s| format!("<code>{}</code>", esc(s)))
            .unwrap_or_else(|| "—".to_owned()),
    );
    fact(
        "In this status since",
        esc(&format!(
            "{} ({})",
            time(c.status_since),
            human_duration(now - c.status_since)
        )),
    );
    fact("Ordered", esc(&time(c.ordered_at)));
    if let Some(reason) = &c.last_failure_reason {
        fact(
            "Last failure",
            esc(&format!(
                "{reason} ({}) at {}{}",
                c.last_failure_code.as_deref().unwrap_or("?"),
                opt_time(c.last_failure_at),
                c.next_retry_at
                    .map(|t| format!("; next attempt {}", time(t)))
                    .unwrap_or_default()
            )),
        );
    }
    if let Some(p) = &c.predecessor_id {
        fact("Renews", cert_link(tenant, p));
    }
    if let Some(s) = &c.successor_id {
        fact(
            "Successor",
            format!(
                "{} ({})",
                cert_link(tenant, s),
                esc(c.renewal_state.as_deref().unwrap_or("?"))
            ),
        );
    }
    body.push_str("</dl></section>");
    let _ = write!(
        body,
        "<section id=\"needs-attention\"><h2>Needs attention <span class=\"count\">{}</span></h2>{}</section>",
        d.attention.len(),
        attention_table(tenant, &d.attention, false)
    );
    body.push_str("<section id=\"deployments\"><h2>Deployments</h2>");
    if d.deployments.is_empty() {
        body.push_str("<p class=\"empty\">Not deployed.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Target</th><th>State</th><th>Since</th><th>Details</th></tr></thead><tbody>");
        for dep in &d.deployments {
            let details = match (&dep.failure_step, &dep.failure_reason) {
                (Some(step), Some(reason)) => format!("step {step}: {reason}"),
                _ => dep
                    .observed_fingerprint
                    .as_deref()
                    .map(|f| format!("serving {f}"))
                    .or_else(|| {
                        dep.replaced_by
                            .as_deref()
                            .map(|s| format!("replaced by {s}"))
                    })
                    .unwrap_or_default(),
            };
            let _ = write!(
                body,
                "<tr data-target=\"{}\"><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&dep.target_id),
                esc(&dep.target_id),
                status(&dep.state),
                esc(&time(dep.state_since)),
                esc(&details)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    if let Some(r) = &d.revocation {
        let _ = write!(
            body,
            "<section id=\"revocation\"><h2>Revocation</h2>{}</section>",
            revocations_table(tenant, std::slice::from_ref(r))
        );
    }
    let _ = write!(
        body,
        "<section id=\"history\"><h2>Timeline <span class=\"count\">{} events</span></h2><ol class=\"timeline\" id=\"timeline\">",
        history.len()
    );
    for h in history {
        let _ = write!(
            body,
            "<li data-event-type=\"{}\"><span class=\"type\">{}</span><span class=\"when\">{} · #{} · position {}{}</span><div class=\"facts\">{}</div></li>",
            esc(&h.event_type),
            esc(&h.event_type),
            esc(&time(h.recorded_at)),
            h.version,
            h.position,
            if h.actor.is_empty() {
                String::new()
            } else {
                format!(" · {}", esc(&h.actor))
            },
            if h.summary.is_empty() {
                "<span class=\"empty\">(this build cannot read this event)</span>".to_owned()
            } else {
                esc(&h.summary)
            }
        );
    }
    body.push_str("</ol></section>");
    page(
        &format!("certledger — certificate {}", c.certificate_id),
        tenant,
        &body,
    )
}

/// A page for an unknown certificate.
pub(crate) fn not_found(tenant: &str, id: &str) -> String {
    page(
        "certledger — not found",
        tenant,
        &format!(
            "<section><h2>Not found</h2><p>There is no certificate <code>{}</code> in tenant {}.</p></section>",
            esc(id),
            esc(tenant)
        ),
    )
}

/// A page for a failure (the details are logged, not shown).
pub(crate) fn error_page(tenant: &str, message: &str) -> String {
    page(
        "certledger — error",
        tenant,
        &format!(
            "<section><h2>Something went wrong</h2><p>{}</p></section>",
            esc(message)
        ),
    )
}

/// The sign-in form: an API token (viewer role or more) kept in an HttpOnly cookie.
pub(crate) fn login(message: Option<&str>) -> String {
    let notice = message
        .map(|m| format!("<p class=\"sev sev-critical\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        "certledger — sign in",
        DEFAULT_TENANT,
        &format!(
            "<section id=\"login\"><h2>Sign in</h2>{notice}\
             <form method=\"post\" action=\"/login\">\
             <p><label>API token <input type=\"password\" name=\"token\" autocomplete=\"off\" size=\"60\" required></label></p>\
             <p><button type=\"submit\">Sign in</button></p></form>\
             <p class=\"empty\">A token with the viewer role or more (<code>certctl tokens create NAME --role viewer</code>). \
             The dashboard shows the token's tenant.</p></section>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(path_segment("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
