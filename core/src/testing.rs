//! A deterministic harness for tests: a fixed clock, seeded randomness, and scripted HTTP that
//! records every request. Nothing here is for production.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::api::{HttpRequest, HttpResponse, TransportError};
use crate::ports::{Clock, HttpClient, Random};

/// Drives a future to completion on this thread. For futures that never wait on real I/O
/// (the in-memory ports and the scripted HTTP client), which complete on first poll or soon.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = core::pin::pin!(fut);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let core::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// A sleeper whose timers either fire at once or never.
#[derive(Debug, Clone, Copy)]
pub struct InstantSleeper {
    fires: bool,
}

impl InstantSleeper {
    /// Every timer fires immediately.
    pub fn immediate() -> Self {
        Self { fires: true }
    }

    /// No timer ever fires.
    pub fn never() -> Self {
        Self { fires: false }
    }
}

impl crate::ports::Sleeper for InstantSleeper {
    async fn sleep(&self, _duration: core::time::Duration) {
        if !self.fires {
            core::future::pending::<()>().await;
        }
    }
}

/// Yields to the executor a few times, so a competing ready future wins a race.
pub async fn yield_a_few() {
    for _ in 0..3 {
        let mut yielded = false;
        core::future::poll_fn(|cx| {
            if yielded {
                core::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                core::task::Poll::Pending
            }
        })
        .await;
    }
}

/// A clock that only moves when told.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock at `now`.
    pub fn at(now: u64) -> Self {
        Self(AtomicU64::new(now))
    }

    /// Moves the clock forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reproducible bytes from a seed (SplitMix64). Not for cryptographic use.
#[derive(Debug)]
pub struct SeededRandom(AtomicU64);

impl SeededRandom {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Random for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

type Responder = dyn Fn(&HttpRequest) -> Option<Result<HttpResponse, TransportError>> + Send + Sync;

/// HTTP that answers from a script and records what was asked.
///
/// Answers come first from queued responses (in order), then from the responder function; a
/// request neither can answer gets a 599, which the core classifies as retryable.
#[derive(Clone, Default)]
pub struct ScriptedHttp {
    inner: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    queued: VecDeque<Result<HttpResponse, TransportError>>,
    responder: Option<Arc<Responder>>,
    recorded: Vec<HttpRequest>,
}

impl ScriptedHttp {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues one answer.
    pub fn push(&self, answer: Result<HttpResponse, TransportError>) -> &Self {
        self.inner.lock().unwrap().queued.push_back(answer);
        self
    }

    /// Queues a 200 JSON answer.
    pub fn push_json(&self, body: &str) -> &Self {
        self.push(Ok(HttpResponse::json(body)))
    }

    /// Answers requests the queue does not.
    pub fn respond_with(
        &self,
        f: impl Fn(&HttpRequest) -> Option<Result<HttpResponse, TransportError>> + Send + Sync + 'static,
    ) {
        self.inner.lock().unwrap().responder = Some(Arc::new(f));
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.inner.lock().unwrap().recorded.clone()
    }

    /// The paths of every request so far (no query, so no secrets).
    pub fn paths(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.path().into()).collect()
    }
}

impl HttpClient for ScriptedHttp {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let (queued, responder) = {
            let mut s = self.inner.lock().unwrap();
            s.recorded.push(req.clone());
            (s.queued.pop_front(), s.responder.clone())
        };
        if let Some(answer) = queued {
            return answer;
        }
        responder.and_then(|f| f(&req)).unwrap_or(Ok(HttpResponse {
            status: 599,
            ..HttpResponse::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Body, Method};
    #[allow(unused_imports)]
    use crate::test_support::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn seeded_random_is_reproducible() {
        let (a, b) = (SeededRandom::new(7), SeededRandom::new(7));
        let (mut x, mut y) = ([0u8; 21], [0u8; 21]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        a.fill(&mut x);
        assert_ne!(x, y);
    }

    #[test]
    fn scripted_http_answers_in_order_and_records() {
        let http = ScriptedHttp::new();
        http.push_json("{\"a\":1}")
            .push(Err(TransportError::Timeout));
        let req = HttpRequest {
            method: Method::Get,
            url: "http://x/p?access_token=T".into(),
            headers: Vec::new(),
            body: Body::Empty,
        };
        block_on(async {
            assert_eq!(http.send(req.clone()).await.unwrap().body, b"{\"a\":1}");
            assert_eq!(http.send(req.clone()).await, Err(TransportError::Timeout));
            assert_eq!(http.send(req.clone()).await.unwrap().status, 599);
        });
        assert_eq!(http.paths(), ["http://x/p", "http://x/p", "http://x/p"]);
        let clock = FixedClock::at(5);
        clock.advance(10);
        assert_eq!(clock.now_unix(), 15);
    }
}
