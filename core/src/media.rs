//! Media both ways, as data: which URLs the relay may fetch (`media.allow_hosts`), a capped
//! download over the HTTP port, the AI bot's sealed media, what a file's bytes are, and the
//! attachments an answer asks for.
//!
//! Inbound media become [`Gathered`] in the job ([`crate::Relay`]'s runner); outbound
//! attachments are found in the answer's markdown by [`extract_attachments`] and sorted into
//! WeCom's kinds by [`plan_upload`].

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::apps::ConfigError;
use crate::http::{Body, HttpRequest, HttpResponse, Method};
use crate::ports::HttpClient;
use crate::wecom::api::MediaType;

/// The most the relay downloads of one medium: WeCom's largest upload (a 20 MB file).
pub const MAX_DOWNLOAD_BYTES: usize = 20 << 20;
/// The largest picture passed to a vision model (WeCom's own image limit).
pub const MAX_VISION_BYTES: usize = 10 << 20;
/// The largest text file whose content the agent reads.
pub const MAX_TEXT_FILE_BYTES: usize = 64 << 10;
/// The most attachments one answer may carry; more become a text line each.
pub const MAX_ATTACHMENTS: usize = 10;

/// Why a medium could not be fetched, read or sent. Its text is for the user and the log: it
/// names the medium's host at most, never a token or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaError(pub String);

impl MediaError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host the operator lets the relay fetch from although it is private, and over `http`
/// too: a name (exact, case-insensitive) or a network in CIDR form (`10.0.0.0/8`, `::1/128`;
/// a bare address is one host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// A host name.
    Name(String),
    /// A network.
    Net {
        /// Its address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
}

impl HostRule {
    /// Parses one `allow_hosts` entry.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry, None),
        };
        if let Ok(addr) = addr.trim_matches(['[', ']']).parse::<IpAddr>() {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{entry:?} has a bad prefix length"))?,
            };
            return Ok(Self::Net { addr, prefix });
        }
        let valid = prefix.is_none()
            && !entry.is_empty()
            && entry.len() <= 253
            && entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(format!("{entry:?} is neither a host name nor an address"));
        }
        Ok(Self::Name(entry.to_ascii_lowercase()))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let Self::Net { addr, prefix } = self else {
            return false;
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local (cloud
/// metadata lives there), shared (CGNAT), unique-local, multicast, documentation or
/// unspecified. An IPv4-mapped IPv6 address is judged as the IPv4 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b)
}

/// What the relay may fetch: public `https` URLs, and the operator's `allow_hosts` over
/// `http` or `https`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaPolicy {
    /// `media.allow_hosts`.
    pub allow_hosts: Vec<HostRule>,
}

impl MediaPolicy {
    /// The policy for `media.allow_hosts` entries.
    pub fn from_hosts<S: AsRef<str>>(entries: &[S]) -> Result<Self, ConfigError> {
        let allow_hosts = entries
            .iter()
            .map(|e| e.as_ref())
            .filter(|e| !e.trim().is_empty())
            .map(|e| HostRule::parse(e).map_err(|why| ConfigError::new("media.allow_hosts", why)))
            .collect::<Result<_, _>>()?;
        Ok(Self { allow_hosts })
    }

