//! Several servers behind one policy: which server a request goes to.
//!
//! - **Least outstanding requests**: a request goes to the live server with the fewest
//!   requests in flight from this policy (ties rotate).
//! - **Sticky by context prefix**: an agent's next context is its previous context plus an
//!   appended suffix, so a request goes back to the server that last answered a request
//!   whose whole context is a prefix of this one (the longest such): that server's prefix
//!   cache already holds it. Stickiness yields when that server has more than
//!   `sticky_max_imbalance` requests in flight above the least busy one.
//! - **Dead servers**: a server that refuses or drops a connection is out of the rotation for
//!   `endpoint_retry_after`; its request is retried on another server at once. When every
//!   server is out, the one due back first is tried (so a single server behaves as before).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Remembered context prefixes (entries beyond this evict the oldest).
const AFFINITY_CAPACITY: usize = 16_384;

pub(crate) struct Endpoint {
    /// Server root (no trailing `/v1`).
    pub root: String,
    /// Bounds this policy's requests in flight to this server.
    pub semaphore: Semaphore,
    outstanding: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

pub(crate) struct Endpoints {
    pub list: Vec<Endpoint>,
    affinity: Mutex<Affinity>,
    retry_after: Duration,
    max_imbalance: usize,
    rotation: AtomicUsize,
}

/// Counts a request as outstanding on its server while alive.
pub(crate) struct InFlight<'a>(&'a Endpoint);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Endpoints {
    pub fn new(
        roots: Vec<String>,
        max_concurrency: usize,
        retry_after: Duration,
        max_imbalance: usize,
    ) -> Endpoints {
        Endpoints {
            list: roots
                .into_iter()
                .map(|root| Endpoint {
                    root,
                    semaphore: Semaphore::new(max_concurrency),
                    outstanding: AtomicUsize::new(0),
                    down_until: Mutex::new(None),
                })
                .collect(),
            affinity: Mutex::new(Affinity::default()),
            retry_after,
            max_imbalance,
            rotation: AtomicUsize::new(0),
        }
    }

    fn down_until(&self, i: usize) -> Option<Instant> {
        *self.list[i]
            .down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn is_live(&self, i: usize, now: Instant) -> bool {
        self.down_until(i).is_none_or(|t| t <= now)
    }

    /// Whether any server is in the rotation now.
    pub fn any_live(&self) -> bool {
        let now = Instant::now();
        (0..self.list.len()).any(|i| self.is_live(i, now))
    }

    /// Chooses the server for a request with this context (`None`: not a generation) and
    /// counts the request as outstanding there until the guard drops.
    pub fn pick(&self, context: Option<&[u32]>) -> (usize, InFlight<'_>) {
        let i = self.choose(context);
        let e = &self.list[i];
        e.outstanding.fetch_add(1, Ordering::SeqCst);
        (i, InFlight(e))
    }

    fn choose(&self, context: Option<&[u32]>) -> usize {
        let n = self.list.len();
        if n == 1 {
            return 0;
        }
        let now = Instant::now();
        let live: Vec<usize> = (0..n).filter(|&i| self.is_live(i, now)).collect();
        if live.is_empty() {
            // Everything is out: probe the server due back first.
            return (0..n)
                .min_by_key(|&i| self.down_until(i).unwrap_or(now))
                .unwrap_or(0);
        }
        let load = |i: usize| self.list[i].outstanding.load(Ordering::SeqCst);
        let least = live.iter().map(|&i| load(i)).min().unwrap_or(0);
        if let Some(ctx) = context {
            let sticky = self
                .affinity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lookup(ctx);
            if let Some(s) = sticky
                && live.contains(&s)
                && load(s) <= least + self.max_imbalance
            {
                return s;
            }
        }
        // Least outstanding; ties rotate so idle servers share the work.
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        (0..live.len())
            .map(|k| live[(start + k) % live.len()])
            .find(|&i| load(i) == least)
            .unwrap_or(live[0])
    }

    /// The request with `context` was answered by server `i`: it is live, and it now holds
    /// this context in its prefix cache.
    pub fn answered(&self, i: usize, context: Option<&[u32]>) {
        *self.list[i]
            .down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(ctx) = context
            && self.list.len() > 1
        {
            self.affinity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ctx, i);
        }
    }

    /// Server `i` refused or dropped a connection: out of the rotation for a while.
    pub fn mark_down(&self, i: usize, why: &str) {
        let until = Instant::now() + self.retry_after;
        *self.list[i]
            .down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(until);
        if self.list.len() > 1 {
            tracing::warn!(server = %self.list[i].root, retry_in = ?self.retry_after, %why,
                "HTTP policy server out of the rotation");
        }
    }
}

