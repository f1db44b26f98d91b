//! A genuine activation key, altered by the fuzzer's edit script (flip, insert or delete bytes anywhere): unless the
//! edits cancel out, the key must no longer open (the header is AES-GCM's associated data, the tag covers nonce and
//! ciphertext); if they cancel out, it must open to exactly what was sealed.
//!
//! The key is sealed once per process with a fresh CIK and nonce, so the token's bytes differ between runs while its
//! layout (and so the meaning of an edit position) does not. Assertion messages never carry the token or the CIK.
#![no_main]

use std::sync::OnceLock;

use edgevault::activation_key::{ActivationKey, Cik, CikLocation, Claims};
use libfuzzer_sys::fuzz_target;

const ISSUED_AT: i64 = 1_800_000_000;
const NOW: i64 = ISSUED_AT + 60;

struct Genuine {
    cik: Cik,
    claims: Claims,
    token: String,
}

fn genuine() -> &'static Genuine {
    static GENUINE: OnceLock<Genuine> = OnceLock::new();
    GENUINE.get_or_init(|| {
        let claims = Claims {
            resource_id: "/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/testedgedevice"
                .parse()
                .expect("a device id"),
            cik: CikLocation {
                vault_uri: "https://ase-testedgedevice-3f2c9a.vault.azure.net/".into(),
                secret_name: "ase-cik-0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                secret_version: "4387e9f3d6e14c459867679a90fd0f79".into(),
            },
            issued_at: ISSUED_AT,
            expires_at: ISSUED_AT + 72 * 3600,
        };
        let cik = Cik::generate();
        let token = ActivationKey::seal(&claims, &cik).expose().to_string();
        Genuine { cik, claims, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let genuine = genuine();
    let mut token = genuine.token.clone().into_bytes();
    // Each 4-byte chunk is one edit: operation, position (big-endian, wrapped to the token), byte.
    for edit in data.chunks_exact(4) {
        let at = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        match edit[0] % 3 {
            0 if !token.is_empty() => {
                let i = at % token.len();
                token[i] ^= edit[3].max(1);
            }
            1 => token.insert(at % (token.len() + 1), edit[3]),
            2 if !token.is_empty() => {
                token.remove(at % token.len());
            }
            _ => {}
        }
    }
    let Ok(text) = String::from_utf8(token) else { return };
    let opened = ActivationKey::parse(&text).and_then(|key| key.open(&genuine.cik, NOW));
    // `parse` trims surrounding whitespace (a key pasted with a newline is still the key).
    if text.trim() == genuine.token {
        assert_eq!(opened.ok().as_ref(), Some(&genuine.claims), "the unaltered key does not open");
    } else {
        assert!(opened.is_err(), "an altered activation key opened");
    }
});
