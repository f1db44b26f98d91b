//! Azure Table Storage at `https://<account>.table.core.windows.net`, over its REST API, for the clients that keep
//! records there (edgevault's `azure::records`, the Azure CLI's `az storage entity`, the Python SDK).
//!
//! Sources: Microsoft's Table service REST reference (learn.microsoft.com/rest/api/storageservices): *Create Table*,
//! *Query Tables*, *Delete Table*, *Insert Entity*, *Insert Or Replace Entity*, *Insert Or Merge Entity*, *Update
//! Entity*, *Merge Entity*, *Delete Entity*, *Query Entities*, "Query timeout and pagination" (at most 1,000 entities
//! a page, `x-ms-continuation-NextPartitionKey` / `-NextRowKey`), "Payload format for Table service operations"
//! (`odata=nometadata|minimalmetadata|fullmetadata`), "Understanding the Table service data model" (key and table
//! name rules, entities ordered by PartitionKey then RowKey), "Table service error codes", and "Authorize access to
//! tables using Microsoft Entra ID" (bearer tokens for `https://storage.azure.com`, `x-ms-version` 2019-02-02 or
//! later, the data actions `Microsoft.Storage/storageAccounts/tableServices/tables/entities/{read,write,delete}`).
//!
//! Only Entra ID authorisation is served: edgevault's storage accounts disable shared keys. The `$filter` grammar
//! served is comparisons (`eq ne gt ge lt le`) of properties with string, number or boolean literals joined by
//! `and`; anything else is answered `501` with what is supported, never silently ignored.

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::App;
use crate::arm::tenancy::{GRANT, Grant};
use crate::config;
use crate::http::{Req, Resp};
use crate::store::{Store, StoreError};

/// The storage account local-azure starts with, holding edgevault's records.
pub const DEFAULT_ACCOUNT: &str = "edgevaultrecords";
pub const AUDIENCE: &str = "https://storage.azure.com";
const HOST_SUFFIX: &str = ".table.core.windows.net";
/// The first version that accepts Entra ID tokens on the Table service.
const MIN_VERSION_FOR_TOKENS: &str = "2019-02-02";
const PAGE_SIZE: usize = 1000;
const ACCOUNT: &str = "table-account";
const TABLE: &str = "table";
const ENTITY: &str = "table-entity";
/// Separates account/table, partition and row in an entity's store key. Keys cannot hold control characters, and
/// U+0001 sorts below every character they can hold, so store order is PartitionKey-then-RowKey order.
const SEP: char = '\u{1}';
const GRANT_ID: &str = "edgevault-app-tables";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
}

