//! The billing crate's module graph: no cycles between its top-level modules, and every
//! module imports only from its own layer or the layers below it. Reads the sources
//! (`crate::…` paths outside test modules), so it holds for the code as written.
//!
//! `cargo nextest run -p pillivery-tests -E 'test(layering)' --no-capture` prints the
//! graph, layer by layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of its own layer (without cycles) and of any
/// layer below. `crate::Ctx` (the root) is the handles every layer may hold.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "ids",
            "money",
            "clock",
            "coalesce",
            "error",
            "settings",
            "validate",
            "page",
            "passwords",
            "telemetry",
            "pg_error",
        ],
    ),
    (
        "adapters",
        &[
            "db", "kv", "pg", "jobs", "tasks", "outbox", "audit", "editor", "workers", "wakeups",
        ],
    ),
    ("row stores", &["store", "users", "history", "search"]),
    (
        "use cases",
        &[
            "accounts",
            "sessions",
            "oauth",
            "items",
            "carts",
            "reviews",
            "orders",
            "payments",
            "subscriptions",
            "webhooks",
            "probes",
            "overview",
            "retention",
        ],
    ),
];

fn billing_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../billing/src")
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

/// The top-level module a file belongs to (`None` for lib.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib").then_some(name)
}

/// The source without its `#[cfg(test)]` modules (tests may reach anywhere).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // Skip the item: up to its matching closing brace (or `;` for a one-liner).
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Line comments out, so prose mentioning `crate::x` does not count.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named by `crate::name` and `crate::{a, b::c, …}` paths.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::") {
        let at = from + i + "crate::".len();
        from = at;
        if bytes.get(at) == Some(&b'{') {
            // The first path segment of each item at depth 1 of the group.
            let mut depth = 0;
            let mut start_of_item = true;
            let mut name = String::new();
            for c in text[at..].chars() {
                match c {
                    '{' => {
                        depth += 1;
                        if depth > 1 {
                            start_of_item = false;
                        }
                    }
                    '}' => {
                        if depth == 1 && !name.is_empty() {
                            found.insert(std::mem::take(&mut name));
                        }
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        if !name.is_empty() {
                            found.insert(std::mem::take(&mut name));
                        }
                        start_of_item = true;
                    }
                    c if depth == 1 && start_of_item && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    c if depth == 1 && !name.is_empty() && !(c.is_alphanumeric() || c == '_') => {
                        found.insert(std::mem::take(&mut name));
                        start_of_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Module → the other top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = billing_src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = without_comments(&without_tests(&std::fs::read_to_string(file).unwrap()));
        let deps = g.entry(module.clone()).or_default();
        for r in references(&text) {
            if r != module && modules.contains(&r) {
                deps.insert(r);
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_reference_finder_reads_use_groups_and_paths() {
    let text = "use crate::{jobs::{self, Outcome}, tasks, Ctx};\nlet x = crate::orders::lock(c);\n// crate::users is prose\n#[cfg(test)]\nmod tests { use crate::items; }\n";
    let refs = references(&without_comments(&without_tests(text)));
    let want: BTreeSet<String> = ["jobs", "tasks", "Ctx", "orders"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(refs, want);
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

#[test]
fn billing_layering_has_no_module_cycles_and_no_upward_imports() {
    let g = graph();
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i)))
        .collect();
    for (i, (name, modules)) in LAYERS.iter().enumerate() {
        println!("{i} {name}:");
        for m in *modules {
            let deps: Vec<&str> = g
                .get(*m)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            println!("    {m} → {}", deps.join(", "));
        }
    }
    let unplaced: Vec<&String> = g
        .keys()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(unplaced.is_empty(), "modules in no layer: {unplaced:?}");
    let mut upward = Vec::new();
    for (m, deps) in &g {
        for d in deps {
            if layer_of[d.as_str()] > layer_of[m.as_str()] {
                upward.push(format!("{m} → {d}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a higher layer: {upward:?}");
    let found = cycles(&g);
    assert!(found.is_empty(), "module cycles: {found:?}");
}
