//! What the tests need installed before they run: every `tests/tools/install-*.sh`, in name order.
//!
//! Each installer is idempotent (it says what is there and changes nothing when its tool is present), installs into
//! `target/tools/…` or, as root, with apt, and otherwise fails saying exactly what to run (see
//! `tests/tools/README.md`). The first one that fails stops `cargo xtask test` before the long build.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// How many of a failing installer's last lines its error repeats (its message is its last line).
const TAIL: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("reading {dir}: {source}")]
    List { dir: PathBuf, source: std::io::Error },
    #[error("running {script}: {source}")]
    Spawn { script: PathBuf, source: std::io::Error },
    #[error("{script} failed ({status}); a tool the tests need is missing:\n{tail}")]
    Failed { script: PathBuf, status: ExitStatus, tail: String },
}

/// The installers in `dir`: files named `install-*.sh`, sorted by name.
pub fn installers(dir: &Path) -> Result<Vec<PathBuf>, ToolsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ToolsError::List { dir: dir.to_path_buf(), source })?;
    let mut scripts: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("install-") && n.ends_with(".sh"))
        })
        .collect();
    scripts.sort();
    Ok(scripts)
}

/// Runs every installer in `dir` with bash, from `cwd`, echoing what each prints; stops at the first that fails.
/// Returns the installers run.
pub fn install_all(dir: &Path, cwd: &Path) -> Result<Vec<PathBuf>, ToolsError> {
    let scripts = installers(dir)?;
    for script in &scripts {
        run_one(script, cwd)?;
    }
    Ok(scripts)
}

