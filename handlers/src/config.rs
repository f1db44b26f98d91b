//! Configuration, read once at start into a typed [`Config`] whose errors say what is missing and how to fix it.

/// The port variable the Functions host sets for custom handlers.
pub const PORT_VAR: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// The older name of the same variable, still set by some hosts.
pub const LEGACY_PORT_VAR: &str = "FUNCTIONS_HTTPWORKER_PORT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The loopback port to serve on; 0 picks any free port (logged at start).
    pub port: u16,
    /// What the lifecycle needs to know about the Azure it runs in.
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "neither {PORT_VAR} nor {LEGACY_PORT_VAR} is set: the Azure Functions host sets one when it starts the \
         handler; to run it by hand, set {PORT_VAR}=<port>"
    )]
    MissingPort,
    #[error("{var}=`{value}` is not a valid TCP port: use a number from 0 to 65535")]
    InvalidPort { var: &'static str, value: String },
    #[error("missing app settings: {}", .0.iter().map(|(var, what)| format!("{var} ({what})")).collect::<Vec<_>>().join("; "))]
    Missing(Vec<(&'static str, &'static str)>),
    #[error("{var}=`{value}` is invalid: {expected}")]
    Invalid { var: &'static str, value: String, expected: &'static str },
}

/// App settings of the lifecycle (names as in the Function App's configuration).
pub mod settings {
    pub const TENANT: &str = "AZURE_TENANT_ID";
    pub const PRINCIPAL: &str = "EDGEVAULT_PRINCIPAL_ID";
    pub const SERVICE_BUS: &str = "ServiceBusConnection__fullyQualifiedNamespace";
    pub const SUBSCRIPTIONS: &str = "EDGEVAULT_SUBSCRIPTIONS";
    pub const CUTOVER: &str = "EDGEVAULT_CUTOVER";
    pub const DELETE_CONSENT: &str = "EDGEVAULT_DELETE_VAULT_WITH_DEVICE";
    pub const KEY_TTL_HOURS: &str = "EDGEVAULT_ACTIVATION_KEY_TTL_HOURS";
    pub const ARM_ENDPOINT: &str = "EDGEVAULT_ARM_ENDPOINT";
    pub const RETRY_MAX: &str = "EDGEVAULT_RETRY_MAX_RETRIES";
    pub const RETRY_DELAY_MS: &str = "EDGEVAULT_RETRY_INITIAL_DELAY_MS";
    pub const RECORDS: &str = "EDGEVAULT_RECORDS_TABLE_URI";
}

/// The app settings of the lifecycle: what the functions need to know about the Azure they run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The Entra tenant of the vaults edgevault creates.
    pub tenant_id: String,
    /// The object id of edgevault's own managed identity, granted its access policy on every vault.
    pub principal_id: String,
    /// The Service Bus namespace the functions send to, e.g. `edgevault.servicebus.windows.net`.
    pub service_bus_namespace: String,
    /// The subscriptions the recovery sweep covers.
    pub subscriptions: Vec<String>,
    /// Devices created before this instant (RFC 3339) with no vault linked are pre-integration (legacy) and never
    /// touched. `None`: no device is legacy.
    pub cutover: Option<time::OffsetDateTime>,
    /// Whether deleting a device may remove its vault's lock and delete the vault (it stays soft-deleted).
    pub delete_vault_with_device: bool,
    /// How long an activation key stays valid.
    pub activation_key_ttl: time::Duration,
    pub arm_endpoint: String,
    pub retry: crate::azure::RetrySettings,
    /// The table endpoint of the storage account that keeps edgevault's own records, e.g.
    /// `https://<account>.table.core.windows.net` (the function app's storage account).
    pub records_table_uri: String,
}

