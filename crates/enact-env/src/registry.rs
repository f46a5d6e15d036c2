//! The registry: every environment by name, for the CLI, the remote server and the red team.

use std::sync::Arc;

use crate::error::FindSuiteError;
use crate::suite::Suite;

/// The built-in suites by name.
pub fn registry() -> Vec<Arc<dyn Suite>> {
    vec![
        Arc::new(crate::calc::CalcSuite),
        // environment kinds: code and shell (sandboxed, graded in a fresh sandbox)
        Arc::new(crate::code::CodeSuite),
        Arc::new(crate::shell::ShellSuite),
        // environment kinds: search, stateful API, noisy tools
        Arc::new(crate::search::SearchSuite::default()),
        Arc::new(crate::multisearch::MultiSearchSuite::default()),
        Arc::new(crate::api::ApiSuite),
        Arc::new(crate::noisy::NoisySuite::new(
            Arc::new(crate::calc::CalcSuite),
            crate::noisy::NoiseConfig::standard(),
        )),
        Arc::new(crate::noisy::NoisySuite::new(
            Arc::new(crate::api::ApiSuite),
            crate::noisy::NoiseConfig::standard(),
        )),
    ]
}

/// Finds a suite by name, or says which exist. `tasks:DIR` loads a directory of task files
/// (see `docs/task-files.md`).
pub fn find_suite(name: &str) -> Result<Arc<dyn Suite>, FindSuiteError> {
    if let Some(dir) = name.strip_prefix("tasks:") {
        let suite = crate::taskfile::TaskFileSuite::load(std::path::Path::new(dir))?;
        return Ok(Arc::new(suite));
    }
    let all = registry();
    let available: Vec<String> = all.iter().map(|s| s.name().to_string()).collect();
    all.into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| FindSuiteError::Unknown {
            name: name.to_string(),
            available,
        })
}
