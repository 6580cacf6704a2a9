//! Tidy tests: repository rules that no compiler checks, read from each
//! member crate's `Cargo.toml` and sources (every crate uses the workspace
//! lints, every library opens with a crate doc, internal dependencies point
//! one way, the relay path's crates use only the external crates chosen for
//! them, and no file on the relay path grows past [`RELAY_PATH_MAX_LINES`]).
//!
//! Crates named in [`LAYERS`] that do not exist yet are skipped; a member
//! that is not in [`LAYERS`] fails until someone decides where it belongs.

use std::fs;
use std::path::{Path, PathBuf};

/// Which internal crates a crate may depend on.
enum Allowed {
    /// Only these.
    Only(&'static [&'static str]),
    /// Any internal crate (the top of the graph).
    Any,
}

/// The layering of the workspace: each crate and the internal crates its
/// `[dependencies]` and `[build-dependencies]` may name. Dev-dependencies
/// are not checked: tests may wire layers together (a server test may use
/// the client and the agent as doubles) without changing what ships.
const LAYERS: &[(&str, Allowed)] = &[
    ("relay-codec", Allowed::Only(&[])),
    ("relay-ring", Allowed::Only(&[])),
    ("relay-router", Allowed::Only(&["relay-codec"])),
    (
        "relay-server",
        Allowed::Only(&["relay-codec", "relay-ring", "relay-router"]),
    ),
    ("relay-agent", Allowed::Only(&["relay-codec"])),
    ("relay-client", Allowed::Only(&["relay-codec"])),
    ("relay-cli", Allowed::Any),
    // Benchmarks drive the whole stack (relay, ring, client, agent) side by side.
    (
        "relay-bench",
        Allowed::Only(&[
            "relay-codec",
            "relay-ring",
            "relay-router",
            "relay-server",
            "relay-client",
            "relay-agent",
        ]),
    ),
    // The microVM proof boots the agent and drives it with the client (and
    // with bare frames for its raw baseline).
    (
        "relay-vm",
        Allowed::Only(&["relay-agent", "relay-client", "relay-codec"]),
    ),
    // Test doubles for every crate's dev-dependencies: below all that use them.
    (
        "relay-test-support",
        Allowed::Only(&["relay-codec", "relay-ring"]),
    ),
    ("xtask", Allowed::Only(&[])),
];

/// The external crates each crate on the relay path (and the two peers
/// that speak to it) may depend on, build and target tables included. A
/// crate not named here may use any. The point is what stays out: no
/// tokio in the codec or the router, no allocator or runtime in the ring.
const EXTERNAL: &[(&str, &[&str])] = &[
    (
        "relay-codec",
        &[
            "bytes",
            "ciborium",
            "serde",
            "serde_bytes",
            "thiserror",
            "tokio-util",
        ],
    ),
    ("relay-ring", &["libc", "loom", "thiserror", "tokio"]),
    ("relay-router", &["thiserror"]),
    (
        "relay-server",
        &[
            "bytes",
            "libc",
            "serde",
            "serde_json",
            "thiserror",
            "tokio",
            "tokio-util",
            "tracing",
        ],
    ),
    (
        "relay-agent",
        &[
            "bytes",
            "clap",
            "futures-util",
            "portable-pty",
            "rustix",
            "thiserror",
            "tokio",
            "tokio-util",
            "tracing",
            "tracing-subscriber",
        ],
    ),
    (
        "relay-client",
        &[
            "bytes",
            "futures-util",
            "thiserror",
            "tokio",
            "tokio-util",
            "tracing",
        ],
    ),
];

/// The crates whose code every relayed byte runs through.
const RELAY_PATH: &[&str] = &["relay-codec", "relay-ring", "relay-router", "relay-server"];

/// Most lines of code (before a file's `#[cfg(test)]` part) in one source
/// file of the relay path: one job per file.
const RELAY_PATH_MAX_LINES: usize = 500;

/// A `Cargo.toml` read just far enough for these rules: each table's
/// header and its `key = value` lines, values kept as raw text.
#[derive(Debug, Default)]
struct Manifest {
    tables: Vec<(String, Vec<(String, String)>)>,
}

