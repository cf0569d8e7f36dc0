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
    &["infer", "track"], // classification; tracking: each imports no feature
    &["publish", "privacy"], // delivery: imports no consumer; what no picture leaving may show
    &["context"],
    &["models"],
    &["pipeline"],
    &["monitor"],
    &["ops", "view"], // operations; the installer's view (snapshot, page)
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

/// The code of a file without comments and string literals, so that
/// neither hides a path nor makes one up.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !chars.get(i.wrapping_sub(1)).is_some_and(|p| p.is_alphanumeric() || *p == '_') {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' && next.is_some() && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3; // a char literal such as '"'
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first segment of each item of a `{…}` group starting at `chars[at]`.
fn group_items(chars: &[char], at: usize) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut first_segment_done = false;
    for &c in &chars[at..] {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    first_segment_done = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(std::mem::take(&mut current));
                first_segment_done = false;
            }
            c if depth == 1 && !first_segment_done => {
                if is_ident(c) {
                    current.push(c);
                } else if !c.is_whitespace() {
                    first_segment_done = !current.is_empty();
                }
            }
            _ => {}
        }
    }
    items.push(current);
    items.into_iter().filter(|i| !i.is_empty() && i != "self").collect()
}

/// Every top-level module some code names from the crate root: `crate::x`,
/// `$crate::x`, `crate::{x, y::{…}}` (also across lines), and `super::` chains
/// that climb to the root from a file `depth` modules deep (`src/x.rs` and
/// `src/x/mod.rs`: 1; `src/x/y.rs`: 2).
fn crate_references(code: &str, depth: usize) -> Vec<String> {
    references(code, depth).into_iter().map(|(_, name)| name).collect()
}

/// As [`crate_references`], with the char offset where each path starts.
fn references(code: &str, depth: usize) -> Vec<(usize, String)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !is_ident(chars[i - 1]);
        let rest: String = chars[i..chars.len().min(i + 8)].iter().collect();
        let mut root = None;
        if starts_word && rest.starts_with("crate::") {
            root = Some(i + "crate::".len());
        } else if starts_word && rest.starts_with("super::") {
            let mut j = i;
            let mut climbs = 0;
            while chars[j..].iter().take(7).collect::<String>() == "super::" {
                climbs += 1;
                j += 7;
            }
            if climbs >= depth {
                root = Some(j);
            }
            i = j.max(i + 1);
            if root.is_none() {
                continue;
            }
        }
        match root {
            Some(at) if chars.get(at) == Some(&'{') => {
                found.extend(group_items(&chars, at).into_iter().map(|name| (i, name)));
                i = at + 1;
            }
            Some(at) => {
                let name: String = chars[at..].iter().take_while(|c| is_ident(**c)).collect();
                if !name.is_empty() {
                    found.push((i, name));
                }
                i = at + 1;
            }
            None => i += 1,
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
        let relative = file.strip_prefix(&src).unwrap();
        let parts = relative.components().count();
        let depth = if relative.ends_with("mod.rs") { parts - 1 } else { parts };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let chars: Vec<char> = code.chars().collect();
        for (offset, to) in references(&code, depth) {
            let line = chars[..offset].iter().filter(|c| **c == '\n').count();
            push(&mut all, relative, line, &from, to);
        }
    }
    all
}

fn push(all: &mut Vec<(String, String, String)>, relative: &Path, number: usize, from: &str, to: String) {
    // Crate-root items (`crate::AGENT_VERSION`) are not modules.
    if to != from && to.chars().next().is_some_and(|c| c.is_lowercase()) {
        all.push((format!("{}:{}", relative.display(), number + 1), from.to_string(), to));
    }
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
fn the_reference_parser_reads_plain_grouped_nested_and_climbing_paths() {
    let refs = |code: &str, depth| crate_references(&code_only(code), depth);
    assert_eq!(refs("use crate::wire::Topics;", 1), ["wire"]);
    assert_eq!(refs("use crate::{config::Config, publish::Outgoing};", 1), ["config", "publish"]);
    assert_eq!(refs("use crate::{\n    wire::{Topics, rfc3339},\n    agent::run,\n};", 1), ["wire", "agent"]);
    assert_eq!(refs("let x = crate::util::fs::hex(b); // crate::agent", 1), ["util"]);
    assert_eq!(refs("let u = \"mqtt://host\"; crate::ops::x(); /* crate::agent */", 1), ["ops"]);
    assert_eq!(refs("let s = r#\"crate::agent\"#; $crate::models::x", 1), ["models"]);
    assert_eq!(refs("    crate::AGENT_VERSION", 1), ["AGENT_VERSION"]);
    // From src/x/y.rs, `super::` is src/x (same module) and `super::super::` the crate root.
    assert!(refs("use super::probation::X;", 2).is_empty());
    assert_eq!(refs("use super::super::agent::run;", 2), ["agent"]);
    // From src/x.rs or src/x/mod.rs, `super::` is the crate root.
    assert_eq!(refs("use super::ops::x;", 1), ["ops"]);
    assert!(refs("use std::sync::Arc;", 1).is_empty());
}