    /// Whether an address a host name resolved to may be connected to (the native twin asks
    /// this of every address its resolver returns, so a public name cannot lead inside).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow_hosts.iter().any(|r| r.allows_ip(ip))
    }

    fn allows_name(&self, name: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|r| matches!(r, HostRule::Name(n) if n.eq_ignore_ascii_case(name)))
    }

    /// Checks a URL before anything is fetched from it.
    pub fn check(&self, raw: &str) -> Result<Url, MediaError> {
        let url = Url::parse(raw.trim()).map_err(|_| MediaError::new("not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(MediaError::new("a URL with credentials is not fetched"));
        }
        let host = url
            .host()
            .ok_or_else(|| MediaError::new("a URL without a host"))?;
        let allowed = match &host {
            Host::Ipv4(ip) => self.allow_hosts.iter().any(|r| r.allows_ip((*ip).into())),
            Host::Ipv6(ip) => self.allow_hosts.iter().any(|r| r.allows_ip((*ip).into())),
            Host::Domain(name) => self.allows_name(name),
        };
        let public = match host {
            Host::Ipv4(ip) => is_public(ip.into()),
            Host::Ipv6(ip) => is_public(ip.into()),
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name != "localhost" && !name.ends_with(".localhost")
            }
        };
        match url.scheme() {
            "https" if public || allowed => Ok(url),
            "http" if allowed => Ok(url),
            "https" | "http" if !public => Err(MediaError::new(format!(
                "{} is a private address (media.allow_hosts can allow it)",
                url.host_str().unwrap_or_default()
            ))),
            "http" => Err(MediaError::new(
                "only https URLs are fetched (media.allow_hosts can allow http for a host)",
            )),
            other => Err(MediaError::new(format!("{other} URLs are not fetched"))),
        }
    }
}

/// A downloaded medium.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The file name from `Content-Disposition` or the URL's last path segment.
    pub file_name: Option<String>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("len", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("file_name", &self.file_name)
            .finish()
    }
}

/// A `GET` of a checked URL.
pub fn get(url: &Url) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        url: url.as_str().to_owned(),
        headers: Vec::new(),
        body: Body::Empty,
    }
}

/// Sends `req` and reads at most `max` bytes of the answer: a longer one is refused as soon as
/// it is (the twin stops reading), not after.
pub async fn download_capped<H: HttpClient>(
    http: &H,
    req: HttpRequest,
    max: usize,
) -> Result<HttpResponse, MediaError> {
    let mut seen = 0usize;
    let resp = http
        .send_capped(req, &mut |chunk| {
            seen = seen.saturating_add(chunk.len());
            seen <= max
        })
        .await
        .map_err(|e| MediaError::new(format!("the download failed ({e:?})")))?;
    if seen > max || resp.body.len() > max {
        return Err(MediaError::new(format!(
            "it is larger than {} MB",
            max.div_ceil(1 << 20)
        )));
    }
    Ok(resp)
}

