//! The crate's import rules, checked on its source text: `server` (the warp edge) is wired in by `lib.rs` alone, so
//! the routers behind it import `http` and never the server that imports them.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments, string literals (raw ones too) and the char literal `'"'`, so only code is
/// searched.
fn code_of(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with("'\"'") {
            rest = &rest[3..];
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            rest = raw.find("\"#").map_or("", |end| &raw[end + 2..]);
            code.push_str("\"\"");
        } else if let Some(string) = rest.strip_prefix('"') {
            let mut escaped = false;
            let end = string.char_indices().find(|&(_, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            });
            rest = end.map_or("", |(at, _)| &string[at + 1..]);
            code.push_str("\"\"");
        } else {
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    code
}

/// Whether `code` names the module `server` in a path: `server::…` or inside a `use …;` (`use crate::{a, server};`).
fn names_server(code: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let words = |text: &str| -> Vec<(usize, String)> {
        let mut found = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            match (is_ident(c), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    found.push((s, text[s..i].to_string()));
                    start = None;
                }
                _ => {}
            }
        }
        found
    };
    let in_path = words(code).into_iter().any(|(at, w)| {
        w == "server" && (code[at + w.len()..].trim_start().starts_with("::") || code[..at].trim_end().ends_with("::"))
    });
    let in_use = code.split(';').any(|statement| {
        let ws = words(statement);
        ws.iter().any(|(_, w)| w == "use") && ws.iter().any(|(_, w)| w == "server")
    });
    in_path || in_use
}

#[test]
fn only_lib_rs_imports_the_server() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found the crate's sources in {}", src.display());
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| !path.ends_with("src/lib.rs"))
        .filter(|path| names_server(&code_of(&std::fs::read_to_string(path).unwrap())))
        .map(|path| path.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(offenders.is_empty(), "only lib.rs may import `server`; these do: {offenders:?}");
    let lib = code_of(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(names_server(&lib), "lib.rs wires the server in, so the check can see an import");
}

#[test]
fn the_check_sees_every_form_of_import() {
    for import in [
        "use crate::server::{Reply, Request};",
        "use crate::server;",
        "use crate::{event_grid,\n    server};",
        "use super::server::dispatch;",
        "fn f() { crate::server::dispatch(); }",
    ] {
        assert!(names_server(&code_of(import)), "{import}");
    }
    for not_an_import in [
        "let server = spawn(); server.await;",
        "const HEADERS: &[&str] = &[\"server\", \"date\"];",
        "// the server imports this module",
        "let s = r#\"use crate::server;\"#; let q = '\"'; let t = \"\\\" use server::x\";",
        "use crate::http::{Reply, Request};",
        "fn serve() {}",
    ] {
        assert!(!names_server(&code_of(not_an_import)), "{not_an_import}");
    }
}
