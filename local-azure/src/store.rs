//! Durable state: one redb file in the data directory.
//!
//! Every service keeps its documents as JSON under a `kind/key` name in one table, and the ARM
//! activity log in a second table keyed by a monotonically increasing sequence number. A write
//! is one redb transaction committed with fsync before the caller answers, so an acknowledged
//! change survives `kill -9`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

const DOCS: TableDefinition<&str, &str> = TableDefinition::new("docs");
const ACTIVITY: TableDefinition<u64, &str> = TableDefinition::new("activity");

/// The documents of `kind` whose keys start with `key_prefix`, each with its key (without the `kind/` prefix), in
/// key order; from a read or a write transaction's table alike.
fn keyed_range<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static str>,
    kind: &str,
    key_prefix: &str,
) -> Result<Vec<(String, T)>, StoreError> {
    let (start, end) = prefix_range(&doc_key(kind, key_prefix));
    let skip = kind.len() + 1;
    let mut out = Vec::new();
    for item in table.range(start.as_str()..end.as_str()).map_err(dberr)? {
        let (k, v) = item.map_err(dberr)?;
        out.push((k.value()[skip..].to_string(), serde_json::from_str(v.value())?));
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("stored document is not valid: {0}")]
    Json(#[from] serde_json::Error),
}

fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into().to_string())
}

pub struct Store {
    db: Database,
}

fn doc_key(kind: &str, key: &str) -> String {
    format!("{kind}/{key}")
}