/// Fetches a URL the policy allows, at most `max` bytes.
pub async fn fetch<H: HttpClient>(
    http: &H,
    policy: &MediaPolicy,
    raw_url: &str,
    max: usize,
) -> Result<Fetched, MediaError> {
    let url = policy.check(raw_url)?;
    let resp = download_capped(http, get(&url), max).await?;
    if !(200..300).contains(&resp.status) {
        return Err(MediaError::new(format!(
            "{} answered HTTP {}",
            url.host_str().unwrap_or_default(),
            resp.status
        )));
    }
    let file_name = resp
        .content_disposition
        .as_deref()
        .and_then(disposition_name)
        .or_else(|| {
            url.path_segments()
                .and_then(|mut s| s.next_back())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    percent_decode(s)
                        .unwrap_or_else(|| s.to_owned())
                        .chars()
                        .take(128)
                        .collect()
                })
        });
    Ok(Fetched {
        content_type: resp.content_type.clone(),
        file_name,
        bytes: resp.body,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

/// The file name of a `Content-Disposition` header (`filename="..."` or `filename*=UTF-8''...`).
pub fn disposition_name(header: &str) -> Option<String> {
    let mut plain = None;
    for param in header.split(';').map(str::trim) {
        if let Some(v) = param.strip_prefix("filename*=") {
            let v = v.trim_matches('"');
            let encoded = v.split_once("''").map_or(v, |(_, e)| e);
            if let Some(name) = percent_decode(encoded).filter(|n| !n.is_empty()) {
                return Some(clean_name(&name));
            }
        } else if let Some(v) = param.strip_prefix("filename=") {
            plain = Some(clean_name(v.trim_matches('"')));
        }
    }
    plain.filter(|n| !n.is_empty())
}

/// A file name safe to show and to send on: no path, no control characters, at most 128
/// characters.
pub fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Opens an AI bot's medium: AES-256-CBC with the bot's key, the IV its first 16 bytes, and
/// PKCS#7 padding to 32 bytes.
pub fn open_sealed(
    key: &crate::crypto::EncodingAesKey,
    bytes: &[u8],
) -> Result<Vec<u8>, MediaError> {
    crate::crypto::open_media(key, bytes)
        .map_err(|_| MediaError::new("the bot's medium did not decrypt with its key"))
}

/// What a file's first bytes say it is: a MIME type and an extension.
pub fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    Some(match bytes {
        [0xff, 0xd8, 0xff, ..] => ("image/jpeg", "jpg"),
        [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, ..] => ("image/png", "png"),
        [b'G', b'I', b'F', b'8', ..] => ("image/gif", "gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => ("image/webp", "webp"),
        [b'#', b'!', b'A', b'M', b'R', ..] => ("audio/amr", "amr"),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => ("video/mp4", "mp4"),
        [b'%', b'P', b'D', b'F', ..] => ("application/pdf", "pdf"),
        [b'P', b'K', 3, 4, ..] => ("application/zip", "zip"),
        _ => return None,
    })
}

/// The extension of a file name, lower-cased.
pub fn extension(name: &str) -> Option<String> {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 10)
}

const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "md", "markdown", "csv", "tsv", "json", "jsonl", "yaml", "yml", "toml", "xml", "html",
    "htm", "css", "log", "ini", "cfg", "conf", "sql", "rs", "py", "js", "ts", "tsx", "jsx", "go",
    "java", "kt", "c", "h", "cc", "cpp", "hpp", "cs", "rb", "php", "sh", "bash", "swift", "scala",
    "lua", "r", "pl", "tex", "srt", "vue", "proto",
];

/// Whether a file name looks like text the agent can read.
pub fn is_text_name(name: &str) -> bool {
    extension(name).is_some_and(|e| TEXT_EXTENSIONS.contains(&e.as_str()))
}

/// The bytes as text, if they are UTF-8 without NULs.
pub fn as_text(bytes: &[u8]) -> Option<&str> {
    core::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
}

/// A picture as a `data:` URL, for a vision model.
pub fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64(bytes))
}

/// An attachment an answer asks to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// What the user sees it called (the link text, or the URL's file name).
    pub name: String,
    /// Where its bytes are.
    pub source: Source,
    /// The kind asked for, if any (`image` for a markdown picture).
    pub kind: Option<MediaType>,
}

/// Where an attachment's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A URL to fetch (under the [`MediaPolicy`]).
    Url(String),
    /// The bytes themselves (a webhook's base64, or a `data:` URL).
    Bytes {
        /// Their MIME type, if known.
        mime: Option<String>,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Url(u) => format!(
                "url {}",
                Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            Source::Bytes { bytes, .. } => format!("{} bytes", bytes.len()),
        };
        f.debug_struct("Attachment")
            .field("name", &self.name)
            .field("source", &source)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Attachment {
    /// An attachment from a URL or `data:` URL.
    pub fn from_link(
        name: &str,
        target: &str,
        kind: Option<MediaType>,
    ) -> Result<Self, MediaError> {
        let source = match target.strip_prefix("data:") {
            Some(rest) => {
                let (head, data) = rest
                    .split_once(',')
                    .ok_or_else(|| MediaError::new("a data: URL without data"))?;
                let mime = head
                    .strip_suffix(";base64")
                    .ok_or_else(|| MediaError::new("a data: URL that is not base64"))?;
                Source::Bytes {
                    mime: Some(mime.to_owned()).filter(|m| !m.is_empty()),
                    bytes: base64_simd::STANDARD
                        .decode_to_vec(data.trim())
                        .map_err(|_| MediaError::new("a data: URL whose base64 is broken"))?,
                }
            }
            None => Source::Url(target.to_owned()),
        };
        let name = match (clean_name(name), &source) {
            (n, _) if !n.is_empty() => n,
            (_, Source::Url(u)) => Url::parse(u)
                .ok()
                .and_then(|u| {
                    u.path_segments()
                        .and_then(|mut s| s.next_back().map(clean_name))
                })
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "attachment".to_owned()),
            (_, Source::Bytes { .. }) => "attachment".to_owned(),
        };
        Ok(Self { name, source, kind })
    }
}

