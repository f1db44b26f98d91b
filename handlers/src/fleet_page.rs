//! The fleet page: a [`FleetView`] as one self-contained HTML document. Server-rendered with `maud` (every value
//! interpolated into the markup is escaped by it), styled by one inline stylesheet, no script and nothing fetched
//! from elsewhere: the [`CONTENT_SECURITY_POLICY`] the page is served with forbids it, so a browser would refuse
//! anything else. Filters are a plain GET form and links, so the page works without JavaScript.

use std::sync::LazyLock;

use base64::Engine;
use maud::{DOCTYPE, Markup, html};
use sha2::Digest;

use crate::lifecycle::fleet::{Check, DeviceView, FleetView, Health, VaultPresence};

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; color: #1b1b1b; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.meta { color: #555; margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
.ok { color: #107c10; } .missing { color: #a4262c; font-weight: 600; } .na { color: #888; }
td.ok, td.missing, td.na { white-space: nowrap; }
.health { display: inline-block; padding: 0 .45rem; border-radius: .7rem; font-size: .85rem; white-space: nowrap; }
.h-healthy { background: #dff6dd; color: #0b5a0b; } .h-drifted, .h-pending { background: #fff4ce; color: #6d5200; }
.h-vaultDeleted, .h-failed, .h-unreadable { background: #fde7e9; color: #a4262c; }
.h-notActivated, .h-legacy { background: #eee; color: #444; }
.counts a { margin-right: .8rem; } form { margin: .5rem 0 1rem; } form label { margin-right: .8rem; }
.findings { font-size: .85rem; color: #555; } .empty { color: #555; font-style: italic; }
"#;

/// What the page may load: its own inline stylesheet (by hash) and nothing else; forms go back to the app only.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    )
});

/// The page. Its filter links and form carry nothing but the filters: the caller's sign-in travels with each
/// request (App Service Authentication's session, or the bearer token), never in a URL.
pub fn render(view: &FleetView) -> String {
    let link = |status: Option<Health>| filter_link(view, status);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "edgevault fleet" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                h1 { "edgevault fleet" }
                p.meta {
                    "Tenant " code { (view.tenant_id) } " · subscriptions " (view.subscriptions.join(", "))
                    " · generated " time datetime=(view.generated_at) { (view.generated_at) }
                }
                p.counts {
                    a href=(link(None)) { "all (" (view.counts.values().sum::<usize>()) ")" }
                    @for (health, count) in &view.counts {
                        a href=(link(Some(*health))) { span class={"health h-" (health.name())} { (label(*health)) } " " (count) }
                    }
                }
                (filter_form(view))
                h2 #devices { "Devices (" (view.devices.len()) ")" }
                @if view.truncated {
                    p.missing { "More devices match than one page shows; narrow the view with the filters." }
                }
                (devices(view))
                h2 #alerts { "Open alerts (" (view.alerts.len()) ")" }
                @if view.alerts.is_empty() {
                    p.empty { "No open alerts." }
                } @else {
                    table {
                        thead { tr { th { "Device" } th { "What" } } }
                        tbody { @for alert in &view.alerts { tr { td { (alert.device_name) } td { (alert.what) } } } }
                    }
                }
                h2 #recoveries { "Recent recoveries (" (view.recoveries.len()) ")" }
                @if view.recoveries.is_empty() {
                    p.empty { "No deleted vault recorded." }
                } @else {
                    table {
                        thead { tr { th { "Device" } th { "Vault" } th { "Deleted" } th { "Finished" } th { "Outcome" } th { "Time to recover" } } }
                        tbody {
                            @for r in &view.recoveries {
                                tr {
                                    td { (last_segment(&r.record.device)) }
                                    td { (last_segment(&r.record.vault)) }
                                    td { (r.record.deleted_at.as_deref().unwrap_or("—")) }
                                    td { (r.record.finished_at) }
                                    td {
                                        @match r.record.outcome {
                                            crate::lifecycle::history::RecoveryOutcome::Recovered => span.ok { "recovered" },
                                            crate::lifecycle::history::RecoveryOutcome::Unrecoverable => span.missing { "unrecoverable" },
                                        }
                                        @if let Some(reason) = &r.record.reason { " — " (reason) }
                                    }
                                    td { (r.seconds_to_recover.map(duration).unwrap_or_else(|| "—".into())) }
                                }
                            }
                        }
                    }
                }
                h2 #sweep { "Sweep" }
                @match &view.sweep {
                    None => p.empty { "No sweep progress recorded." },
                    Some(sweep) => p {
                        "Sweep " code { (sweep.id) }
                        @if let Some(started) = &sweep.started_at { ", started " (started) }
                        ": " (sweep.devices) " devices in " (sweep.pages) " pages"
                        @if sweep.done { ", done." } @else { ", under way." }
                        @for (finding, count) in &sweep.findings { " " (finding) ": " (count) "." }
                    },
                }
            }
        }
    };
    markup.into_string()
}

/// A page that only says what was wrong with the request.
pub fn render_error(status: u16, message: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "edgevault fleet: " (status) } style { (maud::PreEscaped(STYLE)) } }
            body { h1 { "edgevault fleet" } p.missing { (message) } }
        }
    }
    .into_string()
}

fn filter_form(view: &FleetView) -> Markup {
    let f = &view.filter;
    html! {
        form method="get" action="fleet" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for health in Health::ALL {
                        option value=(health.name()) selected[f.status == Some(health)] { (label(health)) }
                    }
                }
            }
            label { "Subscription "
                select name="subscription" {
                    option value="" { "any" }
                    @for s in &view.subscriptions { option value=(s) selected[f.subscription.as_ref() == Some(s)] { (s) } }
                }
            }
            label { "Resource group " input type="text" name="resourceGroup" value=[f.resource_group.as_deref()] size="16"; }
            button type="submit" { "Filter" }
        }
    }
}

