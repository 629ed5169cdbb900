//! The architecture as facts a build can check: which workspace member may depend on what, that
//! the controller and the relay do not import each other, and that source files stay a size a
//! person can read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The workspace's members (the root manifest lists them; `cargo tree --workspace` agrees).
const MEMBERS: [&str; 4] = [
    "lineworks-operator",
    "lineworks-client",
    "lineworks-emulator",
    "lineworks-control-plane",
];

/// Names of every package `package` needs at run time on this platform, itself excluded, as
/// `cargo tree` resolves them from Cargo.lock.
fn runtime_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p",
        ])
        .arg(package)
        .current_dir(ROOT)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_workspace_has_the_members_the_architecture_names() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--workspace",
            "--depth",
            "0",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(ROOT)
        .output()
        .expect("cargo tree runs");
    let found: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = MEMBERS.iter().map(|m| m.to_string()).collect();
    assert_eq!(found, expected);
}

#[test]
fn the_client_knows_nothing_of_kubernetes_or_the_operator() {
    let deps = runtime_dependencies("lineworks-client");
    assert!(deps.contains("reqwest"), "the tree was read: {deps:?}");
    let offending: Vec<&String> = deps
        .iter()
        .filter(|d| d.starts_with("kube") || d.starts_with("k8s-") || MEMBERS.contains(&d.as_str()))
        .collect();
    assert!(
        offending.is_empty(),
        "lineworks-client must not depend on {offending:?}"
    );
}

#[test]
fn the_emulator_depends_on_no_other_member() {
    let deps = runtime_dependencies("lineworks-emulator");
    assert!(deps.contains("axum"), "the tree was read: {deps:?}");
    let offending: Vec<&String> = deps
        .iter()
        .filter(|d| MEMBERS.contains(&d.as_str()))
        .collect();
    assert!(
        offending.is_empty(),
        "the emulator must catch the client's mistakes, so it shares no code with it: {offending:?}"
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_controller_and_the_relay_do_not_import_each_other() {
    let root = Path::new(ROOT);
    for (dir, forbidden) in [
        ("src/controller", "crate::relay"),
        ("src/relay", "crate::controller"),
    ] {
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).expect("source");
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: shared vocabulary belongs in src/api/contract.rs",
                file.display()
            );
        }
    }
}

#[test]
fn source_files_stay_readable_or_say_why_not() {
    const LIMIT: usize = 500;
    let root = Path::new(ROOT);
    let mut files = rust_files(&root.join("src"));
    for member in std::fs::read_dir(root.join("crates"))
        .expect("crates")
        .flatten()
    {
        files.extend(rust_files(&member.path().join("src")));
    }
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        // Unit tests at the end of a file do not count: they are read one at a time.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let lines = code.lines().count();
        let opening: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if lines > LIMIT && !opening.contains("Longer than 500 lines because") {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these files by job, or state in their opening comment why not: {long:?}"
    );
}