/// An attachment as a webhook's answer or `/api/send` gives it: a `url` or `base64` bytes,
/// with an optional `type` (`image` must be a JPG or PNG picture), `name` and `mime`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec {
    /// Where to fetch it.
    #[serde(default)]
    pub url: Option<String>,
    /// The bytes, base64.
    #[serde(default)]
    pub base64: Option<String>,
    /// `image`, `file`, `voice` or `video`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The file name.
    #[serde(default)]
    pub name: Option<String>,
    /// The MIME type of `base64` bytes.
    #[serde(default)]
    pub mime: Option<String>,
}

impl AttachmentSpec {
    /// The markdown the relay reads back with [`extract_attachments`]: a picture for `image`,
    /// else a link titled `attachment`.
    pub fn to_link(&self) -> Result<String, String> {
        let target = match (&self.url, &self.base64) {
            (Some(url), None) if !url.trim().is_empty() && !url.contains(char::is_whitespace) => {
                url.trim().to_owned()
            }
            (None, Some(b64)) => format!(
                "data:{};base64,{}",
                self.mime
                    .as_deref()
                    .unwrap_or("application/octet-stream")
                    .trim(),
                b64.trim()
            ),
            _ => return Err("an attachment needs exactly one of url and base64".into()),
        };
        let name: String = self
            .name
            .as_deref()
            .map(clean_name)
            .unwrap_or_default()
            .chars()
            .filter(|c| !matches!(c, '[' | ']' | '(' | ')'))
            .collect();
        match self.kind.as_deref() {
            Some("image") => Ok(format!("![{name}]({target})")),
            None | Some("file" | "voice" | "video") => {
                Ok(format!("[{name}]({target} \"attachment\")"))
            }
            Some(other) => Err(format!(
                "attachment type {other:?} is not image, file, voice or video"
            )),
        }
    }
}

/// The answer without the attachments given as bytes (`data:` links), which no text shows;
/// every other link stays where it is. For an AI bot's stream, whose text is markdown.
pub fn drop_inline_bytes(answer: &str) -> String {
    if !answer.contains("](data:") {
        return answer.to_owned();
    }
    let (out, _) = take_links(answer, |a| matches!(a.source, Source::Bytes { .. }));
    out.trim_end().to_owned()
}

/// Takes the attachments `take` wants out of `text`, outside code (fenced or inline); every
/// other link stays as it was written.
fn take_links(text: &str, take: impl Fn(&Attachment) -> bool) -> (String, Vec<Attachment>) {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            out.push_str(line);
            continue;
        }
        if in_fence {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some((before, link, after)) = next_link(rest) {
            out.push_str(before);
            match link {
                Some(a) if take(&a) => found.push(a),
                _ => out.push_str(&rest[before.len()..rest.len() - after.len()]),
            }
            rest = after;
        }
        out.push_str(rest);
    }
    (out, found)
}

/// Finds the attachments an answer asks for, and the answer without them: markdown pictures
/// `![alt](url)` and links titled `attachment`, `[report.pdf](url "attachment")`. A link the
/// relay cannot read as one stays in the text as it was. Code (fenced or inline) is left alone.
pub fn extract_attachments(text: &str) -> (String, Vec<Attachment>) {
    let (out, found) = take_links(text, |_| true);
    if found.is_empty() {
        // Nothing taken out: the answer stays exactly as written.
        return (text.to_owned(), found);
    }
    // Lines left empty by a removed link collapse.
    let mut clean = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        clean.push_str(line.trim_end());
        clean.push('\n');
    }
    (clean.trim().to_owned(), found)
}