impl Settings {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        use settings::*;
        let get = |var: &str| lookup(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let required = [
            (TENANT, "the Entra tenant id of the vaults"),
            (PRINCIPAL, "the object id of edgevault's managed identity"),
            (SERVICE_BUS, "the Service Bus namespace, e.g. edgevault.servicebus.windows.net"),
            (SUBSCRIPTIONS, "comma-separated subscription ids the sweep covers"),
            (RECORDS, "the table endpoint of the app's storage account, e.g. https://<account>.table.core.windows.net"),
        ];
        let missing: Vec<_> = required.iter().copied().filter(|(var, _)| get(var).is_none()).collect();
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        let invalid =
            |var: &'static str, value: String, expected: &'static str| ConfigError::Invalid { var, value, expected };
        let cutover = match get(CUTOVER) {
            None => None,
            Some(v) => Some(
                time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| invalid(CUTOVER, v, "an RFC 3339 instant such as 2026-01-01T00:00:00Z"))?,
            ),
        };
        let delete_vault_with_device = match get(DELETE_CONSENT).as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(invalid(DELETE_CONSENT, other.to_string(), "true or false")),
        };
        let number = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| invalid(var, v, "a whole number")),
            }
        };
        let ttl_hours = number(KEY_TTL_HOURS, 72)?;
        if ttl_hours == 0 || ttl_hours > 24 * 30 {
            return Err(invalid(KEY_TTL_HOURS, ttl_hours.to_string(), "between 1 and 720 hours"));
        }
        let defaults = crate::azure::RetrySettings::default();
        let retry = crate::azure::RetrySettings {
            max_retries: number(RETRY_MAX, defaults.max_retries as u64)? as u32,
            initial_delay_ms: number(RETRY_DELAY_MS, defaults.initial_delay_ms)?,
            ..defaults
        };
        let subscriptions: Vec<String> = get(SUBSCRIPTIONS)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Settings {
            tenant_id: get(TENANT).unwrap_or_default(),
            principal_id: get(PRINCIPAL).unwrap_or_default(),
            service_bus_namespace: get(SERVICE_BUS).unwrap_or_default(),
            subscriptions,
            cutover,
            delete_vault_with_device,
            activation_key_ttl: time::Duration::hours(ttl_hours as i64),
            arm_endpoint: get(ARM_ENDPOINT).unwrap_or_else(|| crate::azure::ARM_ENDPOINT.to_string()),
            retry,
            records_table_uri: get(RECORDS).unwrap_or_default(),
        })
    }
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
        let settings = Settings::from_lookup(&lookup)?;
        Ok(Config { port, settings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIRED: &[(&str, &str)] = &[
        (settings::TENANT, "t"),
        (settings::PRINCIPAL, "p"),
        (settings::SERVICE_BUS, "ns.servicebus.windows.net"),
        (settings::SUBSCRIPTIONS, "s1, s2"),
        (settings::RECORDS, "https://acct.table.core.windows.net"),
    ];

    /// The given pairs plus every required lifecycle setting.
    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().chain(REQUIRED).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn lifecycle_settings_parse_with_defaults() {
        let config = Config::from_lookup(lookup(&[(PORT_VAR, "1")])).unwrap();
        let settings = config.settings;
        assert_eq!(settings.subscriptions, ["s1", "s2"]);
        assert_eq!(settings.cutover, None);
        assert!(!settings.delete_vault_with_device);
        assert_eq!(settings.activation_key_ttl, time::Duration::hours(72));
        assert_eq!(settings.arm_endpoint, "https://management.azure.com");
        let config = Config::from_lookup(lookup(&[
            (PORT_VAR, "1"),
            (settings::CUTOVER, "2026-01-01T00:00:00Z"),
            (settings::DELETE_CONSENT, "TRUE"),
        ]))
        .unwrap();
        assert!(config.settings.cutover.is_some() && config.settings.delete_vault_with_device);
    }

    #[test]
    fn every_missing_setting_is_named_at_once() {
        let only_port = |name: &str| (name == PORT_VAR).then(|| "1".to_string());
        let err = Config::from_lookup(only_port).unwrap_err();
        let text = err.to_string();
        for (var, _) in REQUIRED {
            assert!(text.contains(var), "{text}");
        }
    }

    #[test]
    fn invalid_settings_say_what_is_expected() {
        for (pairs, var) in [
            (&[(PORT_VAR, "1"), (settings::CUTOVER, "yesterday")][..], settings::CUTOVER),
            (&[(PORT_VAR, "1"), (settings::DELETE_CONSENT, "maybe")][..], settings::DELETE_CONSENT),
            (&[(PORT_VAR, "1"), (settings::KEY_TTL_HOURS, "0")][..], settings::KEY_TTL_HOURS),
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            match Config::from_lookup(lookup(pairs)).unwrap_err() {
                ConfigError::Invalid { var: got, .. } => assert_eq!(got, var),
                other => panic!("{other}"),
            }
        }
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
