//! The vaults and locks of a subscription, read by list for a sweep and joined in memory with each page's devices,
//! so a healthy device costs one ARM read (its extended information, which has no list form) instead of four.
//!
//! - [`FleetIndex`]: edgevault's vaults and edgevault's locks on them, from `Vaults_ListBySubscription` and
//!   `ManagementLocks_ListAtSubscriptionLevel`, every page, each vault kept as a [`Brief`]: what `assess` reads of
//!   it, about 200 bytes instead of the vault's 1.5 KB, so the index of a 100,000-vault subscription is ~20 MiB.
//! - [`IndexCache`]: one index per subscription and sweep, kept by the handler process for the pages of that sweep
//!   it serves (read once per process and sweep, not once per page: re-reading the lists per page would cost
//!   pages × list pages). It is rebuilt when a newer sweep starts or it is older than [`MAX_AGE`], so a long sweep
//!   never judges by a stale list; a vault missing from it is read by itself (it may be newer than the index).
//!
//! It reads through the client traits, not `Deps`, so `Deps` can hold the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::vault_brief::{Brief, IdDigest, Suffixes};
use super::{LOCK_NAME, OWNER_TAG};
use crate::azure::AzureError;
use crate::azure::models::{Lock, Vault};
use crate::azure::pages;
use crate::azure::traits::{Locks, Vaults};
use crate::resource_id::ResourceId;

/// How long an index serves the pages of its sweep before it is read again.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// The segment between a lock's scope and its name in the lock's id.
const LOCKS_SEGMENT: &str = "/providers/microsoft.authorization/locks/";

/// What the sweep already read of a vault in its subscription's lists (the vault as `assess` reads it, and
/// edgevault's lock on it), so neither is read again per device.
#[derive(Debug, Clone)]
pub struct Listed {
    pub vault: Vault,
    pub lock: Option<Lock>,
}

#[derive(Debug, Default)]
pub struct FleetIndex {
    /// Vaults that carry edgevault's owner tag, by their id's digest (other vaults in the subscription are not
    /// kept), each with edgevault's lock on it.
    vaults: HashMap<IdDigest, Brief>,
    suffixes: Suffixes,
    /// List pages read to build it (ARM calls).
    pub pages: usize,
}

impl FleetIndex {
    /// Reads both lists of `subscription`, every page (the two at once: they are independent).
    pub async fn read(vaults: &dyn Vaults, locks: &dyn Locks, subscription: &str) -> Result<Self, AzureError> {
        let vault_pages =
            pages(|next| async move { vaults.list_subscription_vaults(subscription, next.as_deref()).await });
        let lock_pages = pages(|next| async move { locks.list_locks(subscription, next.as_deref()).await });
        let read_vaults = vault_pages.try_fold(
            (HashMap::new(), Suffixes::default(), 0),
            |(mut all, mut suffixes, n), page| async move {
                for vault in
                    page.into_iter().filter(|v: &Vault| v.tags.keys().any(|k| k.eq_ignore_ascii_case(OWNER_TAG)))
                {
                    all.insert(IdDigest::of(&vault.id), Brief::of(&vault, &mut suffixes));
                }
                Ok((all, suffixes, n + 1))
            },
        );
        // Only the level of each of edgevault's locks is kept, by its scope's digest, until the join below.
        let read_locks = lock_pages.try_fold((HashMap::new(), 0), |(mut all, n), page| async move {
            all.extend(page.into_iter().filter_map(|lock: Lock| {
                Some((IdDigest::of(&edgevaults_scope(&lock)?), lock.properties.level.into_boxed_str()))
            }));
            Ok((all, n + 1))
        });
        let ((mut vaults, suffixes, vault_pages), (levels, lock_pages)) = futures::try_join!(read_vaults, read_locks)?;
        for (scope, level) in levels {
            if let Some(brief) = vaults.get_mut(&scope) {
                brief.set_lock(&level);
            }
        }
        vaults.shrink_to_fit();
        Ok(FleetIndex { vaults, suffixes, pages: vault_pages + lock_pages })
    }

    /// The vault and edgevault's lock on it, as `assess` reads them for `device`, when the vault is in the index.
    pub fn listed(&self, vault: &ResourceId, device: &ResourceId) -> Option<Listed> {
        let brief = self.vaults.get(&IdDigest::of(&vault.to_string()))?;
        let (vault, lock) = brief.vault(vault, device, &self.suffixes);
        Some(Listed { vault, lock })
    }

