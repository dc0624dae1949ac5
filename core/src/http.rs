//! HTTP as values, both ways: the outbound requests the core asks the [`crate::ports::HttpClient`]
//! port to make, and the inbound requests a twin hands to [`crate::Relay::handle`] with the
//! [`Answer`] it writes back.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// A file part of a multipart upload. The twin encodes it with its HTTP stack's multipart
/// support (`reqwest::multipart`, JS `FormData`).
#[derive(Clone, PartialEq, Eq)]
pub struct FilePart {
    /// The form field: `media` for WeCom.
    pub field: String,
    /// The file name WeCom records.
    pub filename: String,
    /// The MIME type.
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Text fields sent before the file (`model` for a transcription).
    pub fields: Vec<(String, String)>,
}

impl fmt::Debug for FilePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePart")
            .field("field", &self.field)
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .field("fields", &self.fields)
            .finish()
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// `application/json`.
    Json(String),
    /// `multipart/form-data` with one file.
    Multipart(FilePart),
}

/// An outbound HTTP request.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// The full URL, query included (it may hold a token: never log it).
    pub url: String,
    /// Extra headers (e.g. `authorization`; never log their values). `content-type` follows
    /// from the body.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
}

impl HttpRequest {
    /// The URL without its query: safe to log.
    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or_default()
    }

    /// The value of a query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.url.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body", &self.body)
            .finish()
    }
}

/// An HTTP response as the port returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// `Content-Disposition`, when sent (media downloads carry the file name there).
    pub content_disposition: Option<String>,
    /// `Retry-After` in seconds, when sent.
    pub retry_after_secs: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Builds a response from a status, a header lookup (any case) and the body: the one place
    /// that decides which headers the core reads.
    pub fn from_parts(status: u16, header: impl Fn(&str) -> Option<String>, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: header("content-type"),
            content_disposition: header("content-disposition"),
            retry_after_secs: header("retry-after").and_then(|v| v.trim().parse().ok()),
            body,
        }
    }

    /// A JSON response with status 200.
    pub fn json(body: &str) -> Self {
        Self {
            status: 200,
            content_type: Some("application/json".into()),
            body: body.as_bytes().to_vec(),
            ..Self::default()
        }
    }
}

/// How the transport failed before any HTTP status arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// Connecting failed (DNS, refused, TLS).
    Connect,
    /// No answer in time.
    Timeout,
    /// The connection broke mid-way.
    Io,
}

/// The body was longer than the relay accepts; the twin stopped reading at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge;

/// Why a request's body was not read whole. The twin stops reading at the first of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than [`MAX_BODY_BYTES`] (announced or counted): 413.
    TooLarge,
    /// The client did not send it in time: 408.
    TimedOut,
    /// The connection failed part-way (a bad chunk, a reset): 400.
    Broken,
}

impl BodyError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 413,
            Self::TimedOut => 408,
            Self::Broken => 400,
        }
    }
}

impl From<BodyTooLarge> for BodyError {
    fn from(_: BodyTooLarge) -> Self {
        Self::TooLarge
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(f, "body larger than {MAX_BODY_BYTES} bytes"),
            Self::TimedOut => f.write_str("the client did not send the body in time"),
            Self::Broken => f.write_str("the body could not be read (the connection failed)"),
        }
    }
}

/// The largest request body the relay reads. WeCom's callbacks are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body read under the relay's cap ([`MAX_BODY_BYTES`]), chunk by
/// chunk as the twin's stack delivers them: refused before reading when the announced length
/// is larger, and as soon as the chunks add up to more.
#[derive(Debug, Default)]
pub struct CappedBody {
    bytes: Vec<u8>,
}

impl CappedBody {
    /// Starts reading a body whose `Content-Length` header (if any) says `announced`.
    pub fn new(announced: Option<&str>) -> Result<Self, BodyTooLarge> {
        match announced.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) if n > MAX_BODY_BYTES as u64 => Err(BodyTooLarge),
            _ => Ok(Self::default()),
        }
    }

    /// Adds a chunk; fails once the body is over the cap.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyTooLarge> {
        self.fits(chunk.len())?;
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Whether a chunk of `len` bytes would still fit under the cap, without adding it. A
    /// twin whose stack lends chunks checks the first one so and keeps it as it is when the
    /// body ends with it, as a callback's nearly always does: no copy, no allocation.
    pub fn fits(&self, len: usize) -> Result<(), BodyTooLarge> {
        if self.bytes.len() + len > MAX_BODY_BYTES {
            return Err(BodyTooLarge);
        }
        Ok(())
    }

    /// The whole body.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// How much of a body over the cap a twin reads and drops before it answers 413. Closing a
