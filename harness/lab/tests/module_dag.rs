//! The modules of every crate in the workspace form a DAG: no module reaches, through
//! `crate::` paths, a module that reaches it back. A circle is where a change to the
//! experiment-file types forces a change to a kind and back again; this test names the
//! first circle it finds, with the lines that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("harness/lab is two levels down").to_path_buf()
}

fn crate_source_dirs() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = Vec::new();
    for group in ["protocols", "harness"] {
        for entry in fs::read_dir(root.join(group)).expect("workspace group directory") {
            let src = entry.expect("directory entry").path().join("src");
            if src.is_dir() {
                dirs.push(src);
            }
        }
    }
    dirs.sort();
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`kinds/throughput.rs` -> `kinds`), or
/// `None` for the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("file under src");
    let first = relative.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// `crate::name` and `crate::{a, b::c}` references outside comments and unit tests.
fn referenced_modules(text: &str) -> BTreeMap<String, usize> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut found = BTreeMap::new();
    for (number, line) in code.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = line.split(" //").next().unwrap_or(line);
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group.split('}').next().unwrap_or("").split(',').collect()
            } else {
                vec![rest]
            };
            for name in names {
                let ident: String =
                    name.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !ident.is_empty() {
                    found.entry(ident).or_insert(number + 1);
                }
            }
        }
    }
    found
}

/// Module -> (module it references -> "file:line" of the first reference).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for file in &files {
        let Some(from) = top_module(src, file) else { continue };
        let text = fs::read_to_string(file).expect("readable source");
        for (to, line) in referenced_modules(&text) {
            if to != from && modules.contains(&to) {
                let place = format!("{}:{line}", file.strip_prefix(workspace_root()).unwrap_or(file).display());
                graph.get_mut(&from).expect("known module").entry(to).or_insert(place);
            }
        }
    }
    graph
}

/// A circle of modules, each with the place that references the next, if any.
fn find_circle(graph: &Graph) -> Option<Vec<(String, String)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    fn visit(
        module: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<(String, String)>> {
        marks.insert(module.to_string(), Mark::OnPath);
        path.push(module.to_string());
        for next in graph[module].keys() {
            match marks[next] {
                Mark::OnPath => {
                    let start = path.iter().position(|m| m == next).expect("on the path");
                    let mut circle: Vec<String> = path[start..].to_vec();
                    circle.push(next.clone());
                    return Some(circle.windows(2).map(|w| (w[0].clone(), graph[&w[0]][&w[1]].clone())).collect());
                }
                Mark::Unvisited => {
                    if let Some(circle) = visit(next, graph, marks, path) {
                        return Some(circle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(module.to_string(), Mark::Done);
        None
    }
    let mut marks: BTreeMap<String, Mark> = graph.keys().map(|m| (m.clone(), Mark::Unvisited)).collect();
    for module in graph.keys() {
        if marks[module] == Mark::Unvisited
            && let Some(circle) = visit(module, graph, &mut marks, &mut Vec::new())
        {
            return Some(circle);
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_circle() {
    let dirs = crate_source_dirs();
    assert!(dirs.len() >= 8, "expected every workspace crate, found {dirs:?}");
    for src in dirs {
        if let Some(circle) = find_circle(&graph_of(&src)) {
            let steps: Vec<String> = circle.iter().map(|(m, at)| format!("{m} (at {at})")).collect();
            panic!("{}: modules import each other in a circle: {} -> back", src.display(), steps.join(" -> "));
        }
    }
}

/// The detector itself finds a circle and a reference through a `crate::{..}` group.
#[test]
fn the_detector_sees_circles() {
    let refs = referenced_modules("use crate::{config::Point, check};\n// crate::ignored\nlet x = crate::run::go();\n");
    assert_eq!(refs.keys().map(String::as_str).collect::<Vec<_>>(), ["check", "config", "run"]);
    let mut graph = Graph::new();
    graph.insert("a".into(), BTreeMap::from([("b".into(), "a.rs:1".into())]));
    graph.insert("b".into(), BTreeMap::from([("c".into(), "b.rs:2".into())]));
    graph.insert("c".into(), BTreeMap::from([("a".into(), "c.rs:3".into())]));
    let circle = find_circle(&graph).expect("a -> b -> c -> a");
    assert_eq!(circle.len(), 3);
    graph.get_mut("c").unwrap().clear();
    assert!(find_circle(&graph).is_none());
}

/// The lab's kinds do not import each other: what two kinds share is a module of its
/// own (`trial.rs`, `election_trial.rs`, `availability_trial.rs`, `chaos.rs`), so a kind
/// can be changed, or removed with its registry line, without touching another.
#[test]
fn no_kind_imports_another() {
    let src = workspace_root().join("harness/lab/src");
    let graph = graph_of(&src);
    // A kind's module is its name with `_` for `-` (`attack-chaos` is attack_chaos.rs),
    // or that and `_kind` where the name is a shared module's own (`chaos.rs` holds the
    // chaos runs every chaos-based kind shares; the `chaos` kind is chaos_kind.rs).
    let kinds: Vec<String> = qlab_lab::registry::Registry::builtin()
        .names()
        .iter()
        .map(|k| k.replace('-', "_"))
        .map(|k| if src.join(format!("{k}_kind.rs")).exists() { format!("{k}_kind") } else { k })
        .collect();
    assert!(kinds.len() >= 8, "{kinds:?}");
    for kind in &kinds {
        let imports = graph.get(kind).unwrap_or_else(|| panic!("kind {kind} is the module {kind}.rs"));
        for other in &kinds {
            if let Some(at) = imports.get(other) {
                panic!("the {kind} kind imports the {other} kind (at {at})");
            }
        }
    }
}
