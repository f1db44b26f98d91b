//! Configuration, read once at start into a typed [`Config`] whose errors say what is missing and how to fix it.

/// The port variable the Functions host sets for custom handlers.
pub const PORT_VAR: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// The older name of the same variable, still set by some hosts.
pub const LEGACY_PORT_VAR: &str = "FUNCTIONS_HTTPWORKER_PORT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The loopback port to serve on; 0 picks any free port (logged at start).
    pub port: u16,
    /// Test hook (`EDGEVAULT_TEST_PANIC_IN=<FunctionName>`): that function panics on every invocation, so tests can
    /// prove a panic fails one invocation and nothing else. Unset in every deployment.
    pub test_panic_in: Option<String>,
}

/// The variable behind [`Config::test_panic_in`].
pub const TEST_PANIC_VAR: &str = "EDGEVAULT_TEST_PANIC_IN";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "neither {PORT_VAR} nor {LEGACY_PORT_VAR} is set: the Azure Functions host sets one when it starts the \
         handler; to run it by hand, set {PORT_VAR}=<port>"
    )]
    MissingPort,
    #[error("{var}=`{value}` is not a valid TCP port: use a number from 0 to 65535")]
    InvalidPort { var: &'static str, value: String },
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let (var, value) = [PORT_VAR, LEGACY_PORT_VAR]
            .into_iter()
            .find_map(|var| lookup(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)))
            .ok_or(ConfigError::MissingPort)?;
        let port = value.trim().parse().map_err(|_| ConfigError::InvalidPort { var, value: value.clone() })?;
        let test_panic_in = lookup(TEST_PANIC_VAR).filter(|v| !v.is_empty());
        Ok(Config { port, test_panic_in })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn prefers_the_custom_handler_port_and_falls_back_to_the_legacy_one() {
        let both = Config::from_lookup(lookup(&[(PORT_VAR, "7001"), (LEGACY_PORT_VAR, "7002")])).unwrap();
        assert_eq!(both.port, 7001);
        let legacy = Config::from_lookup(lookup(&[(LEGACY_PORT_VAR, "7002")])).unwrap();
        assert_eq!(legacy.port, 7002);
    }

    #[test]
    fn missing_port_names_both_variables() {
        let err = Config::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(err, ConfigError::MissingPort);
        let text = err.to_string();
        assert!(text.contains(PORT_VAR) && text.contains(LEGACY_PORT_VAR), "{text}");
    }

    #[test]
    fn invalid_port_names_the_variable_and_value() {
        let err = Config::from_lookup(lookup(&[(PORT_VAR, "70000")])).unwrap_err();
        assert_eq!(err, ConfigError::InvalidPort { var: PORT_VAR, value: "70000".into() });
        assert!(err.to_string().contains("70000"));
    }
}
