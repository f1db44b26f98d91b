//! edgevault's record store (`azure::records::TableRecords`, the product's own client on the `azure_core` pipeline)
//! against local-azure's Table service, as the handler reaches it: through the proxy, with a managed-identity token
//! for `https://storage.azure.com`. The Azure CLI drives the same service in `local-azure/tests/azure_cli.rs`.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use edgevault::azure::records::TableRecords;
use edgevault::azure::traits::Records;
use edgevault::azure::{HttpStack, RetrySettings};
use edgevault_tests::local_azure::LocalAzure;
use serde_json::json;

fn credential(user: Option<azure_identity::UserAssignedId>, stack: &HttpStack) -> Arc<dyn TokenCredential> {
    let options = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: user,
        client_options: stack.client_options(),
    };
    azure_identity::ManagedIdentityCredential::new(Some(options)).expect("credential")
}

#[test]
fn records_round_trip_page_and_stay_behind_their_grant() {
    let la = LocalAzure::start().unwrap();
    for (name, value) in la.handler_env() {
        // SAFETY: the only test of this binary, before any thread that reads the environment exists.
        unsafe { std::env::set_var(name, value) };
    }
    let endpoint = la.var("EDGEVAULT_RECORDS_TABLE_URI").to_string();
    assert!(endpoint.ends_with(".table.core.windows.net"), "{endpoint}");
    let stranger = la.principal("stranger", &["Microsoft.KeyVault/*"]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stack = HttpStack::new(RetrySettings { max_retries: 1, initial_delay_ms: 50, max_delay_ms: 200 });
        let records = TableRecords::new(&endpoint, credential(None, &stack), &stack).unwrap();

        // The table does not exist yet: reading finds nothing, the first write creates it.
        assert_eq!(records.get("sweeps", "p", "r").await.unwrap(), None);
        assert!(records.list("sweeps", None).await.unwrap().is_empty());
        records.put("sweeps", "it's a sweep", "page 1", &json!({"devices": 10})).await.unwrap();
        records.put("sweeps", "it's a sweep", "page 1", &json!({"devices": 12})).await.unwrap();
        assert_eq!(records.get("sweeps", "it's a sweep", "page 1").await.unwrap(), Some(json!({"devices": 12})));

        // Over two continuations: every record of the partition, in row order, and none of the other partition's.
        for i in 0..2_100 {
            records.put("sweeps", "big", &format!("{i:05}"), &json!({"i": i})).await.unwrap();
        }
        let big = records.list("sweeps", Some("big")).await.unwrap();
        assert_eq!(big.len(), 2_100);
        assert!(big.iter().enumerate().all(|(i, r)| r.row == format!("{i:05}") && r.value["i"] == i));
        assert_eq!(records.list("sweeps", None).await.unwrap().len(), 2_101);

        records.delete("sweeps", "big", "00000").await.unwrap();
        records.delete("sweeps", "big", "00000").await.unwrap();
        assert_eq!(records.get("sweeps", "big", "00000").await.unwrap(), None);

        // A record over the limit is refused before it is sent, with the limit in the message.
        let huge = json!({"x": "y".repeat(40_000)});
        let err = records.put("sweeps", "p", "r", &huge).await.unwrap_err();
        assert!(err.message.contains("limit"), "{err}");

        // An identity without a Table data role is refused by the service, with its code.
        let other = TableRecords::new(
            &endpoint,
            credential(Some(azure_identity::UserAssignedId::ObjectId(stranger.clone())), &stack),
            &stack,
        )
        .unwrap();
        let err = other.get("sweeps", "big", "00001").await.unwrap_err();
        assert_eq!((err.status, err.code.as_deref()), (Some(403), Some("AuthorizationPermissionMismatch")), "{err}");
    });
}