impl Account {
    fn scope(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredTable {
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEntity {
    /// The properties as sent (with their `@odata.type` annotations), without the keys and the timestamp.
    properties: Map<String, Value>,
    partition: String,
    row: String,
    /// RFC 3339 with seven fractional digits, as Table Storage writes it.
    timestamp: String,
}

/// Creates the default account and grants edgevault's identity *Storage Table Data Contributor* on it, once per data
/// directory.
pub fn seed_defaults(store: &Store) -> Result<(), StoreError> {
    store.write(|tx| -> Result<(), StoreError> {
        if tx.get::<bool>("meta", "tables-seeded")?.is_some() {
            return Ok(());
        }
        let account = Account {
            name: DEFAULT_ACCOUNT.into(),
            subscription_id: config::DEFAULT_SUBSCRIPTION_ID.into(),
            resource_group: config::DEFAULT_RESOURCE_GROUP.into(),
        };
        tx.put(ACCOUNT, &account.name, &account)?;
        let grant = Grant {
            id: GRANT_ID.into(),
            principal_id: config::APP_PRINCIPAL_ID.into(),
            scope: account.scope(),
            actions: vec!["Microsoft.Storage/storageAccounts/tableServices/tables/*".into()],
            role_name: "Storage Table Data Contributor".into(),
        };
        tx.put(GRANT, &grant.id, &grant)?;
        tx.put("meta", "tables-seeded", &true)
    })
}

/// The account a `<account>.table.core.windows.net` host names, if it exists (a missing one has no DNS name).
pub fn account_of_host(store: &Store, host: &str) -> Option<Account> {
    let name = host.strip_suffix(HOST_SUFFIX)?;
    store.get::<Account>(ACCOUNT, name).ok().flatten()
}

pub fn is_table_host(host: &str) -> bool {
    host.strip_suffix(HOST_SUFFIX).is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

/// What a request does.
#[derive(Debug, PartialEq)]
enum Route {
    CreateTable,
    QueryTables,
    DeleteTable(String),
    Insert(String),
    Query(String),
    Entity { table: String, partition: String, row: String },
}

fn route(req: &Req) -> Option<Route> {
    let [segment] = req.segments.as_slice() else { return None };
    if segment.eq_ignore_ascii_case("Tables") {
        return Some(if req.method == Method::POST { Route::CreateTable } else { Route::QueryTables });
    }
    let (name, args) = match segment.split_once('(') {
        Some((name, rest)) => (name, Some(rest.strip_suffix(')')?)),
        None => (segment.as_str(), None),
    };
    if name.eq_ignore_ascii_case("Tables") {
        let table = args?.strip_prefix('\'')?.strip_suffix('\'')?;
        return Some(Route::DeleteTable(table.to_string()));
    }
    match args {
        None if req.method == Method::POST => Some(Route::Insert(name.into())),
        None | Some("") => Some(Route::Query(name.into())),
        Some(keys) => {
            let (partition, row) = entity_keys(keys)?;
            Some(Route::Entity { table: name.into(), partition, row })
        }
    }
}

/// `PartitionKey='p',RowKey='r'`, with OData's doubled single quotes.
fn entity_keys(args: &str) -> Option<(String, String)> {
    let mut tokens = Tokens::new(args);
    let mut partition = None;
    let mut row = None;
    loop {
        let name = tokens.word()?;
        tokens.expect('=')?;
        let Literal::Text(value) = tokens.literal()? else { return None };
        match name.as_str() {
            "PartitionKey" => partition = Some(value),
            "RowKey" => row = Some(value),
            _ => return None,
        }
        if tokens.done() {
            break;
        }
        tokens.expect(',')?;
    }
    Some((partition?, row?))
}

/// The data action a request needs (Entra ID authorisation for tables).
fn action_of(route: &Route, method: &Method) -> &'static str {
    match (route, method) {
        (Route::CreateTable | Route::DeleteTable(_), _) => {
            "Microsoft.Storage/storageAccounts/tableServices/tables/write"
        }
        (Route::QueryTables, _) => "Microsoft.Storage/storageAccounts/tableServices/tables/read",
        (Route::Query(_), _) | (Route::Entity { .. }, &Method::GET) => {
            "Microsoft.Storage/storageAccounts/tableServices/tables/entities/read"
        }
        (Route::Entity { .. }, &Method::DELETE) => {
            "Microsoft.Storage/storageAccounts/tableServices/tables/entities/delete"
        }
        _ => "Microsoft.Storage/storageAccounts/tableServices/tables/entities/write",
    }
}

/// The fault-injection operation name.
pub fn operation_name(req: &Req) -> String {
    match route(req) {
        Some(Route::CreateTable) => "createTable",
        Some(Route::QueryTables) => "queryTables",
        Some(Route::DeleteTable(_)) => "deleteTable",
        Some(Route::Insert(_)) => "insertEntity",
        Some(Route::Query(_)) => "queryEntities",
        Some(Route::Entity { .. }) => match req.method {
            Method::GET => "getEntity",
            Method::DELETE => "deleteEntity",
            _ => "writeEntity",
        },
        None => "unknown",
    }
    .into()
}

/// Table Storage's error body (JSON form) with the `x-ms-error-code` header.
fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let value =
        format!("{message}\nRequestId:{}\nTime:{}", uuid::Uuid::new_v4(), timestamp(time::OffsetDateTime::now_utc()));
    Resp::json(status, &json!({"odata.error": {"code": code, "message": {"lang": "en-US", "value": value}}}))
        .with_header("x-ms-error-code", code)
}

fn timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

fn etag(timestamp: &str) -> String {
    format!("W/\"datetime'{}'\"", timestamp.replace(':', "%3A"))
}

fn valid_table_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case("tables")
}

fn valid_key(key: &str) -> bool {
    key.len() <= 1024 && !key.chars().any(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
}

fn table_key(account: &str, table: &str) -> String {
    format!("{account}/{}", table.to_ascii_lowercase())
}

fn entity_key(account: &str, table: &str, partition: &str, row: &str) -> String {
    format!("{}{SEP}{partition}{SEP}{row}", table_key(account, table))
}

/// Serves one request (store-bound, run off the async workers by the gateway).
pub fn handle(app: &App, req: &Req) -> Resp {
    let Some(account) = account_of_host(&app.store, &req.host) else {
        return error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified account does not exist.");
    };
    let Some(route) = route(req) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            &format!("local-azure's Table service does not serve {} {}.", req.method, req.path()),
        );
    };
    if let Err(resp) = authorize(app, req, &account, &route) {
        return *resp;
    }
    let result = match route {
        Route::CreateTable => create_table(app, req, &account),
        Route::QueryTables => query_tables(app, req, &account),
        Route::DeleteTable(table) => delete_table(app, &account, &table),
        Route::Insert(table) => insert(app, req, &account, &table),
        Route::Query(table) => query(app, req, &account, &table),
        Route::Entity { table, partition, row } => match req.method {
            Method::GET => get_entity(app, req, &account, (&table, &partition, &row)),
            Method::DELETE => delete_entity(app, req, &account, (&table, &partition, &row)),
            Method::PUT => write_entity(app, req, &account, (&table, &partition, &row), Write::Replace),
            _ if is_merge(req) => write_entity(app, req, &account, (&table, &partition, &row), Write::Merge),
            _ => Ok(error(StatusCode::METHOD_NOT_ALLOWED, "UnsupportedHttpVerb", "The verb is not supported here.")),
        },
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "Table service store failure");
        error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "The server encountered an internal error.")
    })
}

