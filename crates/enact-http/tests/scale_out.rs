//! Several servers behind one HTTP policy, on loopback: requests spread by outstanding
//! count, episodes stay on their server, and a server that dies mid-run is taken out while
//! its requests are retried on the other one, then used again once it is back.
//!
//! The servers here are minimal HTTP/1.1 servers (one request per connection) so a test can
//! kill one for real: its listener closes and its open connections drop without an answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enact_core::{Policy, SampleRequest, SamplingParams, Tokenizer};
use enact_http::{Dialect, HttpConfig, HttpPolicy};
use enact_model::ByteTokenizer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

const EOT: u32 = 257;

struct ServerState {
    /// Contexts (`input_ids`) of the generation requests received.
    contexts: Mutex<Vec<Vec<u32>>>,
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// When set, each request waits for a permit before answering.
    gate: Option<Arc<Semaphore>>,
    /// The server dies on receiving its request number `die_at` (1-based), without answering.
    die_at: Option<usize>,
    dead: Notify,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

struct Server {
    addr: SocketAddr,
    state: Arc<ServerState>,
    accept: JoinHandle<()>,
}

impl Server {
    async fn start(gate: Option<Arc<Semaphore>>, die_at: Option<usize>) -> Server {
        Self::start_on("127.0.0.1:0".parse().unwrap(), gate, die_at).await
    }

    async fn start_on(
        addr: SocketAddr,
        gate: Option<Arc<Semaphore>>,
        die_at: Option<usize>,
    ) -> Server {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            contexts: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            gate,
            die_at,
            dead: Notify::new(),
            connections: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = st.dead.notified() => break,
                    conn = listener.accept() => {
                        let Ok((stream, _)) = conn else { continue };
                        let st2 = st.clone();
                        let h = tokio::spawn(async move { serve(stream, st2).await });
                        st.connections.lock().unwrap().push(h);
                    }
                }
            }
            // Dying: drop every open connection unanswered (the listener drops on return).
            for h in st.connections.lock().unwrap().drain(..) {
                h.abort();
            }
        });
        Server {
            addr,
            state,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn requests(&self) -> usize {
        self.state.contexts.lock().unwrap().len()
    }

    fn contexts(&self) -> Vec<Vec<u32>> {
        self.state.contexts.lock().unwrap().clone()
    }

    /// Stops listening and drops open connections; returns once the port is free.
    async fn kill(self) -> SocketAddr {
        self.state.dead.notify_one();
        let _ = self.accept.await;
        self.addr
    }
}

async fn serve(mut stream: TcpStream, st: Arc<ServerState>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, content_length) = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (pos + 4, len);
        }
    };
    while buf.len() < head_end + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let ids: Vec<u32> = serde_json::from_value(body["input_ids"].clone()).unwrap_or_default();
    let n = {
        let mut c = st.contexts.lock().unwrap();
        c.push(ids);
        c.len()
    };
    if st.die_at == Some(n) {
        // Die mid-request: the client sees its connection closed without an answer.
        st.dead.notify_one();
        return;
    }
    st.in_flight.fetch_add(1, Ordering::SeqCst);
    if let Some(g) = &st.gate {
        let _ = g.acquire().await.map(|p| p.forget());
    }
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    let answer = json!({"text": "A", "output_ids": [65, EOT], "meta_info": {
        "output_token_logprobs": [[-0.5, 65, null], [-0.25, EOT, null]],
        "finish_reason": {"type": "stop", "matched": EOT}}})
    .to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn request(context: Vec<u32>) -> SampleRequest {
    SampleRequest {
        context: Arc::new(context),
        max_tokens: 16,
        stop_tokens: vec![EOT],
        stop_strings: Vec::new(),
        params: SamplingParams::default(),
        on_token: None,
    }
}

