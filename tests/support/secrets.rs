//! The secrets scan. Every answer the suite receives from edgevault (each invocation's answer, each API answer
//! through the Functions host, the CLI's output) and every log line of the handler and of local-azure with the app
//! is scanned for activation keys, bearer tokens and the CIK values the tests have read; a hit fails the test.
//!
//! The one place a secret belongs is a `succeeded` status's `activationKey`: that field is what the API exists to
//! hand out, so it is taken out before its answer is scanned, and every other field of that answer still is.
//!
//! CIKs are random, so they are recognised by value: a test that reads one (`remember`) adds it to the list, and
//! everything already scanned is scanned again for it, so the order in which a test reads and receives does not
//! matter. Bearer tokens are recognised by their JWT header and, for every token a test minted
//! (`remember_token`), by each of its parts: a payload or a signature cut out of a token is still found. A hit
//! names where it was and what kind of secret it is, never the secret.

use std::sync::Mutex;

use serde_json::Value;

/// Marks of secrets that never vary: an activation key's prefix and a JWT header's (bearer tokens).
pub const SECRET_MARKS: &[&str] = &["ase-ak1.", "eyJ0eX", "eyJhbGci"];

struct Transcript {
    /// Secret values the tests have read or minted, with what kind each is.
    known: Vec<(String, &'static str)>,
    /// What was scanned so far, with where it came from, to be scanned again when a CIK becomes known.
    seen: Vec<(String, String)>,
}

static TRANSCRIPT: Mutex<Transcript> = Mutex::new(Transcript { known: Vec::new(), seen: Vec::new() });

/// What kind of secret `text` holds, if any.
pub fn find(text: &str, known: &[(String, &'static str)]) -> Option<&'static str> {
    if text.contains("ase-ak1.") {
        return Some("an activation key");
    }
    if SECRET_MARKS.iter().any(|mark| text.contains(mark)) {
        return Some("a bearer token");
    }
    known.iter().find(|(value, _)| text.contains(value.as_str())).map(|(_, kind)| *kind)
}

/// Scans `text`, received from `source`; panics on a secret.
pub fn scan(source: &str, text: &str) {
    let mut transcript = TRANSCRIPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let hit = find(text, &transcript.known);
    transcript.seen.push((source.to_string(), text.to_string()));
    drop(transcript);
    if let Some(kind) = hit {
        fail(source, kind);
    }
}

/// Scans an answer, leaving out the activation key a `succeeded` status carries by design.
pub fn scan_answer(source: &str, answer: &Value) {
    let mut answer = answer.clone();
    strip_issued_keys(&mut answer);
    scan(source, &answer.to_string());
}

/// Adds a CIK value the test has read; everything scanned so far is scanned again for it.
pub fn remember(cik: &str) {
    remember_as(cik, "a CIK");
}

/// Adds a bearer token the test minted: its payload and its signature, each of which is secret enough alone (the
/// header is the same for every token and already a mark).
pub fn remember_token(token: &str) {
    for part in token.split('.').skip(1) {
        remember_as(part, "a bearer token");
    }
}

fn remember_as(value: &str, kind: &'static str) {
    // A value this short could match by chance; CIKs and token parts are far longer.
    if value.len() < 16 {
        return;
    }
    let mut transcript = TRANSCRIPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if transcript.known.iter().any(|(k, _)| k == value) {
        return;
    }
    transcript.known.push((value.to_string(), kind));
    let hit = transcript.seen.iter().find(|(_, text)| text.contains(value)).map(|(source, _)| source.clone());
    drop(transcript);
    if let Some(source) = hit {
        fail(&source, kind);
    }
}

/// Remembers the value of a Key Vault secret answer (`GET …/secrets/<name>`), if it is one.
pub fn remember_secret_answer(url: &str, answer: &Value) {
    if url.contains("/secrets/")
        && let Some(value) = answer["value"].as_str()
    {
        remember(value);
    }
}

fn fail(source: &str, kind: &str) -> ! {
    panic!("{kind} reached {source} (the value is not printed)")
}

/// Removes `activationKey` from every object whose `status` is `succeeded`, wherever it is nested (a raw
/// invocation carries the API's answer under `Outputs.res.body`).
fn strip_issued_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("status").and_then(Value::as_str) == Some("succeeded") {
                map.remove("activationKey");
            }
            map.values_mut().for_each(strip_issued_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_issued_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_each_kind_of_secret() {
        let known = vec![("c2VjcmV0LWNpay12YWx1ZS0xMjM0NTY3ODkw".to_string(), "a CIK")];
        assert_eq!(find("key ase-ak1.abc.def", &known), Some("an activation key"));
        assert_eq!(find("Bearer eyJ0eXAiOiJKV1QifQ.x.y", &known), Some("a bearer token"));
        assert_eq!(find("{\"value\":\"c2VjcmV0LWNpay12YWx1ZS0xMjM0NTY3ODkw\"}", &known), Some("a CIK"));
        assert_eq!(find("{\"status\":\"pending\"}", &known), None);
    }

    #[test]
    fn only_a_succeeded_status_may_carry_its_activation_key() {
        let mut issued = json!({"Outputs": {"res": {"body": {"status": "succeeded", "activationKey": "ase-ak1.k"}}}});
        strip_issued_keys(&mut issued);
        assert_eq!(find(&issued.to_string(), &[]), None);

        let mut misplaced = json!({"status": "failed", "activationKey": "ase-ak1.k"});
        strip_issued_keys(&mut misplaced);
        assert_eq!(find(&misplaced.to_string(), &[]), Some("an activation key"));
        let mut in_an_error = json!({"status": "succeeded", "error": {"message": "ase-ak1.k"}});
        strip_issued_keys(&mut in_an_error);
        assert_eq!(find(&in_an_error.to_string(), &[]), Some("an activation key"));
    }

    #[test]
    #[should_panic(expected = "a bearer token reached the log")]
    fn a_token_signature_without_its_header_is_still_found() {
        let token = "eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiJvLTEtbG9uZy1lbm91Z2gifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0xMjM";
        remember_token(token);
        scan("the log", "failed with c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0xMjM in it");
    }

    #[test]
    #[should_panic(expected = "a CIK reached the earlier answer")]
    fn a_cik_read_later_is_found_in_what_was_scanned_before() {
        scan("the earlier answer", "{\"detail\":\"dGhlLWNpay10aGF0LWxlYWtlZC1lYXJsaWVy\"}");
        remember("dGhlLWNpay10aGF0LWxlYWtlZC1lYXJsaWVy");
    }
}
