//! The deployable Azure Functions app: `host.json`, the `edgevault` binary and `<FunctionName>/function.json`,
//! which is the layout the Functions host (and `func start`) reads, zipped for zip deployment.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The handler binary's name inside the app; `host.json` names it as `defaultExecutablePath`.
pub const BINARY: &str = "edgevault";

/// Builds `out` (replacing what was there) from `binary` and the repository's `host.json`.
pub fn assemble(binary: &Path, repo: &Path, out: &Path) -> anyhow::Result<()> {
    if !binary.is_file() {
        bail!("{} does not exist: build it first (cargo build -p edgevault)", binary.display());
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::copy(repo.join("host.json"), out.join("host.json")).context("copying host.json")?;
    let target = out.join(BINARY);
    std::fs::copy(binary, &target).with_context(|| format!("copying {}", binary.display()))?;
    set_executable(&target)?;
    crate::definitions::write_all(out)?;
    Ok(())
}

/// Zips `dir` into `zip_path` with every file at the archive root and Unix modes kept (the host runs the binary
/// straight from the extracted package, so its executable bit must survive).
pub fn zip_dir(dir: &Path, zip_path: &Path) -> anyhow::Result<()> {
    let mut writer =
        zip::ZipWriter::new(File::create(zip_path).with_context(|| format!("creating {}", zip_path.display()))?);
    for path in files_under(dir)? {
        let name = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        let mode = unix_mode(&path)?;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode);
        writer.start_file(name, options)?;
        writer.write_all(&std::fs::read(&path)?)?;
    }
    writer.finish()?;
    Ok(())
}

/// Every file under `dir`, sorted so the archive is reproducible.
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))? {
            let path = entry?.path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn unix_mode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn unix_mode(_: &Path) -> anyhow::Result<u32> {
    Ok(0o644)
}
