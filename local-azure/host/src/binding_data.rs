//! Binding data, and how the real host turns it into a custom handler's `Metadata`.
//!
//! Every trigger hands the host a dictionary of binding data (case-insensitive keys). The host sends it to the
//! handler as `Metadata`, each value through one function (azure-functions-host
//! `src/WebJobs.Script/Workers/MessageExtensions/ScriptInvocationContextExtensions.cs`,
//! `ToHttpScriptInvocationContext` / `GetHttpScriptInvocationContextValue`):
//!
//! - null entries are left out, and so are entries whose key ends in `trigger` (the trigger value is in `Data`);
//! - a `DateTime` / `DateTimeOffset` goes through `Parse(value.ToString())`, so it arrives as ISO text with whole
//!   seconds (`"2026-11-28T11:59:58"`, `"2026-11-28T11:59:58+00:00"`);
//! - anything `JObject.FromObject` accepts (dictionaries, objects) goes as a JSON object;
//! - everything else goes through `JsonConvert.SerializeObject`: a string arrives JSON-encoded once more
//!   (`"\"id\""`), a number as its text (`"41"`).
//!
//! A JSON trigger value also adds its top-level fields (`Utility.ApplyBindingData`, `src/WebJobs.Script/Utility.cs`,
//! and the HTTP extension's copy of it): arrays are skipped, objects stay objects, every other value becomes a string
//! first — through Json.NET's `(string)JToken`, which writes `true` as `True`, `1.0` as `1`, and a string that looks
//! like an ISO date as the invariant culture's `11/28/2026 11:58:31`, because `JObject.Parse` reads such strings as
//! dates. An entry that is already there is overwritten and keeps its spelling; a field that is `null` adds nothing.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::clock::{Zone, invariant_text, json_net_whole_seconds};

/// One binding-data value, by the .NET type the host sees.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingValue {
    /// A `string`: `Metadata` gets it JSON-encoded once more.
    Text(String),
    /// An integer: `Metadata` gets its digits as a string.
    Integer(i64),
    /// Anything else `JsonConvert.SerializeObject` writes (an array, a number, `true`, a JSON `null` token):
    /// `Metadata` gets that JSON text as a string.
    Json(String),
    /// A `DateTime` (no zone).
    DateTime(OffsetDateTime),
    /// A `DateTimeOffset` (UTC).
    DateTimeOffset(OffsetDateTime),
    /// Anything `JObject.FromObject` takes: goes as is.
    Object(Value),
    /// `null`: left out.
    Null,
}

impl BindingValue {
    pub fn text(value: Option<impl Into<String>>) -> BindingValue {
        value.map_or(BindingValue::Null, |v| BindingValue::Text(v.into()))
    }

    /// A Json.NET token (`JToken`) as binding data: an object stays an object, a string is a string, anything else
    /// is what `SerializeObject` makes of it.
    pub fn token(value: &Value) -> BindingValue {
        match value {
            Value::Object(_) => BindingValue::Object(value.clone()),
            Value::String(text) => BindingValue::Text(text.clone()),
            other => BindingValue::Json(other.to_string()),
        }
    }

    /// What `Metadata` carries for this value; `None` when the host leaves it out.
    pub fn to_metadata(&self) -> Option<Value> {
        Some(match self {
            BindingValue::Text(text) => Value::String(Value::String(text.clone()).to_string()),
            BindingValue::Integer(n) => Value::String(n.to_string()),
            BindingValue::Json(text) => Value::String(text.clone()),
            BindingValue::DateTime(t) => Value::String(json_net_whole_seconds(*t, Zone::Unspecified)),
            BindingValue::DateTimeOffset(t) => Value::String(json_net_whole_seconds(*t, Zone::Local)),
            BindingValue::Object(v) => v.clone(),
            BindingValue::Null => return None,
        })
    }
}

/// Binding data: insertion-ordered, keys compared case-insensitively as in the host's dictionaries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindingData {
    entries: Vec<(String, BindingValue)>,
}

