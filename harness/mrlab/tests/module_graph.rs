//! The `mrlab` library's stages import only downward (docs/ARCHITECTURE.md): this builds the
//! graph of `crate::<stage>` references between the top-level modules of `harness/mrlab/src`
//! (a file `judge/td.rs` belongs to stage `judge`) and fails on a cycle, naming it. The binary's
//! `main.rs` and `cmd/` sit on top and reach the library as `mrlab::`, so they are not part of
//! the graph.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The stage a file belongs to: its first path component, without `.rs`.
fn stage_of(relative: &Path) -> String {
    let first = relative.components().next().expect("a file below src");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

fn leading_ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The stages `source` names as `crate::<stage>`, `crate::{<stage>::…, …}` included; `//`
/// comments are not code.
fn imports(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                found.extend(
                    inner
                        .split(',')
                        .map(|s| leading_ident(s.trim()).to_string()),
                );
            } else {
                found.insert(leading_ident(rest).to_string());
            }
        }
    }
    found.retain(|s| !s.is_empty());
    found
}

/// A cycle of `graph` as the stages along it (first repeated last), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The stage graph of the library under `src`.
fn stage_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    common::rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("below src");
        let stage = stage_of(relative);
        if stage == "main" || stage == "cmd" || stage == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let edges = graph.entry(stage.clone()).or_default();
        edges.extend(imports(&text).into_iter().filter(|s| *s != stage));
    }
    graph
}

#[test]
fn the_stages_of_mrlab_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = stage_graph(&src);
    // The graph is the real one: the orchestrator reaches the judge, the judge the report.
    assert!(graph["run"].contains("judge"), "{graph:?}");
    assert!(graph["judge"].contains("report"), "{graph:?}");
    assert_eq!(find_cycle(&graph), None, "import cycle in {graph:#?}");
    // The report model is a leaf.
    assert_eq!(graph["report"], BTreeSet::new());
}

#[test]
fn a_cycle_is_found_and_named() {
    let source = "use crate::report::ScenarioReport;\n// crate::run in a comment\n\
                  let x = crate::{judge::align, prepare::Prepared};";
    assert_eq!(
        imports(source),
        ["judge", "prepare", "report"].map(String::from).into()
    );
    let edge = |a: &str, b: &[&str]| (a.to_string(), b.iter().map(|s| s.to_string()).collect());
    let mut graph: Graph = [
        edge("run", &["judge", "report"]),
        edge("judge", &["report"]),
        edge("report", &[]),
    ]
    .into();
    assert_eq!(find_cycle(&graph), None);
    graph.insert("report".into(), ["run".to_string()].into());
    assert_eq!(
        find_cycle(&graph),
        Some(
            ["judge", "report", "run", "judge"]
                .map(String::from)
                .to_vec()
        )
    );
}
