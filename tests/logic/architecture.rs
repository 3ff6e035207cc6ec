//! The core is pure by construction, and this test is the construction's
//! check: no core module names the async runtime, the network, the Raft
//! engine, the HTTP server, the file system or a clock, nor any shell
//! module (`spec`-level layout in `src/lib.rs`). Time and randomness are
//! arguments; the shell moves bytes, timers and threads. Test code
//! (`#[cfg(test)] mod tests`, `tests.rs`) may use anything.

#![allow(clippy::disallowed_methods)]

use std::path::Path;

/// The core modules (directories or files under `src/`).
const CORE: [&str; 14] = [
    "types",
    "order",
    "codec",
    "commit",
    "clearing",
    "envelope",
    "curves",
    "market",
    "ledger",
    "keyper",
    "signed",
    "sequencer",
    "role",
    "wire",
];

/// The shell modules the core may not name.
const SHELL: [&str; 10] = [
    "journal",
    "net",
    "node",
    "replica",
    "client",
    "cli",
    "keyper_process",
    "secret_file",
    "clock",
    "http",
];

/// What the core may not name: the runtime, the network, Raft, HTTP, files,
/// clocks, sleeping threads.
const FORBIDDEN: [&str; 11] = [
    "tokio",
    "quinn",
    "openraft",
    "axum",
    "std::fs",
    "std::net",
    "SystemTime",
    "Instant::now",
    "thread::sleep",
    "std::process",
    "libc::",
];

/// The code of `text` outside comments and its test module.
fn product_code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

#[test]
fn the_core_names_no_shell_runtime_network_file_or_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for module in CORE {
        let mut paths = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            files(&dir, &mut paths);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            paths.push(file);
        }
        assert!(!paths.is_empty(), "no source for core module {module}");
        for path in paths {
            checked += 1;
            let code = product_code(&std::fs::read_to_string(&path).expect("readable"));
            for name in FORBIDDEN {
                if code.contains(name) {
                    violations.push(format!("{}: names {name}", path.display()));
                }
            }
            for shell in SHELL {
                for form in [
                    format!("crate::{shell}::"),
                    format!("crate::{shell};"),
                    format!("crate::{shell}}}"),
                ] {
                    if code.contains(&form) {
                        violations.push(format!("{}: uses crate::{shell}", path.display()));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "{checked} files checked");
    assert!(
        violations.is_empty(),
        "the core reaches the shell:\n{}",
        violations.join("\n")
    );
}

/// Every module `src/lib.rs` declares is either core or shell here, so a
/// new module is placed on purpose.
#[test]
fn every_module_is_core_or_shell() {
    let lib = include_str!("../../src/lib.rs");
    for line in lib.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(
                CORE.contains(&name) || SHELL.contains(&name),
                "src/lib.rs declares {name}, which is neither core nor shell in tests/logic/architecture.rs"
            );
        }
    }
}
