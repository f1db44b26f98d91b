//! Invocation logs: the `Logs` lines a handler returns, written to `tracing` and kept (bounded) for tests.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many entries [`LogStore`] keeps; older ones are dropped first.
pub const MAX_ENTRIES: usize = 2000;

/// One line a handler logged during an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub function: String,
    pub invocation_id: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct LogStore {
    entries: Mutex<VecDeque<LogEntry>>,
}

impl LogStore {
    pub fn record(&self, function: &str, invocation_id: &str, message: &str) {
        tracing::info!(target: "function", function, invocation_id, "{message}");
        let mut entries = self.entries.lock().expect("log store lock");
        if entries.len() == MAX_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(LogEntry {
            function: function.to_string(),
            invocation_id: invocation_id.to_string(),
            message: message.to_string(),
        });
    }

    pub fn snapshot(&self) -> Vec<LogEntry> {
        self.entries.lock().expect("log store lock").iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded() {
        let store = LogStore::default();
        for i in 0..MAX_ENTRIES + 5 {
            store.record("F", "id", &i.to_string());
        }
        let entries = store.snapshot();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries[0].message, "5");
    }
}
