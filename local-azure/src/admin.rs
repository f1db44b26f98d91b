//! The admin API (plain http, loopback only), also home of the identity endpoint.
//!
//! | Endpoint | Purpose |
//! |---|---|
//! | `GET /admin/health` | liveness |
//! | `GET /admin/env` | the client environment (same as `env.json`) |
//! | `GET /admin/clock`, `POST /admin/clock/advance {"seconds":N}` | local-azure's clock |
//! | `GET /admin/activity?after=<seq>&limit=<n>` | the ARM activity log |
//! | `GET/POST /admin/tenants`, `/admin/subscriptions`, `/admin/resource-groups` | directory |
//! | `GET/POST /admin/grants`, `DELETE /admin/grants/{id}` | ARM role grants |
//! | `GET/POST /admin/principals` | identities (service principals, MSIs; users with `userPrincipalName`) |
//! | `GET/POST /admin/applications` | app registrations (audiences, trusted federated subjects) for [`crate::entra`] |
//! | `POST /admin/tokens {"principalId","resource"}` | mint a token without the MSI header |
//! | `GET/POST/DELETE /admin/faults`, `DELETE /admin/faults/{id}` | fault injection (incl. rate limits) |
//! | `POST /admin/seed` | bulk fleet: devices, vaults, locks, secrets, storage accounts, diagnostic settings in one transaction ([`crate::seed`]) |
//! | `GET/POST /admin/servicebus/namespaces`, `GET/POST /admin/servicebus/queues` | Service Bus entities |
//! | `GET/DELETE /admin/servicebus/queues/{ns}/{q}[/messages|/deadletter]` | a queue, peek, purge |
//! | `GET/POST /admin/eventgrid/subscriptions`, `GET/DELETE …/{name}`, `GET /admin/eventgrid/deadletters` | Event Grid |
//! | `GET /msi/token` | managed identity endpoint (`IDENTITY_ENDPOINT`) |

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::arm::tenancy::{GRANT, Grant, RESOURCE_GROUP, ResourceGroup, SUBSCRIPTION, Subscription, TENANT, Tenant};
use crate::faults::FaultRule;
use crate::http::{AdminError, deleted, ok};
use crate::http::{Req, Resp, bad, body, created};
use crate::identity::{self, PRINCIPAL, Principal};

pub fn handle(app: &App, req: &Req) -> Resp {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    if segs.first().is_some_and(|s| s.eq_ignore_ascii_case("msi")) {
        return identity::handle(app, req);
    }
    match route(app, req, &segs) {
        Ok(resp) => resp,
        Err(e) => e.into_resp(),
    }
}