/// Remembers, for whole contexts recently answered, which server answered them. Keys are
/// (length, hash of the first `length` tokens), so a later context is matched against each
/// remembered length in one pass over its tokens.
#[derive(Default)]
struct Affinity {
    server: HashMap<(usize, u64), usize>,
    /// How many remembered entries have each length.
    lengths: BTreeMap<usize, usize>,
    order: VecDeque<(usize, u64)>,
}

/// FNV-1a over token ids, one step per token (prefix hashes come for free).
fn step(h: u64, token: u32) -> u64 {
    (h ^ u64::from(token)).wrapping_mul(0x0000_0100_0000_01B3)
}
const HASH_START: u64 = 0xCBF2_9CE4_8422_2325;

impl Affinity {
    /// The server that answered the longest remembered prefix of `ctx`.
    fn lookup(&self, ctx: &[u32]) -> Option<usize> {
        if ctx.is_empty() {
            // (`1..=0` would be an inverted range: BTreeMap::range panics on those.)
            return None;
        }
        let mut best = None;
        let mut h = HASH_START;
        let mut pos = 0;
        for &len in self.lengths.range(1..=ctx.len()).map(|(l, _)| l) {
            for &t in &ctx[pos..len] {
                h = step(h, t);
            }
            pos = len;
            if let Some(&s) = self.server.get(&(len, h)) {
                best = Some(s);
            }
        }
        best
    }

    fn insert(&mut self, ctx: &[u32], server: usize) {
        if ctx.is_empty() {
            return;
        }
        let key = (ctx.len(), ctx.iter().fold(HASH_START, |h, &t| step(h, t)));
        if self.server.insert(key, server).is_none() {
            *self.lengths.entry(key.0).or_default() += 1;
            self.order.push_back(key);
        }
        while self.order.len() > AFFINITY_CAPACITY {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.server.remove(&old);
            if let Some(c) = self.lengths.get_mut(&old.0) {
                *c -= 1;
                if *c == 0 {
                    self.lengths.remove(&old.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_finds_the_longest_answered_prefix() {
        let mut a = Affinity::default();
        a.insert(&[1, 2, 3], 0);
        a.insert(&[1, 2, 3, 4, 5], 1);
        a.insert(&[9, 9], 1);
        assert_eq!(a.lookup(&[1, 2, 3, 7]), Some(0));
        assert_eq!(a.lookup(&[1, 2, 3, 4, 5, 6]), Some(1));
        assert_eq!(a.lookup(&[1, 2]), None);
        assert_eq!(a.lookup(&[2, 2, 3, 4]), None);
        assert_eq!(a.lookup(&[]), None);
    }

    #[test]
    fn affinity_forgets_the_oldest_beyond_capacity() {
        let mut a = Affinity::default();
        for i in 0..(AFFINITY_CAPACITY as u32 + 10) {
            a.insert(&[i, 1], 0);
        }
        assert_eq!(a.server.len(), AFFINITY_CAPACITY);
        assert_eq!(a.lookup(&[0, 1, 5]), None);
        assert_eq!(a.lookup(&[AFFINITY_CAPACITY as u32 + 9, 1]), Some(0));
        assert_eq!(a.lengths.get(&2), Some(&AFFINITY_CAPACITY));
    }

    #[test]
    fn least_outstanding_then_sticky_within_the_imbalance() {
        let e = Endpoints::new(
            vec!["http://a".into(), "http://b".into()],
            8,
            Duration::from_secs(3600),
            1,
        );
        let (first, g1) = e.pick(Some(&[1, 2]));
        let (second, g2) = e.pick(Some(&[7, 8]));
        assert_ne!(first, second, "the idle server takes the second request");
        drop((g1, g2));
        e.answered(first, Some(&[1, 2]));
        // The same episode returns to its server, even when the other is equally idle.
        for _ in 0..4 {
            assert_eq!(e.pick(Some(&[1, 2, 3])).0, first);
        }
        // ... unless that server is busier than the other by more than the imbalance.
        e.list[first].outstanding.fetch_add(2, Ordering::SeqCst);
        assert_eq!(e.pick(Some(&[1, 2, 3])).0, 1 - first);
        e.list[first].outstanding.fetch_sub(1, Ordering::SeqCst);
        assert_eq!(
            e.pick(Some(&[1, 2, 3])).0,
            first,
            "within the imbalance again"
        );
    }

    #[test]
    fn dead_servers_leave_the_rotation_and_a_lone_dead_one_is_still_probed() {
        let e = Endpoints::new(
            vec!["http://a".into(), "http://b".into()],
            8,
            Duration::from_secs(3600),
            4,
        );
        e.mark_down(0, "refused");
        assert!(e.any_live());
        for _ in 0..5 {
            assert_eq!(e.pick(None).0, 1);
        }
        e.mark_down(1, "refused");
        assert!(!e.any_live());
        // Both out: the one due back first is probed.
        assert_eq!(e.pick(None).0, 0);
        e.answered(0, None);
        assert!(e.any_live());
        assert_eq!(e.pick(None).0, 0);
    }
}
