//! enact-sandbox (placeholder written by the lead so the workspace loads; replace freely).
