//! The crate layering that ARCHITECTURE.md states, checked against the Cargo.toml files (read
//! directly: hermetic, no `cargo metadata` run). Only normal `[dependencies]` count; tests may
//! use anything through `[dev-dependencies]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every workspace member's name → the enact crates among its normal dependencies.
fn enact_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let workspace: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let members = workspace["workspace"]["members"].as_array().unwrap();
    let mut out = BTreeMap::new();
    for m in members {
        let manifest: toml::Table = toml::from_str(
            &std::fs::read_to_string(root().join(m.as_str().unwrap()).join("Cargo.toml")).unwrap(),
        )
        .unwrap();
        let name = manifest["package"]["name"].as_str().unwrap().to_string();
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter(|k| k.starts_with("enact-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, deps);
    }
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_layering_rules_hold() {
    let deps = enact_dependencies();
    assert!(deps.len() >= 10, "workspace members not found: {deps:?}");
    assert_eq!(
        deps["enact-core"],
        set(&[]),
        "enact-core depends on no enact crate"
    );
    assert_eq!(
        deps["enact-sandbox"],
        set(&[]),
        "enact-sandbox depends on no enact crate"
    );
    assert_eq!(
        deps["enact-agent"],
        set(&["enact-core"]),
        "enact-agent depends only on enact-core"
    );
    assert_eq!(
        deps["enact-team"],
        set(&["enact-core", "enact-agent"]),
        "enact-team depends only on enact-core and enact-agent: environments and models reach it through RoleAgents and ChildEnvs"
    );
    for (name, d) in &deps {
        assert!(
            !d.contains("enact-cli"),
            "{name} depends on enact-cli; nothing may"
        );
        assert!(
            !d.contains("enact-testkit"),
            "{name} depends on enact-testkit outside [dev-dependencies]; it is for tests only"
        );
    }
    // Implementations never use the agent loop, except the episode runners: the red-team
    // harness, the rollout engine, teams of agents (a parent runs its sub-agents) and the CLI.
    for (name, d) in &deps {
        if d.contains("enact-agent") {
            assert!(
                ["enact-redteam", "enact-rollout", "enact-team", "enact-cli"]
                    .contains(&name.as_str()),
                "{name} depends on enact-agent; only the red-team harness, the rollout engine, enact-team and the CLI run episodes"
            );
        }
    }
}

/// The "depends on" column of ARCHITECTURE.md's crate table, per crate (`None` for "all").
fn documented_dependencies() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `enact-")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_string();
        let column = *cells.last().unwrap();
        let documented = match column {
            "all" => None,
            "—" | "-" | "" => Some(BTreeSet::new()),
            list => Some(
                list.split(',')
                    .map(|s| format!("enact-{}", s.trim().trim_matches('`')))
                    .collect(),
            ),
        };
        out.insert(name, documented);
    }
    out
}

#[test]
fn architecture_md_lists_every_crate_with_its_real_dependencies() {
    let real = enact_dependencies();
    let documented = documented_dependencies();
    let real_names: BTreeSet<&String> = real.keys().collect();
    let documented_names: BTreeSet<&String> = documented.keys().collect();
    assert_eq!(
        real_names, documented_names,
        "ARCHITECTURE.md's crate table and the workspace members differ"
    );
    for (name, doc) in &documented {
        if let Some(doc) = doc {
            assert_eq!(
                &real[name], doc,
                "ARCHITECTURE.md says {name} depends on {doc:?}, its Cargo.toml says {:?}",
                real[name]
            );
        }
    }
}
