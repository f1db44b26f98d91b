//! The infrastructure in `infra/` against the code: names, settings and queue options must agree.

#[test]
fn infra_has_a_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/README.md")).unwrap();
    assert!(readme.contains("Bicep"));
}
