//! `cargo xtask package` assembles exactly the layout the Azure Functions host reads.

use std::io::Read;

use edgevault::functions::FUNCTIONS;
use serde_json::Value;
use xtask::package::{BINARY, assemble, files_under, zip_dir};
use xtask::workspace_root;

#[test]
fn package_has_the_functions_host_layout_and_zips_it_with_the_executable_bit() {
    let binary = edgevault_tests::binary(BINARY).unwrap();
    let dist = tempfile::tempdir().unwrap();
    let app = dist.path().join("app");
    assemble(&binary, &workspace_root(), &app).unwrap();

    let mut expected: Vec<String> = FUNCTIONS.iter().map(|f| format!("{}/function.json", f.name)).collect();
    expected.extend(["host.json".to_string(), BINARY.to_string()]);
    expected.sort();
    let mut found: Vec<String> = files_under(&app)
        .unwrap()
        .iter()
        .map(|p| p.strip_prefix(&app).unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected, "nothing missing, nothing extra");

    let host: Value = serde_json::from_slice(&std::fs::read(app.join("host.json")).unwrap()).unwrap();
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], BINARY);
    for function in FUNCTIONS {
        let text = std::fs::read(app.join(function.name).join("function.json")).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&text).unwrap(), function.function_json());
    }
    assert_eq!(std::fs::read(app.join(BINARY)).unwrap(), std::fs::read(&binary).unwrap(), "the built binary");

    let zip_path = dist.path().join("app.zip");
    zip_dir(&app, &zip_path).unwrap();
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = archive.file_names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, expected, "files sit at the archive root");
    let mut entry = archive.by_name(BINARY).unwrap();
    assert_eq!(entry.unix_mode().unwrap() & 0o111, 0o111, "the handler stays executable after zip deploy");
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, std::fs::metadata(&binary).unwrap().len());
}

#[test]
fn assembling_without_a_built_binary_says_how_to_fix_it() {
    let dist = tempfile::tempdir().unwrap();
    let err = assemble(&dist.path().join("missing"), &workspace_root(), &dist.path().join("app")).unwrap_err();
    assert!(err.to_string().contains("build it first"), "{err}");
}