fn policy(servers: &[String], retry_after: Duration) -> HttpPolicy {
    let mut c = HttpConfig::new(servers[0].clone(), Dialect::Sglang);
    c.extra_base_urls = servers[1..].to_vec();
    c.backoff_initial = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(20);
    c.request_timeout = Duration::from_secs(10);
    c.max_attempts = 3;
    c.endpoint_retry_after = retry_after;
    let tok: Arc<dyn Tokenizer> = Arc::new(ByteTokenizer::new());
    HttpPolicy::new(c, tok).unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_spread_by_outstanding_count() {
    let gate = Arc::new(Semaphore::new(0));
    let a = Server::start(Some(gate.clone()), None).await;
    let b = Server::start(Some(gate.clone()), None).await;
    let p = policy(&[a.url(), b.url()], HOUR);
    let mut tasks = Vec::new();
    for i in 0..6u32 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.sample(request(vec![100 + i])).await
        }));
        // Each request is sent before the next is chosen (its server's count has risen).
        while a.state.in_flight.load(Ordering::SeqCst) + b.state.in_flight.load(Ordering::SeqCst)
            < i as usize + 1
        {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!((a.requests(), b.requests()), (3, 3));
    gate.add_permits(6);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().tokens, vec![65, EOT]);
    }
}

#[tokio::test]
async fn each_episode_stays_on_its_server() {
    let a = Server::start(None, None).await;
    let b = Server::start(None, None).await;
    let p = policy(&[a.url(), b.url()], HOUR);
    // Three episodes, interleaved turn by turn; each turn's context extends the last one.
    let mut contexts: Vec<Vec<u32>> = (0..3u32).map(|e| vec![1, 2, 3, 10 + e]).collect();
    for _turn in 0..4 {
        for ctx in contexts.iter_mut() {
            let s = p.sample(request(ctx.clone())).await.unwrap();
            ctx.extend(s.tokens);
            ctx.extend([40, 41]); // the observation
        }
    }
    let episode_of = |ctx: &Vec<u32>| ctx[3];
    let on = |s: &Server| {
        let mut e: Vec<u32> = s.contexts().iter().map(episode_of).collect();
        e.dedup();
        e.sort_unstable();
        e.dedup();
        e
    };
    let (ea, eb) = (on(&a), on(&b));
    assert_eq!(a.requests() + b.requests(), 12);
    assert!(
        ea.iter().all(|e| !eb.contains(e)),
        "an episode moved between servers: a served {ea:?}, b served {eb:?}"
    );
    assert!(
        !ea.is_empty() && !eb.is_empty(),
        "both servers get episodes"
    );
}

#[tokio::test]
async fn a_server_that_dies_mid_run_is_taken_out_and_its_request_retried() {
    // `a` dies on its third request, which is then answered by `b`.
    let a = Server::start(None, Some(3)).await;
    let b = Server::start(None, None).await;
    let p = policy(&[a.url(), b.url()], HOUR);
    for i in 0..12u32 {
        let s = p.sample(request(vec![7, i])).await.unwrap();
        assert_eq!(s.tokens, vec![65, EOT]);
    }
    assert_eq!(a.requests(), 3, "out of the rotation after dying");
    assert_eq!(
        b.requests(),
        12 - 2,
        "b answered the rest, the lost request included"
    );
    let lost = a.contexts()[2].clone();
    assert!(b.contexts().contains(&lost));
}

#[tokio::test]
async fn a_dead_server_is_tried_again_later_and_used_once_back() {
    let a = Server::start(None, None).await;
    let b = Server::start(None, None).await;
    // Retried at the next choice: "later" is immediately, so the test needs no clock.
    let p = policy(&[a.url(), b.url()], Duration::ZERO);
    let addr = a.kill().await;
    for i in 0..4u32 {
        p.sample(request(vec![9, i])).await.unwrap();
    }
    assert_eq!(b.requests(), 4, "refused connections went to b");
    let a = Server::start_on(addr, None, None).await;
    for i in 0..4u32 {
        p.sample(request(vec![8, i])).await.unwrap();
    }
    assert!(a.requests() >= 1, "the server is used again once back");
}

#[tokio::test]
async fn when_every_server_is_dead_the_error_names_the_failure() {
    let a = Server::start(None, None).await;
    let b = Server::start(None, None).await;
    let p = policy(&[a.url(), b.url()], HOUR);
    a.kill().await;
    b.kill().await;
    let err = p.sample(request(vec![1])).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("gave up after 3 attempt(s)"), "{msg}");
    assert!(msg.contains("is the server running?"), "{msg}");
}