/// The range of keys under `kind/prefix`: `/` sorts just before `0`, and a prefix ends
/// right before the prefix with its last byte incremented.
fn prefix_range(prefix: &str) -> (String, String) {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (prefix.to_string(), String::from_utf8(end).unwrap_or_else(|_| format!("{prefix}\u{10FFFF}")))
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(dberr)?;
        let txn = db.begin_write().map_err(dberr)?;
        {
            txn.open_table(DOCS).map_err(dberr)?;
            txn.open_table(ACTIVITY).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)?;
        Ok(Store { db })
    }

    pub fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(DOCS).map_err(dberr)?;
        match table.get(doc_key(kind, key).as_str()).map_err(dberr)? {
            Some(v) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every document of a kind whose key starts with `key_prefix`, in key order.
    pub fn list<T: DeserializeOwned>(&self, kind: &str, key_prefix: &str) -> Result<Vec<T>, StoreError> {
        Ok(self.list_keys(kind, key_prefix)?.into_iter().map(|(_, doc)| doc).collect())
    }

    /// Like [`Store::list`], with each document's key (without the `kind/` prefix).
    pub fn list_keys<T: DeserializeOwned>(&self, kind: &str, key_prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        keyed_range(&txn.open_table(DOCS).map_err(dberr)?, kind, key_prefix)
    }

    /// One page of a kind's documents under `key_prefix`, in key order, starting right after the key `after`
    /// (without the `kind/` prefix) when given: a keyset page, so the cost of a page does not grow with how far
    /// into the listing it is. The flag says whether more documents follow.
    pub fn page<T: DeserializeOwned>(
        &self,
        kind: &str,
        key_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, T)>, bool), StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(DOCS).map_err(dberr)?;
        let (start, end) = prefix_range(&doc_key(kind, key_prefix));
        let skip = kind.len() + 1;
        let mut out = Vec::new();
        let after = after.map(|a| doc_key(kind, a));
        let range = match &after {
            Some(a) if a.as_str() >= end.as_str() => return Ok((out, false)),
            Some(a) if a.as_str() >= start.as_str() => {
                table.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Excluded(end.as_str())))
            }
            _ => table.range(start.as_str()..end.as_str()),
        }
        .map_err(dberr)?;
        for item in range {
            let (k, v) = item.map_err(dberr)?;
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((k.value()[skip..].to_string(), serde_json::from_str(v.value())?));
        }
        Ok((out, false))
    }

    /// The documents of a kind whose keys lie in `[from, to)` (keys without the `kind/` prefix), in key order.
    pub fn range<T: DeserializeOwned>(&self, kind: &str, from: &str, to: &str) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(DOCS).map_err(dberr)?;
        let (start, end) = (doc_key(kind, from), doc_key(kind, to));
        let skip = kind.len() + 1;
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        for item in table.range(start.as_str()..end.as_str()).map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            out.push((k.value()[skip..].to_string(), serde_json::from_str(v.value())?));
        }
        Ok(out)
    }

    /// Runs `f` in one write transaction; commits (with fsync) only when it succeeds.
    pub fn write<R, E>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let txn = self.db.begin_write().map_err(dberr)?;
        let mut tx = Tx { txn: &txn };
        match f(&mut tx) {
            Ok(r) => {
                txn.commit().map_err(dberr)?;
                Ok(r)
            }
            Err(e) => {
                txn.abort().map_err(dberr)?;
                Err(e)
            }
        }
    }

    /// Activity entries with a sequence number above `after`, oldest first.
    pub fn activity_after(&self, after: u64, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(ACTIVITY).map_err(dberr)?;
        let mut out = Vec::new();
        for item in table.range(after.saturating_add(1)..).map_err(dberr)? {
            let (_, v) = item.map_err(dberr)?;
            out.push(serde_json::from_str(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// The operations available inside a write transaction.
pub struct Tx<'a> {
    txn: &'a WriteTransaction,
}

impl Tx<'_> {
    pub fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<T>, StoreError> {
        let table = self.txn.open_table(DOCS).map_err(dberr)?;
        let value = table.get(doc_key(kind, key).as_str()).map_err(dberr)?;
        match value {
            Some(v) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn list<T: DeserializeOwned>(&self, kind: &str, key_prefix: &str) -> Result<Vec<T>, StoreError> {
        Ok(self.list_keys(kind, key_prefix)?.into_iter().map(|(_, doc)| doc).collect())
    }

    /// Like [`Store::list_keys`], inside the transaction.
    pub fn list_keys<T: DeserializeOwned>(&self, kind: &str, key_prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        keyed_range(&self.txn.open_table(DOCS).map_err(dberr)?, kind, key_prefix)
    }

    pub fn put<T: Serialize + ?Sized>(&mut self, kind: &str, key: &str, value: &T) -> Result<(), StoreError> {
        let json = serde_json::to_string(value)?;
        let mut table = self.txn.open_table(DOCS).map_err(dberr)?;
        table.insert(doc_key(kind, key).as_str(), json.as_str()).map_err(dberr)?;
        Ok(())
    }

    pub fn delete(&mut self, kind: &str, key: &str) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(DOCS).map_err(dberr)?;
        let removed = table.remove(doc_key(kind, key).as_str()).map_err(dberr)?;
        Ok(removed.is_some())
    }

    /// Deletes every document of a kind whose key starts with `key_prefix`.
    pub fn delete_prefix(&mut self, kind: &str, key_prefix: &str) -> Result<usize, StoreError> {
        let mut table = self.txn.open_table(DOCS).map_err(dberr)?;
        let (start, end) = prefix_range(&doc_key(kind, key_prefix));
        let keys: Vec<String> = table
            .range(start.as_str()..end.as_str())
            .map_err(dberr)?
            .map(|item| item.map(|(k, _)| k.value().to_string()))
            .collect::<Result<_, _>>()
            .map_err(dberr)?;
        for k in &keys {
            table.remove(k.as_str()).map_err(dberr)?;
        }
        Ok(keys.len())
    }

    /// The sequence number of the last activity entry (0 when the log is empty).
    pub fn last_activity_sequence(&self) -> Result<u64, StoreError> {
        let table = self.txn.open_table(ACTIVITY).map_err(dberr)?;
        Ok(table.last().map_err(dberr)?.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// Appends an activity entry; `build` receives the entry's sequence number.
    pub fn append_activity(&mut self, build: impl FnOnce(u64) -> serde_json::Value) -> Result<u64, StoreError> {
        let mut table = self.txn.open_table(ACTIVITY).map_err(dberr)?;
        let last = table.last().map_err(dberr)?.map(|(k, _)| k.value());
        let seq = last.unwrap_or(0) + 1;
        let json = serde_json::to_string(&build(seq))?;
        table.insert(seq, json.as_str()).map_err(dberr)?;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_delete_and_activity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|tx| -> Result<(), StoreError> {
                tx.put("vault", "a", &1)?;
                tx.put("vault", "b", &2)?;
                tx.put("vaults", "c", &3)?;
                tx.append_activity(|seq| serde_json::json!({ "seq": seq }))?;
                tx.append_activity(|seq| serde_json::json!({ "seq": seq }))?;
                Ok(())
            })
            .unwrap();
        let all: Vec<i32> = store.list("vault", "").unwrap();
        assert_eq!(all, [1, 2]);
        assert_eq!(store.get::<i32>("vault", "b").unwrap(), Some(2));
        let (page, more) = store.page::<i32>("vault", "", None, 1).unwrap();
        assert_eq!((page, more), (vec![("a".to_string(), 1)], true));
        let (page, more) = store.page::<i32>("vault", "", Some("a"), 1).unwrap();
        assert_eq!((page, more), (vec![("b".to_string(), 2)], false));
        assert!(store.page::<i32>("vault", "", Some("b"), 1).unwrap().0.is_empty());
        assert!(store.page::<i32>("vault", "", Some("zz"), 5).unwrap().0.is_empty(), "past the kind's end");
        assert_eq!(store.range::<i32>("vault", "a", "b").unwrap(), [("a".to_string(), 1)]);
        assert!(store.range::<i32>("vault", "b", "a").unwrap().is_empty());
        let after = store.activity_after(1, 10).unwrap();
        assert_eq!(after, [serde_json::json!({ "seq": 2 })]);
        let err = store.write(|tx| -> Result<(), StoreError> {
            tx.delete("vault", "a")?;
            Err(StoreError::Db("rollback".into()))
        });
        assert!(err.is_err());
        assert_eq!(store.get::<i32>("vault", "a").unwrap(), Some(1));
    }
}
