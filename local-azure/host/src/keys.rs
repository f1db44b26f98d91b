//! Function keys: the master key, one `default` key per function, and the `eventgrid_extension` system key.
//!
//! Keys are 40 random bytes from the OS, URL-safe base64 without padding, so they travel unescaped in a `code`
//! query parameter. With a state directory they are kept in `keys.json` there, so URLs handed out (an Event Grid
//! subscription's endpoint, say) keep working across restarts. `Debug` never shows a key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the key file {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the key file {path} is not valid")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keys {
    master: String,
    #[serde(default)]
    functions: BTreeMap<String, String>,
    #[serde(default)]
    system: BTreeMap<String, String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("master", &"<redacted>")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("system", &self.system.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The system key the Event Grid extension's webhook requires.
pub const EVENTGRID_SYSTEM_KEY: &str = "eventgrid_extension";

impl Keys {
    /// Loads keys from `state_dir` (when given), generating whatever is missing for `functions`.
    pub fn load_or_generate(state_dir: Option<&Path>, functions: &[String]) -> Result<Keys, KeyError> {
        let path = state_dir.map(|d| d.join("keys.json"));
        let mut keys = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|source| KeyError::Io { path: p.clone(), source })?;
                serde_json::from_str(&text).map_err(|source| KeyError::Json { path: p.clone(), source })?
            }
            _ => Keys { master: new_key()?, functions: BTreeMap::new(), system: BTreeMap::new() },
        };
        let before = keys.clone();
        for name in functions {
            if !keys.functions.contains_key(name) {
                keys.functions.insert(name.clone(), new_key()?);
            }
        }
        if !keys.system.contains_key(EVENTGRID_SYSTEM_KEY) {
            keys.system.insert(EVENTGRID_SYSTEM_KEY.to_string(), new_key()?);
        }
        if let Some(p) = path
            && (keys != before || !p.exists())
        {
            let io = |source| KeyError::Io { path: p.clone(), source };
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            std::fs::write(&p, serde_json::to_string_pretty(&keys).expect("keys serialize")).map_err(io)?;
            restrict_permissions(&p);
        }
        Ok(keys)
    }

    pub fn master(&self) -> &str {
        &self.master
    }

    pub fn function(&self, name: &str) -> Option<&str> {
        self.functions.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn system(&self, name: &str) -> Option<&str> {
        self.system.get(name).map(String::as_str)
    }

    pub fn is_master(&self, presented: &str) -> bool {
        constant_time_eq(presented, &self.master)
    }

    /// A function-level request is let in by that function's key or the master key.
    pub fn admits_function(&self, function: &str, presented: &str) -> bool {
        self.is_master(presented) || self.function(function).is_some_and(|k| constant_time_eq(presented, k))
    }

    /// The authorization level and key name a presented key carries, in the order the real host checks
    /// (`SecretManager.GetAuthorizationLevelAsync`, azure-functions-host
    /// `src/WebJobs.Script.WebHost/Security/KeyManagement/SecretManager.cs`): the master key (`Admin`, `_master`),
    /// a system key (`System`), the function's own key (`Function`). `None`: no key matched.
    pub fn authorization(&self, function: &str, presented: &str) -> Option<(&'static str, String)> {
        if self.is_master(presented) {
            return Some(("Admin", "_master".into()));
        }
        if let Some((name, _)) = self.system.iter().find(|(_, k)| constant_time_eq(presented, k)) {
            return Some(("System", name.clone()));
        }
        self.function(function).filter(|k| constant_time_eq(presented, k)).map(|_| ("Function", "default".into()))
    }

    /// A system-key request (an extension webhook) is let in by that system key or the master key.
    pub fn admits_system(&self, name: &str, presented: &str) -> bool {
        self.is_master(presented) || self.system(name).is_some_and(|k| constant_time_eq(presented, k))
    }
}

fn new_key() -> Result<String, KeyError> {
    let mut bytes = [0u8; 40];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed key was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_persisted_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["A".to_string()];
        let first = Keys::load_or_generate(Some(dir.path()), &names).unwrap();
        assert_eq!(first.master().len(), 54);
        assert_ne!(first.master(), first.function("A").unwrap());
        let more = vec!["A".to_string(), "B".to_string()];
        let second = Keys::load_or_generate(Some(dir.path()), &more).unwrap();
        assert_eq!(second.master(), first.master());
        assert_eq!(second.function("a"), first.function("A"));
        assert!(second.function("B").is_some());
        assert!(second.admits_function("A", first.master()));
        assert!(second.admits_function("A", first.function("A").unwrap()));
        assert!(!second.admits_function("B", first.function("A").unwrap()));
        assert!(second.admits_system(EVENTGRID_SYSTEM_KEY, second.system(EVENTGRID_SYSTEM_KEY).unwrap()));
        assert!(!format!("{second:?}").contains(first.master()));
    }

    #[test]
    fn fresh_without_state() {
        let a = Keys::load_or_generate(None, &[]).unwrap();
        let b = Keys::load_or_generate(None, &[]).unwrap();
        assert_ne!(a.master(), b.master());
    }
}
