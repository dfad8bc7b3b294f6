//! The repository stands alone: every relative link in its Markdown files points at a file in
//! it, and every citation of a document's section in code and docs (`README, "Cache"`,
//! `docs/cinder-behaviour.md, "Seeding rows"`) names a heading that exists; and the
//! configuration reference (docs/configuration.md) lists the keys of `config/default.toml`.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Files below the root with one of `extensions`, outside build output and VCS folders.
fn files(extensions: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(name.as_ref(), "target" | ".git" | "artifacts" | "corpus")
                    && !name.starts_with('.')
                {
                    walk(&path, extensions, out);
                }
            } else if extensions.iter().any(|e| name.ends_with(e)) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(ROOT), extensions, &mut out);
    out
}

#[test]
fn every_relative_markdown_link_resolves() {
    let mut checked = 0;
    for md in files(&[".md"]) {
        let text = std::fs::read_to_string(&md).unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = md.parent().unwrap().join(target);
            assert!(
                path.exists(),
                "{}: link to {target} does not resolve",
                md.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no relative links found: the scan is broken");
}

/// `<document>, "<section>"` citations, with the document as it is cited.
const DOCUMENTS: &[(&str, &str)] = &[
    ("README, \"", "README.md"),
    ("ARCHITECTURE.md, \"", "ARCHITECTURE.md"),
    ("docs/cinder-behaviour.md, \"", "docs/cinder-behaviour.md"),
    ("docs/api.md, \"", "docs/api.md"),
    ("docs/deploying.md, \"", "docs/deploying.md"),
    ("docs/performance.md, \"", "docs/performance.md"),
    ("docs/testing.md, \"", "docs/testing.md"),
];

#[test]
fn every_cited_section_exists() {
    let headings = |doc: &str| -> Vec<String> {
        std::fs::read_to_string(Path::new(ROOT).join(doc))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim().to_string())
            .collect()
    };
    let mut checked = 0;
    for file in files(&[".rs", ".py", ".md", ".toml", ".yaml", ".sh"]) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (cited, doc) in DOCUMENTS {
            let sections = headings(doc);
            for (at, _) in text.match_indices(cited) {
                let rest = &text[at + cited.len()..];
                let Some(end) = rest.find('"') else { continue };
                let section = &rest[..end];
                // A title broken over two comment lines is not checked.
                if section.contains('\n') {
                    continue;
                }
                assert!(
                    sections.iter().any(|h| h.starts_with(section)),
                    "{}: {doc} has no section {section:?}",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} citations found: the scan is broken"
    );
}

/// `section.key` for every key of `config/default.toml`, commented-out ones (`# key = ...`,
/// the keys without a default) included; the `[[regions]]` example at its end is not a key.
fn default_toml_keys() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/default.toml")).unwrap();
    let mut section = None;
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            continue;
        }
        if line.trim_start_matches("# ").starts_with("[[") {
            section = None;
            continue;
        }
        let assignment = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = assignment.split_once(" = ") else {
            continue;
        };
        if let Some(section) = &section {
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

/// `section.key` names in the first column of docs/configuration.md's table.
fn documented_keys() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    for row in text.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            if name.contains('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
            {
                keys.insert(name.to_string());
            }
        }
    }
    keys
}

#[test]
fn the_configuration_reference_and_default_toml_name_the_same_keys() {
    let (defaults, documented) = (default_toml_keys(), documented_keys());
    assert!(
        defaults.len() > 40,
        "the scan of default.toml is broken: {defaults:?}"
    );
    let undocumented: Vec<_> = defaults.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&defaults).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "in config/default.toml, not in docs/configuration.md: {undocumented:?}; \
         in docs/configuration.md, not in config/default.toml: {unknown:?}"
    );
}
