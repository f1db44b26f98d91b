//! The activity log: one durable entry per mutating ARM call, numbered by a monotonically
//! increasing sequence. Part 2 turns the successful ones into Event Grid
//! `ResourceWriteSuccess` / `ResourceDeleteSuccess` events.

use http::StatusCode;
use serde_json::{Value, json};

use super::ArmCtx;
use super::resource_id::ResourceId;
use crate::store::{StoreError, Tx};

pub fn append(
    tx: &mut Tx<'_>,
    ctx: &ArmCtx<'_>,
    resource_id: &str,
    status: StatusCode,
    outcome: &str,
) -> Result<u64, StoreError> {
    let parsed = resource_id.parse::<ResourceId>().ok();
    let entry = |seq: u64| -> Value {
        json!({
            "sequenceNumber": seq,
            "eventTimestamp": crate::clock::arm_time(ctx.now),
            "operationName": ctx.operation.name,
            "resourceId": resource_id,
            "resourceType": parsed.as_ref().map(|p| p.resource_type()),
            "resourceProvider": parsed.as_ref().map(|p| p.resource_type().split('/').next().unwrap_or_default().to_string()),
            "subscriptionId": parsed.as_ref().map(|p| p.subscription.clone()),
            "resourceGroup": parsed.as_ref().and_then(|p| p.resource_group.clone()),
            "tenantId": ctx.claims.tid,
            "status": outcome,
            "httpStatusCode": status.as_u16(),
            "correlationId": ctx.correlation_id,
            "caller": ctx.claims.oid,
            "principal": { "oid": ctx.claims.oid, "tid": ctx.claims.tid, "appid": ctx.claims.appid },
            "claims": claims(&ctx.claims),
            "authorization": { "action": ctx.operation.name, "scope": ctx.operation.scope },
            "httpRequest": {
                "clientRequestId": ctx.req.header("x-ms-client-request-id").unwrap_or_default(),
                "clientIpAddress": "127.0.0.1",
                "method": ctx.req.method.as_str(),
                "url": ctx.req.url(),
            },
        })
    };
    tx.append_activity(entry)
}

/// The caller's token claims as ARM reports them in events: every value a string, object and tenant ids under
/// their long claim names.
fn claims(c: &crate::token::Claims) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), Value::String(v));
    };
    put("aud", c.aud.clone());
    put("iss", c.iss.clone());
    put("iat", c.iat.to_string());
    put("nbf", c.nbf.to_string());
    put("exp", c.exp.to_string());
    put("appid", c.appid.clone());
    put("appidacr", "2".into());
    put("idtyp", c.idtyp.clone());
    put("http://schemas.microsoft.com/identity/claims/identityprovider", c.iss.clone());
    put("http://schemas.microsoft.com/identity/claims/objectidentifier", c.oid.clone());
    put("http://schemas.microsoft.com/identity/claims/tenantid", c.tid.clone());
    put("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier", c.sub.clone());
    put("uti", c.uti.clone());
    put("ver", c.ver.clone());
    if let Some(mirid) = &c.xms_mirid {
        put("xms_mirid", mirid.clone());
    }
    Value::Object(m)
}
