//! What a subscription needs before edgevault can give a device a vault: the `Microsoft.KeyVault` resource provider
//! registered (MicrosoftDocs/azure-docs, `articles/databox-online/azure-stack-edge-gpu-activation-key-vault.md`,
//! prerequisites; without it ARM refuses the vault's creation with `409 MissingSubscriptionRegistration`). The
//! activation-key API checks it before it marks or creates anything, so a refused request leaves nothing half-made.
//!
//! edgevault does not register the provider itself: that takes `Microsoft.KeyVault/register/action` at subscription
//! scope, a right over the whole subscription's use of a service, which the operator grants by registering once
//! (README, "Prerequisites").

use super::error::Error;
use crate::deps::Deps;

pub const KEYVAULT_NAMESPACE: &str = "Microsoft.KeyVault";

/// `None` when `subscription` has registered `Microsoft.KeyVault`; else what the caller is told (the fix).
pub async fn keyvault_missing(deps: &Deps, subscription: &str) -> Result<Option<String>, Error> {
    // A read that fails (a role without `Microsoft.Resources/subscriptions/providers/read`) refuses nothing: the
    // vault's creation then says what is wrong.
    let provider = match deps.audit.get_provider(subscription, KEYVAULT_NAMESPACE).await {
        Ok(provider) => provider,
        Err(err) if !err.retryable() => {
            tracing::warn!(subscription, error = %err, "could not read Microsoft.KeyVault's registration; not checked");
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    if provider.is_some_and(|p| p.registration_state.eq_ignore_ascii_case("Registered")) {
        return Ok(None);
    }
    Ok(Some(format!(
        "the subscription {subscription} has not registered the {KEYVAULT_NAMESPACE} resource provider, which the device's vault needs: \
         run `az provider register --namespace {KEYVAULT_NAMESPACE} --subscription {subscription}` (it needs \
         `{KEYVAULT_NAMESPACE}/register/action` on the subscription, e.g. Contributor), then request the activation key again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};

    #[tokio::test]
    async fn an_unregistered_key_vault_provider_is_named_with_its_fix() {
        let azure = FakeAzure::new();
        let deps = azure.deps(settings());
        assert_eq!(keyvault_missing(&deps, "s").await.unwrap(), None);
        azure.state().unregistered.insert(key(&"s/Microsoft.KeyVault"));
        let message = keyvault_missing(&deps, "s").await.unwrap().expect("refused");
        assert!(message.contains("az provider register --namespace Microsoft.KeyVault"), "{message}");
        assert!(message.contains("register/action"), "{message}");
    }
}