fn is_merge(req: &Req) -> bool {
    let tunneled = req.header("x-http-method").is_some_and(|m| m.eq_ignore_ascii_case("MERGE"));
    req.method.as_str().eq_ignore_ascii_case("MERGE") || req.method == Method::PATCH || tunneled
}

fn authorize(app: &App, req: &Req, account: &Account, route: &Route) -> Result<(), Box<Resp>> {
    let challenge = format!(
        "Bearer authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize resource_id={AUDIENCE}",
        config::DEFAULT_TENANT_ID
    );
    let Some(token) = req.bearer() else {
        return Err(Box::new(
            error(
                StatusCode::UNAUTHORIZED,
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            )
            .with_header("www-authenticate", &challenge),
        ));
    };
    match req.header("x-ms-version") {
        Some(version) if version >= MIN_VERSION_FOR_TOKENS => {}
        other => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                &format!(
                    "x-ms-version {} does not accept bearer tokens: send {MIN_VERSION_FOR_TOKENS} or later.",
                    other.unwrap_or("(missing)")
                ),
            )));
        }
    }
    let account_audience = format!("https://{}", req.host);
    let audiences = [AUDIENCE, "https://storage.azure.com/", account_audience.as_str()];
    let claims = app.tokens.verify(token, crate::token::wall_now(), &audiences).map_err(|e| {
        Box::new(
            error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                &format!("Authentication information is not given in the correct format: {e}"),
            )
            .with_header("www-authenticate", &challenge),
        )
    })?;
    let table = match route {
        Route::DeleteTable(t) | Route::Insert(t) | Route::Query(t) | Route::Entity { table: t, .. } => t.clone(),
        Route::CreateTable => {
            req.json::<Value>().ok().and_then(|b| b["TableName"].as_str().map(str::to_string)).unwrap_or_default()
        }
        Route::QueryTables => String::new(),
    };
    let scope = format!("{}/tableServices/default/tables/{table}", account.scope());
    crate::arm::authz::authorize(app, &claims.oid, action_of(route, &req.method), scope.trim_end_matches('/'), false)
        .map_err(|_| {
            Box::new(error(
                StatusCode::FORBIDDEN,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            ))
        })
}

/// How much OData metadata the client asked for (`Accept`); JSON without metadata is the default here.
#[derive(Clone, Copy, PartialEq)]
enum Metadata {
    None,
    Minimal,
    Full,
}

