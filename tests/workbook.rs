//! The Azure Monitor workbook (`infra/modules/workbook.json`) reads only what the handler really writes: every
//! event (`Message has "…"`) and every field (`extract(@"…name=…")`) its `AppTraces` queries name is checked
//! against the log of a real run — an activation, a deleted vault recovered, a sweep, a worker that fails for
//! good — not against a list kept by hand. A renamed log event or field fails here instead of leaving an empty
//! chart in production.

use std::path::PathBuf;
use std::time::Duration;

use edgevault::messages::{ActivationKeyRequested, Command, ResourceCreated, VaultDeleted};
use edgevault::resource_id::ResourceId;
use edgevault::vault_name::VaultName;
use edgevault_tests::scenario::{operation_id, world};
use serde_json::{Value, json};

/// One chart's query and what it reads.
#[derive(Debug)]
struct Query {
    title: String,
    table: String,
    /// `Message has "<event>"`.
    events: Vec<String>,
    /// `<field>=` inside `extract(@"…")` patterns.
    fields: Vec<String>,
}

fn workbook() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/modules/workbook.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The text of every KQL verbatim string (`@"…"`, `""` an escaped quote) that follows `opening` in `query`.
fn verbatim_after(query: &str, opening: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find(opening) {
        let mut text = String::new();
        let mut chars = rest[at + opening.len()..].char_indices().peekable();
        let mut end = rest.len() - at - opening.len();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, n)| *n) == Some('"') {
                    chars.next();
                    text.push('"');
                    continue;
                }
                end = i;
                break;
            }
            text.push(c);
        }
        found.push(text);
        rest = &rest[at + opening.len() + end..];
    }
    found
}

fn queries() -> Vec<Query> {
    let book = workbook();
    let items = book["items"].as_array().unwrap();
    items
        .iter()
        .filter(|item| item["type"] == 3)
        .map(|item| {
            let text = item["content"]["query"].as_str().unwrap();
            let fields = verbatim_after(text, "extract(@\"")
                .iter()
                .flat_map(|pattern| {
                    // `name=` in a pattern: the identifier right before each `=`.
                    pattern
                        .match_indices('=')
                        .map(|(i, _)| {
                            let before = &pattern[..i];
                            let start =
                                before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
                            // A regex escape before the name (`\b`) is not part of it.
                            let escaped = start > 0 && before[..start].ends_with('\\');
                            before[start + usize::from(escaped)..].to_string()
                        })
                        .filter(|name| !name.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect();
            Query {
                title: item["content"]["title"].as_str().unwrap_or_default().to_string(),
                table: text.split_whitespace().next().unwrap_or_default().to_string(),
                events: verbatim_after(text, "Message has \""),
                fields,
            }
        })
        .collect()
}

#[test]
fn the_workbook_charts_every_subject_the_issue_names() {
    let titles: Vec<String> = queries().iter().map(|q| q.title.to_lowercase()).collect();
    for subject in ["recover", "time from", "alerts", "sweep", "activation", "failed", "dead-letter"] {
        assert!(titles.iter().any(|t| t.contains(subject)), "no chart about {subject}: {titles:?}");
    }
    let bicep =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/modules/workbook.bicep"))
            .unwrap();
    assert!(bicep.contains("loadTextContent('workbook.json')"), "the Bicep deploys this very file");
}

#[test]
fn every_event_and_field_the_workbook_reads_is_in_the_log_of_a_real_run() {
    let w = world(&[]);
    // An activation through the API, then the workers' provisioning.
    let device = w.create_device("ase-workbook");
    let accepted = w.api("POST", Some(json!({"resourceId": device.to_string()})), None);
    assert_eq!(accepted["statusCode"], 202, "{accepted}");
    let info = w.provision(&device);
    // A deleted vault, recovered.
    let vault: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    w.unlock_and_delete_vault(&vault);
    let deleted = Command::from(VaultDeleted { vault: vault.clone(), cause: "event-9".into() });
    assert_eq!(w.deliver("VaultDeleted", &deleted, 1).0, 200);
    // A sweep: the timer starts it, its pages are worked.
    let (_, pages) = w.sweep();
    assert!(!pages.is_empty(), "the sweep worked its pages");
    // A worker that fails for good: ARM refuses the new device's vault, on the last delivery.
    let failing = w.create_device("ase-workbook-refused");
    let name = VaultName::default_for(&failing, 0);
    w.la.admin_post(
        "/admin/faults",
        json!({"service": "arm", "method": "PUT", "pathRegex": format!("(?i)/vaults/{name}$"),
               "action": {"type": "error", "status": 400, "code": "BadRequest"}}),
    )
    .unwrap();
    let created = Command::from(ResourceCreated { device: failing.clone(), cause: "event-10".into() });
    assert_eq!(w.deliver("ResourceCreated", &created, 1).0, 200);
    let requested = Command::from(ActivationKeyRequested {
        device: failing.clone(),
        operation_id: operation_id(&failing),
        vault_name: Some(name),
    });
    let (status, answer) = w.deliver("ActivationKeyRequested", &requested, 10);
    assert_ne!(status, 200, "the refused activation fails: {answer}");
    // The log comes on another thread, after the answer: its last line for this run is the failed invocation's end.
    let ended = |l: &str| {
        l.contains("function=\"ActivationKeyRequested\"") && l.contains("invocation done") && !l.contains("status=200")
    };
    assert!(w.handler.wait_for_log(Duration::from_secs(30), ended).is_some(), "the failed invocation's log arrives");

    let log = w.handler.log();
    let mut problems = Vec::new();
    let queries = queries();
    assert!(queries.len() >= 6, "{queries:?}");
    for query in &queries {
        match query.table.as_str() {
            "AppTraces" => {}
            // Service Bus's platform metric, sent to the workspace by the namespace's diagnostic setting.
            "AzureMetrics" => continue,
            other => {
                problems.push(format!("{}: reads table {other}, which nothing of edgevault's writes", query.title));
                continue;
            }
        }
        assert!(!query.events.is_empty(), "{}: a query on AppTraces must select events by `Message has`", query.title);
        let lines: Vec<&String> = log.iter().filter(|l| query.events.iter().any(|e| l.contains(e.as_str()))).collect();
        for event in &query.events {
            if !log.iter().any(|l| l.contains(event.as_str())) {
                problems.push(format!("{}: no log line has \"{event}\"", query.title));
            }
        }
        for field in &query.fields {
            if !lines.iter().any(|l| l.contains(&format!("{field}="))) {
                problems.push(format!("{}: no line of {:?} has the field `{field}=`", query.title, query.events));
            }
        }
    }
    assert!(problems.is_empty(), "{}\n\nthe run's log:\n{}", problems.join("\n"), log.join("\n"));
}
