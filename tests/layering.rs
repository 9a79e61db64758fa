//! The crate's modules stand in layers, and no module imports one above it:
//! cli → mcp/client → hub → lua/watch → engine/report → store → scheduler →
//! task/wire/event/layout/text/command/handoff. A `crate::` path in production code
//! that points up, or joins two modules kept apart ([`APART`]), fails this
//! test with the file, the line and both floors.

use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its floor; a module may use its own
/// floor and those below.
const FLOORS: &[(&str, u8)] = &[
    ("cli", 7),
    // Test-only (`#[cfg(test)] mod fuzz`): generated inputs for parsers of every floor.
    ("fuzz", 7),
    ("mcp", 6),
    ("client", 6),
    ("hub", 5),
    ("lua", 4),
    ("watch", 4),
    ("engine", 3),
    ("report", 3),
    ("store", 2),
    ("scheduler", 1),
    ("checkout", 1),
    ("task", 0),
    ("wire", 0),
    ("event", 0),
    ("layout", 0),
    ("text", 0),
    ("tls", 0),
    ("command", 0),
    ("handoff", 0),
];

/// Pairs apart on purpose although the floors would allow it: a client
/// reaches the hub through the wire and the `.mcc/` layout, never its code.
const APART: &[(&str, &str)] = &[("client", "hub")];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(name, _)| *name == module).map(|(_, floor)| *floor)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/engine/offers.rs` → `engine`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src/");
    let first = relative.components().next().expect("a file name").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The production text of a file: up to its first `#[cfg(test)]`, without
/// comment lines; none of a `tests.rs`.
fn production_text(file: &Path) -> String {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = fs::read_to_string(file).expect("a source file is readable");
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .map(|line| if line.trim_start().starts_with("//") { "" } else { line })
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifier(text: &str) -> String {
    text.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Every module named right after `crate::`, with the line it is on; a
/// grouped use (`use crate::{store::Store, task::{Report, TaskSpec}}`, over
/// several lines too) names each of its first-level items.
fn crate_modules(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("crate::") {
        let start = from + at + "crate::".len();
        let line = text[..start].matches('\n').count() + 1;
        from = start;
        let Some(group) = text[start..].strip_prefix('{') else {
            found.push((line, identifier(&text[start..])));
            continue;
        };
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    item_start = false;
                    let name = identifier(&group[i..]);
                    if !name.is_empty() {
                        let item_line = line + group[..i].matches('\n').count();
                        found.push((item_line, name));
                    }
                }
                _ => {}
            }
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut unplaced = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = floor(&module) else {
            unplaced.push(module);
            continue;
        };
        for (n, used) in crate_modules(&production_text(file)) {
            match floor(&used) {
                Some(theirs) if theirs > own || APART.contains(&(module.as_str(), used.as_str())) => {
                    upward.push(format!(
                        "{}:{n}: {module} (floor {own}) uses {used} (floor {theirs})",
                        file.strip_prefix(&src).expect("under src/").display()
                    ));
                }
                Some(_) => {}
                None => unplaced.push(used),
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(unplaced.is_empty(), "modules with no floor in tests/layering.rs's FLOORS: {unplaced:?}");
    assert!(upward.is_empty(), "imports that run up:\n{}", upward.join("\n"));
}

#[test]
fn the_layering_check_reads_grouped_and_plain_paths() {
    let names =
        |text: &str| crate_modules(text).into_iter().map(|(line, name)| format!("{line}:{name}")).collect::<Vec<_>>();
    assert_eq!(names("use crate::store::Store;"), ["1:store"]);
    assert_eq!(names("use crate::{store::Store, task::{Report, TaskSpec}};"), ["1:store", "1:task"]);
    assert_eq!(names("use crate::{\n    hub::{self, HubFile},\n    wire,\n};"), ["2:hub", "3:wire"]);
    assert_eq!(names("let x = crate::wire::parse(t);\ncrate::hub::start()"), ["1:wire", "2:hub"]);
    assert!(names("use super::Engine;").is_empty());
}