/// The next markdown link in `s` outside inline code: the text before it, the attachment it
/// names (`None` for an ordinary link), and the text after it.
fn next_link(s: &str) -> Option<(&str, Option<Attachment>, &str)> {
    let mut in_code = false;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'`' => in_code = !in_code,
            b'[' if !in_code => {
                let image = i > 0 && bytes[i - 1] == b'!';
                if let Some((label, target, title, end)) = link_at(&s[i..]) {
                    let start = if image { i - 1 } else { i };
                    let attachment = if image {
                        Attachment::from_link(label, target, Some(MediaType::Image)).ok()
                    } else if title.is_some_and(|t| t.eq_ignore_ascii_case("attachment")) {
                        Attachment::from_link(label, target, None).ok()
                    } else {
                        None
                    };
                    return Some((&s[..start], attachment, &s[i + end..]));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `[label](target "title")` at the start of `s`: label, target, title, and its length.
fn link_at(s: &str) -> Option<(&str, &str, Option<&str>, usize)> {
    let close = s.find("](")?;
    let label = &s[1..close];
    if label.contains(['[', ']', '\n']) {
        return None;
    }
    let inner_start = close + 2;
    let inner_len = s[inner_start..].find(')')?;
    let inner = s[inner_start..inner_start + inner_len].trim();
    let (target, title) = match inner.split_once(char::is_whitespace) {
        Some((t, title)) => (t, Some(title.trim().trim_matches(['"', '\'']))),
        None => (inner, None),
    };
    let target = target.trim_matches(['<', '>']);
    if target.is_empty() || target.contains(char::is_whitespace) {
        return None;
    }
    Some((label, target, title, inner_start + inner_len + 1))
}

/// How an attachment goes out: its kind, the file name WeCom records, and its MIME type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// `media/upload`'s type.
    pub kind: MediaType,
    /// A file name whose extension WeCom accepts for the kind.
    pub file_name: String,
    /// The MIME type.
    pub mime: String,
}

/// Sorts an attachment into WeCom's kinds by what its bytes are: JPG and PNG go as pictures
/// (over 10 MB as files), AMR as voice, MP4 as video (over 10 MB as a file), anything else as
/// a file of at most 20 MB. Every medium must be over 5 bytes.
pub fn plan_upload(
    name: &str,
    declared_mime: Option<&str>,
    wanted: Option<MediaType>,
    bytes: &[u8],
) -> Result<Planned, MediaError> {
    if bytes.len() <= 5 {
        return Err(MediaError::new(
            "it is empty (WeCom takes media over 5 bytes)",
        ));
    }
    let sniffed = sniff(bytes);
    let mime = sniffed
        .map(|(m, _)| m.to_owned())
        .or_else(|| declared_mime.map(|m| m.split(';').next().unwrap_or(m).trim().to_owned()))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let natural = match sniffed.map(|(_, e)| e) {
        Some("jpg" | "png") => MediaType::Image,
        Some("amr") => MediaType::Voice,
        Some("mp4") => MediaType::Video,
        _ => MediaType::File,
    };
    if wanted == Some(MediaType::Image) && natural != MediaType::Image {
        return Err(MediaError::new(
            "it is not a JPG or PNG picture, the only kinds WeCom shows",
        ));
    }
    let kind = if bytes.len() > natural.max_bytes() {
        MediaType::File
    } else {
        natural
    };
    if bytes.len() > kind.max_bytes() {
        return Err(MediaError::new(format!(
            "it is {} MB, over WeCom's {} MB limit for a {}",
            bytes.len().div_ceil(1 << 20),
            kind.max_bytes() >> 20,
            kind.as_str()
        )));
    }
    let mut file_name = clean_name(name);
    if file_name.is_empty() {
        file_name = "attachment".to_owned();
    }
    if let Some((_, ext)) = sniffed {
        let has = extension(&file_name);
        let fits = match ext {
            "jpg" => matches!(has.as_deref(), Some("jpg" | "jpeg")),
            other => has.as_deref() == Some(other),
        };
        if !fits && kind != MediaType::File || has.is_none() {
            file_name = format!("{file_name}.{ext}");
        }
    }
    Ok(Planned {
        kind,
        file_name,
        mime,
    })
}

/// Sizes for people: `812 bytes`, `14 KB`, `3.2 MB`.
pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1 << 20 => format!("{} KB", b.div_ceil(1024)),
        b => {
            let tenths = (b * 10).div_ceil(1 << 20);
            format!("{}.{} MB", tenths / 10, tenths % 10)
        }
    }
}

