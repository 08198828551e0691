//! The shape of the code, checked like behaviour: no import cycle between the files of any crate,
//! the host never names openraft, the peer protocol's URLs are written only in the transport,
//! and every guest the tests build is used by a test. These read the sources; nothing runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every crate of the workspace with a `src/` folder.
fn crates() -> Vec<PathBuf> {
    let root = repo();
    let mut out = Vec::new();
    for parent in ["runtime", "modules", "examples", "tests/programs"] {
        for entry in std::fs::read_dir(root.join(parent)).unwrap().flatten() {
            if entry.path().join("src").is_dir() {
                out.push(entry.path());
            }
        }
    }
    for one in ["sdk", "tests/guests"] {
        out.push(root.join(one));
    }
    out.sort();
    out
}

/// A source file's module path inside its crate: `a::b` for `src/a/b.rs` or `src/a/b/mod.rs`,
/// empty for the crate root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.first().is_some_and(|p| p == "bin") {
        return vec![format!("bin:{}", parts[1..].join("::"))];
    }
    parts
}

/// The source without comments and string literals (an import named in a doc comment or a
/// message is no import).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(|i| expand(i).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// Every path the code names: each `use` (expanded) and each `crate::`/`super::` path in it.
fn paths_named(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            out.extend(expand(&rest[..end]));
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let i = from + i;
            from = i + start.len();
            if i > 0
                && (bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':')
            {
                continue;
            }
            let end = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| i + e);
            out.push(code[i..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// The module a path names, among `modules`, seen from module `here`; `None` for outside crates.
fn resolve(
    path: &str,
    here: &[String],
    modules: &BTreeSet<Vec<String>>,
    reexports: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segments.first().copied() {
        Some("crate") => {
            segments.remove(0);
            Vec::new()
        }
        Some("super") => {
            let mut base = here.to_vec();
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
            base
        }
        Some("self") => {
            segments.remove(0);
            here.to_vec()
        }
        // A child module named by its bare name.
        Some(first) => {
            let mut child = here.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            here.to_vec()
        }
        None => return None,
    };
    let mut found = base.clone();
    for segment in segments {
        base.push(segment.to_string());
        if modules.contains(&base) {
            found = base.clone();
        } else {
            if found.is_empty()
                && let Some(module) = reexports.get(segment)
            {
                found = module.clone();
            }
            break;
        }
    }
    Some(found)
}

/// The import graph between one crate's files, as (from, to) module paths. The crate root only
/// declares modules and re-exports them: its edges are its facade, not dependencies.
fn import_graph(krate: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = krate.join("src");
    let files = rust_files(&src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut reexports = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(src.join(root)) else {
            continue;
        };
        for path in paths_named(&code_only(&text)) {
            let segments: Vec<&str> = path.split("::").collect();
            if let (Some(first), Some(last)) = (segments.first(), segments.last())
                && modules.contains(&vec![first.to_string()])
            {
                reexports.insert(last.to_string(), vec![first.to_string()]);
            }
        }
    }
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let here = module_of(&src, file);
        if here.is_empty() || here[0].starts_with("bin:") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        // `#[cfg(test)] mod tests` sits below the code and may use anything of its parent.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        for path in paths_named(code) {
            if let Some(to) = resolve(&path, &here, &modules, &reexports)
                && to != here
                && !to.is_empty()
                && !here.starts_with(&to)
            {
                graph.entry(here.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

/// Every cycle of a graph, as the modules of each strongly connected component of two or more.
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&Vec<String>> = graph
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to))
        .collect();
    // Kosaraju: reachability both ways is cheap at this size.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for n in &nodes {
        if placed.contains(*n) {
            continue;
        }
        let forward = reach(n);
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| forward.contains(**m) && reach(m).contains(*n))
            .map(|m| {
                placed.insert((*m).clone());
                m.join("::")
            })
            .collect();
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let mut found = Vec::new();
    for krate in crates() {
        for cycle in cycles(&import_graph(&krate)) {
            found.push(format!("{}: {}", krate.display(), cycle.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // Two files that use each other, and a third that only uses one: one cycle of two.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("c")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "mod a; mod b; mod c;\npub use a::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::other;\npub struct Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("b.rs"),
        "// crate::c is named in a comment only\npub fn other() { let _ = crate::Thing; }\n",
    )
    .unwrap();
    std::fs::write(src.join("c/mod.rs"), "use super::a::Thing;\n").unwrap();
    let graph = import_graph(dir.path());
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
    assert!(!graph[&vec!["b".to_string()]].contains(&vec!["c".to_string()]));
}

#[test]
fn the_host_never_names_openraft() {
    let src = repo().join("runtime/host/src");
    let named: Vec<String> = rust_files(&src)
        .into_iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("openraft"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(named.is_empty(), "openraft named in {named:?}");
}

/// Not in code, not in a comment: the peer protocol's paths are the transport's alone.
#[test]
fn peer_urls_are_written_only_in_the_transport() {
    let transport = repo().join("runtime/replication/src/transport.rs");
    let mut found = Vec::new();
    for krate in ["api", "cli", "host", "replication", "store"] {
        for file in rust_files(&repo().join("runtime").join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if (line.contains("/raft/") || line.contains("/peer/")) && file != transport {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "peer URLs outside the transport:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_guest_the_tests_build_is_used_by_a_test() {
    let build = std::fs::read_to_string(repo().join("tests/guests/build.rs")).unwrap();
    let list = &build[build.find("const GUESTS").unwrap()..];
    let list = &list[..list.find("];").unwrap()];
    let constants: Vec<String> = list
        .split("(\"")
        .skip(1)
        .map(|item| {
            let package = &item[..item.find('"').unwrap()];
            package
                .trim_start_matches("test-")
                .replace('-', "_")
                .to_uppercase()
        })
        .collect();
    assert!(constants.len() >= 10, "read {constants:?} from build.rs");
    let mut sources = String::new();
    // Integration tests, and the crates' own tests (unit tests live in `src`).
    for dir in ["tests/integration", "runtime"] {
        for file in rust_files(&repo().join(dir)) {
            sources.push_str(&std::fs::read_to_string(file).unwrap());
        }
    }
    let unused: Vec<&String> = constants
        .iter()
        .filter(|c| !sources.contains(&format!("guests::{c}")))
        .collect();
    assert!(unused.is_empty(), "guests no test uses: {unused:?}");
}
