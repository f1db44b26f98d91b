//! The infrastructure in `infra/` against the code: names, settings and queue options must agree.
//!
//! The Bicep is read with plain string scanning (comments stripped, then balanced `[...]` / `{...}` blocks and
//! `key: value` lines), which is enough for the shapes `infra/` uses on purpose: the queues as one literal array
//! `var queues = [...]`, the app settings as one `Microsoft.Web/sites/config` `appsettings` resource, the custom role
//! as one `actions: [...]` list. Every check is a function returning the problems it finds, so the tests at the end
//! can prove each one fails on a deliberately broken snippet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edgevault::config::settings;
use edgevault::functions::{FUNCTIONS, SERVICE_BUS_CONNECTION, SWEEP_SCHEDULE_SETTING};
use edgevault::messages::{MAX_DELIVERY_COUNT, queues};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `.bicep` file under `infra/`, comments stripped, joined.
fn all_bicep() -> String {
    let mut files = Vec::new();
    let mut pending = vec![repo().join("infra")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "bicep") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no .bicep files under infra/");
    files.iter().map(|f| strip_comments(&read(f))).collect::<Vec<_>>().join("\n")
}

fn bicep_file(relative: &str) -> String {
    strip_comments(&read(&repo().join("infra").join(relative)))
}

// ---------------------------------------------------------------------------------------------------------------
// The scanner.

/// Removes `//` and `/* */` comments outside single-quoted strings (`'https://…'` keeps its slashes).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '\'' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('\'', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for skipped in chars.by_ref() {
                    if last == '*' && skipped == '/' {
                        break;
                    }
                    last = skipped;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The balanced block that opens at the first `open` at or after `from` (delimiters inside strings ignored), without
/// its delimiters.
fn block_at(text: &str, from: usize, open: char, close: char) -> Option<&str> {
    let start = from + text[from..].find(open)?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '\'' => in_string = !in_string,
            _ if in_string => {}
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start + 1..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The block that follows the first occurrence of `anchor`.
fn block_after<'a>(text: &'a str, anchor: &str, open: char, close: char) -> Option<&'a str> {
    let at = text.find(anchor)?;
    block_at(text, at + anchor.len() - 1, open, close)
}

/// The top-level `{...}` objects of an array body.
fn objects(array_body: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(object) = block_at(array_body, from, '{', '}') {
        let start = array_body[from..].find('{').unwrap() + from;
        from = start + object.len() + 2;
        found.push(object);
    }
    found
}

/// The `key: value` lines at the top level of an object body (nested blocks skipped), values trimmed.
fn properties(object_body: &str) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    let mut depth = 0i32;
    for line in object_body.lines() {
        let trimmed = line.trim();
        if depth == 0
            && let Some((key, value)) = trimmed.split_once(':')
        {
            let key = key.trim().trim_matches('\'');
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                props.insert(key.to_string(), value.trim().to_string());
            }
        }
        depth += trimmed.matches(['{', '[']).count() as i32 - trimmed.matches(['}', ']']).count() as i32;
    }
    props
}

/// A Bicep string literal's content, or `None` for any other expression.
fn literal(value: &str) -> Option<&str> {
    value.strip_prefix('\'')?.strip_suffix('\'')
}

