//! `VaultDeleted` (serviceBusTrigger): recovers a device's deleted vault and re-applies what edgevault owns.

use crate::deps::Deps;
use crate::lifecycle::Error;
use crate::lifecycle::recovery::on_vault_deleted;
use crate::messages::VaultDeleted;
use crate::protocol::InvocationResponse;
use crate::triggers::ServiceBusMetadata;

pub async fn run(command: VaultDeleted, _: &ServiceBusMetadata, deps: &Deps) -> Result<InvocationResponse, Error> {
    let outcome = on_vault_deleted(deps, &command.vault).await?;
    Ok(InvocationResponse::default().with_log(format!("{}: {outcome:?}", command.vault)))
}
