//! `ArmEvents` (eventGridTrigger): Resource Manager events in, queue commands out. Fast by design: it reads
//! nothing from Azure and writes only to Service Bus, so an event is acknowledged as soon as its command is safely
//! queued (and not acknowledged, so Event Grid redelivers, if queueing failed).

use std::sync::Arc;

use super::{HandlerResult, Invocation};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::messages::{Command, ResourceCreated, ResourceDeleted, SecretsSyncRequested, VaultDeleted};
use crate::protocol::{InvocationResponse, decode};
use crate::resource_id::{DEVICE_TYPE, ResourceId, VAULT_TYPE};
use crate::triggers::{GridEvent, SubscriptionValidationData, event_types};

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let value = invocation.request.data.get("event").cloned().ok_or_else(|| {
        FunctionError::invalid("Data.event", "missing; the eventGridTrigger binding is named `event`")
    })?;
    let events = GridEvent::list_from_value(value, "Data.event")?;
    let mut response = InvocationResponse::default();
    let mut commands = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let path = format!("Data.event[{i}]");
        if event.event_type() == event_types::SUBSCRIPTION_VALIDATION {
            // The Functions host answers the handshake for eventGridTrigger functions itself; one that reaches the
            // handler needs nothing more than a well-formed acknowledgement.
            let data: SubscriptionValidationData = decode(event.data().clone(), &path)?;
            response = response.with_log(format!("subscription validation {} acknowledged", data.validation_code));
            continue;
        }
        match classify(event, &path, &deps.settings.principal_id)? {
            Some(command) => {
                response = response.with_log(format!("{} for {}", command.kind(), command.subject()));
                commands.push(command);
            }
            None => tracing::debug!(event_id = event.id(), event_type = event.event_type(), "event ignored"),
        }
    }
    let correlation = Some(invocation.invocation_id.as_str()).filter(|id| !id.is_empty());
    deps.enqueue(&commands, correlation).await?;
    Ok(response)
}

