//! edgevault's own records — what the fleet needs remembered that Azure's resources do not hold (a sweep's progress,
//! the history of recoveries) — as rows of Azure Table Storage in the function app's own storage account.
//!
//! No GA Rust crate covers Table Storage (`azure_data_tables` is one of the legacy 0.21 crates), so this is a thin
//! client over the documented REST API on the same `azure_core` pipeline as every other client, authenticated with
//! Microsoft Entra ID (audience `https://storage.azure.com`). The operations, from Microsoft's Table service REST
//! reference (learn.microsoft.com/rest/api/storageservices):
//! - *Insert Or Replace Entity*: `PUT /<table>(PartitionKey='<p>',RowKey='<r>')` → `204`;
//! - *Query Entities*: `GET /<table>(PartitionKey='<p>',RowKey='<r>')`, or `GET /<table>()?$filter=…` in pages of
//!   at most 1,000 with `x-ms-continuation-NextPartitionKey` / `-NextRowKey` headers to continue ("Query timeout and
//!   pagination": a page may even be empty and still carry a continuation);
//! - *Delete Entity*: `DELETE …` with `If-Match: *` → `204`;
//! - *Create Table*: `POST /Tables` `{"TableName": …}` → `201`, `409 TableAlreadyExists`.
//!
//! Entra authorisation needs `x-ms-version` 2019-02-02 or later ("Authorize access to tables using Microsoft Entra
//! ID"). A record is stored as one string property (`Record`, its JSON): Table Storage limits a string property to
//! 64 KiB, so a record is kept well under that by its writers and refused above it. A table that does not exist yet
//! is created on first write, so a fresh storage account needs no set-up step.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{Context, Method, Pipeline, RawResponse, Request, Url};
use serde_json::Value;

use super::models::Record;
use super::traits::Records;
use super::{AzureError, HttpStack, STORAGE_SCOPE, pipeline};

/// The Table service version sent with every request: the first that accepts Entra ID tokens is 2019-02-02.
pub const TABLE_VERSION: &str = "2019-02-02";
/// The property that holds a record's JSON.
const RECORD_PROPERTY: &str = "Record";
/// Table Storage's limit on a string property is 64 KiB of UTF-16; records stay under half of it.
pub const MAX_RECORD_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct TableRecords {
    endpoint: Url,
    pipeline: Pipeline,
}

impl TableRecords {
    /// `endpoint` is the storage account's table endpoint, e.g. `https://edgevaultapp.table.core.windows.net`.
    pub fn new(endpoint: &str, credential: Arc<dyn TokenCredential>, stack: &HttpStack) -> Result<Self, AzureError> {
        let endpoint = Url::parse(&format!("{}/", endpoint.trim_end_matches('/'))).map_err(|e| {
            AzureError::new("configure the record store", None, None, format!("invalid endpoint `{endpoint}`: {e}"))
        })?;
        Ok(TableRecords { endpoint, pipeline: pipeline(credential, STORAGE_SCOPE, stack) })
    }

    fn url(&self, operation: &'static str, path: &str) -> Result<Url, AzureError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|_| AzureError::new(operation, None, None, "the endpoint cannot take a path"))?
            .pop_if_empty()
            .push(path);
        Ok(url)
    }

    fn entity_url(&self, operation: &'static str, table: &str, partition: &str, row: &str) -> Result<Url, AzureError> {
        check_table(operation, table)?;
        check_key(operation, "partition", partition)?;
        check_key(operation, "row", row)?;
        self.url(operation, &format!("{table}(PartitionKey='{}',RowKey='{}')", quote(partition), quote(row)))
    }

    fn request(url: Url, method: Method) -> Request {
        let mut request = Request::new(url, method);
        request.insert_header("x-ms-version", TABLE_VERSION);
        request.insert_header("accept", "application/json;odata=nometadata");
        request.insert_header("dataserviceversion", "3.0");
        request
    }

    async fn execute(&self, operation: &'static str, mut request: Request) -> Result<RawResponse, AzureError> {
        self.pipeline.send(&Context::new(), &mut request, None).await.map_err(|e| AzureError::from_core(operation, e))
    }