fn metadata(req: &Req) -> Metadata {
    let accept = req.header("accept").unwrap_or_default().to_ascii_lowercase();
    if accept.contains("odata=fullmetadata") {
        Metadata::Full
    } else if accept.contains("odata=minimalmetadata") {
        Metadata::Minimal
    } else {
        Metadata::None
    }
}

fn entity_json(req: &Req, account: &Account, table: &str, e: &StoredEntity) -> Value {
    let mut out = Map::new();
    let meta = metadata(req);
    if meta != Metadata::None {
        out.insert("odata.etag".into(), json!(etag(&e.timestamp)));
    }
    if meta == Metadata::Full {
        out.insert("odata.type".into(), json!(format!("{}.{table}", account.name)));
    }
    out.insert("PartitionKey".into(), json!(e.partition));
    out.insert("RowKey".into(), json!(e.row));
    out.insert("Timestamp".into(), json!(e.timestamp));
    if meta != Metadata::None {
        out.insert("Timestamp@odata.type".into(), json!("Edm.DateTime"));
    }
    for (k, v) in &e.properties {
        if meta == Metadata::None && k.ends_with("@odata.type") {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

fn metadata_url(req: &Req, fragment: &str) -> String {
    format!("https://{}/$metadata#{fragment}", req.host)
}

fn no_table(table: &str) -> Resp {
    error(StatusCode::NOT_FOUND, "TableNotFound", &format!("The table specified does not exist: {table}."))
}

fn create_table(app: &App, req: &Req, account: &Account) -> Result<Resp, StoreError> {
    let name = req.json::<Value>().ok().and_then(|b| b["TableName"].as_str().map(str::to_string));
    let Some(name) = name.filter(|n| valid_table_name(n)) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            "The specifed resource name contains invalid characters: a table name is 3 to 63 letters and digits, starting with a letter.",
        ));
    };
    let created = app.store.write(|tx| -> Result<bool, StoreError> {
        let key = table_key(&account.name, &name);
        if tx.get::<StoredTable>(TABLE, &key)?.is_some() {
            return Ok(false);
        }
        tx.put(TABLE, &key, &StoredTable { name: name.clone() })?;
        Ok(true)
    })?;
    if !created {
        return Ok(error(StatusCode::CONFLICT, "TableAlreadyExists", "The table specified already exists."));
    }
    if prefers_no_content(req) {
        return Ok(Resp::empty(StatusCode::NO_CONTENT).with_header("preference-applied", "return-no-content"));
    }
    let mut body = json!({"TableName": name});
    if metadata(req) != Metadata::None {
        body["odata.metadata"] = json!(metadata_url(req, "Tables/@Element"));
    }
    Ok(Resp::json(StatusCode::CREATED, &body))
}

fn prefers_no_content(req: &Req) -> bool {
    req.header("prefer").is_some_and(|p| p.eq_ignore_ascii_case("return-no-content"))
}

fn query_tables(app: &App, req: &Req, account: &Account) -> Result<Resp, StoreError> {
    let tables: Vec<StoredTable> = app.store.list(TABLE, &format!("{}/", account.name))?;
    let value: Vec<Value> = tables.iter().map(|t| json!({"TableName": t.name})).collect();
    let mut body = json!({"value": value});
    if metadata(req) != Metadata::None {
        body["odata.metadata"] = json!(metadata_url(req, "Tables"));
    }
    Ok(Resp::json(StatusCode::OK, &body))
}

fn delete_table(app: &App, account: &Account, table: &str) -> Result<Resp, StoreError> {
    let removed = app.store.write(|tx| -> Result<bool, StoreError> {
        let removed = tx.delete(TABLE, &table_key(&account.name, table))?;
        tx.delete_prefix(ENTITY, &format!("{}{SEP}", table_key(&account.name, table)))?;
        Ok(removed)
    })?;
    Ok(if removed { Resp::empty(StatusCode::NO_CONTENT) } else { no_table(table) })
}

