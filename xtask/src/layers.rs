//! `cargo xtask layers` (and a step of `cargo xtask lint`): the agent
//! crate's modules import only from their own layer or the layers below it,
//! and no two files import each other, directly or around a loop.
//!
//! The layers are written down once, in the table of
//! `docs/ARCHITECTURE.md` (columns `layer`, `name`, `modules`); this check
//! reads them from there. A file's layer is that of the longest module path
//! of the table it lies in (`audit` covers `audit::verify`).
//!
//! What counts as an import: every `use crate::…`, `use super::…`,
//! `use self::…` (and `use child::…` of a child module), and every path in
//! the code that starts with `crate::`, `super::`, `self::` or a child
//! module's name. A path is followed to the file that defines it, through
//! `pub use` re-exports. A folder's `mod.rs` re-exporting its own children
//! (`pub use pins::Pins;`) is not an import of them. The binary's modules
//! (`main.rs` and what it declares) are checked the same way among
//! themselves; their `geowall::…` paths go to the library, which lies below.
//!
//! Plain Rust on purpose: comments and literals are skipped, `use` trees
//! expanded, and that is all the parsing it needs.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The table of layers.
const TABLE: &str = "docs/ARCHITECTURE.md";
/// The crate checked, relative to the workspace root.
const SRC: &str = "agent/src";

