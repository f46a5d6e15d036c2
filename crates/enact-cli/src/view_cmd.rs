//! `enact view [RUN_DIR]`: the trajectory viewer, a local web server (axum on 127.0.0.1)
//! whose pages and stylesheet are rendered by `enact-eval` and embedded in the binary.
//!
//! Each episode file of the run is indexed once (byte offset and a light summary per line);
//! the list pages come from the index, an episode is read at its offset.
//!
//! Routes: `/` (the list; `file`, `offset`, `limit`, `env`, `success`, `flag`,
//! `termination`, `task`), `/episode/{file}/{n}`, and the same as JSON under
//! `/api/episodes` and `/api/episodes/{file}/{n}`.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use enact_eval::{EpisodeIndex, Filter};

#[derive(Args)]
pub struct ViewArgs {
    /// A run directory (default: the newest under runs/).
    run: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Episodes per page of the list.
    #[arg(long, default_value_t = 50)]
    page_size: usize,
}

struct Viewer {
    name: String,
    files: Vec<EpisodeIndex>,
    page_size: usize,
}

/// The newest run directory under `runs/`.
fn newest_run(root: &FsPath) -> Result<PathBuf> {
    let entries = std::fs::read_dir(root).with_context(|| {
        format!(
            "no run directory given and cannot read {}; pass one: enact view runs/<id>",
            root.display()
        )
    })?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .with_context(|| {
            format!(
                "{} holds no run directory; run enact eval first",
                root.display()
            )
        })
}

pub async fn run(args: ViewArgs) -> Result<()> {
    let dir = match args.run {
        Some(d) => d,
        None => newest_run(FsPath::new("runs"))?,
    };
    let paths = if dir.is_file() {
        vec![dir.clone()]
    } else {
        enact_eval::load::episode_files(&dir)
    };
    if paths.is_empty() {
        bail!(enact_eval::EvalError::NoEpisodes(dir));
    }
    let files = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|p| EpisodeIndex::build(p))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .context("the indexing thread failed")??;
    let episodes: usize = files.iter().map(|f| f.entries.len()).sum();
    let viewer = Arc::new(Viewer {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        files,
        page_size: args.page_size.max(1),
    });
    let app = Router::new()
        .route("/", get(list))
        .route("/episode/{file}/{n}", get(episode))
        .route("/api/episodes", get(api_list))
        .route("/api/episodes/{file}/{n}", get(api_episode))
        .route("/style.css", get(css))
        .with_state(viewer.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{}; pick another with --port (0: any free port)",
                args.port
            )
        })?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!(
        "enact view: http://{addr}/ ({episodes} episode(s) in {} file(s) of {}); Ctrl-C to stop",
        viewer.files.len(),
        dir.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the viewer's server failed")
}

/// The list's query: which file, which page, which filter.
struct ListQuery {
    file: usize,
    offset: usize,
    limit: Option<usize>,
    filter: Filter,
}

fn list_query(q: &HashMap<String, String>) -> ListQuery {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    ListQuery {
        file: get("file").and_then(|v| v.parse().ok()).unwrap_or(0),
        offset: get("offset").and_then(|v| v.parse().ok()).unwrap_or(0),
        limit: get("limit").and_then(|v| v.parse().ok()),
        filter: Filter {
            env: get("env"),
            success: get("success").and_then(|v| v.parse().ok()),
            flag: get("flag"),
            termination: get("termination"),
            task: get("task"),
        },
    }
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, what).into_response()
}

async fn list(State(v): State<Arc<Viewer>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let q = list_query(&q);
    let Some(index) = v.files.get(q.file) else {
        return not_found(format!("no file {}; the run has {}", q.file, v.files.len()));
    };
    let limit = q.limit.unwrap_or(v.page_size).clamp(1, 1000);
    let page = index.page(&q.filter, q.offset, limit);
    Html(enact_eval::html::list_page(
        &v.name, &v.files, q.file, &page, &q.filter, limit,
    ))
    .into_response()
}

async fn api_list(
    State(v): State<Arc<Viewer>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let q = list_query(&q);
    let Some(index) = v.files.get(q.file) else {
        return not_found(format!("no file {}; the run has {}", q.file, v.files.len()));
    };
    let limit = q.limit.unwrap_or(v.page_size).clamp(1, 1000);
    axum::Json(index.page(&q.filter, q.offset, limit)).into_response()
}

/// The stored JSON of one episode, read at its offset on a blocking thread.
async fn stored(v: &Arc<Viewer>, file: usize, n: usize) -> Result<String, Response> {
    if file >= v.files.len() {
        return Err(not_found(format!(
            "no file {file}; the run has {}",
            v.files.len()
        )));
    }
    let v = v.clone();
    tokio::task::spawn_blocking(move || v.files[file].read(n))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?
        .map_err(|e| not_found(e.to_string()))
}

async fn episode(State(v): State<Arc<Viewer>>, Path((file, n)): Path<(usize, usize)>) -> Response {
    let line = match stored(&v, file, n).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(mut value) => {
            // A rollout record: show its episode.
            if value.get("task").is_none()
                && let Some(ep) = value.get_mut("episode").map(serde_json::Value::take)
            {
                value = ep;
            }
            Html(enact_eval::html::episode_page(&v.name, file, n, &value)).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("episode {n} is not valid JSON: {e}"),
        )
            .into_response(),
    }
}

async fn api_episode(
    State(v): State<Arc<Viewer>>,
    Path((file, n)): Path<(usize, usize)>,
) -> Response {
    match stored(&v, file, n).await {
        Ok(line) => ([(header::CONTENT_TYPE, "application/json")], line).into_response(),
        Err(r) => r,
    }
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], enact_eval::html::CSS).into_response()
}