impl BindingData {
    pub fn new() -> BindingData {
        BindingData::default()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k.eq_ignore_ascii_case(key))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    pub fn get(&self, key: &str) -> Option<&BindingValue> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// `dictionary[key] = value`: an existing entry is overwritten and keeps the spelling it had.
    pub fn set(&mut self, key: &str, value: BindingValue) {
        match self.position(key) {
            Some(i) => self.entries[i].1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// Adds the top-level fields of a JSON object text, as `Utility.ApplyBindingData` does (see the module
    /// comment). Text that is not a JSON object adds nothing, as the host swallows the parse error.
    pub fn apply_json_fields(&mut self, text: &str) {
        let trimmed = text.trim();
        let looks_like_json = (trimmed.starts_with('{') && trimmed.ends_with('}'))
            || (trimmed.starts_with('[') && trimmed.ends_with(']'));
        if !looks_like_json {
            return;
        }
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(trimmed) else { return };
        for (name, value) in fields {
            let value = match value {
                Value::Array(_) | Value::Null => continue,
                object @ Value::Object(_) => BindingValue::Object(object),
                scalar => BindingValue::Text(json_net_string(&scalar)),
            };
            self.set(&name, value);
        }
    }

    /// `Metadata` as the host builds it from this binding data.
    pub fn to_metadata(&self) -> Map<String, Value> {
        self.entries
            .iter()
            .filter(|(key, _)| !key.to_ascii_lowercase().ends_with("trigger"))
            .filter_map(|(key, value)| Some((key.clone(), value.to_metadata()?)))
            .collect()
    }
}

/// Json.NET's `(string)JToken` of a scalar read by `JObject.Parse`: a bool is `True`/`False`, a number .NET's
/// shortest text, a string that `JsonTextReader` takes for an ISO date the invariant culture's date text.
pub fn json_net_string(value: &Value) -> String {
    match value {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => dotnet_double(f),
            _ => n.to_string(),
        },
        Value::String(s) => parse_json_net_date(s).map(invariant_text).unwrap_or_else(|| s.clone()),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `double.ToString(CultureInfo.InvariantCulture)` on .NET Core 3.0+: the shortest text that reads back the same,
/// in scientific form (`1E+15`, `1E-05`) once the exponent is 15 or more, or -5 or less.
pub fn dotnet_double(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..15).contains(&exponent) {
        return format!("{f}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}E{sign}{:02}", exponent.abs())
}

/// Whether Json.NET's reader (`DateParseHandling.DateTime`, its default) takes `text` for a date, and which: ISO
/// `yyyy-MM-ddTHH:mm:ss`, an optional fraction of up to seven digits, an optional `Z` or `±hh[:mm]`
/// (`DateTimeUtils.TryParseDateTimeIso`). A zone converts the value to local time, which is UTC on Azure.
pub fn parse_json_net_date(text: &str) -> Option<OffsetDateTime> {
    let b = text.as_bytes();
    if !(19..=40).contains(&b.len()) || !b[0].is_ascii_digit() || b[10] != b'T' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 7 {
            nanos = nanos * 10 + u32::from(b[i] - b'0');
            i += 1;
        }
        if i == start {
            return None;
        }
        nanos *= 10u32.pow(9 - (i - start) as u32);
    }
    let offset_minutes: i32 = match b.get(i) {
        None => 0,
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits(i + 1..i + 3)? as i32;
            let minutes = match &b[i + 3..] {
                [] => 0,
                [b':', ..] if b.len() == i + 6 => digits(i + 4..i + 6)? as i32,
                _ if b.len() == i + 5 => digits(i + 3..i + 5)? as i32,
                _ => return None,
            };
            let total = hours * 60 + minutes;
            if sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let clock = time::Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos).ok()?;
    let at = date.with_time(clock).assume_utc();
    Some(at - time::Duration::minutes(i64::from(offset_minutes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn metadata_encodes_each_kind_as_the_host_does() {
        let mut data = BindingData::new();
        data.set("MessageId", BindingValue::Text("id-1".into()));
        data.set("DeliveryCount", BindingValue::Integer(2));
        data.set("ExpiresAtUtc", BindingValue::DateTime(datetime!(2026-12-12 11:59:58.5 UTC)));
        data.set("ExpiresAt", BindingValue::DateTimeOffset(datetime!(2026-12-12 11:59:58.5 UTC)));
        data.set("ApplicationProperties", BindingValue::Object(json!({"schemaVersion": 1})));
        data.set("ReplyTo", BindingValue::Null);
        data.set("$trigger", BindingValue::Text("skipped".into()));
        assert_eq!(
            Value::Object(data.to_metadata()),
            json!({"MessageId": "\"id-1\"", "DeliveryCount": "2", "ExpiresAtUtc": "2026-12-12T11:59:58",
                   "ExpiresAt": "2026-12-12T11:59:58+00:00", "ApplicationProperties": {"schemaVersion": 1}})
        );
    }

    #[test]
    fn json_fields_merge_case_insensitively_and_become_strings() {
        let mut data = BindingData::new();
        data.set("MessageId", BindingValue::Text("id-1".into()));
        data.apply_json_fields(
            r#"{"messageid": "body-id", "schemaVersion": 1, "ratio": 1.0, "big": 1e20, "ok": true,
                "nested": {"a": [1]}, "list": [1, 2], "gone": null,
                "at": "2026-11-28T11:58:31.1234567Z", "shifted": "2026-11-28T12:58:31+01:00", "plain": "2026-11-28"}"#,
        );
        let m = Value::Object(data.to_metadata());
        assert_eq!(m["MessageId"], "\"body-id\"", "overwritten, first spelling kept");
        assert!(m.get("messageid").is_none());
        assert_eq!(m["schemaVersion"], "\"1\"");
        assert_eq!(m["ratio"], "\"1\"");
        assert_eq!(m["big"], "\"1E+20\"");
        assert_eq!(m["ok"], "\"True\"");
        assert_eq!(m["nested"], json!({"a": [1]}));
        assert!(m.get("list").is_none() && m.get("gone").is_none());
        assert_eq!(m["at"], "\"11/28/2026 11:58:31\"", "JObject.Parse reads ISO strings as dates");
        assert_eq!(m["shifted"], "\"11/28/2026 11:58:31\"");
        assert_eq!(m["plain"], "\"2026-11-28\"", "a date without a time is not a date to Json.NET");

        let mut untouched = BindingData::new();
        for text in ["not json", "[1, 2]", "{broken", ""] {
            untouched.apply_json_fields(text);
        }
        assert!(untouched.to_metadata().is_empty());
    }

    #[test]
    fn dotnet_number_text() {
        assert_eq!(dotnet_double(1.5), "1.5");
        assert_eq!(dotnet_double(0.1), "0.1");
        assert_eq!(dotnet_double(1e14), "100000000000000");
        assert_eq!(dotnet_double(1e15), "1E+15");
        assert_eq!(dotnet_double(1.25e-7), "1.25E-07");
        assert_eq!(dotnet_double(0.0001), "0.0001");
        assert_eq!(dotnet_double(-0.0), "-0");
    }

    #[test]
    fn json_net_dates() {
        assert_eq!(parse_json_net_date("2026-11-28T11:58:31"), Some(datetime!(2026-11-28 11:58:31 UTC)));
        assert_eq!(parse_json_net_date("2026-11-28T11:58:31.5-0130"), Some(datetime!(2026-11-28 13:28:31.5 UTC)));
        assert_eq!(parse_json_net_date("2026-11-28T11:58:31+02"), Some(datetime!(2026-11-28 09:58:31 UTC)));
        for not_a_date in ["2026-11-28 11:58:31", "2026-13-28T11:58:31", "2026-11-28T11:58:31.12345678Z", "x"] {
            assert_eq!(parse_json_net_date(not_a_date), None, "{not_a_date}");
        }
    }
}
