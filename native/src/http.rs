//! The HTTP face: [`serve`] accepts connections (hyper, with header and body deadlines), every
//! request becomes the core's `Incoming`, with the body read up to the core's cap, and the
//! core's `Answer` is written back as it is.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use wecom_relay_core::{Answer, BodyError, CappedBody, Drain};

use crate::NativeRelay;

/// How long a client may take to send a request's headers, and (once they are in) its body.
/// WeCom sends a callback in one go; a client that dribbles is closed (headers) or answered
/// 408 (body), so slow clients cannot pile up. `relay.request_timeout_secs` sets it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response as the relay writes it: the body whole in one buffer, not boxed.
pub type Reply = Response<Full<Bytes>>;

/// Serves `relay` on `listener` over HTTP/1.1 until `shutdown` completes, then lets the
/// requests in flight finish. Each connection has `timeout` to send a request's headers (also
/// between requests on a kept-alive connection), and each request `timeout` for its body.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<NativeRelay>,
    timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let served = Served { relay, timeout };
    serve_with(listener, timeout, shutdown, move |request| {
        handle(served.clone(), request)
    })
    .await;
}

/// Serves `handler` as [`serve`] serves the relay: the same connection settings, deadlines,
/// accept loop and graceful shutdown. Each request goes straight to `handler` (the core
/// routes, so a router would only add its allocations). The benchmark's "stack" peer serves
/// a constant answer through it, which tells the relay's own work apart from its stack's.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    timeout: Duration,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let reply = handler(request);
            async move { Ok::<_, Infallible>(reply.await) }
        });
        let conn = http1.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    // Idle kept-alive connections end here too, so this is not a warning.
                    info!(%peer, "closed a connection that sent no complete request in time");
                } else if e.is_parse() || e.is_parse_too_large() {
                    warn!(%peer, error = %e, "closed a connection that sent a malformed or oversized request head");
                } else {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[derive(Clone)]
struct Served {
    relay: Arc<NativeRelay>,
    timeout: Duration,
}

/// The relay as an axum router whose every request goes to the handler [`serve`] uses, for
/// tests that drive it without a socket.
pub fn app(relay: Arc<NativeRelay>, timeout: Duration) -> Router {
    let served = Served { relay, timeout };
    Router::new().fallback(move |request: axum::extract::Request| handle(served.clone(), request))
}

async fn handle<B>(served: Served, request: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Unpin,
{
    // The request whole, not `Method`, `Uri` and `HeaderMap` extractors: those clone the
    // parts, and the header map is an allocation per request.
    let (parts, mut chunks) = request.into_parts();
    let headers = &parts.headers;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok());
    let body = match tokio::time::timeout(served.timeout, read_capped(announced, &mut chunks)).await
    {
        Ok(read) => read,
        Err(_) => Err(BodyError::TimedOut),
    };
    if matches!(body, Err(BodyError::TooLarge)) {
        // A client still sending gets the 413 instead of a reset connection.
        let _ = tokio::time::timeout(served.timeout, drain(announced, &mut chunks)).await;
    }
    let incoming = wecom_relay_core::Incoming {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        body: body.as_deref().map_err(|e| *e),
    };
    let mut response = respond(served.relay.handle(&incoming).await);
    if matches!(body, Err(BodyError::TimedOut | BodyError::TooLarge)) {
        // The rest of the body is not worth waiting for: say so, and close.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The body's next piece of data, skipping trailers; `Some(Err(()))` if the body broke.
async fn next_chunk<B>(body: &mut B) -> Option<Result<Bytes, ()>>
where
    B: Body<Data = Bytes> + Unpin,
{
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(_) => return Some(Err(())),
        }
    }
}

/// Reads and drops what is left of a refused body, as far as the core's [`Drain`] says.
async fn drain<B>(announced: Option<&str>, chunks: &mut B)
where
    B: Body<Data = Bytes> + Unpin,
{
    let Some(mut drain) = Drain::new(announced) else {
        return;
    };
    while let Some(Ok(chunk)) = next_chunk(chunks).await {
        if !drain.drop_chunk(chunk.len()) {
            break;
        }
    }
}

/// Reads the body through the core's cap, chunk by chunk. A body that came in one chunk (a
/// callback nearly always does: hyper lends it from the buffer it read the request into) is
/// kept as that chunk; only a body in several is copied into one buffer.
async fn read_capped<B>(announced: Option<&str>, chunks: &mut B) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut capped = CappedBody::new(announced)?;
    let Some(first) = next_chunk(chunks).await else {
        return Ok(Bytes::new());
    };
    let first = first.map_err(|()| BodyError::Broken)?;
    capped.fits(first.len())?;
    let Some(second) = next_chunk(chunks).await else {
        return Ok(first);
    };
    capped.push(&first)?;
    capped.push(&second.map_err(|()| BodyError::Broken)?)?;
    while let Some(chunk) = next_chunk(chunks).await {
        capped.push(&chunk.map_err(|()| BodyError::Broken)?)?;
    }
    Ok(Bytes::from(capped.finish()))
}