fn run_one(script: &Path, cwd: &Path) -> Result<(), ToolsError> {
    let spawn_error = |source| ToolsError::Spawn { script: script.to_path_buf(), source };
    // One pipe for both streams keeps the installer's lines in the order it wrote them.
    let (reader, writer) = std::io::pipe().map_err(spawn_error)?;
    let mut command = Command::new("bash");
    command.arg(script).current_dir(cwd).stdin(std::process::Stdio::null());
    command.stdout(writer.try_clone().map_err(spawn_error)?).stderr(writer);
    let mut child = command.spawn().map_err(spawn_error)?;
    // The command holds the pipe's write ends: drop it or the reader never sees the end.
    drop(command);
    let mut lines = Vec::new();
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        println!("  {line}");
        lines.push(line);
    }
    let status = child.wait().map_err(spawn_error)?;
    if status.success() {
        return Ok(());
    }
    let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
    Err(ToolsError::Failed { script: script.to_path_buf(), status, tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), format!("set -eu\n{body}\n")).unwrap();
    }

    /// Fake installers that each append their name to `ran` in the working directory.
    fn fake_tools(failing: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in ["install-b.sh", "install-a.sh", "install-c.sh"] {
            let fails = failing == Some(name);
            let body = if fails {
                format!(
                    "echo {name} >> ran\necho 'checking b'\necho 'b is missing: run `apt-get install b`' >&2\nexit 3"
                )
            } else {
                format!("echo {name} >> ran\necho '{name}: present'")
            };
            script(dir.path(), name, &body);
        }
        // Neither is an installer: a library they source, and a note.
        script(dir.path(), "lib.sh", "echo lib >> ran");
        std::fs::write(dir.path().join("README.md"), "not a script").unwrap();
        dir
    }

    fn ran(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("ran")).unwrap_or_default()
    }

    #[test]
    fn runs_every_installer_in_name_order_and_nothing_else() {
        let dir = fake_tools(None);
        let run = install_all(dir.path(), dir.path()).unwrap();
        let names: Vec<_> = run.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["install-a.sh", "install-b.sh", "install-c.sh"]);
        assert_eq!(ran(dir.path()), "install-a.sh\ninstall-b.sh\ninstall-c.sh\n");
    }

    #[test]
    fn a_failing_installer_stops_the_run_and_its_error_names_it_with_what_it_said() {
        let dir = fake_tools(Some("install-b.sh"));
        let err = install_all(dir.path(), dir.path()).unwrap_err();
        let ToolsError::Failed { script, status, tail } = &err else { panic!("{err}") };
        assert!(script.ends_with("install-b.sh"), "{script:?}");
        assert_eq!(status.code(), Some(3));
        assert_eq!(tail, "checking b\nb is missing: run `apt-get install b`");
        let message = err.to_string();
        assert!(message.contains("install-b.sh failed") && message.contains("apt-get install b"), "{message}");
        assert_eq!(ran(dir.path()), "install-a.sh\ninstall-b.sh\n", "install-c.sh must not run after a failure");
    }

    /// Runs the repository's `install-strace.sh` with `PATH` set to `path` (a directory of fake commands first).
    fn run_strace_installer(path: &str, target: &Path) -> (bool, String) {
        let script = crate::workspace_root().join("tests/tools/install-strace.sh");
        let out =
            Command::new("/bin/bash").arg(&script).env("PATH", path).env("CARGO_TARGET_DIR", target).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// A directory of fake commands: `strace` (working or not), `id` answering `uid`, `sudo` (passwordless or not)
    /// and an `apt-get` that logs its arguments to `apt.log` and, on `install`, makes `strace` work.
    fn fake_machine(strace_works: bool, uid: u32, sudo: bool) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let log = bin.join("apt.log");
        let working = "#!/bin/sh\necho 'strace -- version 9.9'\n";
        let broken = "#!/bin/sh\nexit 127\n";
        let apt = format!(
            "#!/bin/sh\necho \"$*\" >> {log}\n[ \"$1\" = install ] && cp {bin}/strace.packaged {bin}/strace\nexit 0\n",
            log = log.display(),
            bin = bin.display()
        );
        let commands = [
            ("strace", if strace_works { working } else { broken }.to_string()),
            ("strace.packaged", working.to_string()),
            ("id", format!("#!/bin/sh\necho {uid}\n")),
            ("sudo", if sudo { "#!/bin/sh\n[ \"$1\" = -n ] && shift\nexec \"$@\"\n" } else { broken }.to_string()),
            ("apt-get", apt),
        ];
        for (name, body) in commands {
            let path = bin.join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    /// The installer on `machine`: its fakes first on PATH, then the system's directories.
    fn on(machine: &tempfile::TempDir) -> (bool, String) {
        run_strace_installer(&format!("{}:/usr/bin:/bin", machine.path().display()), machine.path())
    }

    /// What the fake apt-get logs when strace is installed the expected way.
    const APT_INSTALLED_STRACE: &str = "update -qq\ninstall -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends strace\n";

    fn apt_log(machine: &Path) -> String {
        std::fs::read_to_string(machine.join("apt.log")).unwrap_or_default()
    }

    #[test]
    fn a_present_tool_is_reported_and_apt_is_never_called() {
        let machine = fake_machine(true, 0, false);
        let (ok, out) = on(&machine);
        assert!(ok, "{out}");
        assert_eq!(out, "strace: strace -- version 9.9\n");
        assert_eq!(apt_log(machine.path()), "");
    }

    #[test]
    fn as_root_a_missing_tool_is_installed_with_apt_after_an_update_and_checked() {
        let machine = fake_machine(false, 0, false);
        let (ok, out) = on(&machine);
        assert!(ok, "{out}");
        assert!(out.ends_with("strace: strace -- version 9.9\n"), "{out}");
        assert_eq!(apt_log(machine.path()), APT_INSTALLED_STRACE);
    }

    #[test]
    fn with_passwordless_sudo_a_missing_tool_is_installed_through_it() {
        let machine = fake_machine(false, 1000, true);
        let (ok, out) = on(&machine);
        assert!(ok, "{out}");
        assert_eq!(apt_log(machine.path()), APT_INSTALLED_STRACE);
    }

    #[test]
    fn without_root_or_sudo_the_installer_fails_saying_exactly_what_to_run() {
        let machine = fake_machine(false, 1000, false);
        let (ok, out) = on(&machine);
        assert!(!ok);
        assert!(
            out.contains("tests/tools/install-strace.sh: not root and no passwordless sudo: run `sudo apt-get update && sudo apt-get install -y strace`"),
            "{out}"
        );
        assert_eq!(apt_log(machine.path()), "", "nothing is attempted without the rights to do it");
    }

    #[test]
    fn without_apt_the_installer_fails_naming_the_package() {
        // PATH holds the fakes minus apt-get, and only the few utilities the installers use.
        let machine = fake_machine(false, 0, false);
        std::fs::remove_file(machine.path().join("apt-get")).unwrap();
        for utility in ["dirname", "basename", "realpath", "mkdir", "head"] {
            let real = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(utility)).find(|p| p.exists()).unwrap();
            std::os::unix::fs::symlink(real, machine.path().join(utility)).unwrap();
        }
        let (ok, out) = run_strace_installer(&machine.path().display().to_string(), machine.path());
        assert!(!ok);
        assert!(out.contains("no apt-get on this machine: install strace with the system's package manager"), "{out}");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(install_all(&dir.path().join("nope"), dir.path()), Err(ToolsError::List { .. })));
    }
}
