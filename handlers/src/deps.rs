//! What every handler shares: the settings and the Azure clients, built once in `main` (one credential, one
//! pipeline per audience) and passed to each invocation.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use crate::alerts::Alert;
use crate::azure::arm::ArmClient;
use crate::azure::on_behalf_of::OnBehalfOf;
use crate::azure::records::TableRecords;
use crate::azure::secrets::VaultSecrets;
use crate::azure::service_bus::QueueSender;
use crate::azure::traits::{AuditLogs, CallerPermissions, CikStore, Devices, Locks, Queue, Records, Vaults};
use crate::azure::{AzureError, HttpStack};
use crate::config::Settings;
use crate::lifecycle::fleet_index::IndexCache;
use crate::messages::{Command, queues};

#[derive(Debug, Clone)]
pub struct Deps {
    pub settings: Settings,
    pub devices: Arc<dyn Devices>,
    pub vaults: Arc<dyn Vaults>,
    pub locks: Arc<dyn Locks>,
    /// Audit logging's storage accounts and diagnostic settings, and provider registrations.
    pub audit: Arc<dyn AuditLogs>,
    pub secrets: Arc<dyn CikStore>,
    pub queue: Arc<dyn Queue>,
    /// What ARM says an API caller may do, asked on the caller's behalf (`authorization::require_permission`).
    pub permissions: Arc<dyn CallerPermissions>,
    /// The sweep's view of each subscription's vaults and locks, read once per sweep (`lifecycle::fleet_index`).
    pub sweep_indexes: Arc<IndexCache>,
    /// edgevault's own records (sweep progress, recovery history).
    pub records: Arc<dyn Records>,
}

impl Deps {
    /// Builds the clients on the app's managed identity (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER` in Functions).
    pub fn from_settings(settings: &Settings) -> Result<Self, AzureError> {
        let stack = HttpStack::new(settings.retry);
        let options = azure_identity::ManagedIdentityCredentialOptions {
            client_options: stack.client_options(),
            ..Default::default()
        };
        let credential: Arc<dyn TokenCredential> = azure_identity::ManagedIdentityCredential::new(Some(options))
            .map_err(|e| AzureError::from_core("create managed identity credential", e))?;
        Self::with_credential(settings, credential, stack)
    }

    pub fn with_credential(
        settings: &Settings,
        credential: Arc<dyn TokenCredential>,
        stack: HttpStack,
    ) -> Result<Self, AzureError> {
        // One ARM client (one pipeline, one token cache) behind all four ARM traits.
        let arm = Arc::new(ArmClient::new(&settings.arm_endpoint, credential.clone(), &stack)?);
        let queue = QueueSender::new(&settings.service_bus_namespace, credential.clone(), &stack)?;
        let permissions: Arc<dyn CallerPermissions> = match &settings.api_client_id {
            Some(client_id) => Arc::new(OnBehalfOf::new(
                &settings.authority_host,
                &settings.tenant_id,
                client_id,
                &settings.arm_endpoint,
                credential.clone(),
                &stack,
            )?),
            None => Arc::new(crate::authorization::NotConfigured),
        };
        let records = TableRecords::new(&settings.records_table_uri, credential.clone(), &stack)?;
        Ok(Deps {
            settings: settings.clone(),
            devices: arm.clone(),
            vaults: arm.clone(),
            audit: arm.clone(),
            locks: arm,
            secrets: Arc::new(VaultSecrets::new(credential, &stack)),
            queue: Arc::new(queue),
            permissions,
            sweep_indexes: Default::default(),
            records: Arc::new(records),
        })
    }

    /// Enqueues commands, one request per queue.
    pub async fn enqueue(&self, commands: &[Command], correlation_id: Option<&str>) -> Result<(), AzureError> {
        let mut by_queue: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
        for command in commands {
            by_queue.entry(command.queue()).or_default().push(command.to_outgoing(correlation_id));
        }
        for (queue, messages) in by_queue {
            match messages.as_slice() {
                [single] => self.queue.send(queue, single).await?,
                many => self.queue.send_batch(queue, many).await?,
            }
            tracing::info!(queue, count = messages.len(), "enqueued");
        }
        Ok(())
    }

    /// Logs the alert and sends it to the `alerts` queue. A send failure is logged, not raised: the log event
    /// already carries the alert, and failing the worker over it would repeat the work it reports on.
    pub async fn alert(&self, alert: &Alert) {
        alert.log();
        if let Err(err) = self.queue.send(queues::ALERTS, &alert.to_outgoing()).await {
            tracing::error!(alert_id = %alert.id, "could not send the alert to the alerts queue: {err}");
        }
    }

    pub fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}
