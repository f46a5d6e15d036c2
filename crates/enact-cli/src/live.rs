//! Live output: a policy decorator that hands every sampled token to a sink as it is
//! produced (`SampleRequest::on_token`), the token printer of `run`, the progress bar of
//! `eval`, and whether to colour output at all.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use enact_core::{Policy, PolicyError, Sample, SampleRequest, TokenSink, Tokenizer};

use crate::model::PolicyWrapper;

/// Whether to colour what goes to stdout: only on a terminal, never with `NO_COLOR` set
/// (https://no-color.org), always with `CLICOLOR_FORCE` set (and no `NO_COLOR`).
pub fn color_stdout() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
    if set("NO_COLOR") {
        return false;
    }
    set("CLICOLOR_FORCE") || std::io::stdout().is_terminal()
}

/// Makes a fresh sink for each sample request (each turn).
type SinkMaker = Arc<dyn Fn() -> TokenSink + Send + Sync>;

/// A policy whose requests carry a token sink; everything else is the inner policy's.
struct ObservedPolicy {
    inner: Arc<dyn Policy>,
    sink: SinkMaker,
}

#[async_trait]
impl Policy for ObservedPolicy {
    async fn sample(&self, mut request: SampleRequest) -> Result<Sample, PolicyError> {
        let ours = (self.sink)();
        request.on_token = Some(match request.on_token.take() {
            // Keep a sink the caller set: both see every token.
            Some(theirs) => TokenSink::new(move |id| {
                theirs.emit(id);
                ours.emit(id);
            }),
            None => ours,
        });
        self.inner.sample(request).await
    }
    fn version(&self) -> u64 {
        self.inner.version()
    }
    fn context_limit(&self) -> usize {
        self.inner.context_limit()
    }
    fn token_exact(&self) -> bool {
        self.inner.token_exact()
    }
}

/// Wraps policies so that each request gets a sink from `sink`.
pub fn observe(sink: impl Fn() -> TokenSink + Send + Sync + 'static) -> PolicyWrapper {
    let sink: SinkMaker = Arc::new(sink);
    Arc::new(move |inner| {
        Arc::new(ObservedPolicy {
            inner,
            sink: sink.clone(),
        }) as Arc<dyn Policy>
    })
}

/// Prints each turn's text to stderr as its tokens arrive (decoded incrementally, so that a
/// character split over several tokens prints whole).
pub fn print_tokens(tokenizer: Arc<dyn Tokenizer>) -> PolicyWrapper {
    observe(move || {
        let tokenizer = tokenizer.clone();
        // The turn's ids and how many bytes of their text are already printed.
        let turn = Mutex::new((Vec::<u32>::new(), 0usize));
        TokenSink::new(move |id| {
            let Ok(mut turn) = turn.lock() else { return };
            turn.0.push(id);
            let Ok(text) = tokenizer.decode(&turn.0) else {
                return;
            };
            // Wait for the rest of a character that is still incomplete.
            if text.ends_with('\u{FFFD}') || text.len() < turn.1 || !text.is_char_boundary(turn.1) {
                return;
            }
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&text.as_bytes()[turn.1..]);
            let _ = err.flush();
            turn.1 = text.len();
        })
    })
}

/// What the progress bar shows, updated by episodes and sinks.
#[derive(Default)]
struct Counters {
    tokens: AtomicU64,
    solved: AtomicU64,
    done: AtomicU64,
}

impl Counters {
    fn message(&self, elapsed: Duration) -> String {
        let (solved, done) = (
            self.solved.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
        );
        let rate = self.tokens.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64().max(1e-3);
        let pct = 100.0 * solved as f64 / done.max(1) as f64;
        format!("{solved} solved ({pct:.0}%) · {rate:.0} tok/s")
    }
}

/// The progress of `eval` on stderr, drawn only on a terminal: episodes done, success so
/// far, tokens per second, from the first second on.
pub struct Progress {
    bar: indicatif::ProgressBar,
    counters: Arc<Counters>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn new(episodes: usize) -> Progress {
        let bar = indicatif::ProgressBar::new(episodes as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:30} {pos}/{len} episodes · {msg} · {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let counters = Arc::new(Counters::default());
        bar.set_message(counters.message(Duration::ZERO));
        bar.enable_steady_tick(Duration::from_millis(250));
        // Tokens per second move while episodes run, not only when one ends.
        let ticker = tokio::spawn({
            let (bar, counters) = (bar.clone(), counters.clone());
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    bar.set_message(counters.message(bar.elapsed()));
                }
            }
        });
        Progress {
            bar,
            counters,
            ticker,
        }
    }

    /// Counts every sampled token, for the tokens-per-second figure.
    pub fn token_counter(&self) -> PolicyWrapper {
        let counters = self.counters.clone();
        observe(move || {
            let counters = counters.clone();
            TokenSink::new(move |_| {
                counters.tokens.fetch_add(1, Ordering::Relaxed);
            })
        })
    }

    /// One more episode ended, solved or not.
    pub fn episode_done(&self, solved: bool) {
        self.counters.done.fetch_add(1, Ordering::Relaxed);
        if solved {
            self.counters.solved.fetch_add(1, Ordering::Relaxed);
        }
        self.bar
            .set_message(self.counters.message(self.bar.elapsed()));
        self.bar.inc(1);
    }

    /// Prints a line on stderr without tearing the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Awaits `work` under a spinner with the elapsed time on stderr (drawn only on a
/// terminal), for commands that print nothing until they end.
pub async fn with_spinner<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} · {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(what.to_string());
    spinner.enable_steady_tick(Duration::from_millis(200));
    let out = work.await;
    spinner.finish_and_clear();
    out
}