impl Manifest {
    fn parse(text: &str) -> Manifest {
        let mut tables = vec![(String::new(), Vec::new())];
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                let header = line.trim_matches(|c| c == '[' || c == ']').trim();
                tables.push((header.to_owned(), Vec::new()));
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let mut value = value.trim().to_owned();
            // A multi-line array goes on until its brackets balance.
            while value.matches('[').count() > value.matches(']').count() {
                let Some(next) = lines.next() else { break };
                value.push(' ');
                value.push_str(strip_comment(next).trim());
            }
            let key = key.trim().trim_matches('"').to_owned();
            if let Some((_, entries)) = tables.last_mut() {
                entries.push((key, value));
            }
        }
        Manifest { tables }
    }

    fn table(&self, header: &str) -> impl Iterator<Item = &(String, String)> {
        self.tables
            .iter()
            .filter(move |(h, _)| h == header)
            .flat_map(|(_, entries)| entries)
    }

    fn get(&self, header: &str, key: &str) -> Option<&str> {
        self.table(header)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn package_name(&self) -> Option<String> {
        self.get("package", "name").map(unquote)
    }

    /// Whether the crate opts into `[workspace.lints]`, in any of the
    /// three spellings TOML allows.
    fn uses_workspace_lints(&self) -> bool {
        self.get("lints", "workspace") == Some("true")
            || self.get("", "lints.workspace") == Some("true")
            || self
                .get("", "lints")
                .is_some_and(|v| inline_get(v, "workspace") == Some("true"))
    }

    /// Names of the packages this crate depends on, outside dev-dependencies
    /// (renames resolved through `package = "..."`).
    fn dependencies(&self) -> Vec<String> {
        let mut deps = Vec::new();
        for (header, entries) in &self.tables {
            let kind = header.rsplit('.').next().unwrap_or_default();
            let is_dep_table = matches!(kind, "dependencies" | "build-dependencies")
                && (!header.contains('.') || header.starts_with("target."));
            if is_dep_table {
                for (key, value) in entries {
                    let name = key.split('.').next().unwrap_or(key);
                    let renamed = inline_get(value, "package").map(unquote);
                    deps.push(renamed.unwrap_or_else(|| name.to_owned()));
                }
                continue;
            }
            // `[dependencies.NAME]` and `[target.X.dependencies.NAME]`.
            for table in ["dependencies.", "build-dependencies."] {
                let Some(at) = header.find(table) else {
                    continue;
                };
                let before = &header[..at];
                if !(before.is_empty() || before.starts_with("target.") && before.ends_with('.')) {
                    continue;
                }
                let name = &header[at + table.len()..];
                let renamed = entries
                    .iter()
                    .find(|(k, _)| k == "package")
                    .map(|(_, v)| unquote(v));
                deps.push(renamed.unwrap_or_else(|| name.trim_matches('"').to_owned()));
            }
        }
        deps
    }

    /// The path of the library root, if the crate has a library target.
    fn lib_path(&self, dir: &Path) -> Option<PathBuf> {
        if let Some(path) = self.get("lib", "path") {
            return Some(dir.join(unquote(path)));
        }
        let default = dir.join("src/lib.rs");
        default.exists().then_some(default)
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(value: &str) -> String {
    value.trim().trim_matches('"').to_owned()
}

/// Reads `key` from an inline table such as `{ workspace = true, package = "x" }`.
fn inline_get<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    let inner = value.trim().strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The workspace's member crates that exist: directory and manifest.
fn members(root: &Path) -> Vec<(PathBuf, Manifest)> {
    let text = fs::read_to_string(root.join("Cargo.toml")).expect("the root Cargo.toml");
    let root_manifest = Manifest::parse(&text);
    let list = root_manifest
        .get("workspace", "members")
        .expect("a [workspace] members list");
    list.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(unquote)
        .filter(|m| !m.is_empty())
        .filter_map(|member| {
            let dir = root.join(&member);
            let text = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            Some((dir, Manifest::parse(&text)))
        })
        .collect()
}

/// Whether a Rust file opens with a `//!` doc line (blank lines aside).
fn opens_with_crate_doc(source: &str) -> bool {
    source
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("//!"))
}

/// Internal dependencies of `package` that [`LAYERS`] forbids, or the
/// complaint that `package` is not in [`LAYERS`] at all.
fn forbidden_edges(package: &str, deps: &[String], internal: &[String]) -> Vec<String> {
    let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == package) else {
        return vec![format!(
            "{package} is not in LAYERS (xtask/src/tidy.rs): add it with the internal crates it may use"
        )];
    };
    let Allowed::Only(allowed) = allowed else {
        return Vec::new();
    };
    deps.iter()
        .filter(|dep| internal.contains(dep) && !allowed.contains(&dep.as_str()))
        .map(|dep| format!("{package} must not depend on {dep}"))
        .collect()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn fail_on(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "tidy found {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_workspace_lists_its_member_crates() {
    let members = members(&workspace_root());
    let names: Vec<String> = members
        .iter()
        .filter_map(|(_, m)| m.package_name())
        .collect();
    assert!(names.iter().any(|n| n == "relay-codec"), "{names:?}");
    assert!(names.iter().any(|n| n == "xtask"), "{names:?}");
}

#[test]
fn every_member_crate_uses_the_workspace_lints() {
    let problems = members(&workspace_root())
        .into_iter()
        .filter(|(_, manifest)| !manifest.uses_workspace_lints())
        .map(|(dir, _)| format!("{} has no `[lints] workspace = true`", dir.display()))
        .collect();
    fail_on(problems);
}

#[test]
fn every_library_crate_opens_with_a_crate_doc() {
    let mut problems = Vec::new();
    for (dir, manifest) in members(&workspace_root()) {
        let Some(lib) = manifest.lib_path(&dir) else {
            continue;
        };
        match fs::read_to_string(&lib) {
            Ok(source) if opens_with_crate_doc(&source) => {}
            Ok(_) => problems.push(format!(
                "{} does not open with a `//!` crate doc",
                lib.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", lib.display())),
        }
    }
    fail_on(problems);
}

#[test]
fn internal_dependencies_follow_the_layering() {
    let members = members(&workspace_root());
    let internal: Vec<String> = members
        .iter()
        .filter_map(|(_, m)| m.package_name())
        .collect();
    let mut problems = Vec::new();
    for (dir, manifest) in &members {
        let Some(name) = manifest.package_name() else {
            problems.push(format!("{}/Cargo.toml has no package name", dir.display()));
            continue;
        };
        problems.extend(forbidden_edges(&name, &manifest.dependencies(), &internal));
    }
    fail_on(problems);
}

/// External dependencies of `package` that [`EXTERNAL`] does not allow.
fn unexpected_externals(package: &str, deps: &[String], internal: &[String]) -> Vec<String> {
    let Some((_, allowed)) = EXTERNAL.iter().find(|(name, _)| *name == package) else {
        return Vec::new();
    };
    deps.iter()
        .filter(|dep| !internal.contains(dep) && !allowed.contains(&dep.as_str()))
        .map(|dep| format!("{package} depends on {dep}, which it is not meant to use"))
        .collect()
}

/// Lines of a source file before its test module.
fn code_lines(source: &str) -> usize {
    source
        .lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .count()
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn relay_path_crates_use_only_their_chosen_external_crates() {
    let members = members(&workspace_root());
    let internal: Vec<String> = members
        .iter()
        .filter_map(|(_, m)| m.package_name())
        .collect();
    let mut problems = Vec::new();
    for (_, manifest) in &members {
        if let Some(name) = manifest.package_name() {
            problems.extend(unexpected_externals(
                &name,
                &manifest.dependencies(),
                &internal,
            ));
        }
    }
    fail_on(problems);
}

#[test]
fn no_source_file_on_the_relay_path_holds_more_than_one_jobs_worth_of_code() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for krate in RELAY_PATH {
        for path in sources(&root.join(krate).join("src")) {
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            // Test-only code: the router's reference model and unit-test files.
            let test_only = relative.components().any(|c| c.as_os_str() == "model")
                || path.file_name().is_some_and(|n| n == "tests.rs");
            if test_only {
                continue;
            }
            let lines = fs::read_to_string(&path).map_or(0, |s| code_lines(&s));
            if lines > RELAY_PATH_MAX_LINES {
                problems.push(format!(
                    "{} has {lines} lines of code (at most {RELAY_PATH_MAX_LINES})",
                    relative.display()
                ));
            }
        }
    }
    fail_on(problems);
}

#[test]
fn a_crate_reaching_for_an_unchosen_external_crate_is_reported() {
    let internal = vec!["relay-codec".to_owned()];
    let deps = vec![
        "relay-codec".to_owned(),
        "thiserror".to_owned(),
        "tokio".to_owned(),
    ];
    assert_eq!(
        unexpected_externals("relay-router", &deps, &internal),
        vec!["relay-router depends on tokio, which it is not meant to use"]
    );
    assert!(unexpected_externals("relay-cli", &deps, &internal).is_empty());
    assert_eq!(code_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
}

#[test]
fn the_manifest_reader_finds_dependencies_in_every_form() {
    let manifest = Manifest::parse(
        r#"
[package]
name = "relay-x" # a comment

[dependencies]
relay-codec.workspace = true
bytes = { workspace = true }
codec2 = { package = "relay-router", path = "../relay-router" }

[dependencies.relay-ring]
path = "../relay-ring"

[target.'cfg(unix)'.dependencies]
libc = "0.2"

[build-dependencies]
relay-server = { path = "../relay-server" }

[dev-dependencies]
relay-client.workspace = true

[target.'cfg(unix)'.dev-dependencies.relay-agent]
path = "../relay-agent"

[lints]
workspace = true
"#,
    );
    assert_eq!(manifest.package_name().as_deref(), Some("relay-x"));
    assert!(manifest.uses_workspace_lints());
    let mut deps = manifest.dependencies();
    deps.sort();
    assert_eq!(
        deps,
        [
            "bytes",
            "libc",
            "relay-codec",
            "relay-ring",
            "relay-router",
            "relay-server"
        ]
    );
}

#[test]
fn lints_are_recognised_in_each_spelling_and_missed_when_absent() {
    assert!(Manifest::parse("lints.workspace = true\n").uses_workspace_lints());
    assert!(Manifest::parse("lints = { workspace = true }\n").uses_workspace_lints());
    assert!(!Manifest::parse("[lints]\nworkspace = false\n").uses_workspace_lints());
    assert!(!Manifest::parse("[package]\nname = \"a\"\n").uses_workspace_lints());
    assert!(!Manifest::parse("[lints.rust]\nworkspace = true\n").uses_workspace_lints());
}

#[test]
fn a_forbidden_or_unplaced_crate_is_reported() {
    let internal: Vec<String> = ["relay-codec", "relay-router", "relay-server", "relay-x"]
        .map(String::from)
        .to_vec();
    let deps = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(
        forbidden_edges("relay-router", &deps(&["relay-codec", "bytes"]), &internal).is_empty()
    );
    assert_eq!(
        forbidden_edges("relay-codec", &deps(&["relay-router"]), &internal),
        ["relay-codec must not depend on relay-router"]
    );
    assert_eq!(
        forbidden_edges("relay-router", &deps(&["relay-server"]), &internal).len(),
        1
    );
    assert!(
        forbidden_edges("relay-cli", &deps(&["relay-server", "relay-x"]), &internal).is_empty()
    );
    assert!(forbidden_edges("relay-x", &[], &internal)[0].contains("not in LAYERS"));
}

#[test]
fn a_crate_doc_must_come_first() {
    assert!(opens_with_crate_doc(
        "\n//! The crate.\n#![forbid(unsafe_code)]\n"
    ));
    assert!(!opens_with_crate_doc(
        "#![forbid(unsafe_code)]\n//! Late.\n"
    ));
    assert!(!opens_with_crate_doc("// plain comment\n"));
    assert!(!opens_with_crate_doc(""));
}
