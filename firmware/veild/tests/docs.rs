//! docs/architecture.md follows the code: every crate of the workspace is in its crate table,
//! and every thread the firmware names is in its thread map. Adding either without the page
//! fails here. And every library crate opens with what it owns and what it must never do.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_is_in_the_architecture_page() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members: Vec<&str> = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("a members line")
        .split('"')
        .filter(|s| s.starts_with("firmware/"))
        .collect();
    assert!(members.len() >= 8, "{members:?}");
    for member in members {
        assert!(
            doc.contains(&format!("| `{member}` |")),
            "docs/architecture.md has no row for `{member}` in its crate table"
        );
    }
}

#[test]
fn every_named_thread_is_in_the_architecture_page() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let mut files = Vec::new();
    sources(&root().join("firmware"), &mut files);
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices(".name(") {
            let rest = &text[i + ".name(".len()..];
            let rest = rest.strip_prefix("format!(").unwrap_or(rest);
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            // Only thread names: a spawn builder follows within the statement.
            let statement = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e)];
            if !name.is_empty() && statement.contains("spawn") {
                names.push((name, file.clone()));
            }
        }
    }
    assert!(names.len() >= 8, "found only {names:?}");
    for (name, file) in names {
        assert!(
            doc.contains(&format!("`{name}")),
            "thread `{name}` ({}) is not in docs/architecture.md's thread map",
            file.display()
        );
    }
}

#[test]
fn every_library_crate_says_what_it_owns_and_what_it_must_never_do() {
    let (mut missing, mut checked) = (Vec::new(), 0);
    for entry in std::fs::read_dir(root().join("firmware")).unwrap() {
        let lib = entry.unwrap().path().join("src/lib.rs");
        let Ok(text) = std::fs::read_to_string(&lib) else {
            continue; // the daemon: a binary
        };
        let head: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        checked += 1;
        if !(head.contains("Owns:") && head.contains("Never:")) {
            missing.push(lib.display().to_string());
        }
    }
    assert!(checked >= 7, "only {checked} library crates found");
    assert!(
        missing.is_empty(),
        "these crates' lib.rs do not open with `Owns:` and `Never:`: {missing:?}"
    );
}