/// Writes the core's `answer` as hyper sends it: status, `content-type`, headers and the body
/// in one buffer (a constant body is not copied).
pub fn respond(answer: Answer) -> Reply {
    let body = match answer.body {
        Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
        Cow::Owned(text) => Bytes::from(text),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    for (name, value) in answer.headers {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use wecom_relay_core::MAX_BODY_BYTES;

    /// A body that delivers `chunks` one frame each, then ends (or breaks, if `broken`).
    fn body(
        chunks: Vec<Vec<u8>>,
        broken: bool,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin>
    {
        frames(chunks.into_iter().map(Bytes::from).collect(), broken)
    }

    /// [`body`] from chunks as hyper lends them.
    fn frames(
        chunks: Vec<Bytes>,
        broken: bool,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin>
    {
        let frames = chunks
            .into_iter()
            .map(|c| Ok(Frame::data(c)))
            .chain(broken.then(|| Err(std::io::Error::other("reset"))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read(chunks: Vec<Vec<u8>>, broken: bool) -> Result<Bytes, BodyError> {
        read_capped(None, &mut body(chunks, broken)).await
    }

    #[tokio::test]
    async fn a_body_is_read_whole_under_the_cap_from_one_chunk_or_several() {
        assert_eq!(read(vec![], false).await.unwrap(), Bytes::new());
        // One chunk is kept as it came, not copied.
        let one = Bytes::from_static(b"<xml>one chunk</xml>");
        let kept = read_capped(None, &mut frames(vec![one.clone()], false)).await;
        assert_eq!(kept.as_ref().unwrap(), &one);
        assert_eq!(kept.unwrap().as_ptr(), one.as_ptr());
        let joined = read(
            vec![b"<xml>".to_vec(), b"in ".to_vec(), b"three</xml>".to_vec()],
            false,
        );
        assert_eq!(
            joined.await.unwrap(),
            Bytes::from_static(b"<xml>in three</xml>")
        );
        let whole = read(vec![vec![b'a'; MAX_BODY_BYTES]], false).await.unwrap();
        assert_eq!(whole.len(), MAX_BODY_BYTES);
        let split = vec![vec![b'a'; MAX_BODY_BYTES - 1], vec![b'b']];
        assert_eq!(read(split, false).await.unwrap().len(), MAX_BODY_BYTES);
    }

    #[tokio::test]
    async fn a_body_over_the_cap_or_broken_is_refused_however_it_is_chunked() {
        let over = |chunks| async move { read(chunks, false).await.unwrap_err() };
        assert!(matches!(
            over(vec![vec![0; MAX_BODY_BYTES + 1]]).await,
            BodyError::TooLarge
        ));
        let two = vec![vec![0; MAX_BODY_BYTES], vec![0]];
        assert!(matches!(over(two).await, BodyError::TooLarge));
        let three = vec![vec![0; 10], vec![0; 10], vec![0; MAX_BODY_BYTES]];
        assert!(matches!(over(three).await, BodyError::TooLarge));
        for chunks in [
            vec![],
            vec![b"<xml>".to_vec()],
            vec![b"a".to_vec(), b"b".to_vec()],
        ] {
            let broken = read(chunks, true).await.unwrap_err();
            assert!(matches!(broken, BodyError::Broken), "{broken:?}");
        }
        let announced = (MAX_BODY_BYTES + 1).to_string();
        let refused = read_capped(Some(&announced), &mut body(vec![b"x".to_vec()], false)).await;
        assert!(matches!(refused, Err(BodyError::TooLarge)));
    }
}