/// The single-quoted strings of an array body.
fn strings(array_body: &str) -> Vec<String> {
    array_body.lines().filter_map(|l| literal(l.trim()).map(str::to_string)).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// What the Bicep declares.

#[derive(Debug, Clone, PartialEq)]
struct QueueSpec {
    name: String,
    props: BTreeMap<String, String>,
}

/// The queues of `var queues = [...]`.
fn bicep_queues(bicep: &str) -> Vec<QueueSpec> {
    let Some(array) = block_after(bicep, "var queues = [", '[', ']') else { return Vec::new() };
    objects(array)
        .into_iter()
        .map(|o| {
            let props = properties(o);
            let name = props.get("name").and_then(|v| literal(v)).unwrap_or_default().to_string();
            QueueSpec { name, props }
        })
        .collect()
}

/// The `properties` of the `appsettings` resource: setting name → Bicep expression.
fn bicep_app_settings(bicep: &str) -> BTreeMap<String, String> {
    let Some(at) = bicep.find("'Microsoft.Web/sites/config@") else { return BTreeMap::new() };
    let mut from = at;
    // The sites/config resource whose name is 'appsettings'.
    while let Some(body) = block_at(bicep, from, '{', '}') {
        let start = bicep[from..].find('{').unwrap() + from;
        if properties(body).get("name").map(String::as_str) == Some("'appsettings'") {
            return block_after(body, "properties: {", '{', '}').map(properties).unwrap_or_default();
        }
        match bicep[start..].find("'Microsoft.Web/sites/config@") {
            Some(next) => from = start + next,
            None => break,
        }
    }
    BTreeMap::new()
}

/// The actions of the custom role definition.
fn bicep_role_actions(bicep: &str) -> Vec<String> {
    block_after(bicep, "actions: [", '[', ']').map(strings).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------------
// What the code and the host files expect.

#[derive(Debug, Clone)]
struct Binding {
    function: String,
    json: Value,
}

fn function_definitions() -> Vec<Binding> {
    let dir = repo().join("function-definitions");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.join("function.json");
        if !file.is_file() {
            continue;
        }
        let json: Value = serde_json::from_str(&read(&file)).unwrap();
        let function = path.file_name().unwrap().to_string_lossy().to_string();
        for binding in json["bindings"].as_array().expect("bindings array") {
            found.push(Binding { function: function.clone(), json: binding.clone() });
        }
    }
    found.sort_by(|a, b| a.function.cmp(&b.function));
    found
}

fn trigger<'a>(bindings: &'a [Binding], kind: &str) -> impl Iterator<Item = &'a Binding> {
    let kind = kind.to_string();
    bindings.iter().filter(move |b| b.json["type"] == kind.as_str())
}

/// Every queue constant in `edgevault::messages::queues`.
const CODE_QUEUES: &[&str] = &[
    queues::RESOURCE_CREATED,
    queues::ACTIVATION_KEY_REQUESTED,
    queues::VAULT_DELETED,
    queues::RESOURCE_DELETED,
    queues::SWEEP_PAGES,
    queues::ALERTS,
];

/// Whether messages sent to `queue` carry a session id, from the code that sends them: commands always do
/// (`Command::session_id`), alerts don't.
fn code_sends_sessions(queue: &str) -> Option<bool> {
    if queue == queues::ALERTS {
        let alert = edgevault::alerts::Alert::raise("infra-test", edgevault::alerts::Severity::Warning, "w", "a");
        return Some(alert.to_outgoing().broker.session_id.is_some());
    }
    CODE_QUEUES.contains(&queue).then_some(true)
}

/// App settings the handler reads that every deployment must set: the required ones of `config.rs` and those whose
/// value is a deployment decision (cut-over, deletion consent, key validity).
const REQUIRED_SETTINGS: &[&str] = &[
    settings::TENANT,
    settings::PRINCIPAL,
    settings::SERVICE_BUS,
    settings::SUBSCRIPTIONS,
    settings::CUTOVER,
    settings::DELETE_CONSENT,
    settings::KEY_TTL_HOURS,
    settings::API_CLIENT_ID,
    settings::RECORDS,
];

