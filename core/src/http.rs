//! HTTP as values, both ways: the outbound requests the core asks the [`crate::ports::HttpClient`]
//! port to make, and the inbound requests a twin hands to [`crate::Relay::handle`] with the
//! [`Answer`] it writes back.

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
}

impl fmt::Debug for FilePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePart")
            .field("field", &self.field)
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
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

/// An inbound HTTP request, as a twin hands it to [`crate::Relay::handle`].
///
/// The twin reads at most [`crate::relay::MAX_BODY_BYTES`] of the body (stopping as soon as
/// more arrives, and before reading when the announced length is larger), so no request makes
/// it buffer more than that.
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
    /// The body, or the fact that it was too large.
    pub body: Result<&'a [u8], BodyTooLarge>,
}

/// What the twin writes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Other headers.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// Plain text (the echo, `success`, or empty).
    pub fn text(status: u16, body: impl Into<String>) -> Self {
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
            body,
        }
    }

    /// An OpenMetrics exposition.
    pub fn metrics(body: String) -> Self {
        Self {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            headers: Vec::new(),
            body,
        }
    }

    /// 404, empty.
    pub fn not_found() -> Self {
        Self::text(404, "")
    }

    /// 405, naming what the route allows.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut answer = Self::text(405, "");
        answer.headers.push(("allow", allow));
        answer
    }
}