fn route(app: &App, req: &Req, segs: &[&str]) -> Result<Resp, AdminError> {
    let m = &req.method;
    match (m.clone(), segs) {
        (Method::GET, ["admin", "health"]) => ok(json!({ "status": "ok" })),
        (Method::GET, ["admin", "env"]) => ok(app.env()),
        (Method::GET, ["admin", "clock"]) => ok(clock_json(app)),
        (Method::POST, ["admin", "clock", "advance"]) => {
            #[derive(Deserialize)]
            struct Advance {
                seconds: i64,
            }
            let a: Advance = body(req)?;
            if a.seconds < 0 {
                return Err(bad("the clock only moves forward"));
            }
            let offset = app.clock.offset() + a.seconds;
            app.store.write(|tx| tx.put("meta", "clock", &offset))?;
            app.clock.set_offset(offset);
            // Locks may have lapsed and schedules come due: let waiting receivers look again.
            app.servicebus.wake_all();
            // Retries and TTLs run on this clock: let the Event Grid publisher look again.
            app.eventgrid.wake();
            tracing::info!(seconds = a.seconds, offset, "clock advanced");
            ok(clock_json(app))
        }
        (Method::GET, ["admin", "activity"]) => {
            let after = req.query("after").map(|a| a.parse::<u64>().map_err(bad)).transpose()?.unwrap_or(0);
            let limit = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
            let entries = app.store.activity_after(after, limit)?;
            let last = entries.last().and_then(|e| e.get("sequenceNumber")).and_then(Value::as_u64).unwrap_or(after);
            ok(json!({ "value": entries, "last": last }))
        }
        (Method::GET, ["admin", "tenants"]) => ok(json!({ "value": app.store.list::<Value>(TENANT, "")? })),
        (Method::POST, ["admin", "tenants"]) => {
            let t: Tenant = body(req)?;
            uuid::Uuid::parse_str(&t.tenant_id).map_err(bad)?;
            app.store.write(|tx| tx.put(TENANT, &t.tenant_id.to_ascii_lowercase(), &t))?;
            created(&t)
        }
        (Method::GET, ["admin", "subscriptions"]) => ok(json!({ "value": app.store.list::<Value>(SUBSCRIPTION, "")? })),
        (Method::POST, ["admin", "subscriptions"]) => {
            let s: Subscription = body(req)?;
            uuid::Uuid::parse_str(&s.subscription_id).map_err(bad)?;
            if app.store.get::<Tenant>(TENANT, &s.tenant_id.to_ascii_lowercase())?.is_none() {
                return Err(AdminError::NotFound(format!("tenant {} not found", s.tenant_id)));
            }
            app.store.write(|tx| tx.put(SUBSCRIPTION, &s.subscription_id.to_ascii_lowercase(), &s))?;
            created(&s)
        }
        (Method::GET, ["admin", "resource-groups"]) => {
            ok(json!({ "value": app.store.list::<Value>(RESOURCE_GROUP, "")? }))
        }
        (Method::POST, ["admin", "resource-groups"]) => {
            let rg: ResourceGroup = body(req)?;
            if app.store.get::<Subscription>(SUBSCRIPTION, &rg.subscription_id.to_ascii_lowercase())?.is_none() {
                return Err(AdminError::NotFound(format!("subscription {} not found", rg.subscription_id)));
            }
            app.store.write(|tx| tx.put(RESOURCE_GROUP, &ResourceGroup::key(&rg.subscription_id, &rg.name), &rg))?;
            created(&rg)
        }
        (Method::GET, ["admin", "grants"]) => ok(json!({ "value": app.store.list::<Value>(GRANT, "")? })),
        (Method::POST, ["admin", "grants"]) => {
            let mut g: Grant = body(req)?;
            if g.id.is_empty() {
                g.id = uuid::Uuid::new_v4().to_string();
            }
            g.scope.parse::<crate::arm::ResourceId>().map_err(bad)?;
            app.store.write(|tx| tx.put(GRANT, &g.id, &g))?;
            created(&g)
        }
        (Method::DELETE, ["admin", "grants", id]) => {
            let removed = app.store.write(|tx| tx.delete(GRANT, id))?;
            deleted(removed, "grant")
        }
        (Method::GET, ["admin", "applications"]) => {
            ok(json!({ "value": app.store.list::<Value>(crate::entra::APPLICATION, "")? }))
        }
        (Method::POST, ["admin", "applications"]) => {
            let a: crate::entra::Application = body(req)?;
            uuid::Uuid::parse_str(&a.app_id).map_err(bad)?;
            app.store.write(|tx| tx.put(crate::entra::APPLICATION, &a.app_id.to_ascii_lowercase(), &a))?;
            created(&a)
        }
        (Method::GET, ["admin", "principals"]) => ok(json!({ "value": app.store.list::<Value>(PRINCIPAL, "")? })),
        (Method::POST, ["admin", "principals"]) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct NewPrincipal {
                object_id: Option<String>,
                client_id: Option<String>,
                tenant_id: Option<String>,
                display_name: Option<String>,
                /// Makes the principal a user (an operator who signs in), not an application.
                user_principal_name: Option<String>,
            }
            let n: NewPrincipal = body(req)?;
            let p = Principal {
                object_id: n.object_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()).to_ascii_lowercase(),
                client_id: n.client_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                tenant_id: n.tenant_id.unwrap_or_else(|| crate::config::DEFAULT_TENANT_ID.to_string()),
                display_name: n.display_name.unwrap_or_default(),
                resource_id: None,
                user_principal_name: n.user_principal_name,
            };
            app.store.write(|tx| identity::put_principal(tx, &p))?;
            created(&p)
        }
        (Method::POST, ["admin", "tokens"]) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct TokenReq {
                principal_id: String,
                resource: String,
                /// Seconds of validity; `0` mints a token that has already expired, for testing refusals.
                #[serde(default = "default_lifetime")]
                expires_in_seconds: i64,
            }
            fn default_lifetime() -> i64 {
                identity::TOKEN_LIFETIME_SECONDS
            }
            let t: TokenReq = body(req)?;
            if !(0..=identity::TOKEN_LIFETIME_SECONDS).contains(&t.expires_in_seconds) {
                return Err(bad(format!(
                    "expiresInSeconds must be between 0 and {}",
                    identity::TOKEN_LIFETIME_SECONDS
                )));
            }
            let p = identity::get_principal(app, &t.principal_id)?
                .ok_or_else(|| AdminError::NotFound(format!("principal {} not found", t.principal_id)))?;
            let (token, exp) = identity::issue_token(app, &p, &t.resource, t.expires_in_seconds);
            ok(
                json!({ "access_token": token, "expires_on": exp.to_string(), "token_type": "Bearer", "resource": t.resource }),
            )
        }
        (Method::GET, ["admin", "faults"]) => ok(json!({ "value": app.faults.list() })),
        (Method::POST, ["admin", "faults"]) => {
            let mut f: FaultRule = body(req)?;
            f.validate().map_err(bad)?;
            f.id = uuid::Uuid::new_v4().to_string();
            f.fired = 0;
            created(&app.faults.add(&app.store, f)?)
        }
        (Method::DELETE, ["admin", "faults"]) => {
            let n = app.faults.clear(&app.store)?;
            ok(json!({ "removed": n }))
        }
        (Method::DELETE, ["admin", "faults", id]) => {
            let removed = app.faults.remove(&app.store, id)?;
            deleted(removed, "fault")
        }
        (Method::POST, ["admin", "seed"]) => {
            let seed: crate::seed::Seed = body(req)?;
            Ok(Resp::json(StatusCode::CREATED, &crate::seed::seed(app, &seed)?))
        }
        (_, ["admin", "servicebus", rest @ ..]) => crate::servicebus::admin(app, req, rest),
        (_, ["admin", "eventgrid", rest @ ..]) => crate::eventgrid::admin(app, req, rest),
        _ => Err(AdminError::NotFound(format!("no admin endpoint {} {}", req.method, req.path()))),
    }
}

fn clock_json(app: &App) -> Value {
    let now = app.clock.now();
    json!({
        "now": crate::clock::arm_time(now),
        "unix": now.unix_timestamp(),
        "offsetSeconds": app.clock.offset(),
    })
}