fn devices(view: &FleetView) -> Markup {
    if view.devices.is_empty() {
        return html! { p.empty { "No device matches." } };
    }
    html! {
        table #fleet {
            thead {
                tr {
                    th { "Device" } th { "Status" } th { "Identity" } th { "Vault" } th { "Lock" } th { "Soft delete" }
                    th { "Purge protection" } th { "CIK" } th { "Audit" } th { "Sync" } th { "Findings" }
                }
            }
            tbody {
                @for d in &view.devices { (device_row(d)) }
            }
        }
    }
}

fn device_row(d: &DeviceView) -> Markup {
    html! {
        tr data-device=(d.name) data-health=(d.health.name()) {
            td {
                a href=(d.portal_url) { (d.name) }
                br; span.findings { (d.resource_group) " · " (d.location) }
            }
            td { span class={"health h-" (d.health.name())} { (label(d.health)) } }
            (cell(d.identity))
            td {
                @match &d.vault {
                    None => span.na { "—" },
                    Some(v) => {
                        a href=(v.portal_url) { (v.name) }
                        @if let Some(note) = presence_note(v.presence) { " " span.missing { (note) } }
                    }
                }
            }
            (cell(d.lock)) (cell(d.soft_delete)) (cell(d.purge_protection)) (cell(d.cik)) (cell(d.audit))
            td { (d.sync_status.map(|s| format!("{s:?}")).unwrap_or_else(|| "—".into())) }
            td.findings {
                @for f in &d.findings { (format!("{f:?}")) " " }
                @for alert in &d.open_alerts { br; span.missing { (alert) } }
                @if let Some(error) = &d.error { br; span.missing { (error) } }
            }
        }
    }
}

fn presence_note(presence: VaultPresence) -> Option<&'static str> {
    match presence {
        VaultPresence::Present => None,
        VaultPresence::SoftDeleted => Some("(soft-deleted)"),
        VaultPresence::Missing => Some("(gone)"),
        VaultPresence::NotOwned => Some("(not this device's)"),
    }
}

fn cell(check: Check) -> Markup {
    html! {
        @match check {
            Check::Ok => td.ok { "✓ ok" },
            Check::Missing => td.missing { "✗ missing" },
            Check::NotApplicable | Check::Unknown => td.na title=(if check == Check::Unknown { "not observed yet" } else { "not applicable" }) { "—" },
        }
    }
}

fn label(health: Health) -> &'static str {
    match health {
        Health::Healthy => "healthy",
        Health::Drifted => "drifted",
        Health::VaultDeleted => "vault deleted",
        Health::Failed => "failed",
        Health::Pending => "pending",
        Health::NotActivated => "not activated",
        Health::Legacy => "legacy",
        Health::Unreadable => "unreadable",
    }
}

/// The link to this view with another status filter, the other filters kept.
fn filter_link(view: &FleetView, status: Option<Health>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(status) = status {
        query.append_pair("status", status.name());
    }
    if let Some(s) = &view.filter.subscription {
        query.append_pair("subscription", s);
    }
    if let Some(rg) = &view.filter.resource_group {
        query.append_pair("resourceGroup", rg);
    }
    let query = query.finish();
    if query.is_empty() { "fleet".into() } else { format!("fleet?{query}") }
}

fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// A duration for people: milliseconds under a second, seconds under two minutes, then minutes or hours.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fleet::Filter;

    fn view_with(name: &str) -> FleetView {
        let device = DeviceView {
            id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}"),
            name: name.into(),
            subscription: "s".into(),
            resource_group: "rg".into(),
            location: "westus".into(),
            portal_url: "https://portal.azure.com/#@t/resource/x".into(),
            health: Health::Failed,
            identity: Check::Ok,
            vault: None,
            lock: Check::NotApplicable,
            soft_delete: Check::NotApplicable,
            purge_protection: Check::NotApplicable,
            cik: Check::NotApplicable,
            audit: Check::Unknown,
            sync_status: None,
            findings: vec![],
            open_alerts: vec![format!("alert about {name}")],
            error: None,
        };
        FleetView {
            generated_at: "2026-12-03T10:00:00Z".into(),
            tenant_id: "t".into(),
            subscriptions: vec!["s".into()],
            filter: Filter { resource_group: Some("rg&x".into()), ..Default::default() },
            counts: [(Health::Failed, 1)].into(),
            devices: vec![device],
            truncated: false,
            alerts: vec![],
            recoveries: vec![],
            sweep: None,
        }
    }

    #[test]
    fn every_value_from_azure_is_escaped() {
        let page = render(&view_with("<script>alert(1)</script>"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("resourceGroup=rg%26x"), "links carry the filters, URL-encoded");
    }

    #[test]
    fn the_stylesheet_is_the_only_thing_the_policy_allows() {
        let page = render(&view_with("d"));
        let style = page.split("<style>").nth(1).and_then(|s| s.split("</style>").next()).unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style.as_bytes()));
        assert!(CONTENT_SECURITY_POLICY.contains(&format!("'sha256-{hash}'")), "{}", *CONTENT_SECURITY_POLICY);
        assert!(!page.contains("<script") && !page.contains("src="), "nothing is loaded: {page}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.014), "14 ms");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(600.0), "10.0 min");
        assert_eq!(duration(36000.0), "10.0 h");
    }
}
