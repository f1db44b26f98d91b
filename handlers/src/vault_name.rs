//! Key Vault names: the platform's rules, checked with a message naming the rule that is broken, and the default
//! name edgevault derives for a device.
//!
//! The rules are Key Vault's own: 3–24 characters; ASCII letters, digits and hyphens; starting with a letter; ending
//! with a letter or digit; no two hyphens in a row. (The seed document says 3–34; the platform enforces 24.) Names
//! are global and case-insensitive, so the canonical form is lower case.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::resource_id::ResourceId;

pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 24;

/// A name that satisfies every Key Vault naming rule, in lower case.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct VaultName(String);

/// Which rule a proposed name breaks; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultNameError {
    #[error("vault name `{name}` is {len} characters long; Key Vault names have {MIN_LEN} to {MAX_LEN} characters")]
    Length { name: String, len: usize },
    #[error("vault name `{name}` contains `{found}`; use only ASCII letters, digits and hyphens")]
    Character { name: String, found: char },
    #[error("vault name `{name}` must start with a letter")]
    Start { name: String },
    #[error("vault name `{name}` must end with a letter or a digit")]
    End { name: String },
    #[error("vault name `{name}` contains `--`; consecutive hyphens are not allowed")]
    ConsecutiveHyphens { name: String },
}

impl VaultNameError {
    /// A stable code per rule, for API error bodies.
    pub fn rule(&self) -> &'static str {
        match self {
            VaultNameError::Length { .. } => "VaultNameLength",
            VaultNameError::Character { .. } => "VaultNameCharacters",
            VaultNameError::Start { .. } => "VaultNameStart",
            VaultNameError::End { .. } => "VaultNameEnd",
            VaultNameError::ConsecutiveHyphens { .. } => "VaultNameConsecutiveHyphens",
        }
    }
}

impl VaultName {
    pub fn parse(name: &str) -> Result<Self, VaultNameError> {
        // Characters first: a length message about a name full of emoji would mislead.
        let shown = || name.chars().take(64).collect::<String>();
        if let Some(found) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(VaultNameError::Character { name: shown(), found });
        }
        if !(MIN_LEN..=MAX_LEN).contains(&name.len()) {
            return Err(VaultNameError::Length { name: shown(), len: name.len() });
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(VaultNameError::Start { name: name.to_string() });
        }
        if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(VaultNameError::End { name: name.to_string() });
        }
        if name.contains("--") {
            return Err(VaultNameError::ConsecutiveHyphens { name: name.to_string() });
        }
        Ok(VaultName(name.to_ascii_lowercase()))
    }

    /// The default vault name for a device: `ase-<device name, sanitised>-<6 hex>`, where the suffix comes from the
    /// device's full resource id and `attempt`. Deterministic, so a retried request picks the same name; a new
    /// `attempt` gives a different name when the first is taken by someone else.
    pub fn default_for(device: &ResourceId, attempt: u32) -> Self {
        let mut base = String::new();
        const PREFIX: &str = "ase-";
        let name = device.name().unwrap_or("device").to_ascii_lowercase();
        // Devices are often named `ase-…` themselves; `ase-ase-…` would spend the scarce 24 characters on a repeat.
        let name = name.strip_prefix(PREFIX).unwrap_or(&name);
        for c in name.chars() {
            let c = if c.is_ascii_alphanumeric() { c } else { '-' };
            if !(c == '-' && (base.is_empty() || base.ends_with('-'))) {
                base.push(c);
            }
        }
        const SUFFIX_LEN: usize = 6;
        base.truncate(MAX_LEN - PREFIX.len() - 1 - SUFFIX_LEN);
        let base = base.trim_end_matches('-');
        let digest = Sha256::digest(format!("{}#{attempt}", device.to_string().to_ascii_lowercase()));
        let suffix: String = digest.iter().flat_map(|b| [b >> 4, b & 0xf]).take(SUFFIX_LEN).map(hex_digit).collect();
        let name = if base.is_empty() { format!("{PREFIX}{suffix}") } else { format!("{PREFIX}{base}-{suffix}") };
        VaultName::parse(&name).expect("derived names satisfy every rule by construction")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(nibble as u32, 16).expect("a nibble is below 16")
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultName({})", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for VaultName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        VaultName::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names_in_lower_case() {
        for name in ["abc", "Contoso-Vault-01", "a1b2c3d4e5f6g7h8i9j0k1l2"] {
            assert_eq!(VaultName::parse(name).unwrap().as_str(), name.to_ascii_lowercase());
        }
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let too_long = "a".repeat(MAX_LEN + 1);
        let cases = [
            ("ab", "VaultNameLength"),
            (too_long.as_str(), "VaultNameLength"),
            ("vault_name", "VaultNameCharacters"),
            ("vault.name", "VaultNameCharacters"),
            ("väult", "VaultNameCharacters"),
            ("1vault", "VaultNameStart"),
            ("-vault", "VaultNameStart"),
            ("vault-", "VaultNameEnd"),
            ("my--vault", "VaultNameConsecutiveHyphens"),
        ];
        for (name, rule) in cases {
            let err = VaultName::parse(name).unwrap_err();
            assert_eq!(err.rule(), rule, "{name}: {err}");
        }
    }

    #[test]
    fn default_names_are_valid_deterministic_and_distinct_per_device_and_attempt() {
        let device = |name: &str| -> ResourceId {
            format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}")
                .parse()
                .unwrap()
        };
        let a = VaultName::default_for(&device("testedgedevice"), 0);
        assert_eq!(a, VaultName::default_for(&device("testedgedevice"), 0));
        assert!(a.as_str().starts_with("ase-testedgedevic-"), "truncated to fit 24: {a}");
        assert_ne!(a, VaultName::default_for(&device("testedgedevice"), 1));
        assert_ne!(a, VaultName::default_for(&device("otherdevice"), 0));
        let prefixed = VaultName::default_for(&device("ase-demo-01"), 0);
        assert!(prefixed.as_str().starts_with("ase-demo-01-"), "no ase-ase-: {prefixed}");
        for name in ["x", "A_very__long.Device-Name-that-goes-on-and-on", "--", "9lives", "ÄÖÜ"] {
            let derived = VaultName::default_for(&device(name), 0);
            assert!(derived.as_str().len() <= MAX_LEN, "{derived}");
            VaultName::parse(derived.as_str()).unwrap();
        }
    }
}
