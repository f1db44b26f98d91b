//! Vault names, as the portal sends them in an activation-key request and as they come back from ARM.
#![no_main]

use edgevault::vault_name::{MAX_LEN, MIN_LEN, VaultName};
use edgevault_fuzz::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(name) = text(data) else { return };
    // Key Vault's rules, stated independently of the parser (as the proptest states them).
    let valid = (MIN_LEN..=MAX_LEN).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--");
    match VaultName::parse(name) {
        Ok(parsed) => {
            assert!(valid, "a name that breaks a rule was accepted");
            assert_eq!(parsed.as_str(), name.to_ascii_lowercase(), "the canonical form is the name in lower case");
            assert_eq!(VaultName::parse(parsed.as_str()).expect("the canonical form is valid"), parsed);
        }
        Err(err) => {
            assert!(!valid, "a valid name was refused: {}", err.rule());
            // The message is shown to the portal's user: it must stay short whatever was sent.
            assert!(err.to_string().len() < 512, "error message grows with the input");
        }
    }
});