/// The properties of a request body, or the answer that refuses it.
fn properties(req: &Req) -> Result<Map<String, Value>, Box<Resp>> {
    let invalid = |what: &str| Box::new(error(StatusCode::BAD_REQUEST, "InvalidInput", what));
    let Ok(Value::Object(mut body)) = req.json::<Value>() else {
        return Err(invalid("One of the request inputs is not valid: the body must be a JSON object of properties."));
    };
    for reserved in ["PartitionKey", "RowKey", "Timestamp", "odata.etag", "odata.metadata", "odata.type"] {
        body.remove(reserved);
    }
    body.remove("Timestamp@odata.type");
    if body.len() > 252 {
        return Err(invalid("An entity holds at most 252 properties besides its keys and timestamp."));
    }
    if req.body.len() > 1024 * 1024 {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "EntityTooLarge",
            "The entity is larger than 1 MiB.",
        )));
    }
    Ok(body)
}

fn insert(app: &App, req: &Req, account: &Account, table: &str) -> Result<Resp, StoreError> {
    let body: Value = req.json().unwrap_or(Value::Null);
    let (Some(partition), Some(row)) = (body["PartitionKey"].as_str(), body["RowKey"].as_str()) else {
        return Ok(error(StatusCode::BAD_REQUEST, "PropertiesNeedValue", "PartitionKey and RowKey are required."));
    };
    let (partition, row) = (partition.to_string(), row.to_string());
    let props = match properties(req) {
        Ok(p) => p,
        Err(resp) => return Ok(*resp),
    };
    if !valid_key(&partition) || !valid_key(&row) {
        return Ok(bad_key());
    }
    let now = timestamp(app.clock.now());
    let entity = StoredEntity { properties: props, partition: partition.clone(), row: row.clone(), timestamp: now };
    enum Outcome {
        NoTable,
        Exists,
        Inserted,
    }
    let outcome = app.store.write(|tx| -> Result<Outcome, StoreError> {
        if tx.get::<StoredTable>(TABLE, &table_key(&account.name, table))?.is_none() {
            return Ok(Outcome::NoTable);
        }
        let key = entity_key(&account.name, table, &partition, &row);
        if tx.get::<StoredEntity>(ENTITY, &key)?.is_some() {
            return Ok(Outcome::Exists);
        }
        tx.put(ENTITY, &key, &entity)?;
        Ok(Outcome::Inserted)
    })?;
    Ok(match outcome {
        Outcome::NoTable => no_table(table),
        Outcome::Exists => error(StatusCode::CONFLICT, "EntityAlreadyExists", "The specified entity already exists."),
        Outcome::Inserted if prefers_no_content(req) => Resp::empty(StatusCode::NO_CONTENT)
            .with_header("etag", etag(&entity.timestamp))
            .with_header("preference-applied", "return-no-content"),
        Outcome::Inserted => {
            let mut body = entity_json(req, account, table, &entity);
            if metadata(req) != Metadata::None {
                body["odata.metadata"] = json!(metadata_url(req, &format!("{table}/@Element")));
            }
            Resp::json(StatusCode::CREATED, &body).with_header("etag", etag(&entity.timestamp))
        }
    })
}

fn bad_key() -> Resp {
    error(
        StatusCode::BAD_REQUEST,
        "OutOfRangeInput",
        "One of the request inputs is out of range: keys are at most 1 KiB and hold no / \\ # ? or control characters.",
    )
}

enum Write {
    Replace,
    Merge,
}