/// The command an event calls for, if any: a Stack Edge device written (by anyone but edgevault itself) or
/// deleted, a vault deleted, or a device's `updateExtendedInformation` by anyone but edgevault itself
/// (`own_principal`: edgevault writes the extended information too, and its own writes are no request) — the device
/// asking for its secrets to be synced. edgevault's own device writes (its alert, requester and failure tags, the
/// identity it enables) need no creation check: each came from a worker that had the device in hand, and waking
/// the creation worker for them cost two ARM reads per write (two per recovered vault: the alert raised, then
/// resolved).
pub fn classify(event: &GridEvent, path: &str, own_principal: &str) -> Result<Option<Command>, FunctionError> {
    let is_write = event.event_type() == event_types::RESOURCE_WRITE_SUCCESS;
    let is_delete = event.event_type() == event_types::RESOURCE_DELETE_SUCCESS;
    let is_action = event.event_type() == event_types::RESOURCE_ACTION_SUCCESS;
    if !is_write && !is_delete && !is_action {
        return Ok(None);
    }
    let data = event.resource_action(path)?;
    if !data.status.eq_ignore_ascii_case("Succeeded") {
        return Ok(None);
    }
    let resource: ResourceId = data
        .resource_uri
        .parse()
        .map_err(|e| FunctionError::invalid(format!("{path}.data.resourceUri"), format!("{e}")))?;
    let operation = data.operation_name.to_ascii_lowercase();
    let cause = event.id().to_string();
    let by_edgevault = data.caller().is_some_and(|caller| caller.eq_ignore_ascii_case(own_principal));
    Ok(
        if resource.is_type(DEVICE_TYPE)
            && is_write
            && operation == "microsoft.databoxedge/databoxedgedevices/write"
            && !by_edgevault
        {
            Some(ResourceCreated { device: resource, cause }.into())
        } else if resource.is_type(DEVICE_TYPE)
            && is_delete
            && operation == "microsoft.databoxedge/databoxedgedevices/delete"
        {
            Some(ResourceDeleted { device: resource, cause }.into())
        } else if resource.is_type(VAULT_TYPE) && is_delete && operation == "microsoft.keyvault/vaults/delete" {
            Some(VaultDeleted { vault: resource, cause }.into())
        } else if resource.is_type(DEVICE_TYPE)
            && is_action
            && operation == "microsoft.databoxedge/databoxedgedevices/updateextendedinformation/action"
            && !by_edgevault
        {
            Some(SecretsSyncRequested { device: resource, cause }.into())
        } else {
            None
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, operation: &str, uri: &str, status: &str) -> GridEvent {
        GridEvent::from_value(
            json!({"id": "e1", "subject": uri, "eventType": kind, "eventTime": "t",
                   "data": {"resourceUri": uri, "operationName": operation, "status": status, "subscriptionId": "s"}}),
            "e",
        )
        .unwrap()
    }

    const DEVICE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d";
    const OWN: &str = "edgevault-principal";
    const VAULT: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v";

    #[test]
    fn classifies_the_three_lifecycle_events() {
        let w = event(
            event_types::RESOURCE_WRITE_SUCCESS,
            "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write",
            DEVICE,
            "Succeeded",
        );
        assert!(matches!(classify(&w, "e", OWN).unwrap(), Some(Command::ResourceCreated(_))));
        let d = event(
            event_types::RESOURCE_DELETE_SUCCESS,
            "Microsoft.DataBoxEdge/dataBoxEdgeDevices/delete",
            DEVICE,
            "Succeeded",
        );
        assert!(matches!(classify(&d, "e", OWN).unwrap(), Some(Command::ResourceDeleted(_))));
        let v = event(event_types::RESOURCE_DELETE_SUCCESS, "Microsoft.KeyVault/vaults/delete", VAULT, "Succeeded");
        assert!(matches!(classify(&v, "e", OWN).unwrap(), Some(Command::VaultDeleted(_))));
    }

    /// A succeeded ARM event on the device, made by `caller` (its object id, as ARM's claims carry it).
    fn by(event_type: &str, operation: &str, caller: &str) -> GridEvent {
        GridEvent::from_value(
            json!({"id": "e1", "subject": DEVICE, "eventType": event_type, "eventTime": "t",
                   "data": {"resourceUri": DEVICE, "status": "Succeeded", "subscriptionId": "s",
                            "operationName": operation,
                            "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": caller}}}),
            "e",
        )
        .unwrap()
    }

    #[test]
    fn a_devices_own_extended_information_update_is_a_sync_request_and_edgevaults_is_not() {
        let action = |caller: &str| {
            by(
                event_types::RESOURCE_ACTION_SUCCESS,
                "Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action",
                caller,
            )
        };
        assert!(matches!(
            classify(&action("device-principal"), "e", OWN).unwrap(),
            Some(Command::SecretsSyncRequested(_))
        ));
        assert_eq!(classify(&action(OWN), "e", OWN).unwrap(), None, "edgevault's own write is no request");
        let get = event(
            event_types::RESOURCE_ACTION_SUCCESS,
            "Microsoft.DataBoxEdge/dataBoxEdgeDevices/getExtendedInformation/action",
            DEVICE,
            "Succeeded",
        );
        assert_eq!(classify(&get, "e", OWN).unwrap(), None);
    }

    #[test]
    fn a_device_written_by_edgevault_itself_wakes_no_creation_worker() {
        let write = |caller: &str| {
            by(event_types::RESOURCE_WRITE_SUCCESS, "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write", caller)
        };
        assert!(matches!(classify(&write("operator"), "e", OWN).unwrap(), Some(Command::ResourceCreated(_))));
        assert_eq!(classify(&write(OWN), "e", OWN).unwrap(), None, "edgevault's own tag write");
    }

    #[test]
    fn everything_else_is_ignored() {
        let vault_write =
            event(event_types::RESOURCE_WRITE_SUCCESS, "Microsoft.KeyVault/vaults/write", VAULT, "Succeeded");
        assert_eq!(classify(&vault_write, "e", OWN).unwrap(), None);
        let failed = event(event_types::RESOURCE_DELETE_SUCCESS, "Microsoft.KeyVault/vaults/delete", VAULT, "Failed");
        assert_eq!(classify(&failed, "e", OWN).unwrap(), None);
        let other = event("Microsoft.Storage.BlobCreated", "x", VAULT, "Succeeded");
        assert_eq!(classify(&other, "e", OWN).unwrap(), None);
        let child = event(
            event_types::RESOURCE_DELETE_SUCCESS,
            "Microsoft.KeyVault/vaults/delete",
            &format!("{VAULT}/secrets/x"),
            "Succeeded",
        );
        assert_eq!(classify(&child, "e", OWN).unwrap(), None);
        // Audit logging's own writes: the storage account and the vault's diagnostic setting (an extension resource
        // whose id continues the vault's).
        let account = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/kvd1";
        let account_write =
            event(event_types::RESOURCE_WRITE_SUCCESS, "Microsoft.Storage/storageAccounts/write", account, "Succeeded");
        assert_eq!(classify(&account_write, "e", OWN).unwrap(), None);
        let setting = format!("{VAULT}/providers/Microsoft.Insights/diagnosticSettings/edgevault-audit");
        for (kind, operation) in [
            (event_types::RESOURCE_WRITE_SUCCESS, "Microsoft.Insights/diagnosticSettings/write"),
            (event_types::RESOURCE_DELETE_SUCCESS, "Microsoft.Insights/diagnosticSettings/delete"),
        ] {
            assert_eq!(classify(&event(kind, operation, &setting, "Succeeded"), "e", OWN).unwrap(), None);
        }
    }

    #[test]
    fn a_bad_resource_uri_names_the_field() {
        let bad = event(
            event_types::RESOURCE_WRITE_SUCCESS,
            "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write",
            "nope",
            "Succeeded",
        );
        assert_eq!(classify(&bad, "e", OWN).unwrap_err().field(), Some("e.data.resourceUri"));
    }
}
