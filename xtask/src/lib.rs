//! The repository's own tasks, as a library so the test suite checks exactly what the commands do.
//!
//! - [`package`]: assemble the Azure Functions app layout (`dist/app`) and its zip for zip deployment.
//! - [`definitions`]: write `function-definitions/<Name>/function.json` from the handler's function table.
//! - [`demo`]: the main job, one device's lifecycle on local-azure, every step checked (and `--keep`: left running).
//! - [`tools`]: what the tests need installed, from `tests/tools/install-*.sh`.

pub mod definitions;
pub mod demo;
pub mod package;
pub mod tools;

use std::path::PathBuf;

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// Where cargo puts build output for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}
