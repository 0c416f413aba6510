//! The structure of `kusari-models`: no module imports, directly or through
//! others, a module that imports it; the CPU kernels import nothing of the
//! crate (no nets, no configurations); `config` imports nothing of it.
//!
//! Read from the sources: every `crate::…`, `super::…` and `self::…` path
//! outside comments (tests included) is an import of the module it names.
//! Modules are compared at each level: the crate's top-level modules, and
//! the submodules of each module among themselves. A module and its own
//! submodules are one unit (a `mod.rs` declares and re-exports them), so
//! paths between a module and its descendants do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

type ModPath = Vec<String>;

/// Every `.rs` file under `src`, by module path (`lib.rs` is the root `[]`).
fn modules(src: &Path) -> Result<BTreeMap<ModPath, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?;
            let mut parts: ModPath = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    Ok(out)
}

/// The source without comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal (a URL) keeps the line; doc
            // and line comments start the line or follow code after a space.
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.trim().to_string()];
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{prefix}{}", p.trim())))
        .collect()
}

/// The paths a file's code names, as written (`crate::…`, `super::…`, `self::…`).
fn named_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` declarations, with their brace groups.
    for statement in code.split(';') {
        let s = statement.trim_start();
        let s = s
            .strip_prefix("pub(crate) ")
            .or_else(|| s.strip_prefix("pub "))
            .unwrap_or(s);
        if let Some(rest) = s.strip_prefix("use ") {
            out.extend(expand(rest));
        }
    }
    // Paths used in place.
    let bytes = code.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let at = from + i;
            let preceded = at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            let end = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            if !preceded {
                out.push(code[at..end].to_string());
            }
            from = end.max(at + root.len());
        }
    }
    out
}

/// The module a path in module `here` refers to: the longest known module
/// that prefixes it.
fn resolve(here: &ModPath, path: &str, known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut parts: Vec<&str> = path
        .split("::")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut base: ModPath = match parts.first().copied()? {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => here.clone(),
        _ => return None,
    };
    while parts.first() == Some(&"super") {
        base.pop();
        parts.remove(0);
    }
    if matches!(parts.first().copied(), Some("crate" | "self")) {
        parts.remove(0);
    }
    let mut best = base.clone();
    let mut cur = base;
    for p in parts {
        cur.push(p.split(' ').next()?.to_string());
        if known.contains(&cur) {
            best = cur.clone();
        }
    }
    Some(best)
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    fn visit(
        n: &ModPath,
        edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<ModPath, u8>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it() -> Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src)?;
    let known: BTreeSet<ModPath> = files.keys().cloned().collect();
    ensure!(
        known.len() > 20,
        "found only {} modules under {}",
        known.len(),
        src.display()
    );
    // Edges between the children of a common ancestor, per ancestor.
    let mut levels: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<ModPath>>> = BTreeMap::new();
    for (here, file) in &files {
        if here.is_empty() {
            continue; // lib.rs declares and re-exports every module.
        }
        let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
        for path in named_paths(&code(&text)) {
            let Some(target) = resolve(here, &path, &known) else {
                continue;
            };
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == here.len() || common == target.len() {
                continue; // within one module and its descendants
            }
            let from = here[..=common].to_vec();
            let to = target[..=common].to_vec();
            levels
                .entry(here[..common].to_vec())
                .or_default()
                .entry(from)
                .or_default()
                .insert(to);
        }
    }
    let top = levels
        .get(&Vec::new())
        .context("no imports between top-level modules")?;
    for module in ["kernels", "config"] {
        let imports = top.get(&vec![module.to_string()]);
        assert!(
            imports.is_none_or(BTreeSet::is_empty),
            "`{module}` imports other modules of the crate: {imports:?}"
        );
    }
    // Sanity: the layering the test exists for is visible to it.
    assert!(top[&vec!["step".to_string()]].contains(&vec!["kernels".to_string()]));
    for (scope, edges) in &levels {
        if let Some(cycle) = find_cycle(edges) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!(
                "import cycle among the modules of `{}`: {}",
                if scope.is_empty() {
                    "the crate".to_string()
                } else {
                    scope.join("::")
                },
                names.join(" → ")
            );
        }
    }
    Ok(())
}

#[test]
fn the_parser_sees_grouped_and_nested_imports() {
    assert_eq!(
        expand("crate::kernels::{dense::{self, DenseBlock}, in_own_pool}"),
        vec![
            "crate::kernels::dense::self",
            "crate::kernels::dense::DenseBlock",
            "crate::kernels::in_own_pool"
        ]
    );
    let known: BTreeSet<ModPath> = [
        vec![],
        vec!["a".into()],
        vec!["a".into(), "b".into()],
        vec!["c".into()],
    ]
    .into_iter()
    .collect();
    let here = vec!["a".to_string(), "b".to_string()];
    assert_eq!(
        resolve(&here, "super::super::c::X", &known),
        Some(vec!["c".to_string()])
    );
    assert_eq!(
        resolve(&here, "crate::a::thing", &known),
        Some(vec!["a".to_string()])
    );
    let paths = named_paths(&code("let x = crate::c::f(); // crate::a::b\n"));
    assert_eq!(paths, vec!["crate::c::f"]);
    let mut edges = BTreeMap::new();
    edges.insert(
        vec!["x".to_string()],
        BTreeSet::from([vec!["y".to_string()]]),
    );
    edges.insert(
        vec!["y".to_string()],
        BTreeSet::from([vec!["x".to_string()]]),
    );
    assert!(find_cycle(&edges).is_some());
}
