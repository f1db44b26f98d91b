//! `function.json` files generated from the handler's function table, the single source of truth.

use std::path::Path;

use anyhow::Context;
use edgevault::functions::FUNCTIONS;

/// Writes `<dir>/<Name>/function.json` for every function; returns the names written.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    for function in FUNCTIONS {
        let folder = dir.join(function.name);
        std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
        let text = serde_json::to_string_pretty(&function.function_json())? + "\n";
        std::fs::write(folder.join("function.json"), text)
            .with_context(|| format!("writing {}/function.json", folder.display()))?;
    }
    Ok(FUNCTIONS.iter().map(|f| f.name).collect())
}
