//! The documentation stays true: counts it states match the code, and its links stay inside
//! the repository (a clone has no `../shared`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn redteam_doc_counts_the_real_episodes_and_vectors() {
    let doc = std::fs::read_to_string(root().join("docs/redteam.md")).unwrap();
    let vectors = enact_redteam::vectors::VECTORS;
    let applicable = vectors
        .iter()
        .filter(|v| v.not_applicable.is_none())
        .count();
    let episodes = enact_redteam::attacks::attacks().len();
    let stated = format!("{episodes} episodes over the {applicable} applicable vectors");
    assert!(
        doc.contains(&stated),
        "docs/redteam.md should say \"{stated}\""
    );
    let catalogue = format!("catalogue of {} vectors", vectors.len());
    assert!(
        doc.contains(&catalogue),
        "docs/redteam.md should say \"{catalogue}\""
    );
}

/// Every relative link `](target)` of the top-level pages and docs/ names a file in the repo.
#[test]
fn documentation_links_stay_inside_the_repository() {
    let root = root().canonicalize().unwrap();
    let mut pages = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = page.parent().unwrap().join(target);
            let inside = resolved.canonicalize().is_ok_and(|p| p.starts_with(&root));
            if !inside {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
        if text.contains("../shared") && page.ends_with("redteam.md") {
            broken.push(format!("{}: ../shared", page.display()));
        }
    }
    assert!(
        broken.is_empty(),
        "links that leave the repository or lead nowhere: {broken:?}"
    );
}
