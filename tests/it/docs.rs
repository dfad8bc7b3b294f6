//! The repository stands alone: every relative link in its Markdown files points at a file in
//! it, and every citation of a document's section in code and docs (`README, "Cache"`,
//! `docs/cinder-behaviour.md, "Seeding rows"`) names a heading that exists.

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
