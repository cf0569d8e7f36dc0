//! The layering of src/, checked: a top-level module (a folder counts as
//! one) may use only modules below it in `LAYERS`, so data flows one way and
//! no import cycle can form. ARCHITECTURE.md ("Layers") explains the order;
//! change both together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. A module may import modules of lower layers only; modules
/// in one layer may not import each other.
const LAYERS: &[&[&str]] = &[
    &["wire", "util"], // leaves: the MQTT contract's types; file, shutdown and health helpers
    &["config"],
    &["infer"],   // classification only: imports no feature
    &["publish"], // delivery: imports no consumer
    &["context"],
    &["models"],
    &["pipeline"],
    &["monitor"],
    &["ops"],
    &["agent"], // the supervisor: wires everything
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under src/ belongs to (None: the crate root or the binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

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

/// Every top-level module a line names through `crate::` (also inside `crate::{a, b::c}`).
fn crate_references(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `cctv_agent_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            found.extend(group.split(',').filter_map(|item| item.trim().split("::").next()).filter(|n| !n.is_empty()).map(str::to_string));
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// (file:line, from, to) for every use of one top-level module by another.
fn imports() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut all = Vec::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for to in crate_references(line) {
                // Crate-root items (`crate::AGENT_VERSION`) are not modules.
                if to != from && to.chars().next().is_some_and(|c| c.is_lowercase()) {
                    let place = format!("{}:{}", file.strip_prefix(&src).unwrap().display(), number + 1);
                    all.push((place, from.clone(), to));
                }
            }
        }
    }
    all
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let imports = imports();
    // The checker must see real imports, or it would pass on anything.
    assert!(imports.iter().any(|(_, from, to)| from == "agent" && to == "pipeline"), "the layering check found no imports: is its parser broken?");
    let mut violations = Vec::new();
    let mut unknown = BTreeMap::new();
    for (place, from, to) in &imports {
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => violations.push(format!("{place}: {from} imports {to}, which is not below it")),
            (None, _) => drop(unknown.insert(from.clone(), place.clone())),
            (_, None) => drop(unknown.insert(to.clone(), place.clone())),
        }
    }
    assert!(unknown.is_empty(), "modules missing from LAYERS (add them, and to ARCHITECTURE.md): {unknown:?}");
    assert!(violations.is_empty(), "imports against the layering (see ARCHITECTURE.md, Layers):\n{}", violations.join("\n"));
}

#[test]
fn the_reference_parser_reads_plain_grouped_and_nested_paths() {
    assert_eq!(crate_references("use crate::wire::Topics;"), ["wire"]);
    assert_eq!(crate_references("use crate::{config::Config, publish::Outgoing};"), ["config", "publish"]);
    assert_eq!(crate_references("let x = crate::util::fs::hex(b); // crate::agent"), ["util"]);
    assert_eq!(crate_references("    crate::AGENT_VERSION"), ["AGENT_VERSION"]);
    assert!(crate_references("use std::sync::Arc;").is_empty());
}
