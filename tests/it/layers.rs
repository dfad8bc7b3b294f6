//! The folders keep the order ARCHITECTURE.md draws: a module may use the modules below it on
//! the line, never one above it. Read from the source's own `crate::` paths (imports and
//! paths written inline alike), so a new arrow up fails here with the file and the name.

use std::path::{Path, PathBuf};

/// Top to bottom. A module may use its own files and any module after it in this list.
const LAYERS: &[&str] = &[
    "main",      // the binary
    "demo",      // three simulated regions behind the proxy
    "app",       // serving: listener, refreshes, shutdown
    "http",      // routes, extraction, layers, the one error mapping
    "state",     // the application's sub-states and the metrics registry
    "routing",   // which region a call on an item goes to
    "listing",   // the request, the plan, the merge, the render
    "cache",     // coalescing, byte-bounded layers, L2
    "regions",   // a client per region behind its guard
    "identity",  // Keystone
    "fleet",     // Redis
    "cinder",    // the wire: resources, items, microversions, query and path spelling
    "telemetry", // tracing and OpenTelemetry
    "config",    // the configuration, each section checked
    "tls",       // certificate files
    "error",     // the typed errors below the HTTP front
];

/// Arrows up that are allowed, each with its reason: (file, the module it uses, why).
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// What the crate root re-exports, by the module that defines it.
const ROOT_NAMES: &[(&str, &str)] = &[
    ("Config", "config"),
    ("AppState", "state"),
    ("router", "http"),
    ("serve", "app"),
    ("shutdown_signal", "app"),
    ("regions_from_catalog", "app"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file's code names through `crate::`, comments left out.
fn used_modules(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `vbs_proxy_crate::`, say: not this crate's root
        }
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            // `crate::{a::x, b}`: each top-level item of the group.
            Some(group) => {
                let (mut depth, mut start) = (0usize, 0usize);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            used.push(ident(group[start..].trim_start()));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            used.push(ident(group[start..].trim_start()));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => used.push(ident(rest)),
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |module: &str| LAYERS.iter().position(|m| *m == module);
    let mut broken = Vec::new();
    let mut arrows = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let first = first.as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs");
        if module == "lib" {
            continue; // the root declares the modules
        }
        let own = rank(module).unwrap_or_else(|| {
            panic!("src/{module} is not in LAYERS: give it its place on the line")
        });
        let shown = format!("src/{}", relative.display());
        for used in used_modules(&std::fs::read_to_string(file).unwrap()) {
            let target = ROOT_NAMES
                .iter()
                .find(|(name, _)| *name == used)
                .map_or(used.as_str(), |(_, module)| *module);
            let theirs = rank(target).unwrap_or_else(|| {
                panic!("{shown} uses crate::{used}, which is not in LAYERS or ROOT_NAMES")
            });
            arrows += 1;
            let excepted = EXCEPTIONS
                .iter()
                .any(|(f, m, _)| *f == shown && *m == target);
            if theirs < own && !excepted {
                broken.push(format!("{shown} ({module}) uses crate::{used} ({target})"));
            }
        }
    }
    assert!(arrows > 100, "the check read only {arrows} arrows");
    broken.sort();
    broken.dedup();
    assert!(
        broken.is_empty(),
        "imports that run up the line of ARCHITECTURE.md:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_grouped_and_inline_paths() {
    let source = "// crate::http in a comment\nuse crate::{cache::{a, b}, regions};\n\
                  fn f() { crate::listing::x(); }\n";
    assert_eq!(used_modules(source), ["cache", "regions", "listing"]);
}
