//! Nothing outside the loopback is ever contacted. The handler runs under `strace`, which records every `connect`,
//! `sendto` and `sendmsg` of the process and its threads — including a DNS lookup or an instance-metadata probe
//! that fails — while it goes through the lifecycle against local-azure: creation, activation, the API's request and
//! status (Service Bus, Key Vault), the sweep and a device's deletion. Every internet address in the trace must be a
//! loopback one.

use edgevault::messages::Command;
use edgevault_tests::scenario::{operation_id, traced_world};
use serde_json::json;

/// The internet addresses in one line of strace output: `inet_addr("…")` (IPv4) and
/// `inet_pton(AF_INET6, "…", …)` (IPv6).
fn addresses(line: &str) -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    for marker in ["inet_addr(\"", "inet_pton(AF_INET6, \""] {
        let mut rest = line;
        while let Some(start) = rest.find(marker) {
            rest = &rest[start + marker.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            found.push(rest[..end].parse().unwrap_or_else(|e| panic!("unreadable address in {line}: {e}")));
        }
    }
    found
}

fn is_loopback(address: &std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[test]
fn the_reader_finds_every_address_and_tells_loopback_from_the_rest() {
    let v4 = r#"81 connect(9, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("20.42.65.92")}, 16) = -1"#;
    let v6 = r#"81 connect(9, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0"#;
    let dns = r#"82 sendto(5, ""..., 40, MSG_NOSIGNAL, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("169.254.169.254")}, 16) = 40"#;
    assert_eq!(addresses(v4), vec!["20.42.65.92".parse::<std::net::IpAddr>().unwrap()]);
    assert!(!is_loopback(&addresses(v4)[0]));
    assert!(is_loopback(&addresses(v6)[0]));
    assert!(!is_loopback(&addresses(dns)[0]));
    assert!(is_loopback(&"::ffff:127.0.0.1".parse().unwrap()));
    assert!(addresses(r#"81 connect(3, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = 0"#).is_empty());
}

#[test]
fn the_handler_contacts_nothing_outside_the_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("network.trace");
    let w = traced_world(&trace);

    let device = w.create_device("ase-loopback");
    // The API's request (ARM reads, the pending mark, the Service Bus send), then the workers' part.
    let posted = w.api("POST", Some(json!({"resourceId": device.to_string()})), None);
    assert_eq!(posted["statusCode"], 202, "{posted}");
    let info = w.provision(&device);
    assert_eq!(info["keyVaultSyncStatus"], "KeyVaultSynced", "{info}");
    let status = w.api("GET", None, Some(&operation_id(&device)));
    assert_eq!(status["body"]["status"], "succeeded", "{status}");
    let sweep = edgevault_tests::fixture("triggers/timer.json").unwrap();
    let (code, answer) = w.handler.invoke("RecoverySweep", &sweep).unwrap();
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = w.arm("DELETE", &device.to_string(), None);
    assert!(matches!(code, 200 | 204), "{answer}");
    let deleted =
        Command::from(edgevault::messages::ResourceDeleted { device: device.clone(), cause: "event-delete".into() });
    let (code, answer) = w.deliver("ResourceDeleted", &deleted, 1);
    assert_eq!(code, 200, "{answer}");
    drop(w);

    let text = std::fs::read_to_string(&trace).unwrap();
    let contacted: Vec<_> = text.lines().flat_map(addresses).collect();
    assert!(
        contacted.iter().filter(|a| is_loopback(a)).count() >= 2,
        "the trace saw the handler reach local-azure (identity, ARM, Key Vault, Service Bus); else it traced nothing:\n{text}"
    );
    let outside: Vec<_> = text.lines().filter(|line| addresses(line).iter().any(|a| !is_loopback(a))).collect();
    assert!(outside.is_empty(), "the handler contacted addresses outside the loopback:\n{}", outside.join("\n"));
}
