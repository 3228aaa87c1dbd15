//! The module graph of each crate in the workspace, and its cycles: a module that depends,
//! through any number of others, on itself. Layers with no cycle can be read, tested and
//! moved one at a time; a test of this crate keeps the workspace free of them.
//!
//! A module depends on another when its code names it: `use` trees and paths starting with
//! `crate`, `super`, `self` or one of its child modules. Paths inside macro invocations
//! are tokens, not paths, and are not seen.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use syn::visit::Visit;

/// A module by its path from the crate root (`["kernel", "btf"]`; the root is empty).
pub type ModulePath = Vec<String>;

/// One crate's modules and what each depends on.
#[derive(Debug, Default)]
pub struct Graph {
    pub edges: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

/// The graph of the crate whose root file is `root` (lib.rs, main.rs or a bin's file).
pub fn crate_graph(root: &Path) -> Result<Graph> {
    let mut graph = Graph::default();
    let mut modules = BTreeSet::new();
    let mut files = vec![];
    collect(root, &[], true, &mut modules, &mut files)?;
    for (ast, module) in files {
        let mut seen = Seen {
            modules: &modules,
            at: module.clone(),
            edges: &mut graph.edges,
        };
        seen.edges.entry(module).or_default();
        seen.visit_file(&ast);
    }
    Ok(graph)
}

/// Finds every module file under `file` (module `at`), following `mod x;` declarations.
fn collect(
    file: &Path,
    at: &[String],
    owns_dir: bool,
    modules: &mut BTreeSet<ModulePath>,
    files: &mut Vec<(syn::File, ModulePath)>,
) -> Result<()> {
    modules.insert(at.to_vec());
    let text = fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
    // lib.rs, main.rs and mod.rs keep their children beside them; foo.rs in foo/.
    let dir = if owns_dir {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    collect_items(&ast.items, at, &dir, modules, files)?;
    files.push((ast, at.to_vec()));
    Ok(())
}

fn collect_items(
    items: &[syn::Item],
    at: &[String],
    dir: &Path,
    modules: &mut BTreeSet<ModulePath>,
    files: &mut Vec<(syn::File, ModulePath)>,
) -> Result<()> {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        let mut child = at.to_vec();
        child.push(m.ident.to_string());
        match &m.content {
            // Inline modules are modules too, in the same file (visited with it).
            Some((_, items)) => {
                modules.insert(child.clone());
                collect_items(
                    items,
                    &child,
                    &dir.join(m.ident.to_string()),
                    modules,
                    files,
                )?;
            }
            None => {
                let flat = dir.join(format!("{}.rs", m.ident));
                let nested = dir.join(m.ident.to_string()).join("mod.rs");
                if flat.exists() {
                    collect(&flat, &child, false, modules, files)?;
                } else if nested.exists() {
                    collect(&nested, &child, true, modules, files)?;
                }
                // else: a module behind a cfg for another target (no file here).
            }
        }
    }
    Ok(())
}

struct Seen<'a> {
    modules: &'a BTreeSet<ModulePath>,
    at: ModulePath,
    edges: &'a mut BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

impl Seen<'_> {
    /// Notes that the current module names `segments` (a path as written).
    fn names(&mut self, segments: &[String]) {
        let Some(absolute) = self.absolute(segments) else {
            return;
        };
        // The longest prefix that is a module: what is named lives there.
        let target = (0..=absolute.len())
            .rev()
            .map(|n| absolute[..n].to_vec())
            .find(|p| self.modules.contains(p))
            .unwrap_or_default();
        if target != self.at {
            self.edges
                .entry(self.at.clone())
                .or_default()
                .insert(target);
        }
    }