pub fn run() -> Result<()> {
    let root = cmd::workspace_root();
    let problems = check(&root)?;
    if problems.is_empty() {
        eprintln!("lint: import layers and cycles of {SRC}: none out of place");
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    bail!(
        "{} import problem(s) in {SRC} (the layers: {TABLE})",
        problems.len()
    )
}

/// Every upward import and every import cycle of the agent crate.
pub fn check(root: &Path) -> Result<Vec<Problem>> {
    let table_path = root.join(TABLE);
    let table = std::fs::read_to_string(&table_path)
        .with_context(|| format!("reading {}", table_path.display()))?;
    let layers = Layers::parse(&table).with_context(|| format!("{}", table_path.display()))?;
    let mut problems = Vec::new();
    for crate_root in ["lib.rs", "main.rs"] {
        let path = root.join(SRC).join(crate_root);
        if !path.exists() {
            continue;
        }
        let krate = Crate::load(root, &path)?;
        problems.extend(krate.check(&layers));
    }
    Ok(problems)
}

/// One finding, printed as `file:line: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A module not covered by the table.
    Unplaced { file: String, module: String },
    /// An import from a layer above the importer's.
    Upward {
        file: String,
        line: usize,
        from: String,
        from_layer: Layer,
        to: String,
        to_layer: Layer,
    },
    /// Files that import each other around a loop: each step's file, the
    /// line of its import, and the module it names; `files` is every file
    /// of the strongly connected group the loop lies in.
    Cycle {
        steps: Vec<(String, usize, String)>,
        files: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unplaced { file, module } => write!(
                f,
                "{file}: module `{module}` is in no layer: add it to the table in {TABLE}"
            ),
            Problem::Upward {
                file,
                line,
                from,
                from_layer,
                to,
                to_layer,
            } => write!(
                f,
                "{file}:{line}: `{from}` (layer {from_layer}) imports `{to}` (layer {to_layer}): \
                 a module imports only from its own layer and those below it"
            ),
            Problem::Cycle { steps, files } => {
                write!(f, "import cycle: ")?;
                for (file, line, to) in steps {
                    write!(f, "{file}:{line} imports `{to}` → ")?;
                }
                write!(f, "{}", steps[0].0)?;
                if files.len() > steps.len() {
                    write!(
                        f,
                        " (one loop of {} files that import each other: {})",
                        files.len(),
                        files.join(", ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// A row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub rank: u32,
    pub name: String,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.rank, self.name)
    }
}

/// Module path (`kernel`, `audit::verify`) → its layer.
#[derive(Debug, Default)]
struct Layers {
    modules: BTreeMap<String, Layer>,
}

impl Layers {
    /// Reads the first Markdown table whose header has `layer`, `name` and
    /// `modules` columns; the modules are the `code` spans of their cell.
    fn parse(text: &str) -> Result<Layers> {
        let rows: Vec<Vec<String>> = text
            .lines()
            .skip_while(|l| !is_header(l))
            .take_while(|l| l.trim_start().starts_with('|'))
            .map(cells)
            .collect();
        let Some((header, rows)) = rows.split_first() else {
            bail!("no table with `layer`, `name` and `modules` columns");
        };
        let col = |name: &str| header.iter().position(|c| c.eq_ignore_ascii_case(name));
        let (Some(rank_col), Some(name_col), Some(mod_col)) =
            (col("layer"), col("name"), col("modules"))
        else {
            bail!("the layer table needs `layer`, `name` and `modules` columns");
        };
        let mut layers = Layers::default();
        for row in rows
            .iter()
            .filter(|r| !r.iter().all(|c| c.starts_with("--")))
        {
            let cell = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
            let rank: u32 = cell(rank_col)
                .parse()
                .with_context(|| format!("layer `{}` is not a number", cell(rank_col)))?;
            let layer = Layer {
                rank,
                name: cell(name_col).to_owned(),
            };
            for module in code_spans(cell(mod_col)) {
                if let Some(other) = layers.modules.insert(module.clone(), layer.clone()) {
                    bail!("module `{module}` is in two layers ({other} and {layer})");
                }
            }
        }
        if layers.modules.is_empty() {
            bail!("the layer table names no module");
        }
        Ok(layers)
    }

    /// The layer of `module`: that of its longest listed ancestor.
    fn of(&self, module: &str) -> Option<&Layer> {
        let mut m = module;
        loop {
            if let Some(l) = self.modules.get(m) {
                return Some(l);
            }
            m = &m[..m.rfind("::")?];
        }
    }
}

fn is_header(line: &str) -> bool {
    let c = cells(line);
    ["layer", "name", "modules"]
        .iter()
        .all(|w| c.iter().any(|x| x.eq_ignore_ascii_case(w)))
}

fn cells(line: &str) -> Vec<String> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(|c| c.trim().to_owned()).collect()
}

fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------
// Reading the crate.

/// A token of Rust source: an identifier (keywords included), `::`, or one
/// punctuation character; literals and comments are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    text: String,
    line: usize,
}

fn tokenize(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let count_lines = |s: &[u8]| s.iter().filter(|c| **c == b'\n').count();
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let start = i;
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += count_lines(&b[start..i.min(b.len())]);
        } else if let Some(end) = raw_string_end(b, i) {
            line += count_lines(&b[i..end]);
            i = end;
        } else if c == b'"' || (matches!(c, b'b' | b'c') && b.get(i + 1) == Some(&b'"')) {
            let start = i;
            i += if c == b'"' { 1 } else { 2 };
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            line += count_lines(&b[start..i.min(b.len())]);
        } else if c == b'\'' || (c == b'b' && b.get(i + 1) == Some(&b'\'')) {
            // A char literal ('a', '\n', b'x') or a lifetime ('a).
            let q = if c == b'b' { i + 1 } else { i };
            if b.get(q + 1) == Some(&b'\\') {
                i = q + 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(q + 2) == Some(&b'\'') {
                i = q + 3;
            } else if let Some(n) = std::str::from_utf8(&b[q + 1..])
                .ok()
                .and_then(|s| s.chars().next())
                .filter(|ch| !ch.is_ascii())
            {
                // A non-ASCII char literal: 'é'.
                i = q + 1 + n.len_utf8() + 1;
            } else {
                i = q + 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            // Raw identifiers: r#type.
            let text = src[start..i].to_owned();
            if text == "r" && b.get(i) == Some(&b'#') {
                i += 1;
                continue;
            }
            out.push(Tok { text, line });
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                if b[i] == b'.' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
        } else if b[i..].starts_with(b"::") {
            out.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            let ch = src[i..].chars().next().expect("in bounds");
            out.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += ch.len_utf8();
        }
    }
    out
}

/// Where a raw string literal starting at `i` (`r"…"`, `r#"…"#`, `br#…`,
/// `cr"…"`) ends, if one starts there.
fn raw_string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(b.get(j), Some(b'b' | b'c')) {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    // Not the end of an identifier (`for"` cannot happen, `bar#` neither).
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|c| **c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    j += 1;
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    while j < b.len() {
        if b[j..].starts_with(&close) {
            return Some(j + close.len());
        }
        j += 1;
    }
    Some(b.len())
}

/// One path a file names, as written, with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathRef {
    /// The module whose scope the path is written in (`kernel::tests`).
    scope: Vec<String>,
    segments: Vec<String>,
    line: usize,
    /// Part of a `pub use`: a re-export.
    reexport: bool,
    /// Inside a `#[cfg(test)]` module.
    test: bool,
}

