//! Activation keys as a device receives them (`edgevault-cli device open-key`): any text may arrive, and none of it
//! may open unless it was sealed with the CIK that opens it. The CIK here is drawn fresh for each process and seals
//! nothing, so every input is a forgery and must be refused. Assertion messages never carry the token or the CIK.
#![no_main]

use std::sync::OnceLock;

use edgevault::activation_key::{ActivationKey, Cik};
use edgevault_fuzz::text;
use libfuzzer_sys::fuzz_target;

fn cik() -> &'static Cik {
    static CIK: OnceLock<Cik> = OnceLock::new();
    CIK.get_or_init(Cik::generate)
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    // The CIK's own reader (the secret value from Key Vault) is an edge parser too.
    let _ = Cik::from_secret_value(text);
    let Ok(key) = ActivationKey::parse(text) else { return };
    // The header is read before the CIK is known (to find the CIK): it must answer on any input.
    let _ = key.cik_location();
    assert!(key.open(cik(), 0).is_err(), "a forged activation key opened");
    assert_eq!(format!("{key:?}"), "ActivationKey(<redacted>)", "Debug shows the token");
});