/// socket with unread data in it resets the connection, and a client still writing its body
/// then sees "broken pipe" instead of the answer; Go's net/http drains 256 KiB for the same
/// reason. A body announced as larger than the cap plus this is not read at all.
pub const DRAIN_BYTES: usize = 256 * 1024;

/// The rest of a body over the cap, read and dropped up to [`DRAIN_BYTES`].
#[derive(Debug)]
pub struct Drain {
    left: usize,
}

impl Drain {
    /// Starts draining a refused body whose `Content-Length` (if any) says `announced`; `None`
    /// when that is too much to bother reading.
    pub fn new(announced: Option<&str>) -> Option<Self> {
        match announced.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) if n > (MAX_BODY_BYTES + DRAIN_BYTES) as u64 => None,
            _ => Some(Self { left: DRAIN_BYTES }),
        }
    }

    /// Drops a chunk; `false` once enough has been read and the twin should stop.
    pub fn drop_chunk(&mut self, len: usize) -> bool {
        self.left = self.left.saturating_sub(len);
        self.left > 0
    }
}

/// An inbound HTTP request, as a twin hands it to [`crate::Relay::handle`].
///
/// The twin reads the body through a [`CappedBody`], so no request makes it buffer more than
/// the cap.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// `GET`, `POST`, ... (upper case).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?` (empty when there is none).
    pub query: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The body, or why it was not read whole.
    pub body: Result<&'a [u8], BodyError>,
}

/// What the twin writes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Other headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body: borrowed when it is a constant (`success`, empty), so most answers allocate
    /// nothing.
    pub body: Cow<'static, str>,
}

impl Answer {
    /// Plain text (the echo, `success`, or empty).
    pub fn text(status: u16, body: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// JSON.
    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Cow::Owned(body),
        }
    }

    /// An OpenMetrics exposition.
    pub fn metrics(body: String) -> Self {
        Self {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            headers: Vec::new(),
            body: Cow::Owned(body),
        }
    }

    /// 404, empty.
    pub fn not_found() -> Self {
        Self::text(404, "")
    }

    /// 405, naming what the route allows.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut answer = Self::text(405, "");
        answer.headers.push(("allow", allow.into()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_capped_body_stops_at_the_limit_and_before_a_larger_announcement() {
        assert_eq!(
            CappedBody::new(Some(&(MAX_BODY_BYTES + 1).to_string())).unwrap_err(),
            BodyTooLarge
        );
        let mut body = CappedBody::new(Some("not a number")).unwrap();
        body.push(&[b'a'; 1000]).unwrap();
        body.push(&alloc::vec![b'b'; MAX_BODY_BYTES - 1000])
            .unwrap();
        assert_eq!(body.push(b"c"), Err(BodyTooLarge));
        assert_eq!(body.finish().len(), MAX_BODY_BYTES);
        let mut small = CappedBody::new(Some(" 5 ")).unwrap();
        assert_eq!(small.fits(MAX_BODY_BYTES), Ok(()));
        assert_eq!(small.fits(MAX_BODY_BYTES + 1), Err(BodyTooLarge));
        small.push(b"hello").unwrap();
        assert_eq!(small.fits(MAX_BODY_BYTES - 5), Ok(()));
        assert_eq!(small.fits(MAX_BODY_BYTES - 4), Err(BodyTooLarge));
        assert_eq!(small.finish(), b"hello");
    }

    #[test]
    fn a_refused_body_is_drained_up_to_a_bound() {
        let too_much = (MAX_BODY_BYTES + DRAIN_BYTES + 1).to_string();
        assert!(Drain::new(Some(&too_much)).is_none());
        let mut drain = Drain::new(Some("70000")).unwrap();
        assert!(drain.drop_chunk(DRAIN_BYTES - 1));
        assert!(!drain.drop_chunk(1));
        let mut chunked = Drain::new(None).unwrap();
        assert!(!chunked.drop_chunk(DRAIN_BYTES + 10));
    }
}
