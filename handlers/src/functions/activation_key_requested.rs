//! `ActivationKeyRequested` (serviceBusTrigger): provisions a device's vault, lock and CIK and links them in its
//! extended information, for an activation request or a sweep's repair. The key itself is sealed when the status
//! API is asked for it, from the CIK this worker made sure of. A device's sync request is verified here, and an
//! operator's reconfigure (a new vault for one gone for good) runs here too: on this queue, in the device's
//! session, it never runs beside the device's activation or repairs, which is what keeps it to one new vault.

use crate::alerts::{Alert, Severity};
use crate::deps::Deps;
use crate::lifecycle::Error;
use crate::lifecycle::provision::{Outcome, provision};
use crate::lifecycle::reconfigure::{self, reconfigure};
use crate::lifecycle::secrets_sync::{self, verify};
use crate::messages::Provisioning;
use crate::protocol::InvocationResponse;
use crate::triggers::ServiceBusMetadata;

pub async fn run(command: Provisioning, _: &ServiceBusMetadata, deps: &Deps) -> Result<InvocationResponse, Error> {
    let (device, vault_name, requested) = match &command {
        Provisioning::ActivationKeyRequested(c) => (&c.device, c.vault_name.as_ref(), true),
        Provisioning::ReconcileVault(c) => (&c.device, None, false),
        Provisioning::SecretsSyncRequested(c) => {
            let outcome = verify(deps, &c.device).await?;
            let log = match outcome {
                secrets_sync::Outcome::Failed { reason } => format!("{}: sync failed: {reason}", c.device),
                other => format!("{}: {other:?}", c.device),
            };
            return Ok(InvocationResponse::default().with_log(log));
        }
        Provisioning::ReconfigureRequested(c) => {
            let log = match reconfigure(deps, &c.device, &c.vault_name).await? {
                reconfigure::Outcome::Reconfigured(done) => format!(
                    "{}: reconfigured onto vault {} with CIK {} version {}",
                    c.device, done.vault_id, done.cik_name, done.cik_version
                ),
                reconfigure::Outcome::NotGone(why) => format!("{}: not reconfigured: {}", c.device, why.message),
                reconfigure::Outcome::Untouched => format!("{}: no longer exists or is left alone", c.device),
            };
            return Ok(InvocationResponse::default().with_log(log));
        }
    };
    let provisioned = match provision(deps, device, vault_name, requested).await? {
        Outcome::Provisioned(provisioned) => provisioned,
        Outcome::Gone => return Ok(InvocationResponse::default().with_log(format!("{device} no longer exists"))),
        Outcome::Untouched(finding) => {
            return Ok(InvocationResponse::default().with_log(format!("{device}: {finding:?}; left alone")));
        }
    };
    if provisioned.cik_created && !requested {
        // The sweep found the CIK gone and wrote a new one: the device's current activation no longer holds.
        let alert = Alert::raise(
            &format!("{}|{}|cik", device, provisioned.cik_version),
            Severity::Critical,
            format!("the CIK of {device} was missing; a new one was written"),
            "generate a new activation key for the device and re-activate it",
        )
        .about(Some(&device.to_string()), Some(&provisioned.vault_id.to_string()));
        deps.alert(&alert).await;
    }
    Ok(InvocationResponse::default().with_log(format!(
        "{device}: vault {} with CIK {} version {}",
        provisioned.vault_id, provisioned.cik_name, provisioned.cik_version
    )))
}