/// The base64 of bytes (the webhook's `media[].base64`).
pub fn base64(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

impl Source {
    /// For messages: the URL's host, or the size of inline bytes.
    pub fn describe(&self) -> String {
        match self {
            Self::Url(u) => Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "a bad URL".to_string()),
            Self::Bytes { bytes, .. } => human_size(bytes.len() as u64),
        }
    }
}

/// The user's message made ready for the agent, in the job (never in the callback): the text a
/// model reads, the pictures it sees, and for the webhook each medium described.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gathered {
    /// The input as text: the words, a transcript, a text file's content, and a short note
    /// for each medium the model does not get.
    pub text: String,
    /// Pictures as `data:` URLs (vision).
    pub images: Vec<String>,
    /// Each medium, for the webhook.
    pub media: Vec<MediaInfo>,
}

impl Gathered {
    /// Nothing gathered: the input's own text.
    pub fn plain(input: &crate::job::AgentInput) -> Self {
        Self {
            text: input.to_text(),
            ..Self::default()
        }
    }
}

/// A medium of the user's message as the webhook receives it (`media` in the event).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaInfo {
    /// `image`, `voice`, `video` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// WeCom's media id (apps; valid three days, for `media/get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// The URL (an app picture's `PicUrl`, or an AI bot's sealed medium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The file name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The MIME type, when downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// The bytes, with `agent.webhook_media_bytes` (an AI bot's already decrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Why the bytes are missing, when they were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn only_public_https_unless_allowed() {
        let none = MediaPolicy::default();
        assert!(none.check("https://example.com/a.png").is_ok());
        for refused in [
            "http://example.com/a.png",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://a.localhost./x",
            "https://10.1.2.3/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:192.168.0.1]/x",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://user:pw@example.com/x",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "not a url",
            // Decimal and hex forms are normalised by the URL parser, then refused.
            "https://2130706433/x",
            "https://0x7f.1/x",
        ] {
            assert!(none.check(refused).is_err(), "{refused}");
        }
        let allow =
            MediaPolicy::from_hosts(&["127.0.0.1", "files.internal", "10.0.0.0/8"]).unwrap();
        assert!(allow.check("http://127.0.0.1:9/x").is_ok());
        assert!(allow.check("http://FILES.internal/x").is_ok());
        assert!(allow.check("https://10.9.9.9/x").is_ok());
        assert!(allow.check("https://169.254.169.254/x").is_err());
        assert!(allow.check("http://example.com/x").is_err());
        assert!(allow.allows_ip("10.1.1.1".parse().unwrap()));
        assert!(!allow.allows_ip("192.168.1.1".parse().unwrap()));
        assert!(allow.allows_ip("93.184.216.34".parse().unwrap()));
        assert!(MediaPolicy::from_hosts(&["10.0.0.0/33"]).is_err());
        assert!(MediaPolicy::from_hosts(&["bad host/"]).is_err());
    }

    #[test]
    fn attachments_are_found_outside_code() {
        let (text, found) = extract_attachments(
            "Here:\n\n![chart](https://x.example/c.png)\n\nand [the report](https://x.example/r.pdf \"attachment\"), \
             a [plain link](https://x.example/) stays.\n```\n![not](https://x.example/n.png)\n```\n`![nor](https://x/y.png)`",
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "chart");
        assert_eq!(found[0].kind, Some(MediaType::Image));
        assert_eq!(found[1].name, "the report");
        assert_eq!(
            found[1].source,
            Source::Url("https://x.example/r.pdf".into())
        );
        assert!(
            text.starts_with("Here:\n\nand , a [plain link](https://x.example/) stays."),
            "{text}"
        );
        assert!(text.contains("![not](https://x.example/n.png)") && text.contains("`![nor]"));
        assert_eq!(
            drop_inline_bytes("a ![p](data:image/png;base64,iVBORw0KGgo=) b [l](https://x/) c"),
            "a  b [l](https://x/) c"
        );
        let (_, inline) = extract_attachments("![](data:image/png;base64,iVBORw0KGgo=)");
        assert!(
            matches!(&inline[0].source, Source::Bytes { bytes, .. } if bytes.starts_with(b"\x89PNG"))
        );
        assert_eq!(inline[0].name, "attachment");
        let (same, none) = extract_attachments("a [x](y z) b ![broken](no close");
        assert!(none.is_empty());
        assert_eq!(same, "a [x](y z) b ![broken](no close");
    }

    #[test]
    fn uploads_are_sorted_by_their_bytes() {
        let png = b"\x89PNG\r\n\x1a\n0000".to_vec();
        let p = plan_upload("chart", None, Some(MediaType::Image), &png).unwrap();
        assert_eq!(
            (p.kind, p.file_name.as_str(), p.mime.as_str()),
            (MediaType::Image, "chart.png", "image/png")
        );
        let gif = b"GIF89a....".to_vec();
        assert!(plan_upload("a.gif", None, Some(MediaType::Image), &gif).is_err());
        let f = plan_upload("notes.pdf", Some("application/pdf"), None, b"%PDF-1.7 ...").unwrap();
        assert_eq!(
            (f.kind, f.file_name.as_str()),
            (MediaType::File, "notes.pdf")
        );
        let txt = plan_upload(
            "../../etc/a.txt",
            Some("text/plain; charset=utf-8"),
            None,
            b"hello world",
        )
        .unwrap();
        assert_eq!(
            (txt.kind, txt.file_name.as_str(), txt.mime.as_str()),
            (MediaType::File, "a.txt", "text/plain")
        );
        assert!(plan_upload("x", None, None, b"tiny").is_err());
        let mut big = b"\xff\xd8\xff".to_vec();
        big.resize(11 << 20, 0);
        assert_eq!(
            plan_upload("big.jpg", None, None, &big).unwrap().kind,
            MediaType::File
        );
        big.resize(21 << 20, 0);
        let err = plan_upload("big.jpg", None, None, &big).unwrap_err();
        assert!(err.0.contains("20 MB"), "{err}");
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(
            disposition_name("attachment; filename=\"a b.pdf\"").as_deref(),
            Some("a b.pdf")
        );
        assert_eq!(
            disposition_name("attachment; filename=\"x\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf")
                .as_deref(),
            Some("报告.pdf")
        );
        assert_eq!(clean_name("..\\..\\a\u{0}.txt"), "a.txt");
        assert_eq!(human_size(812), "812 bytes");
        assert_eq!(human_size(14 * 1024), "14 KB");
        assert_eq!(human_size(3 * (1 << 20) + (1 << 19)), "3.5 MB");
        assert!(is_text_name("Main.RS") && !is_text_name("a.pdf") && !is_text_name("README"));
        assert_eq!(as_text(b"ok"), Some("ok"));
        assert_eq!(as_text(b"a\0b"), None);
    }
}