fn write_entity(
    app: &App,
    req: &Req,
    account: &Account,
    (table, partition, row): (&str, &str, &str),
    write: Write,
) -> Result<Resp, StoreError> {
    if !valid_key(partition) || !valid_key(row) {
        return Ok(bad_key());
    }
    let props = match properties(req) {
        Ok(p) => p,
        Err(resp) => return Ok(*resp),
    };
    let if_match = req.header("if-match").map(str::to_string);
    let now = timestamp(app.clock.now());
    let key = entity_key(&account.name, table, partition, row);
    let result = app.store.write(|tx| -> Result<Result<String, Resp>, StoreError> {
        if tx.get::<StoredTable>(TABLE, &table_key(&account.name, table))?.is_none() {
            return Ok(Err(no_table(table)));
        }
        let existing: Option<StoredEntity> = tx.get(ENTITY, &key)?;
        // Without If-Match the write inserts or replaces/merges (upsert); with it, the entity must exist and, unless
        // the tag is `*`, be unchanged since the client read it.
        match (&if_match, &existing) {
            (Some(_), None) => {
                return Ok(Err(error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "The specified resource does not exist.",
                )));
            }
            (Some(tag), Some(e)) if tag != "*" && *tag != etag(&e.timestamp) => {
                return Ok(Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    "UpdateConditionNotSatisfied",
                    "The update condition specified in the request was not satisfied.",
                )));
            }
            _ => {}
        }
        let properties = match (write, existing) {
            (Write::Merge, Some(mut e)) => {
                e.properties.extend(props);
                e.properties
            }
            _ => props,
        };
        let entity =
            StoredEntity { properties, partition: partition.to_string(), row: row.to_string(), timestamp: now.clone() };
        tx.put(ENTITY, &key, &entity)?;
        Ok(Ok(now))
    })?;
    Ok(match result {
        Ok(stamp) => Resp::empty(StatusCode::NO_CONTENT).with_header("etag", etag(&stamp)),
        Err(resp) => resp,
    })
}