/// Settings read by the Functions host and platform rather than the handler.
const PLATFORM_SETTINGS: &[&str] = &[
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_RUN_FROM_PACKAGE",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------------------------------------------
// The checks.

/// Queues: the Bicep declares exactly the code's queues, each with the sessions, duplicate detection and delivery
/// count the code expects, and the resource applies those values.
fn check_queues(bicep: &str, bindings: &[Binding]) -> Vec<String> {
    let mut problems = Vec::new();
    let declared = bicep_queues(bicep);
    let names: BTreeSet<&str> = declared.iter().map(|q| q.name.as_str()).collect();
    for queue in CODE_QUEUES {
        if !names.contains(queue) {
            problems.push(format!("queue `{queue}` (edgevault::messages::queues) is missing from the Bicep"));
        }
    }
    for queue in &names {
        if !CODE_QUEUES.contains(queue) {
            problems.push(format!("queue `{queue}` in the Bicep is not one of edgevault::messages::queues"));
        }
    }
    let consumed: BTreeMap<String, bool> = trigger(bindings, "serviceBusTrigger")
        .map(|b| (b.json["queueName"].as_str().unwrap_or_default().to_string(), b.json["isSessionsEnabled"] == true))
        .collect();
    for queue in consumed.keys() {
        if !names.contains(queue.as_str()) {
            problems.push(format!("queue `{queue}` (a function.json serviceBusTrigger) is missing from the Bicep"));
        }
    }
    for spec in &declared {
        let prop = |key: &str| spec.props.get(key).map(String::as_str);
        let expected_sessions = consumed.get(&spec.name).copied().or_else(|| code_sends_sessions(&spec.name));
        let sessions = prop("requiresSession");
        if let Some(expected) = expected_sessions
            && sessions != Some(if expected { "true" } else { "false" })
        {
            problems.push(format!(
                "queue `{}`: requiresSession is {sessions:?}, the code expects {expected} (isSessionsEnabled / session ids sent)",
                spec.name
            ));
        }
        if consumed.contains_key(&spec.name) && prop("deadLetteringOnMessageExpiration") != Some("true") {
            problems.push(format!(
                "queue `{}`: a worker queue must dead-letter expired commands (deadLetteringOnMessageExpiration: true)",
                spec.name
            ));
        }
        if prop("requiresDuplicateDetection") != Some("true") {
            problems.push(format!(
                "queue `{}`: requiresDuplicateDetection must be true (deterministic MessageIds)",
                spec.name
            ));
        }
        let max = MAX_DELIVERY_COUNT.to_string();
        if prop("maxDeliveryCount") != Some(max.as_str()) {
            problems.push(format!(
                "queue `{}`: maxDeliveryCount is {:?}, edgevault::messages::MAX_DELIVERY_COUNT is {max}",
                spec.name,
                prop("maxDeliveryCount")
            ));
        }
    }
    // The queue resource must take its settings from the array, not override them.
    for (property, expression) in [
        ("requiresSession", "q.requiresSession"),
        ("requiresDuplicateDetection", "q.requiresDuplicateDetection"),
        ("maxDeliveryCount", "q.maxDeliveryCount"),
    ] {
        if !bicep.contains(&format!("{property}: {expression}")) {
            problems.push(format!("the queue resource does not set `{property}: {expression}`"));
        }
    }
    problems
}

/// Lock duration: set, and no longer than the host's lock renewal (otherwise renewal is pointless) nor the Service
/// Bus maximum of 5 minutes.
fn check_lock_duration(bicep: &str, host: &Value) -> Vec<String> {
    let Some(at) = bicep.find("lockDuration: '") else { return vec!["no queue sets lockDuration".into()] };
    let value = bicep[at + 15..].split('\'').next().unwrap_or_default();
    let minutes: Option<u64> = value.strip_prefix("PT").and_then(|v| v.strip_suffix('M')).and_then(|v| v.parse().ok());
    let Some(minutes) = minutes else { return vec![format!("lockDuration `{value}` is not PT<n>M")] };
    let renewal = host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"].as_str().unwrap_or_default();
    let renewal_minutes: u64 = renewal.split(':').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0)
        + 60 * renewal.split(':').next().and_then(|h| h.parse::<u64>().ok()).unwrap_or(0);
    let mut problems = Vec::new();
    if minutes == 0 || minutes > 5 {
        problems.push(format!("lockDuration {value} must be 1 to 5 minutes"));
    }
    if renewal_minutes < minutes {
        problems.push(format!("host.json maxAutoLockRenewalDuration {renewal} is shorter than lockDuration {value}"));
    }
    problems
}