    fn absolute(&self, segments: &[String]) -> Option<ModulePath> {
        let mut base = self.at.clone();
        let mut rest = segments;
        match rest.first()?.as_str() {
            "crate" => {
                base.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            child => {
                let mut path = base.clone();
                path.push(child.to_string());
                if !self.modules.contains(&path) {
                    return None;
                }
            }
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.name_used(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.name_used(prefix, &r.ident),
            syn::UseTree::Glob(_) => {
                let path = prefix.clone();
                self.names(&path);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn name_used(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut path = prefix.to_vec();
        if ident != "self" {
            path.push(ident.to_string());
        }
        self.names(&path);
    }
}

impl<'ast> Visit<'ast> for Seen<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.at.push(m.ident.to_string());
            self.edges.entry(self.at.clone()).or_default();
            syn::visit::visit_item_mod(self, m);
            self.at.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut vec![], &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.names(&segments);
        }
        syn::visit::visit_path(self, p);
    }
}

impl Graph {
    /// Every cycle, as its modules: the strongly connected components of more than one
    /// module (Tarjan's algorithm).
    pub fn cycles(&self) -> Vec<Vec<ModulePath>> {
        let nodes: Vec<&ModulePath> = self.edges.keys().collect();
        let index_of: BTreeMap<&ModulePath, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let next: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges[*n]
                    .iter()
                    .filter_map(|t| index_of.get(t).copied())
                    .collect()
            })
            .collect();
        let mut tarjan = Tarjan {
            next: &next,
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            on_stack: vec![false; nodes.len()],
            stack: vec![],
            counter: 0,
            components: vec![],
        };
        for v in 0..nodes.len() {
            if tarjan.index[v].is_none() {
                tarjan.visit(v);
            }
        }
        tarjan
            .components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut c: Vec<ModulePath> = c.into_iter().map(|i| nodes[i].clone()).collect();
                c.sort();
                c
            })
            .collect()
    }
}

struct Tarjan<'a> {
    next: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.next[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = vec![];
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// The crate roots of the workspace at `workspace`: each package's lib.rs and main.rs and
/// its src/bin files.
pub fn crate_roots(workspace: &Path) -> Result<Vec<PathBuf>> {
    let mut roots = vec![];
    for package in fs::read_dir(workspace)? {
        let src = package?.path().join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                roots.push(src.join(root));
            }
        }
        if let Ok(bins) = fs::read_dir(src.join("bin")) {
            for bin in bins {
                let bin = bin?.path();
                if bin.extension().is_some_and(|e| e == "rs") {
                    roots.push(bin);
                }
            }
        }
    }
    roots.sort();
    Ok(roots)
}

fn show(module: &ModulePath) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// Each cycle in the workspace's crates, in words; empty when there is none.
pub fn workspace_cycles(workspace: &Path) -> Result<Vec<String>> {
    let mut found = vec![];
    for root in crate_roots(workspace)? {
        for cycle in crate_graph(&root)?.cycles() {
            let names: Vec<String> = cycle.iter().map(show).collect();
            found.push(format!("{}: {}", root.display(), names.join(", ")));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        for (name, text) in files {
            let path = dir.0.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir().join(format!(
                    "xtask-modules-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn finds_a_cycle_of_three_through_folders_groups_and_paths() {
        let dir = tree(&[
            ("lib.rs", "pub mod a;\npub mod host;\npub mod c;\n"),
            ("a.rs", "use crate::{host::{b::B}, x};\n"),
            ("host/mod.rs", "pub mod b;\n"),
            ("host/b.rs", "pub struct B;\nfn f() { crate::c::g(); }\n"),
            (
                "c.rs",
                "pub fn g() {}\nmod tests { use super::super::a as _; }\n",
            ),
        ]);
        let cycles = crate_graph(&dir.0.join("lib.rs")).unwrap().cycles();
        // c::tests -> a -> host::b -> c is no cycle: c does not depend on c::tests.
        assert!(cycles.is_empty(), "{cycles:?}");

        fs::write(dir.0.join("c.rs"), "use super::a;\npub fn g() {}\n").unwrap();
        let cycles = crate_graph(&dir.0.join("lib.rs")).unwrap().cycles();
        let path = |s: &str| s.split("::").map(String::from).collect::<ModulePath>();
        assert_eq!(cycles, vec![vec![path("a"), path("c"), path("host::b")]]);
    }

    #[test]
    fn a_parent_and_child_naming_each_other_is_a_cycle() {
        let dir = tree(&[
            ("main.rs", "mod kernel;\nfn main() { kernel::load(); }\n"),
            (
                "kernel/mod.rs",
                "mod btf;\npub fn load() { btf::read(); }\npub struct T;\n",
            ),
            ("kernel/btf.rs", "use super::T;\npub fn read() {}\n"),
        ]);
        let cycles = crate_graph(&dir.0.join("main.rs")).unwrap().cycles();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
    }

    /// The rule itself: no crate of this workspace has a cycle among its modules.
    #[test]
    fn the_workspace_has_no_module_cycle() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cycles = workspace_cycles(workspace).unwrap();
        assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    }
}