fn get_entity(
    app: &App,
    req: &Req,
    account: &Account,
    (table, partition, row): (&str, &str, &str),
) -> Result<Resp, StoreError> {
    if app.store.get::<StoredTable>(TABLE, &table_key(&account.name, table))?.is_none() {
        return Ok(no_table(table));
    }
    let Some(entity) = app.store.get::<StoredEntity>(ENTITY, &entity_key(&account.name, table, partition, row))? else {
        return Ok(error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified resource does not exist."));
    };
    let mut body = entity_json(req, account, table, &entity);
    if metadata(req) != Metadata::None {
        body["odata.metadata"] = json!(metadata_url(req, &format!("{table}/@Element")));
    }
    Ok(Resp::json(StatusCode::OK, &body).with_header("etag", etag(&entity.timestamp)))
}

fn delete_entity(
    app: &App,
    req: &Req,
    account: &Account,
    (table, partition, row): (&str, &str, &str),
) -> Result<Resp, StoreError> {
    let if_match = req.header("if-match").unwrap_or("*").to_string();
    let key = entity_key(&account.name, table, partition, row);
    app.store.write(|tx| -> Result<Resp, StoreError> {
        if tx.get::<StoredTable>(TABLE, &table_key(&account.name, table))?.is_none() {
            return Ok(no_table(table));
        }
        let Some(existing) = tx.get::<StoredEntity>(ENTITY, &key)? else {
            return Ok(error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified resource does not exist."));
        };
        if if_match != "*" && if_match != etag(&existing.timestamp) {
            return Ok(error(
                StatusCode::PRECONDITION_FAILED,
                "UpdateConditionNotSatisfied",
                "The update condition specified in the request was not satisfied.",
            ));
        }
        tx.delete(ENTITY, &key)?;
        Ok(Resp::empty(StatusCode::NO_CONTENT))
    })
}

fn query(app: &App, req: &Req, account: &Account, table: &str) -> Result<Resp, StoreError> {
    if app.store.get::<StoredTable>(TABLE, &table_key(&account.name, table))?.is_none() {
        return Ok(no_table(table));
    }
    let filter = match req.query("$filter").map(parse_filter).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(why) => return Ok(error(StatusCode::NOT_IMPLEMENTED, "NotImplemented", &why)),
    };
    let top = match req.query("$top").map(str::parse::<usize>) {
        None => PAGE_SIZE,
        Some(Ok(n)) if (1..=PAGE_SIZE).contains(&n) => n,
        Some(_) => return Ok(error(StatusCode::BAD_REQUEST, "InvalidInput", "$top must be from 1 to 1000.")),
    };
    let prefix = format!("{}{SEP}", table_key(&account.name, table));
    let start = match req.query("NextPartitionKey") {
        Some(p) => format!("{prefix}{p}{SEP}{}", req.query("NextRowKey").unwrap_or_default()),
        None => prefix.clone(),
    };
    let mut end = prefix.clone();
    end.pop();
    end.push('\u{2}');
    let entities: Vec<(String, StoredEntity)> = app.store.range(ENTITY, &start, &end)?;
    let mut page = Vec::new();
    let mut next = None;
    for (_, entity) in entities {
        if !filter.iter().all(|c| c.holds(&entity)) {
            continue;
        }
        if page.len() == top {
            next = Some((entity.partition.clone(), entity.row.clone()));
            break;
        }
        page.push(entity_json(req, account, table, &entity));
    }
    let mut body = json!({"value": page});
    if metadata(req) != Metadata::None {
        body["odata.metadata"] = json!(metadata_url(req, table));
    }
    let mut resp = Resp::json(StatusCode::OK, &body);
    if let Some((partition, row)) = next {
        resp = resp
            .with_header("x-ms-continuation-nextpartitionkey", partition)
            .with_header("x-ms-continuation-nextrowkey", row);
    }
    Ok(resp)
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    property: String,
    op: String,
    value: Literal,
}

impl Comparison {
    fn holds(&self, e: &StoredEntity) -> bool {
        let actual = match self.property.as_str() {
            "PartitionKey" => Some(Literal::Text(e.partition.clone())),
            "RowKey" => Some(Literal::Text(e.row.clone())),
            "Timestamp" => Some(Literal::Text(e.timestamp.clone())),
            name => e.properties.get(name).and_then(|v| match v {
                Value::String(s) => Some(Literal::Text(s.clone())),
                Value::Number(n) => n.as_f64().map(Literal::Number),
                Value::Bool(b) => Some(Literal::Bool(*b)),
                _ => None,
            }),
        };
        // A comparison with a missing property, or across types, is false (OData's null semantics).
        let ordering = match (actual, &self.value) {
            (Some(Literal::Text(a)), Literal::Text(b)) => a.as_str().cmp(b.as_str()),
            (Some(Literal::Number(a)), Literal::Number(b)) => match a.partial_cmp(b) {
                Some(o) => o,
                None => return false,
            },
            (Some(Literal::Bool(a)), Literal::Bool(b)) => a.cmp(b),
            _ => return false,
        };
        use std::cmp::Ordering::*;
        match self.op.as_str() {
            "eq" => ordering == Equal,
            "ne" => ordering != Equal,
            "gt" => ordering == Greater,
            "ge" => ordering != Less,
            "lt" => ordering == Less,
            _ => ordering != Greater,
        }
    }
}

const FILTER_HELP: &str = "local-azure's Table service serves $filter as comparisons (eq ne gt ge lt le) of a property \
    with a string, number or boolean literal, joined by `and`";

/// `PartitionKey eq 'p' and RowKey ge 'a'`: a conjunction of comparisons.
fn parse_filter(text: &str) -> Result<Vec<Comparison>, String> {
    let unsupported = || format!("{FILTER_HELP}; `{text}` is not of that form.");
    let mut tokens = Tokens::new(text);
    let mut out = Vec::new();
    loop {
        let mut open = 0;
        while tokens.eat('(') {
            open += 1;
        }
        let property = tokens.word().ok_or_else(unsupported)?;
        let op = tokens.word().ok_or_else(unsupported)?;
        if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&op.as_str()) {
            return Err(unsupported());
        }
        let value = tokens.literal().ok_or_else(unsupported)?;
        for _ in 0..open {
            tokens.expect(')').ok_or_else(unsupported)?;
        }
        out.push(Comparison { property, op, value });
        if tokens.done() {
            return Ok(out);
        }
        if tokens.word().as_deref() != Some("and") {
            return Err(unsupported());
        }
    }
}