    async fn create_table(&self, table: &str) -> Result<(), AzureError> {
        let mut request = Self::request(self.url("create a table", "Tables")?, Method::Post);
        request.insert_header("content-type", "application/json");
        request.insert_header("prefer", "return-no-content");
        request.set_body(serde_json::to_vec(&serde_json::json!({ "TableName": table })).expect("serializable"));
        match self.execute("create a table", request).await {
            Err(err) if err.status == Some(409) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn upsert(&self, url: Url, body: &[u8]) -> Result<(), AzureError> {
        let mut request = Self::request(url, Method::Put);
        request.insert_header("content-type", "application/json");
        request.set_body(body.to_vec());
        self.execute("write a record", request).await.map(drop)
    }
}

/// Keys may not hold `/`, `\`, `#`, `?` or control characters, and are at most 1 KiB ("Understanding the Table
/// service data model"). Callers build keys from resource ids and sweep ids, so a bad one is a bug: it is refused
/// here with what was wrong rather than sent.
fn check_key(operation: &'static str, what: &str, key: &str) -> Result<(), AzureError> {
    let bad = key.chars().find(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control());
    if key.is_empty() || key.len() > 1024 || bad.is_some() {
        return Err(AzureError::new(
            operation,
            None,
            None,
            format!("{what} key `{key}` is not valid: 1 to 1024 bytes without / \\ # ? or control characters"),
        ));
    }
    Ok(())
}

/// Table names: 3–63 letters and digits, starting with a letter.
fn check_table(operation: &'static str, table: &str) -> Result<(), AzureError> {
    let ok = (3..=63).contains(&table.len())
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.chars().all(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(AzureError::new(
            operation,
            None,
            None,
            format!("table name `{table}` is not valid: 3 to 63 letters and digits, starting with a letter"),
        ));
    }
    Ok(())
}

/// OData string literals double their single quotes.
fn quote(key: &str) -> String {
    key.replace('\'', "''")
}

fn record_of(operation: &'static str, entity: &Value) -> Result<Record, AzureError> {
    let field = |name: &str| entity[name].as_str().map(str::to_string);
    let invalid = |what: String| AzureError::new(operation, None, None, what);
    let (Some(partition), Some(row), Some(json)) = (field("PartitionKey"), field("RowKey"), field(RECORD_PROPERTY))
    else {
        return Err(invalid(format!("an entity without PartitionKey, RowKey or {RECORD_PROPERTY}")));
    };
    let value = serde_json::from_str(&json).map_err(|e| invalid(format!("a record that is not JSON: {e}")))?;
    Ok(Record { partition, row, value })
}

#[async_trait::async_trait]
impl Records for TableRecords {
    async fn put(&self, table: &str, partition: &str, row: &str, record: &Value) -> Result<(), AzureError> {
        const OPERATION: &str = "write a record";
        let url = self.entity_url(OPERATION, table, partition, row)?;
        let json = record.to_string();
        if json.len() > MAX_RECORD_BYTES {
            return Err(AzureError::new(
                OPERATION,
                None,
                None,
                format!("a record of {} bytes is over the {MAX_RECORD_BYTES}-byte limit", json.len()),
            ));
        }
        let body = serde_json::to_vec(&serde_json::json!({ RECORD_PROPERTY: json })).expect("serializable");
        match self.upsert(url.clone(), &body).await {
            Err(err) if err.code.as_deref() == Some("TableNotFound") => {
                self.create_table(table).await?;
                self.upsert(url, &body).await
            }
            other => other,
        }
    }

    async fn get(&self, table: &str, partition: &str, row: &str) -> Result<Option<Value>, AzureError> {
        const OPERATION: &str = "read a record";
        let url = self.entity_url(OPERATION, table, partition, row)?;
        match self.execute(OPERATION, Self::request(url, Method::Get)).await {
            Ok(response) => {
                let entity: Value = serde_json::from_slice(response.body())
                    .map_err(|e| AzureError::new(OPERATION, Some(200), None, format!("unexpected body: {e}")))?;
                Ok(Some(record_of(OPERATION, &entity)?.value))
            }
            // Both "no such entity" and "no such table" mean nothing was recorded.
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn list(&self, table: &str, partition: Option<&str>) -> Result<Vec<Record>, AzureError> {
        const OPERATION: &str = "list records";
        check_table(OPERATION, table)?;
        let mut records = Vec::new();
        let mut continuation: Option<(String, Option<String>)> = None;
        loop {
            let mut url = self.url(OPERATION, &format!("{table}()"))?;
            {
                let mut query = url.query_pairs_mut();
                if let Some(partition) = partition {
                    check_key(OPERATION, "partition", partition)?;
                    query.append_pair("$filter", &format!("PartitionKey eq '{}'", quote(partition)));
                }
                if let Some((next_partition, next_row)) = &continuation {
                    query.append_pair("NextPartitionKey", next_partition);
                    if let Some(next_row) = next_row {
                        query.append_pair("NextRowKey", next_row);
                    }
                }
            }
            let response = match self.execute(OPERATION, Self::request(url, Method::Get)).await {
                Ok(response) => response,
                Err(err) if err.is_not_found() => return Ok(records),
                Err(err) => return Err(err),
            };
            let header = |name: &'static str| {
                response
                    .headers()
                    .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
                    .map(str::to_string)
            };
            let next =
                header("x-ms-continuation-nextpartitionkey").map(|p| (p, header("x-ms-continuation-nextrowkey")));
            let page: Value = serde_json::from_slice(response.body())
                .map_err(|e| AzureError::new(OPERATION, Some(200), None, format!("unexpected body: {e}")))?;
            for entity in page["value"].as_array().into_iter().flatten() {
                records.push(record_of(OPERATION, entity)?);
            }
            match next {
                Some(next) => continuation = Some(next),
                None => return Ok(records),
            }
        }
    }

    async fn delete(&self, table: &str, partition: &str, row: &str) -> Result<(), AzureError> {
        const OPERATION: &str = "delete a record";
        let url = self.entity_url(OPERATION, table, partition, row)?;
        let mut request = Self::request(url, Method::Delete);
        request.insert_header("if-match", "*");
        match self.execute(OPERATION, request).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_table_storage_refuses_are_refused_before_sending() {
        for bad in ["", "a/b", "a\\b", "a#b", "a?b", "a\u{1}b"] {
            assert!(check_key("op", "row", bad).is_err(), "{bad:?}");
        }
        assert!(check_key("op", "row", &"k".repeat(1025)).is_err());
        assert!(check_key("op", "row", "sweep-2026-12-03T10:00:00Z|page 3 's'").is_ok());
        for bad in ["ab", "1abc", "a-bc", &"a".repeat(64)] {
            assert!(check_table("op", bad).is_err(), "{bad:?}");
        }
        assert!(check_table("op", "sweeps").is_ok());
    }

    #[test]
    fn entity_urls_quote_keys_as_odata_literals() {
        let stack = HttpStack::new(Default::default());
        let credential: Arc<dyn TokenCredential> = Arc::new(NoCredential);
        let client = TableRecords::new("https://acct.table.core.windows.net", credential, &stack).unwrap();
        let url = client.entity_url("op", "sweeps", "it's", "row 1").unwrap();
        assert_eq!(url.as_str(), "https://acct.table.core.windows.net/sweeps(PartitionKey='it''s',RowKey='row%201')");
    }

    #[test]
    fn entities_become_records_and_malformed_ones_are_named() {
        let entity = serde_json::json!({"PartitionKey": "p", "RowKey": "r", "Record": "{\"a\":1}", "Timestamp": "x"});
        let record = record_of("op", &entity).unwrap();
        assert_eq!((record.partition.as_str(), record.row.as_str()), ("p", "r"));
        assert_eq!(record.value, serde_json::json!({"a": 1}));
        let err = record_of("op", &serde_json::json!({"PartitionKey": "p", "RowKey": "r"})).unwrap_err();
        assert!(err.message.contains("Record"), "{err}");
    }

    /// A credential for tests that never send.
    #[derive(Debug)]
    struct NoCredential;

    #[async_trait::async_trait]
    impl TokenCredential for NoCredential {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, "not in tests"))
        }
    }
}
