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

/// The modules (files) of one crate and which of them each one names: `crate::a::b`,
/// `super::x`, or a child module by its name. Tests at the end of a file (`#[cfg(test)]`)
/// are left out: they look into their own file.
fn module_imports(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let module_of = |file: &Path| -> String {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            [only] if only == "lib" || only == "main" => String::new(),
            [.., last] if last == "mod" => parts[..parts.len() - 1].join("::"),
            _ => parts.join("::"),
        }
    };
    let modules: std::collections::BTreeSet<String> = files
        .iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "bin"))
        .map(|f| module_of(f))
        .collect();
    // The longest module that `path` (segments from the crate root) starts with.
    let resolve = |path: &[&str]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut graph = std::collections::BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if !modules.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut names = std::collections::BTreeSet::new();
        // Re-exports (`pub use`) are a crate's façade, not a dependency of the file's code.
        let code_lines = code.lines().map(str::trim).filter(|l| {
            !(l.starts_with("//") || l.starts_with("pub use ") || l.starts_with("pub(crate) use "))
        });
        for line in code_lines {
            let bytes = line.as_bytes();
            for (i, _) in line.match_indices("::") {
                // The first segment of a path: an identifier not preceded by `::`.
                let start = line[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |p| p + 1);
                if (start >= 2 && &bytes[start - 2..start] == b"::") || start == i {
                    continue;
                }
                let rest: Vec<&str> = line[start..]
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap()
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                let base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
                let absolute: Vec<&str> = match rest[0] {
                    "crate" => rest[1..].to_vec(),
                    "super" => base[..base.len().saturating_sub(1)]
                        .iter()
                        .copied()
                        .chain(rest[1..].iter().copied())
                        .collect(),
                    "self" => base
                        .iter()
                        .copied()
                        .chain(rest[1..].iter().copied())
                        .collect(),
                    _ => base.iter().copied().chain(rest.iter().copied()).collect(),
                };
                if let Some(target) = resolve(&absolute)
                    && target != module
                {
                    names.insert(target);
                }
            }
        }
        graph.insert(module, names);
    }
    graph
}

/// Files of a crate never import each other, directly or round a loop: a module either uses
/// another or is used by it, so each can be read (and moved) on its own.
#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let mut cycles = Vec::new();
    for entry in std::fs::read_dir(root().join("firmware")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_imports(&src);
        // A cycle through `a`: `a` reaches itself.
        for start in graph.keys() {
            let mut seen = std::collections::BTreeSet::new();
            let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
            while let Some((at, path)) = stack.pop() {
                for next in graph.get(&at).into_iter().flatten() {
                    // Each loop once: from its first module in name order.
                    if next == start && path.iter().all(|m| m >= start) {
                        let mut ring = path.clone();
                        ring.push(start.clone());
                        let krate = src.parent().unwrap().file_name().unwrap().to_string_lossy();
                        cycles.push(format!("{krate}: {}", ring.join(" -> ")));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other:\n{}",
        cycles.join("\n")
    );
}