    pub fn vaults(&self) -> usize {
        self.vaults.len()
    }
}

/// The scope of a lock named edgevault's; `None` for any other lock.
fn edgevaults_scope(lock: &Lock) -> Option<String> {
    let id = lock.id.to_ascii_lowercase();
    let at = id.rfind(LOCKS_SEGMENT)?;
    let name = &id[at + LOCKS_SEGMENT.len()..];
    name.eq_ignore_ascii_case(LOCK_NAME).then(|| id[..at].to_string())
}

type Slot = Arc<OnceCell<Arc<FleetIndex>>>;

/// The index of each subscription for the sweep whose pages this process is serving.
#[derive(Debug, Default)]
pub struct IndexCache {
    /// Per lower-case subscription: the sweep, when its index was started, the index (built once, concurrent pages
    /// waiting for the same read).
    entries: Mutex<HashMap<String, (String, Instant, Slot)>>,
}

impl IndexCache {
    /// The index of `subscription` for `sweep_id`, read now if this process has none (or only an old one).
    pub async fn get(
        &self,
        vaults: &dyn Vaults,
        locks: &dyn Locks,
        sweep_id: &str,
        subscription: &str,
    ) -> Result<Arc<FleetIndex>, AzureError> {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = subscription.to_ascii_lowercase();
            let now = Instant::now();
            match entries.get(&key) {
                Some((sweep, started, slot)) if sweep == sweep_id && now.duration_since(*started) < MAX_AGE => {
                    slot.clone()
                }
                _ => {
                    let slot = Slot::default();
                    entries.insert(key, (sweep_id.to_string(), now, slot.clone()));
                    slot
                }
            }
        };
        // A failed read leaves the slot empty: the next page tries again.
        let index = slot
            .get_or_try_init(|| async {
                let index = FleetIndex::read(vaults, locks, subscription).await?;
                tracing::info!(
                    sweep_id,
                    subscription,
                    vaults = index.vaults(),
                    pages = index.pages,
                    "read the subscription's vaults and locks"
                );
                Ok::<_, AzureError>(Arc::new(index))
            })
            .await?;
        Ok(index.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::FakeAzure;

    #[tokio::test]
    async fn the_index_holds_edgevaults_vaults_and_locks_from_every_page() {
        let azure = FakeAzure::new();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(azure.add_healthy(&format!("d{i}")));
        }
        {
            let mut state = azure.state();
            // A customer's own vault (no owner tag) is not kept.
            let mut other = state.vaults.values().next().unwrap().clone();
            other.tags.clear();
            other.id = other.id.replace("kv-d0", "theirs");
            state.vaults.insert(other.id.to_ascii_lowercase(), other);
            // Another lock on an edgevault vault is not edgevault's.
            let mut foreign = state.locks.values().next().unwrap().clone();
            foreign.id = foreign.id.replace(LOCK_NAME, "someone-elses");
            state.locks.insert("/subscriptions/s/x".into(), foreign);
            state.locks.retain(|k, _| !k.contains("kv-d3/"));
        }
        let index = FleetIndex::read(azure.as_ref(), azure.as_ref(), "s").await.unwrap();
        assert_eq!(index.vaults(), 7);
        assert_eq!(index.pages, 3 + 3, "8 vaults and 7 locks in pages of 3");
        for (i, (device, id)) in ids.iter().enumerate() {
            let listed = index.listed(id, device).expect("every device's vault");
            assert_eq!(listed.lock.is_some(), i != 3, "{id}");
            assert_eq!(listed.lock.map(|l| l.name), (i != 3).then(|| LOCK_NAME.to_string()));
        }
    }

    #[tokio::test]
    async fn one_read_per_sweep_and_subscription_and_again_for_a_new_sweep() {
        let azure = FakeAzure::new();
        azure.add_healthy("d1");
        let cache = IndexCache::default();
        let reads = || azure.state().calls.iter().filter(|c| c.starts_with("list vaults")).count();
        for _ in 0..3 {
            cache.get(azure.as_ref(), azure.as_ref(), "sweep-a", "s").await.unwrap();
        }
        assert_eq!(reads(), 1);
        cache.get(azure.as_ref(), azure.as_ref(), "sweep-b", "s").await.unwrap();
        assert_eq!(reads(), 2);
    }
}