/// App settings: everything the handler and the host read is set, connections are identity-based, the principal id
/// is the site's own identity, and no key or connection string appears.
fn check_app_settings(bicep: &str, bindings: &[Binding]) -> Vec<String> {
    let mut problems = Vec::new();
    let app = bicep_app_settings(bicep);
    if app.is_empty() {
        return vec!["no `Microsoft.Web/sites/config` resource named 'appsettings' in the Bicep".into()];
    }
    for setting in REQUIRED_SETTINGS {
        if !app.contains_key(*setting) {
            problems.push(format!("app setting `{setting}` (edgevault::config::settings) is missing from the Bicep"));
        }
    }
    for (setting, value) in [
        ("FUNCTIONS_EXTENSION_VERSION", "'~4'"),
        ("FUNCTIONS_WORKER_RUNTIME", "'custom'"),
        ("AzureWebJobsStorage__credential", "'managedidentity'"),
        ("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "'Authorization=AAD'"),
    ] {
        if app.get(setting).map(String::as_str) != Some(value) {
            problems.push(format!("app setting `{setting}` must be {value}, is {:?}", app.get(setting)));
        }
    }
    if !app.contains_key("AzureWebJobsStorage__accountName") {
        problems.push("app setting `AzureWebJobsStorage__accountName` is missing (identity-based host storage)".into());
    }
    if app.get(settings::PRINCIPAL).map(String::as_str) != Some("site.identity.principalId") {
        problems.push(format!("`{}` must be the site's own identity (site.identity.principalId)", settings::PRINCIPAL));
    }
    // Every Service Bus connection named in function.json is identity-based.
    let connections: BTreeSet<&str> =
        trigger(bindings, "serviceBusTrigger").filter_map(|b| b.json["connection"].as_str()).collect();
    for connection in connections {
        let setting = format!("{connection}__fullyQualifiedNamespace");
        if !app.contains_key(&setting) {
            problems.push(format!("connection `{connection}` (function.json) has no app setting `{setting}`"));
        }
        if app.contains_key(connection) {
            problems.push(format!("connection `{connection}` is set as a connection string; use `{setting}`"));
        }
    }
    // Every %Setting% in a timer schedule exists.
    for binding in trigger(bindings, "timerTrigger") {
        let schedule = binding.json["schedule"].as_str().unwrap_or_default();
        if let Some(name) = schedule.strip_prefix('%').and_then(|s| s.strip_suffix('%'))
            && !app.contains_key(name)
        {
            problems
                .push(format!("{}'s schedule names app setting `{name}`, missing from the Bicep", binding.function));
        }
    }
    // And the other way: every setting the Bicep sets is read by the handler, the host or the platform.
    let mut known: BTreeSet<String> = REQUIRED_SETTINGS
        .iter()
        .copied()
        .chain([settings::ARM_ENDPOINT, settings::RETRY_MAX, settings::RETRY_DELAY_MS, settings::AUTHORITY_HOST])
        .chain(PLATFORM_SETTINGS.iter().copied())
        .map(str::to_string)
        .collect();
    known.extend(
        trigger(bindings, "serviceBusTrigger")
            .filter_map(|b| b.json["connection"].as_str())
            .map(|c| format!("{c}__fullyQualifiedNamespace")),
    );
    known.extend(trigger(bindings, "timerTrigger").filter_map(|b| {
        let schedule = b.json["schedule"].as_str()?;
        Some(schedule.strip_prefix('%')?.strip_suffix('%')?.to_string())
    }));
    for setting in app.keys() {
        if !known.contains(setting) {
            problems.push(format!("app setting `{setting}` in the Bicep is read by nothing (not in config.rs, function.json or the platform's list)"));
        }
    }
    for (setting, value) in &app {
        if ["listKeys(", "AccountKey=", "SharedAccessKey", "InstrumentationKey="].iter().any(|k| value.contains(k))
            || setting == "AzureWebJobsStorage"
        {
            problems.push(format!("app setting `{setting}` carries a key or connection string: {value}"));
        }
    }
    problems
}

/// Event Grid: every eventGridTrigger function is an event-subscription endpoint and every endpoint is one.
fn check_event_grid(bicep: &str, bindings: &[Binding]) -> Vec<String> {
    let mut problems = Vec::new();
    let triggered: BTreeSet<&str> = trigger(bindings, "eventGridTrigger").map(|b| b.function.as_str()).collect();
    let mut endpoints = BTreeSet::new();
    let mut rest = bicep;
    while let Some(at) = rest.find("/functions/") {
        let name: String =
            rest[at + 11..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        endpoints.insert(name);
        rest = &rest[at + 11..];
    }
    for function in &triggered {
        if !endpoints.contains(*function) {
            problems.push(format!("eventGridTrigger function `{function}` is no Event Grid endpoint in the Bicep"));
        }
    }
    for endpoint in &endpoints {
        if !triggered.contains(endpoint.as_str()) {
            problems.push(format!("the Bicep delivers events to `{endpoint}`, which has no eventGridTrigger"));
        }
    }
    if !bicep.contains("endpointType: 'AzureFunction'") {
        problems.push("no event subscription uses endpointType 'AzureFunction'".into());
    }
    for operation in [
        "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write",
        "Microsoft.DataBoxEdge/dataBoxEdgeDevices/delete",
        "Microsoft.KeyVault/vaults/delete",
    ] {
        if !bicep.contains(&format!("'{operation}'")) {
            problems.push(format!("no event subscription filters on operation `{operation}`"));
        }
    }
    problems
}

/// The custom role: exactly what the handler calls, never purge.
fn check_role(actions: &[String]) -> Vec<String> {
    let expected: BTreeSet<&str> = [
        "Microsoft.DataBoxEdge/dataBoxEdgeDevices/read",
        "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write",
        "Microsoft.DataBoxEdge/dataBoxEdgeDevices/getExtendedInformation/action",
        "Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action",
        "Microsoft.KeyVault/vaults/read",
        "Microsoft.KeyVault/vaults/write",
        "Microsoft.KeyVault/vaults/delete",
        "Microsoft.KeyVault/vaults/accessPolicies/write",
        "Microsoft.KeyVault/checkNameAvailability/read",
        "Microsoft.KeyVault/deletedVaults/read",
        "Microsoft.KeyVault/locations/deletedVaults/read",
        "Microsoft.KeyVault/locations/operationResults/read",
        "Microsoft.Authorization/locks/read",
        "Microsoft.Authorization/locks/write",
        "Microsoft.Authorization/locks/delete",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Microsoft.Resources/subscriptions/resources/read",
        "Microsoft.Resources/subscriptions/providers/read",
        "Microsoft.Storage/storageAccounts/read",
        "Microsoft.Storage/storageAccounts/write",
        "Microsoft.Storage/checknameavailability/read",
        "Microsoft.Insights/diagnosticSettings/read",
        "Microsoft.Insights/diagnosticSettings/write",
    ]
    .into();
    let actual: BTreeSet<&str> = actions.iter().map(String::as_str).collect();
    let mut problems = Vec::new();
    for missing in expected.difference(&actual) {
        problems.push(format!("the custom role lacks `{missing}`"));
    }
    for extra in actual.difference(&expected) {
        problems.push(format!("the custom role grants `{extra}`, which the code does not need"));
    }
    if actions.iter().any(|a| a.to_ascii_lowercase().contains("purge") || a.contains('*')) {
        problems.push("the custom role must never allow purge (nor wildcards)".into());
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "infra/ and the code disagree:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------------------------------
// The repository agrees with itself.

#[test]
fn every_queue_exists_with_the_options_the_code_expects() {
    assert_none(check_queues(&bicep_file("modules/servicebus.bicep"), &function_definitions()));
}

#[test]
fn queue_lock_duration_fits_the_hosts_lock_renewal() {
    let host: Value = serde_json::from_str(&read(&repo().join("host.json"))).unwrap();
    assert_none(check_lock_duration(&bicep_file("modules/servicebus.bicep"), &host));
}

#[test]
fn every_app_setting_connection_and_schedule_is_set() {
    assert_none(check_app_settings(&all_bicep(), &function_definitions()));
}

/// App Service Authentication is on in front of the API, refuses what it cannot authenticate with 401, accepts
/// tokens for the same app registration the handler exchanges them as, and leaves the Event Grid webhook to its key.
fn check_auth_settings(bicep: &str) -> Vec<String> {
    let Some(at) = bicep.find("name: 'authsettingsV2'") else {
        return vec![
            "no `Microsoft.Web/sites/config` resource named 'authsettingsV2' (App Service Authentication)".into(),
        ];
    };
    let auth = &bicep[at..];
    let mut problems = Vec::new();
    for (what, text) in [
        ("the platform enabled", "enabled: true"),
        ("authentication required", "requireAuthentication: true"),
        ("401 for unauthenticated callers", "unauthenticatedClientAction: 'Return401'"),
        ("the Entra ID provider registered with the API's client id", "clientId: apiClientId"),
        ("the API's audiences allowed", "'api://${apiClientId}'"),
        ("the Event Grid webhook excluded (it authenticates with its system key)", "'/runtime/webhooks/eventgrid'"),
    ] {
        if !auth.contains(text) {
            problems.push(format!("authsettingsV2: {what} (`{text}`) is missing"));
        }
    }
    if bicep_app_settings(bicep).get(settings::API_CLIENT_ID).map(String::as_str) != Some("apiClientId") {
        problems.push(format!("`{}` must be the client id App Service Authentication uses", settings::API_CLIENT_ID));
    }
    let anonymous = function_definitions()
        .iter()
        .filter(|b| b.json["type"] == "httpTrigger")
        .all(|b| b.json["authLevel"] == "anonymous");
    if !anonymous {
        problems.push("an HTTP function wants a function key: App Service Authentication admits callers".into());
    }
    problems
}

#[test]
fn app_service_authentication_guards_the_api_with_the_handlers_app_registration() {
    assert_none(check_auth_settings(&bicep_file("modules/functionapp.bicep")));
    // And the check can fail: without Return401 the platform would pass anonymous callers to the app.
    let lax = bicep_file("modules/functionapp.bicep").replace("'Return401'", "'AllowAnonymous'");
    assert!(!check_auth_settings(&lax).is_empty());
}

#[test]
fn event_grid_delivers_to_the_event_grid_functions() {
    assert_none(check_event_grid(&all_bicep(), &function_definitions()));
}

#[test]
fn the_custom_role_is_exactly_what_the_code_needs() {
    assert_none(check_role(&bicep_role_actions(&bicep_file("modules/role-definition.bicep"))));
}

#[test]
fn function_definitions_match_the_function_table_and_host_json() {
    let on_disk: BTreeSet<String> = function_definitions().into_iter().map(|b| b.function).collect();
    let table: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(on_disk, table, "function-definitions/ and edgevault::functions::FUNCTIONS differ");
    let bindings = function_definitions();
    assert!(
        trigger(&bindings, "serviceBusTrigger").all(|b| b.json["connection"] == SERVICE_BUS_CONNECTION),
        "every worker must use the connection {SERVICE_BUS_CONNECTION}"
    );
    let schedule = format!("%{SWEEP_SCHEDULE_SETTING}%");
    assert!(trigger(&bindings, "timerTrigger").all(|b| b.json["schedule"] == schedule.as_str()));
    let host: Value = serde_json::from_str(&read(&repo().join("host.json"))).unwrap();
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "edgevault");
}

#[test]
fn the_dead_letter_alert_watches_every_worker_queue() {
    let main = bicep_file("main.bicep");
    let watched: BTreeSet<String> =
        block_after(&main, "workerQueues: [", '[', ']').map(strings).unwrap_or_default().into_iter().collect();
    let consumed: BTreeSet<String> = trigger(&function_definitions(), "serviceBusTrigger")
        .map(|b| b.json["queueName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(watched, consumed);
}

#[test]
fn alert_rules_select_edgevault_alert_events_and_dead_letters() {
    let alerts = bicep_file("modules/alerts.bicep");
    // handlers/src/alerts.rs logs with this target and these `Debug` renderings of state and severity.
    for needle in [
        "edgevault::alert",
        "state=Raised",
        &format!("severity={:?}", edgevault::alerts::Severity::Critical),
        &format!("severity={:?}", edgevault::alerts::Severity::Warning),
        "metricName: 'DeadletteredMessages'",
    ] {
        assert!(alerts.contains(needle), "modules/alerts.bicep does not mention `{needle}`");
    }
}

#[test]
fn parameter_files_set_the_deployment_decisions() {
    for file in ["dev.bicepparam", "prod.bicepparam"] {
        let text = bicep_file(file);
        for param in ["subscriptionsInScope", "cutover", "recoverySweepSchedule", "deleteVaultWithDevice"] {
            assert!(text.contains(&format!("param {param} =")), "{file} does not set {param}");
        }
        let schedule = text.split("param recoverySweepSchedule = '").nth(1).unwrap().split('\'').next().unwrap();
        assert_eq!(schedule.split_whitespace().count(), 6, "{file}: `{schedule}` is not a six-field NCRONTAB");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Each check fails when the Bicep is wrong.

const GOOD_QUEUES: &str = r#"
// a comment with a 'quote' and https://example
var queues = [
  {
    name: 'resource-created'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'activation-key-requested'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'sweep-pages'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'vault-deleted'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'resource-deleted'
    requiresSession: true
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
  }
  {
    name: 'alerts'
    requiresSession: false
    requiresDuplicateDetection: true
    maxDeliveryCount: 10
  }
]
resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for q in queues: {
  name: q.name
  properties: {
    requiresSession: q.requiresSession
    requiresDuplicateDetection: q.requiresDuplicateDetection
    maxDeliveryCount: q.maxDeliveryCount
    lockDuration: 'PT1M'
  }
}]
"#;

fn check_snippet(bicep: &str) -> Vec<String> {
    check_queues(&strip_comments(bicep), &function_definitions())
}

#[test]
fn the_scanner_accepts_a_correct_snippet() {
    assert_none(check_snippet(GOOD_QUEUES));
    assert_eq!(bicep_queues(&strip_comments(GOOD_QUEUES)).len(), 6);
}

#[test]
fn a_missing_queue_is_found() {
    let snippet = GOOD_QUEUES.replace("name: 'vault-deleted'", "name: 'vault-removed'");
    let problems = check_snippet(&snippet);
    assert!(problems.iter().any(|p| p.contains("`vault-deleted`") && p.contains("missing")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("`vault-removed`")), "{problems:?}");
}

#[test]
fn wrong_queue_options_are_found() {
    let no_sessions = GOOD_QUEUES.replacen("requiresSession: true", "requiresSession: false", 1);
    assert!(
        check_snippet(&no_sessions).iter().any(|p| p.contains("resource-created") && p.contains("requiresSession"))
    );
    let sessions_on_alerts = GOOD_QUEUES.replace("requiresSession: false", "requiresSession: true");
    assert!(check_snippet(&sessions_on_alerts).iter().any(|p| p.contains("`alerts`")));
    let no_dedup = GOOD_QUEUES.replacen("requiresDuplicateDetection: true", "requiresDuplicateDetection: false", 1);
    assert!(check_snippet(&no_dedup).iter().any(|p| p.contains("requiresDuplicateDetection")));
    let five = GOOD_QUEUES.replacen("maxDeliveryCount: 10", "maxDeliveryCount: 5", 1);
    assert!(check_snippet(&five).iter().any(|p| p.contains("maxDeliveryCount")));
    let expiring =
        GOOD_QUEUES.replacen("deadLetteringOnMessageExpiration: true", "deadLetteringOnMessageExpiration: false", 1);
    assert!(check_snippet(&expiring).iter().any(|p| p.contains("deadLetteringOnMessageExpiration")));
    let overridden = GOOD_QUEUES.replace("maxDeliveryCount: q.maxDeliveryCount", "maxDeliveryCount: 3");
    assert!(check_snippet(&overridden).iter().any(|p| p.contains("q.maxDeliveryCount")));
    let commented_out = GOOD_QUEUES.replace("    name: 'alerts'", "    // name: 'alerts'");
    assert!(check_snippet(&commented_out).iter().any(|p| p.contains("`alerts`")));
}

#[test]
fn a_long_lock_duration_is_found() {
    let host = serde_json::json!({"extensions": {"serviceBus": {"maxAutoLockRenewalDuration": "00:10:00"}}});
    assert_none(check_lock_duration(GOOD_QUEUES, &host));
    assert!(!check_lock_duration(&GOOD_QUEUES.replace("PT1M", "PT10M"), &host).is_empty());
    let short_renewal = serde_json::json!({"extensions": {"serviceBus": {"maxAutoLockRenewalDuration": "00:00:30"}}});
    assert!(!check_lock_duration(GOOD_QUEUES, &short_renewal).is_empty());
}

#[test]
fn missing_or_keyed_app_settings_are_found() {
    let real = all_bicep();
    let bindings = function_definitions();
    for (from, to, expect) in [
        ("EDGEVAULT_SUBSCRIPTIONS:", "EDGEVAULT_SUBSCRIPTION_IDS:", settings::SUBSCRIPTIONS),
        ("EDGEVAULT_CUTOVER:", "EDGEVAULT_CUTOFF:", "EDGEVAULT_CUTOFF"),
        ("ServiceBusConnection__fullyQualifiedNamespace:", "ServiceBusConnection:", "ServiceBusConnection"),
        ("RecoverySweepSchedule:", "SweepSchedule:", "RecoverySweepSchedule"),
        ("FUNCTIONS_WORKER_RUNTIME: 'custom'", "FUNCTIONS_WORKER_RUNTIME: 'node'", "FUNCTIONS_WORKER_RUNTIME"),
        ("RUST_LOG: rustLog", "RUST_LOG: rustLog\n    EDGEVAULT_TEST_PANIC_IN: 'ArmEvents'", "EDGEVAULT_TEST_PANIC_IN"),
        (
            "EDGEVAULT_PRINCIPAL_ID: site.identity.principalId",
            "EDGEVAULT_PRINCIPAL_ID: principalId",
            settings::PRINCIPAL,
        ),
        (
            "AzureWebJobsStorage__credential: 'managedidentity'",
            "AzureWebJobsStorage__credential: 'managedidentity'\n    AzureWebJobsStorage: 'AccountKey=abc'",
            "AzureWebJobsStorage",
        ),
    ] {
        assert!(real.contains(from), "the real Bicep no longer contains `{from}`");
        let problems = check_app_settings(&real.replace(from, to), &bindings);
        assert!(problems.iter().any(|p| p.contains(expect)), "{from} → {to}: {problems:?}");
    }
}

#[test]
fn wrong_event_grid_endpoints_are_found() {
    let real = all_bicep();
    let bindings = function_definitions();
    let renamed = real.replace("/functions/ArmEvents", "/functions/ArmEvent");
    let problems = check_event_grid(&renamed, &bindings);
    assert!(problems.iter().any(|p| p.contains("`ArmEvents`")) && problems.iter().any(|p| p.contains("`ArmEvent`")));
    let unfiltered = real.replace("'Microsoft.KeyVault/vaults/delete'", "'Microsoft.KeyVault/vaults/write'");
    assert!(check_event_grid(&unfiltered, &bindings).iter().any(|p| p.contains("vaults/delete")));
}

#[test]
fn a_wider_or_narrower_role_is_found() {
    let actions = bicep_role_actions(&bicep_file("modules/role-definition.bicep"));
    let mut purge = actions.clone();
    purge.push("Microsoft.KeyVault/locations/deletedVaults/purge/action".into());
    assert!(check_role(&purge).iter().any(|p| p.contains("purge")));
    let narrower: Vec<String> = actions.iter().filter(|a| !a.contains("locks/write")).cloned().collect();
    assert!(check_role(&narrower).iter().any(|p| p.contains("locks/write")));
}

#[test]
fn infra_has_a_readme() {
    let readme = read(&repo().join("infra/README.md"));
    assert!(readme.contains("Bicep"));
}