/// A tiny OData expression lexer: words, quoted strings (with `''` for a quote), numbers, single characters.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens { rest: text }
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn done(&mut self) -> bool {
        self.skip_space();
        self.rest.is_empty()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let end = self.rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_string())
    }

    fn literal(&mut self) -> Option<Literal> {
        self.skip_space();
        if let Some(mut rest) = self.rest.strip_prefix('\'') {
            let mut text = String::new();
            loop {
                let quote = rest.find('\'')?;
                text.push_str(&rest[..quote]);
                rest = &rest[quote + 1..];
                match rest.strip_prefix('\'') {
                    Some(after) => {
                        text.push('\'');
                        rest = after;
                    }
                    None => break,
                }
            }
            self.rest = rest;
            return Some(Literal::Text(text));
        }
        let word = self.word_with(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))?;
        match word.as_str() {
            "true" => Some(Literal::Bool(true)),
            "false" => Some(Literal::Bool(false)),
            // 64-bit integers carry an `L` suffix in OData.
            number => number.trim_end_matches('L').parse().ok().map(Literal::Number),
        }
    }

    fn word_with(&mut self, allowed: impl Fn(char) -> bool) -> Option<String> {
        let end = self.rest.find(|c: char| !allowed(c)).unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str) -> Req {
        Req::new(method, "edgevaultrecords.table.core.windows.net", path, Default::default(), Default::default())
    }

    #[test]
    fn routes_follow_the_rest_reference() {
        assert_eq!(route(&req(Method::POST, "/Tables")), Some(Route::CreateTable));
        assert_eq!(route(&req(Method::GET, "/Tables")), Some(Route::QueryTables));
        assert_eq!(route(&req(Method::DELETE, "/Tables('sweeps')")), Some(Route::DeleteTable("sweeps".into())));
        assert_eq!(route(&req(Method::POST, "/sweeps")), Some(Route::Insert("sweeps".into())));
        assert_eq!(route(&req(Method::GET, "/sweeps()")), Some(Route::Query("sweeps".into())));
        assert_eq!(route(&req(Method::GET, "/sweeps")), Some(Route::Query("sweeps".into())));
        // The Python SDK percent-encodes quotes, parentheses and commas; Rust's url crate leaves them.
        let entity = Route::Entity { table: "sweeps".into(), partition: "it's".into(), row: "r 1".into() };
        assert_eq!(route(&req(Method::GET, "/sweeps(PartitionKey='it''s',RowKey='r%201')")), Some(entity));
        let encoded = "/sweeps%28PartitionKey%3D%27p%27%2CRowKey%3D%27r%27%29";
        assert!(matches!(route(&req(Method::PUT, encoded)), Some(Route::Entity { .. })));
        assert_eq!(route(&req(Method::GET, "/a/b")), None);
    }

    #[test]
    fn filters_parse_to_comparisons_and_others_are_refused_by_name() {
        let parsed = parse_filter("PartitionKey eq 'a''b' and (RowKey ge '10') and Count lt 5L").unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].value, Literal::Text("a'b".into()));
        assert_eq!(parsed[2].value, Literal::Number(5.0));
        for unsupported in ["PartitionKey eq 'a' or RowKey eq 'b'", "startswith(RowKey, 'a')", "Name eq"] {
            let err = parse_filter(unsupported).unwrap_err();
            assert!(err.contains("eq ne gt ge lt le"), "{err}");
        }
    }

    #[test]
    fn comparisons_follow_odata_semantics() {
        let entity = StoredEntity {
            properties: serde_json::from_value(json!({"Count": 3, "Done": true})).unwrap(),
            partition: "p".into(),
            row: "r".into(),
            timestamp: "2026-01-01T00:00:00.0000000Z".into(),
        };
        let holds = |f: &str| parse_filter(f).unwrap().iter().all(|c| c.holds(&entity));
        assert!(holds("PartitionKey eq 'p' and Count gt 2 and Done eq true"));
        assert!(!holds("Count gt 3"));
        assert!(!holds("Missing eq 'x'"), "a missing property compares false");
        assert!(!holds("Count eq '3'"), "no comparison across types");
    }

    #[test]
    fn store_keys_sort_as_partition_then_row() {
        let a = entity_key("acct", "t", "a", "z");
        let b = entity_key("acct", "t", "a!", "a");
        assert!(a < b, "partition `a` comes before `a!` whatever the rows");
    }

    #[test]
    fn timestamps_have_seven_fractional_digits_and_etags_quote_them() {
        let t = time::macros::datetime!(2026-12-03 10:00:00.123456789 UTC);
        assert_eq!(timestamp(t), "2026-12-03T10:00:00.1234567Z");
        assert_eq!(etag("2026-12-03T10:00:00.1234567Z"), "W/\"datetime'2026-12-03T10%3A00%3A00.1234567Z'\"");
    }
}