/// What one file says: its paths, its `mod x;` declarations, its inline
/// modules and the names it declares `pub`.
#[derive(Debug, Default)]
struct FileFacts {
    paths: Vec<PathRef>,
    /// Modules declared with `mod x;` (a file of their own), by scope.
    file_mods: Vec<(Vec<String>, String)>,
    /// Modules declared inline (`mod tests { … }`), full relative paths.
    inline_mods: Vec<Vec<String>>,
    /// Names declared `pub` (any visibility), by scope.
    items: BTreeSet<(Vec<String>, String)>,
}

const ITEM_KEYWORDS: [&str; 9] = [
    "fn", "struct", "enum", "trait", "type", "const", "static", "mod", "union",
];

fn read_file(toks: &[Tok]) -> FileFacts {
    let mut facts = FileFacts::default();
    // Inline modules open here: (name, brace depth inside them, whether
    // it is a `#[cfg(test)]` module).
    let mut scope: Vec<(String, usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let scope_of = |scope: &[(String, usize, bool)]| -> Vec<String> {
        scope.iter().map(|(n, _, _)| n.clone()).collect()
    };
    let in_test = |scope: &[(String, usize, bool)]| scope.iter().any(|(_, _, t)| *t);
    while i < toks.len() {
        let t = toks[i].text.as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                if scope.last().is_some_and(|(_, d, _)| *d == depth) {
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if toks.get(i + 1).is_some_and(|n| is_ident(&n.text)) => {
                let name = toks[i + 1].text.clone();
                match toks.get(i + 2).map(|t| t.text.as_str()) {
                    Some(";") => facts.file_mods.push((scope_of(&scope), name)),
                    Some("{") => {
                        let mut path = scope_of(&scope);
                        path.push(name.clone());
                        facts.inline_mods.push(path);
                        depth += 1;
                        let test = is_cfg_test_before(toks, i);
                        scope.push((name, depth, test));
                        i += 3;
                        continue;
                    }
                    _ => {}
                }
            }
            "use" if toks.get(i + 1).is_some_and(|n| n.text != "<") => {
                let reexport = is_pub_before(toks, i);
                let end = toks[i..]
                    .iter()
                    .position(|t| t.text == ";")
                    .map_or(toks.len(), |p| i + p);
                let mut trees = Vec::new();
                use_tree(&toks[i + 1..end], &mut Vec::new(), &mut trees);
                for (segments, line) in trees {
                    facts.paths.push(PathRef {
                        scope: scope_of(&scope),
                        segments,
                        line,
                        reexport,
                        test: in_test(&scope),
                    });
                }
                i = end + 1;
                continue;
            }
            _ => {}
        }
        if ITEM_KEYWORDS.contains(&t)
            && is_pub_before(toks, i)
            && let Some(name) = toks.get(i + 1).filter(|n| is_ident(&n.text))
        {
            facts.items.insert((scope_of(&scope), name.text.clone()));
        }
        // A path in the code: `a::b::c` not preceded by `::` or `.`.
        if is_ident(t)
            && toks.get(i + 1).is_some_and(|n| n.text == "::")
            && !(i > 0 && matches!(toks[i - 1].text.as_str(), "::" | "."))
        {
            let mut segments = vec![t.to_owned()];
            let mut j = i + 1;
            while toks.get(j).is_some_and(|n| n.text == "::")
                && toks.get(j + 1).is_some_and(|n| is_ident(&n.text))
            {
                segments.push(toks[j + 1].text.clone());
                j += 2;
            }
            facts.paths.push(PathRef {
                scope: scope_of(&scope),
                segments,
                line: toks[i].line,
                reexport: false,
                test: in_test(&scope),
            });
            i = j;
            continue;
        }
        i += 1;
    }
    facts
}

/// Whether `mod` at `i` is preceded by `#[cfg(test)]`.
fn is_cfg_test_before(toks: &[Tok], i: usize) -> bool {
    let want = ["#", "[", "cfg", "(", "test", ")", "]"];
    i >= want.len()
        && toks[i - want.len()..i]
            .iter()
            .zip(want)
            .all(|(t, w)| t.text == w)
}

fn is_ident(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
}

/// Whether the item at `i` is declared `pub` (`pub`, `pub(crate)`, …).
fn is_pub_before(toks: &[Tok], i: usize) -> bool {
    let prev = |k: usize| i.checked_sub(k).map(|j| toks[j].text.as_str());
    match prev(1) {
        Some("pub") => true,
        Some(")") => (2..6).any(|k| prev(k) == Some("(") && prev(k + 1) == Some("pub")),
        // `pub unsafe fn`, `pub async fn`, `pub const fn`, `pub extern "C" fn`.
        Some("unsafe" | "async" | "const" | "extern") => is_pub_before(toks, i - 1),
        _ => false,
    }
}

/// Expands a `use` tree (`a::{b, c::{d as e, *}}`) into its full paths.
fn use_tree(toks: &[Tok], prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    let mut i = 0;
    let depth_at_start = prefix.len();
    let mut line = toks.first().map_or(0, |t| t.line);
    while i < toks.len() {
        let t = &toks[i];
        match t.text.as_str() {
            "::" => {}
            "{" => {
                // The group runs to its matching brace; each member is a tree.
                let mut depth = 0;
                let mut start = i + 1;
                let mut j = i;
                while j < toks.len() {
                    match toks[j].text.as_str() {
                        "{" => depth += 1,
                        "}" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        "," if depth == 1 => {
                            use_tree(&toks[start..j], prefix, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                use_tree(&toks[start..j.min(toks.len())], prefix, out);
                prefix.truncate(depth_at_start);
                return;
            }
            "as" => {
                i += 2;
                continue;
            }
            "*" => {
                prefix.push("*".into());
                line = t.line;
            }
            s if is_ident(s) => {
                prefix.push(s.to_owned());
                line = t.line;
            }
            _ => {}
        }
        i += 1;
    }
    if prefix.len() > depth_at_start || (!prefix.is_empty() && !toks.is_empty()) {
        out.push((prefix.clone(), line));
    }
    prefix.truncate(depth_at_start);
}

/// One import of one file by another.
#[derive(Debug)]
struct Edge {
    /// The importing file's module.
    from: String,
    line: usize,
    /// The module imported, and the module of its file.
    to: String,
    to_file: String,
    /// Written in a `#[cfg(test)]` module.
    test: bool,
}

/// One crate: its modules (each in a file), the facts of each file.
struct Crate {
    /// Module path (`""` for the root, `kernel::pins`) → file (relative
    /// to the workspace root, for messages).
    files: BTreeMap<String, String>,
    /// Module path → the file that holds it (inline modules included).
    module_file: BTreeMap<String, String>,
    /// Modules whose file is a folder's `mod.rs` or the crate root.
    folders: BTreeSet<String>,
    facts: BTreeMap<String, FileFacts>,
    /// Whether this is the binary (whose `geowall::` paths leave it).
    is_bin: bool,
}

fn join(parts: &[String]) -> String {
    parts.join("::")
}

fn split(module: &str) -> Vec<String> {
    if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    }
}

impl Crate {
    fn load(root: &Path, crate_root: &Path) -> Result<Crate> {
        let mut krate = Crate {
            files: BTreeMap::new(),
            module_file: BTreeMap::new(),
            folders: BTreeSet::new(),
            facts: BTreeMap::new(),
            is_bin: crate_root.file_name().is_some_and(|n| n == "main.rs"),
        };
        let mut todo: Vec<(String, PathBuf, bool)> = vec![(String::new(), crate_root.into(), true)];
        while let Some((module, path, is_folder)) = todo.pop() {
            let src = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let facts = read_file(&tokenize(&src));
            let shown = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let dir = if is_folder {
                path.parent().expect("a file's folder").to_path_buf()
            } else {
                path.with_extension("")
            };
            for (scope, name) in &facts.file_mods {
                let mut sub = dir.clone();
                for s in scope {
                    sub.push(s);
                }
                let mut child = split(&module);
                child.extend(scope.iter().cloned());
                child.push(name.clone());
                let flat = sub.join(format!("{name}.rs"));
                let folder = sub.join(name).join("mod.rs");
                let (file, folder_mod) = if flat.exists() {
                    (flat, false)
                } else if folder.exists() {
                    (folder, true)
                } else {
                    bail!("{shown}: no file for `mod {name};`");
                };
                todo.push((join(&child), file, folder_mod));
            }
            for inline in &facts.inline_mods {
                let mut m = split(&module);
                m.extend(inline.iter().cloned());
                krate.module_file.insert(join(&m), module.clone());
            }
            if is_folder {
                krate.folders.insert(module.clone());
            }
            krate.module_file.insert(module.clone(), module.clone());
            krate.files.insert(module.clone(), shown);
            krate.facts.insert(module, facts);
        }
        Ok(krate)
    }

    /// Whether `module` (a full path) is a module of this crate.
    fn is_module(&self, module: &[String]) -> bool {
        self.module_file.contains_key(&join(module))
    }

    /// The absolute form of a path written in `scope` of file module
    /// `file`; None when it leaves the crate (std, other crates).
    fn absolute(&self, file: &str, path: &PathRef) -> Option<Vec<String>> {
        let mut here = split(file);
        here.extend(path.scope.iter().cloned());
        let segs = &path.segments;
        let first = segs.first()?.as_str();
        let mut out = match first {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here.clone(),
            _ => {
                let mut child = here.clone();
                child.push(first.to_owned());
                if self.is_module(&child) {
                    here.clone()
                } else {
                    return None;
                }
            }
        };
        let mut rest = &segs[..];
        match first {
            "crate" | "self" => rest = &segs[1..],
            _ => {}
        }
        while rest.first().is_some_and(|s| s == "super") {
            out.pop()?;
            rest = &rest[1..];
        }
        out.extend(rest.iter().cloned());
        Some(out)
    }

    /// The module a full path leads to, following re-exports: `(module,
    /// rest)` where `module` is the innermost module of the path.
    fn module_of(&self, path: &[String], hops: usize) -> Option<String> {
        let mut n = path.len();
        while n > 0 && !self.is_module(&path[..n]) {
            n -= 1;
        }
        let module = join(&path[..n]);
        let Some(item) = path.get(n) else {
            return Some(module);
        };
        if hops < 8
            && let Some(target) = self.reexport(&module, item)
        {
            let mut next = target;
            next.extend(path[n + 1..].iter().cloned());
            return self.module_of(&next, hops + 1).or(Some(module));
        }
        Some(module)
    }

    /// Where module `module` re-exports `item` from, if it does.
    fn reexport(&self, module: &str, item: &str) -> Option<Vec<String>> {
        let file = self.module_file.get(module)?;
        let facts = self.facts.get(file)?;
        let inner = split(module)[split(file).len()..].to_vec();
        let mut glob = Vec::new();
        for p in facts
            .paths
            .iter()
            .filter(|p| p.reexport && p.scope == inner)
        {
            let last = p.segments.last()?;
            if last == item {
                return self.absolute(file, p);
            }
            if last == "*" {
                let mut from = self.absolute(file, p)?;
                from.pop();
                glob.push(from);
            }
        }
        glob.into_iter().find_map(|from| {
            let owner = self.module_file.get(&join(&from))?;
            let facts = self.facts.get(owner)?;
            let scope = from[split(owner).len()..].to_vec();
            if facts.items.contains(&(scope.clone(), item.to_owned())) || {
                let mut m = from.clone();
                m.push(item.to_owned());
                self.is_module(&m)
            } {
                let mut to = from;
                to.push(item.to_owned());
                Some(to)
            } else {
                None
            }
        })
    }

    /// Import edges between files. A folder module's re-exports of its own
    /// descendants are left out.
    fn edges(&self) -> Vec<Edge> {
        let mut out = Vec::new();
        for (file, facts) in &self.facts {
            for p in &facts.paths {
                let Some(abs) = self.absolute(file, p) else {
                    continue;
                };
                let Some(to) = self.module_of(&abs, 0) else {
                    continue;
                };
                let to_file = self.module_file[&to].clone();
                if &to_file == file {
                    continue;
                }
                let own_child = self.folders.contains(file)
                    && (file.is_empty() || to_file.starts_with(&format!("{file}::")));
                if p.reexport && own_child {
                    continue;
                }
                out.push(Edge {
                    from: file.clone(),
                    line: p.line,
                    to,
                    to_file,
                    test: p.test,
                });
            }
        }
        out
    }

    fn check(&self, layers: &Layers) -> Vec<Problem> {
        let mut problems = Vec::new();
        // The crate roots hold only declarations: they are in no layer.
        let layer_of = |module: &str| -> Option<&Layer> {
            if module.is_empty() {
                None
            } else {
                layers.of(module)
            }
        };
        let root_name = |m: &str| -> String {
            if m.is_empty() && self.is_bin {
                "main".into()
            } else {
                m.to_owned()
            }
        };
        for module in self.files.keys() {
            let name = root_name(module);
            if !name.is_empty() && layers.of(&name).is_none() {
                problems.push(Problem::Unplaced {
                    file: self.files[module].clone(),
                    module: name,
                });
            }
        }
        let edges = self.edges();
        for Edge { from, line, to, .. } in &edges {
            let (from_name, to_name) = (root_name(from), root_name(to));
            let (Some(fl), Some(tl)) = (layer_of(&from_name), layer_of(&to_name)) else {
                continue;
            };
            if tl.rank > fl.rank {
                let problem = Problem::Upward {
                    file: self.files[from].clone(),
                    line: *line,
                    from: from_name,
                    from_layer: fl.clone(),
                    to: to_name,
                    to_layer: tl.clone(),
                };
                // `use a::{B, C}` names the module twice on one line.
                if problems.last() != Some(&problem) {
                    problems.push(problem);
                }
            }
        }
        problems.extend(self.cycles(&edges));
        problems
    }

    /// One cycle per strongly connected group of files (Tarjan), each
    /// shown as a loop through the group. Imports of test modules are left
    /// out: a test may drive its neighbour (the log writer's tests verify
    /// what it wrote; the verifier's tests write logs to check).
    fn cycles(&self, edges: &[Edge]) -> Vec<Problem> {
        let mut next: BTreeMap<&str, Vec<(&str, usize, &str)>> = BTreeMap::new();
        for e in edges.iter().filter(|e| !e.test) {
            next.entry(e.from.as_str()).or_default().push((
                e.to_file.as_str(),
                e.line,
                e.to.as_str(),
            ));
        }
        let nodes: Vec<&str> = self.files.keys().map(String::as_str).collect();
        let groups = strongly_connected(&nodes, |n| {
            next.get(n)
                .map(|v| v.iter().map(|(f, _, _)| *f).collect())
                .unwrap_or_default()
        });
        let mut out = Vec::new();
        for group in groups.into_iter().filter(|g| g.len() > 1) {
            let members: BTreeSet<&str> = group.iter().copied().collect();
            // Walk from the first file, always to a member, until a file
            // comes round again: that loop is the cycle shown.
            let start = *members.iter().next().expect("non-empty");
            let mut walk: Vec<(&str, usize, &str)> = Vec::new();
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let mut at = start;
            loop {
                if let Some(&i) = seen.get(at) {
                    walk.drain(..i);
                    break;
                }
                seen.insert(at, walk.len());
                let Some(&(to_file, line, to)) = next
                    .get(at)
                    .and_then(|v| v.iter().find(|(f, _, _)| members.contains(f)))
                else {
                    break;
                };
                walk.push((at, line, to));
                at = to_file;
            }
            out.push(Problem::Cycle {
                steps: walk
                    .into_iter()
                    .map(|(f, line, to)| (self.files[f].clone(), line, to.to_owned()))
                    .collect(),
                files: members.iter().map(|m| self.files[*m].clone()).collect(),
            });
        }
        out
    }
}

/// Tarjan's strongly connected components.
fn strongly_connected<'a>(
    nodes: &[&'a str],
    next: impl Fn(&str) -> Vec<&'a str>,
) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, s: &mut State<'a>, next: &dyn Fn(&str) -> Vec<&'a str>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in next(v) {
            if !s.index.contains_key(w) {
                visit(w, s, next);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w);
                if w == v {
                    break;
                }
            }
            s.groups.push(group);
        }
    }
    let mut s = State {
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for n in nodes {
        if !s.index.contains_key(n) {
            visit(n, &mut s, &next);
        }
    }
    s.groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(src: &str) -> Vec<(Vec<String>, String)> {
        read_file(&tokenize(src))
            .paths
            .into_iter()
            .map(|p| (p.scope, p.segments.join("::")))
            .collect()
    }

    #[test]
    fn use_trees_expand_and_literals_and_comments_are_skipped() {
        let src = r##"
            use crate::{a::{b, c as d}, e::*};
            pub use self::f::G;
            // use crate::commented;
            /* use crate::blocked; */
            fn x() { let s = "crate::in_a_string"; let r = r#"crate::raw"#; let c = '"'; }
            fn y<'a>(v: &'a str) -> bool { crate::h::i(v) && super::j::K.is(v) }
            mod tests { use super::*; }
        "##;
        let got = paths(src);
        let none: Vec<String> = Vec::new();
        assert_eq!(
            got,
            vec![
                (none.clone(), "crate::a::b".into()),
                (none.clone(), "crate::a::c".into()),
                (none.clone(), "crate::e::*".into()),
                (none.clone(), "self::f::G".into()),
                (none.clone(), "crate::h::i".into()),
                (none.clone(), "super::j::K".into()),
                (vec!["tests".to_owned()], "super::*".into()),
            ]
        );
    }

    #[test]
    fn pub_items_and_reexports_are_seen() {
        let facts = read_file(&tokenize(
            "pub(crate) use pins::Pins;\nuse x::Y;\npub fn f() {}\npub(super) struct S;\nfn g() {}\n",
        ));
        assert!(facts.paths[0].reexport && !facts.paths[1].reexport);
        let names: Vec<&str> = facts.items.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["S", "f"]);
    }

    #[test]
    fn the_table_gives_each_module_its_layer() {
        let layers = Layers::parse(
            "# x\n\n| layer | name | modules | what |\n|---|---|---|---|\n\
             | 0 | vocabulary | `vocab` | units |\n| 4 | kernel I/O | `kernel`, `kernel::x` | bpf |\n",
        )
        .unwrap();
        assert_eq!(layers.of("vocab::units").unwrap().rank, 0);
        assert_eq!(layers.of("kernel::pins").unwrap().name, "kernel I/O");
        assert!(layers.of("daemon").is_none());
    }

    /// A crate in a temporary folder: (relative path, contents).
    fn fixture(files: &[(&str, &str)]) -> (PathBuf, Crate) {
        let root = std::env::temp_dir().join(format!(
            "xtask-layers-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let krate = Crate::load(&root, &root.join("src/lib.rs")).unwrap();
        (root, krate)
    }

    #[test]
    fn an_upward_import_and_a_cycle_are_reported_and_reexports_are_not_imports() {
        let (root, krate) = fixture(&[
            ("src/lib.rs", "pub mod low;\npub mod high;\n"),
            ("src/low/mod.rs", "mod a;\nmod b;\npub use a::A;\n"),
            ("src/low/a.rs", "use super::b::B;\npub struct A;\n"),
            (
                "src/low/b.rs",
                "pub struct B;\nfn f() { let _ = crate::low::A; }\nfn g() { crate::high::h(); }\n",
            ),
            ("src/high.rs", "use crate::low::A;\npub fn h() {}\n"),
        ]);
        let layers = Layers::parse(
            "| layer | name | modules |\n|---|---|---|\n| 0 | low | `low` |\n| 1 | high | `high` |\n",
        )
        .unwrap();
        let problems: Vec<String> = krate.check(&layers).iter().map(|p| p.to_string()).collect();
        std::fs::remove_dir_all(root).unwrap();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(
            problems[0],
            "src/low/b.rs:3: `low::b` (layer 0, low) imports `high` (layer 1, high): \
             a module imports only from its own layer and those below it"
        );
        assert!(
            problems[1].starts_with(
                "import cycle: src/low/a.rs:1 imports `low::b` → src/low/b.rs:2 imports `low::a`"
            ),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn imports_of_test_modules_make_no_cycle() {
        let (root, krate) = fixture(&[
            ("src/lib.rs", "pub mod log;\npub mod verify;\n"),
            (
                "src/log.rs",
                "pub struct Log;\n#[cfg(test)]\nmod tests {\n    use crate::verify::check;\n}\n",
            ),
            (
                "src/verify.rs",
                "use crate::log::Log;\npub fn check(_: Log) {}\n",
            ),
        ]);
        let layers = Layers::parse(
            "| layer | name | modules |\n|---|---|---|\n| 5 | audit | `log`, `verify` |\n",
        )
        .unwrap();
        let problems = krate.check(&layers);
        std::fs::remove_dir_all(root).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(krate.edges().iter().any(|e| e.test && e.to == "verify"));
    }
}
