//! WeCom's XML: the encrypted envelope, every decrypted message type, and passive replies.
//!
//! Parsing reads a document's top-level fields into one slot per field the relay knows, then
//! typed values. What WeCom sends (flat, known fields of CDATA or plain text) is read in one
//! pass with no allocation; anything else goes through quick-xml into a small element tree,
//! which also makes every error.
//! - No DTD is ever processed: a `<!DOCTYPE` is rejected, so entity expansion attacks have
//!   nothing to expand. Only the five predefined entities and character references are decoded.
//! - The tree is built with an explicit stack in one pass: time is linear in the input and the
//!   nesting depth is capped, so hostile input cannot recurse or go quadratic.
//! - Unknown message types and events are kept with their raw XML, never rejected.

use alloc::borrow::{Cow, ToOwned};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;

use quick_xml::events::Event as XmlEvent;
use quick_xml::Reader;
use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;

/// Deeper nesting than any WeCom message has (SendPicsInfo/PicList/item/PicMd5Sum is 4).
const MAX_DEPTH: usize = 16;

/// More elements than any WeCom message has (the largest, a 9-picture `SendPicsInfo`, has
/// about 40).
const MAX_ELEMENTS: usize = 512;

/// WeCom's user ids are 1 to 64 bytes.
pub const MAX_USER_ID_BYTES: usize = 64;

/// Ids WeCom generates (`MsgId`, `AgentID`, `CorpID`) are far shorter than this.
const MAX_ID_BYTES: usize = 64;

/// What can go wrong reading WeCom XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// The input is not well-formed XML (the message says where).
    Malformed(String),
    /// A `<!DOCTYPE>` was present; DTDs are refused outright.
    Doctype,
    /// Elements nest deeper than any WeCom message does.
    TooDeep,
    /// The root element is not `<xml>`.
    NotWeComXml,
    /// A required field is missing.
    MissingField(&'static str),
    /// A field has a value of the wrong form.
    InvalidField(&'static str),
    /// A field appears twice where WeCom sends it once.
    DuplicateField(String),
    /// More elements than any WeCom message has.
    TooManyElements,
}

impl XmlError {
    /// The official WXBizMsgCrypt code for XML failures (-40002).
    pub fn code(&self) -> i32 {
        -40002
    }
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed xml: {why}"),
            Self::Doctype => f.write_str("xml with a doctype is refused"),
            Self::TooDeep => f.write_str("xml nests too deeply"),
            Self::NotWeComXml => f.write_str("root element is not <xml>"),
            Self::MissingField(name) => write!(f, "missing field {name}"),
            Self::InvalidField(name) => write!(f, "invalid field {name}"),
            Self::DuplicateField(name) => write!(f, "field {name} appears more than once"),
            Self::TooManyElements => {
                write!(f, "more than {MAX_ELEMENTS} elements")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for XmlError {}

/// One element: its text (CDATA and text joined) and its children, borrowed from the input
/// where it can be (a field of one CDATA section or of plain text without entities costs no
/// allocation).
#[derive(Debug, Default, Clone, PartialEq)]
struct Node<'a> {
    name: Cow<'a, str>,
    text: Cow<'a, str>,
    children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    fn named(name: Cow<'a, str>) -> Self {
        Node {
            name,
            ..Node::default()
        }
    }

    fn child(&self, name: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_ref())
    }

    fn opt(&self, name: &str) -> Option<String> {
        self.text_of(name).map(str::to_owned)
    }

    fn num<T: core::str::FromStr>(&self, name: &'static str) -> Result<T, XmlError> {
        self.text_of(name)
            .ok_or(XmlError::MissingField(name))?
            .trim()
            .parse()
            .map_err(|_| XmlError::InvalidField(name))
    }

    /// Adds a child; room for a whole WeCom message's fields at the first, so the list grows
    /// once.
    fn adopt(&mut self, child: Node<'a>) {
        if self.children.is_empty() {
            self.children.reserve(12);
        }
        self.children.push(child);
    }
}

fn malformed(e: impl fmt::Display) -> XmlError {
    XmlError::Malformed(e.to_string())
}

/// `piece` as the part of `input` it is, found by its address: the events of a slice reader
/// point into its input, so nothing is checked or copied twice. A piece from elsewhere is
/// checked and copied.
fn within<'a>(input: &'a str, piece: &[u8]) -> Result<Cow<'a, str>, XmlError> {
    let offset = (piece.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    let found = offset
        .checked_add(piece.len())
        .and_then(|end| input.get(offset..end))
        .filter(|s| s.as_ptr() == piece.as_ptr());
    match found {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => core::str::from_utf8(piece)
            .map(|s| Cow::Owned(s.to_owned()))
            .map_err(malformed),
    }
}

/// Declares the top-level fields the relay reads: [`Tag`], one slot each in [`Fields`].
macro_rules! tags {
    ($($tag:ident = $name:literal,)*) => {
        /// A top-level field the relay reads, by its slot in [`Fields`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Tag {
            $($tag,)*
        }

        /// How many [`Tag`]s there are.
        const TAGS: usize = [$($name),*].len();

        /// The length of the longest [`Tag`]'s name.
        const LONGEST_TAG: usize = {
            let names = [$($name),*];
            let (mut i, mut longest) = (0, 0);
            while i < names.len() {
                if names[i].len() > longest {
                    longest = names[i].len();
                }
                i += 1;
            }
            longest
        };

        impl Tag {
            /// Every tag, in slot order.
            #[cfg(any(test, feature = "testing"))]
            const ALL: [Tag; TAGS] = [$(Self::$tag,)*];

            /// The tag for an element's name (exact, case-sensitive, as quick-xml compares).
            fn of(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$tag),)*
                    _ => None,
                }
            }

            /// The element's name.
            fn name(self) -> &'static str {
                match self {
                    $(Self::$tag => $name,)*
                }
            }

            /// Whether `s` starts with the element's end tag, `</Name>`: each arm compares
            /// with a constant, which the compiler does in a few loads instead of a call
            /// to `memcmp` for each field.
            fn ends(self, s: &[u8]) -> bool {
                match self {
                    $(Self::$tag => s.starts_with(concat!("</", $name, ">").as_bytes()),)*
                }
            }
        }
    };
}

tags! {
    ToUserName = "ToUserName",
    FromUserName = "FromUserName",
    CreateTime = "CreateTime",
    MsgType = "MsgType",
    MsgId = "MsgId",
    AgentId = "AgentID",
    Encrypt = "Encrypt",
    Content = "Content",
    PicUrl = "PicUrl",
    MediaId = "MediaId",
    Format = "Format",
    Recognition = "Recognition",
    ThumbMediaId = "ThumbMediaId",
    FileName = "FileName",
    FileSize = "FileSize",
    Title = "Title",
    Description = "Description",
    Url = "Url",
    LocationX = "Location_X",
    LocationY = "Location_Y",
    Scale = "Scale",
    Label = "Label",
    AppType = "AppType",
    Event = "Event",
    EventKey = "EventKey",
    Latitude = "Latitude",
    Longitude = "Longitude",
    Precision = "Precision",
    TaskId = "TaskId",
    CardType = "CardType",
    ResponseCode = "ResponseCode",
}

/// A document's top-level fields that the relay reads, each in its [`Tag`]'s slot (so a
/// lookup is an index, not a search), borrowed from the document where it can be.
///
/// A slot is a borrowed text or nothing, all zeros when empty: setting up a document's slots
/// is a few stores of zeros, and dropping them is nothing. (A slot of `Option<Cow<str>>` was
/// set up by copying its `None`'s pattern in, a 744-byte `memcpy` per document, and had to be
/// checked to drop.) The few texts that are not in the document as they read, a field split
/// across CDATA sections or with entities, are kept aside in `built`.
#[derive(Debug, Clone)]
struct Fields<'a> {
    slots: [Option<&'a str>; TAGS],
    /// The texts the reader had to build, by tag; their slots are empty.
    built: Vec<(Tag, String)>,
    /// The root element as the general path read it, for nested elements (`ScanCodeInfo`,
    /// `SendPicsInfo`, ...); `None` from the fast path, which reads no nesting.
    root: Option<Node<'a>>,
}

impl<'a> Fields<'a> {
    fn text(&self, tag: Tag) -> Option<&str> {
        match self.slots[tag as usize] {
            Some(text) => Some(text),
            None if self.built.is_empty() => None,
            None => self
                .built
                .iter()
                .find(|(t, _)| *t == tag)
                .map(|(_, text)| text.as_str()),
        }
    }

    fn take(&mut self, tag: Tag) -> Option<Cow<'a, str>> {
        match self.slots[tag as usize].take() {
            Some(text) => Some(Cow::Borrowed(text)),
            None if self.built.is_empty() => None,
            None => {
                let at = self.built.iter().position(|(t, _)| *t == tag)?;
                Some(Cow::Owned(self.built.swap_remove(at).1))
            }
        }
    }

    /// Puts `text` in `tag`'s (empty) slot, or aside where it is not borrowed.
    fn put(&mut self, tag: Tag, text: Cow<'a, str>) {
        match text {
            Cow::Borrowed(text) => self.slots[tag as usize] = Some(text),
            Cow::Owned(text) => self.built.push((tag, text)),
        }
    }

    /// Whether `tag` has a text.
    fn has(&self, tag: Tag) -> bool {
        self.slots[tag as usize].is_some() || self.built.iter().any(|(t, _)| *t == tag)
    }

    /// Every field's text, for comparing two readings (the tests').
    #[cfg(any(test, feature = "testing"))]
    fn texts(&self) -> Vec<Option<&str>> {
        Tag::ALL.iter().map(|&tag| self.text(tag)).collect()
    }

    fn opt(&self, tag: Tag) -> Option<String> {
        self.text(tag).map(str::to_owned)
    }

    /// The field's text, taken out of its slot (each is read once), borrowed where it can be.
    fn cow(&mut self, tag: Tag) -> Option<Cow<'a, str>> {
        self.take(tag)
    }

    /// [`Fields::cow`], or empty.
    fn cow_or_empty(&mut self, tag: Tag) -> Cow<'a, str> {
        self.cow(tag).unwrap_or_default()
    }

    /// [`Fields::cow`], required.
    fn cow_req(&mut self, tag: Tag) -> Result<Cow<'a, str>, XmlError> {
        self.cow(tag).ok_or(XmlError::MissingField(tag.name()))
    }

    fn req(&self, tag: Tag) -> Result<String, XmlError> {
        self.opt(tag).ok_or(XmlError::MissingField(tag.name()))
    }

    fn num<T: core::str::FromStr>(&self, tag: Tag) -> Result<T, XmlError> {
        trim(self.text(tag).ok_or(XmlError::MissingField(tag.name()))?)
            .parse()
            .map_err(|_| XmlError::InvalidField(tag.name()))
    }

    /// A nested element under the root (the general path's; the fast path reads none).
    fn child(&self, name: &str) -> Option<&Node<'a>> {
        self.root.as_ref()?.child(name)
    }

    fn new() -> Self {
        Fields {
            slots: [None; TAGS],
            built: Vec::new(),
            root: None,
        }
    }

    /// Reads the fields under `input`'s root element, which must be `<xml>`, into these
    /// (empty) ones, in place: they are half a kilobyte, which a return would copy. Text and
    /// CDATA are borrowed from `input`; only text with entities and a field split across CDATA
    /// sections are copied.
    ///
    /// What WeCom sends (one `<xml>` of flat, known fields, each CDATA or plain text) is read
    /// by [`Fields::read_flat`] in one pass; everything else, and every error, comes from
    /// quick-xml's reader ([`general_tree`]). The two agree wherever the first answers: the
    /// tests and the `xml` fuzz target check it.
    fn read(&mut self, input: &'a str) -> Result<(), XmlError> {
        if self.read_flat(input).is_none() {
            self.read_tree(general_tree(input)?);
        }
        Ok(())
    }

    /// The root's fields, taken out of the general path's tree (which keeps the nesting).
    fn read_tree(&mut self, mut root: Node<'a>) {
        self.slots = [None; TAGS];
        self.built.clear();
        for child in &mut root.children {
            if let Some(tag) = Tag::of(&child.name) {
                // `finish_root` has refused a field given twice.
                self.put(tag, core::mem::take(&mut child.text));
            }
        }
        self.root = Some(root);
    }

    /// The fast path of [`Fields::read`]: `<xml>` (after ASCII whitespace) holding only
    /// fields `<Name>…</Name>` whose names are [`Tag`]s, separated by ASCII whitespace, each
    /// field's content CDATA sections and plain text without `&` or `<`. Like the general
    /// path it reads nothing after `</xml>`. `None` for anything else (a declaration, a
    /// comment, an attribute, an entity, a nested or empty element, a repeated or unknown
    /// field, a malformed tag), which the general path then parses or refuses, so the errors
    /// are always its own. It allocates nothing unless a field is split across CDATA sections.
    fn read_flat(&mut self, input: &'a str) -> Option<()> {
        const CDATA: &str = "<![CDATA[";
        let mut rest = input.trim_ascii_start().strip_prefix("<xml>")?;
        loop {
            rest = rest.trim_ascii_start().strip_prefix('<')?;
            if let Some(end) = rest.strip_prefix('/') {
                // Only the root's end tag can close here: a field's end is read with it.
                return end.strip_prefix("xml>").map(|_| ());
            }
            let head = &rest.as_bytes()[..rest.len().min(LONGEST_TAG + 1)];
            let name_len = head.iter().position(|&b| b == b'>')?;
            let tag = Tag::of(&rest[..name_len])?;
            if self.has(tag) {
                return None;
            }
            let mut content = &rest[name_len + 1..];
            let mut text = FlatText::default();
            loop {
                if let Some(data) = content.strip_prefix(CDATA) {
                    let end = cdata_end(data.as_bytes())?;
                    text.push(&data[..end]);
                    content = &data[end + 3..];
                    continue;
                }
                // Plain text runs to the next tag; an entity (`&`) ends the fast path below,
                // as it is not `</`.
                let stop = markup_at(content.as_bytes())?;
                if stop > 0 {
                    text.push(&content[..stop]);
                    content = &content[stop..];
                    continue;
                }
                if !tag.ends(content.as_bytes()) {
                    return None;
                }
                // `</`, the name and `>`, all ASCII.
                rest = &content[name_len + 3..];
                break;
            }
            self.put(tag, text.into_cow());
        }
    }
}

/// A field's text as the fast path gathers it: its first piece borrowed, and a copy only
/// once a second piece (a field split across CDATA sections, once per `]]>` in it) arrives.
/// The copy starts with room for twice what it holds, so a field split several times is
/// seldom grown more than once. The usual field, one piece, stays a borrowed `&str`.
#[derive(Default)]
struct FlatText<'a> {
    first: &'a str,
    joined: Option<String>,
}

impl<'a> FlatText<'a> {
    #[inline(always)]
    fn push(&mut self, piece: &'a str) {
        match &mut self.joined {
            Some(joined) => joined.push_str(piece),
            None if self.first.is_empty() => self.first = piece,
            None => {
                let mut joined = String::with_capacity(2 * (self.first.len() + piece.len()));
                joined.push_str(self.first);
                joined.push_str(piece);
                self.joined = Some(joined);
            }
        }
    }

    #[inline(always)]
    fn into_cow(self) -> Cow<'a, str> {
        match self.joined {
            Some(joined) => Cow::Owned(joined),
            None => Cow::Borrowed(self.first),
        }
    }
}

/// [`Fields::read`] into new fields (for the tests, where a copy costs nothing).
#[cfg(test)]
fn parse_fields(input: &str) -> Result<Fields<'_>, XmlError> {
    let mut fields = Fields::new();
    fields.read(input)?;
    Ok(fields)
}

/// The fast path's answer alone, `None` where it leaves the input to the general path.
#[cfg(any(test, feature = "testing"))]
fn flat_fields(input: &str) -> Option<Fields<'_>> {
    let mut fields = Fields::new();
    fields.read_flat(input)?;
    Some(fields)
}

/// The general path's answer alone.
#[cfg(any(test, feature = "testing"))]
fn general_fields(input: &str) -> Result<Fields<'_>, XmlError> {
    let mut fields = Fields::new();
    fields.read_tree(general_tree(input)?);
    Ok(fields)
}

/// Appends `piece` to an element's text (the general path's; the fast path has
/// [`FlatText`]), taking it whole when it is the first, so an element of one CDATA section
/// or one run of text stays borrowed.
fn push_text<'a>(text: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if text.is_empty() {
        *text = piece;
    } else {
        text.to_mut().push_str(&piece);
    }
}

/// Whether the fast path, where it answers, answers as the general path does (the `xml` fuzz
/// target's invariant).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn fast_path_agrees(input: &str) -> bool {
    match flat_fields(input) {
        None => true,
        Some(fast) => general_fields(input).is_ok_and(|general| general.texts() == fast.texts()),
    }
}

/// Where `]]>` first starts in `data` (a CDATA section's content rarely holds a `]`, so this
/// is one `memchr` where a substring searcher would first have to be built).
fn cdata_end(data: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr::memchr(b']', &data[from..])?;
        if data[at..].starts_with(b"]]>") {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Where the first `<` or `&` is in `bytes`: a plain loop over the first few bytes, which is
/// where plain text ends (ids, numbers, the end tag after a CDATA section), then `memchr`'s
/// vector search, which pays for its call only on longer text.
fn markup_at(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 24;
    let (head, tail) = bytes.split_at(bytes.len().min(SHORT));
    match head.iter().position(|&b| b == b'<' || b == b'&') {
        Some(at) => Some(at),
        None => memchr::memchr2(b'<', b'&', tail).map(|at| at + head.len()),
    }
}

/// `s.trim()`, without looking at its characters when it plainly has nothing to trim (it
/// starts and ends with a visible ASCII byte, as WeCom's ids, numbers and ciphertext do;
/// every character `trim` removes is ASCII whitespace or starts and ends with a byte over
/// 0x7f).
fn trim(s: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|&b| b > b' ' && b < 0x80);
    if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// The general path of [`Fields::read`]: quick-xml's reader, for any XML.
fn general_tree(input: &str) -> Result<Node<'_>, XmlError> {
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<Node<'_>> = Vec::with_capacity(4);
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        if matches!(event, XmlEvent::Start(_) | XmlEvent::Empty(_)) {
            elements += 1;
            if elements > MAX_ELEMENTS {
                return Err(XmlError::TooManyElements);
            }
        }
        match event {
            XmlEvent::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(Node::named(within(input, start.name().as_ref())?));
            }
            XmlEvent::Empty(start) => {
                let node = Node::named(within(input, start.name().as_ref())?);
                match stack.last_mut() {
                    Some(parent) => parent.adopt(node),
                    None => return finish_root(node),
                }
            }
            XmlEvent::End(_) => {
                let node = stack.pop().ok_or_else(|| malformed("unexpected end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.adopt(node),
                    None => return finish_root(node),
                }
            }
            XmlEvent::Text(text) => {
                if let Some(node) = stack.last_mut() {
                    push_text(&mut node.text, unescaped(within(input, &text)?)?);
                } else if !text.iter().all(u8::is_ascii_whitespace) {
                    return Err(malformed("text outside the root element"));
                }
            }
            XmlEvent::CData(data) => {
                let node = stack
                    .last_mut()
                    .ok_or_else(|| malformed("cdata outside the root element"))?;
                push_text(&mut node.text, within(input, &data)?);
            }
            XmlEvent::DocType(_) => return Err(XmlError::Doctype),
            XmlEvent::Decl(_) | XmlEvent::PI(_) | XmlEvent::Comment(_) => {}
            XmlEvent::Eof => return Err(malformed("unexpected end of input")),
        }
    }
}

/// Text with the predefined entities and character references decoded (borrowed when it has
/// none).
fn unescaped(text: Cow<'_, str>) -> Result<Cow<'_, str>, XmlError> {
    match text {
        Cow::Borrowed(s) => quick_xml::escape::unescape(s).map_err(malformed),
        Cow::Owned(s) => Ok(Cow::Owned(
            quick_xml::escape::unescape(&s)
                .map_err(malformed)?
                .into_owned(),
        )),
    }
}

/// The root must be `<xml>`, and no field may appear twice in it: WeCom sends each once, and
/// a second `Encrypt` or `FromUserName` is someone else's doing.
fn finish_root(node: Node<'_>) -> Result<Node<'_>, XmlError> {
    if node.name != "xml" {
        return Err(XmlError::NotWeComXml);
    }
    for (i, child) in node.children.iter().enumerate() {
        if node.children[..i].iter().any(|c| c.name == child.name) {
            let name: String = child.name.chars().take(32).collect();
            return Err(XmlError::DuplicateField(name));
        }
    }
    Ok(node)
}

/// A required id-like field: present, not empty, not longer than `max` bytes, no control
/// characters; trimmed, and borrowed where it can be.
fn id_field<'a>(fields: &mut Fields<'a>, tag: Tag, max: usize) -> Result<Cow<'a, str>, XmlError> {
    let value = fields.cow_req(tag)?;
    let trimmed = trim(&value);
    if trimmed.is_empty() || trimmed.len() > max || crate::text::has_control(trimmed) {
        return Err(XmlError::InvalidField(tag.name()));
    }
    Ok(match value {
        Cow::Borrowed(text) => Cow::Borrowed(trim(text)),
        Cow::Owned(text) if trim(&text).len() == text.len() => Cow::Owned(text),
        Cow::Owned(text) => Cow::Owned(trim(&text).to_owned()),
    })
}

/// An optional id-like field: empty counts as absent; otherwise as [`id_field`].
fn opt_id_field<'a>(fields: &mut Fields<'a>, tag: Tag) -> Result<Option<Cow<'a, str>>, XmlError> {
    match fields.text(tag) {
        Some(v) if trim(v).is_empty() => Ok(None),
        Some(_) => id_field(fields, tag, MAX_ID_BYTES).map(Some),
        None => Ok(None),
    }
}

/// The outer body WeCom POSTs: `<xml><ToUserName/><Encrypt/><AgentID/></xml>`, borrowed from
/// the body (the ciphertext is most of it, and is only read once, to verify and decrypt it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The CorpID in clear text (not authenticated: routing trusts only the decrypted one).
    pub to_user_name: Option<Cow<'a, str>>,
    /// Base64 ciphertext.
    pub encrypt: Cow<'a, str>,
    /// The agent id in clear text, when present (not authenticated either).
    pub agent_id: Option<Cow<'a, str>>,
}

/// Parses the POST body of a callback as it arrived: a body that is not UTF-8 is refused
/// before any XML is read.
pub fn parse_envelope_bytes(body: &[u8]) -> Result<Envelope<'_>, XmlError> {
    let body =
        crate::text::utf8(body).ok_or_else(|| XmlError::Malformed("body is not utf-8".into()))?;
    parse_envelope(body)
}

/// Parses the POST body of a callback.
pub fn parse_envelope(body: &str) -> Result<Envelope<'_>, XmlError> {
    let mut fields = Fields::new();
    fields.read(body)?;
    let encrypt = match fields
        .take(Tag::Encrypt)
        .ok_or(XmlError::MissingField("Encrypt"))?
    {
        Cow::Borrowed(text) => Cow::Borrowed(trim(text)),
        Cow::Owned(text) => Cow::Owned(trim(&text).to_owned()),
    };
    if encrypt.is_empty() {
        return Err(XmlError::MissingField("Encrypt"));
    }
    Ok(Envelope {
        to_user_name: fields.take(Tag::ToUserName),
        encrypt,
        agent_id: fields.take(Tag::AgentId),
    })
}

/// A decrypted callback message: the common header plus its typed body, its text borrowed
/// from the decrypted XML wherever the XML holds it as is (a field split across CDATA
/// sections is the exception), so reading a message copies nothing that a WeCom retry, which
/// is dropped after its dedup claim, would throw away. [`Message::into_owned`] detaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message<'a> {
    /// `ToUserName`: the CorpID.
    pub to_user_name: Cow<'a, str>,
    /// `FromUserName`: the sender's UserID (or `sys` for some events).
    pub from_user_name: Cow<'a, str>,
    /// `CreateTime`, unix seconds.
    pub create_time: u64,
    /// `MsgId`, present on messages, absent on most events.
    pub msg_id: Option<Cow<'a, str>>,
    /// `AgentID`.
    pub agent_id: Option<Cow<'a, str>>,
    /// The typed content.
    pub body: MessageBody<'a>,
}

/// The content of a message, by `MsgType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageBody<'a> {
    /// `text`.
    Text {
        /// The text.
        content: Cow<'a, str>,
    },
    /// `image`.
    Image {
        /// A URL of the picture.
        pic_url: Cow<'a, str>,
        /// Media id, valid for three days.
        media_id: Cow<'a, str>,
    },
    /// `voice`.
    Voice {
        /// Media id.
        media_id: Cow<'a, str>,
        /// `amr` or `speex`.
        format: Cow<'a, str>,
        /// WeCom's transcript (`Recognition`), when speech recognition is on for the app.
        recognition: Option<Cow<'a, str>>,
    },
    /// `video`.
    Video {
        /// Media id.
        media_id: Cow<'a, str>,
        /// Media id of the thumbnail.
        thumb_media_id: Cow<'a, str>,
    },
    /// `file`: WeCom sends it although its format page leaves it out.
    File {
        /// Media id.
        media_id: Cow<'a, str>,
        /// `FileName`.
        file_name: Cow<'a, str>,
        /// `FileSize` in bytes, when given.
        file_size: Option<u64>,
    },
    /// `location`.
    Location {
        /// `Location_X`: latitude.
        latitude: f64,
        /// `Location_Y`: longitude.
        longitude: f64,
        /// Map zoom.
        scale: Cow<'a, str>,
        /// The place's description.
        label: Cow<'a, str>,
        /// `AppType`, e.g. `wxwork`, when present.
        app_type: Option<Cow<'a, str>>,
    },
    /// `link`.
    Link {
        /// Title.
        title: Cow<'a, str>,
        /// Description.
        description: Cow<'a, str>,
        /// The link.
        url: Cow<'a, str>,
        /// The cover picture.
        pic_url: Cow<'a, str>,
    },
    /// `event`.
    Event(Event),
    /// A `MsgType` this version does not know, kept whole.
    Unknown {
        /// The `MsgType` as sent.
        msg_type: Cow<'a, str>,
        /// The decrypted XML.
        raw: Cow<'a, str>,
    },
}

/// An event (`MsgType` `event`), matched case-insensitively on `Event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", rename_all = "snake_case")]
pub enum Event {
    /// The user followed the app.
    Subscribe,
    /// The user unfollowed the app.
    Unsubscribe,
    /// The user opened the app.
    EnterAgent {
        /// Usually empty.
        event_key: Option<String>,
    },
    /// `LOCATION`: the client reported its position.
    Location {
        /// Latitude.
        latitude: f64,
        /// Longitude.
        longitude: f64,
        /// Precision.
        precision: String,
    },
    /// A menu click.
    Click {
        /// The menu key.
        key: String,
    },
    /// A menu link was followed.
    View {
        /// The URL.
        url: String,
    },
    /// `scancode_push` or `scancode_waitmsg`.
    ScanCode {
        /// Which of the two.
        waitmsg: bool,
        /// The menu key.
        key: String,
        /// `qrcode`, `barcode`, ...
        scan_type: String,
        /// The scanned content.
        scan_result: String,
    },
    /// `pic_sysphoto`, `pic_photo_or_album` or `pic_weixin`.
    Pics {
        /// The event name as sent, lower-cased.
        kind: String,
        /// The menu key.
        key: String,
        /// How many pictures.
        count: u32,
        /// Their MD5 sums.
        md5s: Vec<String>,
    },
    /// `location_select`.
    LocationSelect {
        /// The menu key.
        key: String,
        /// Latitude.
        latitude: f64,
        /// Longitude.
        longitude: f64,
        /// Map zoom.
        scale: String,
        /// The place's description.
        label: String,
        /// The POI name, when present.
        poiname: Option<String>,
    },
    /// A button on a template card was pressed.
    TemplateCard {
        /// The button's key.
        key: String,
        /// The card's task id.
        task_id: String,
        /// The card type.
        card_type: String,
        /// Code for updating the card.
        response_code: String,
    },
    /// An event this version does not know, kept whole.
    Unknown {
        /// The `Event` as sent.
        event: String,
        /// The decrypted XML.
        raw: String,
    },
}

impl Event {
    /// The `Event` name WeCom sends for it (lower-case).
    pub fn name(&self) -> &str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::EnterAgent { .. } => "enter_agent",
            Self::Location { .. } => "location",
            Self::Click { .. } => "click",
            Self::View { .. } => "view",
            Self::ScanCode { waitmsg: true, .. } => "scancode_waitmsg",
            Self::ScanCode { .. } => "scancode_push",
            Self::Pics { kind, .. } => kind,
            Self::LocationSelect { .. } => "location_select",
            Self::TemplateCard { .. } => "template_card_event",
            Self::Unknown { event, .. } => event,
        }
    }
}

/// `s` in ASCII lower case when it fits `buf` (every `MsgType` does), else `""`, which
/// matches no known name.
fn ascii_lower<'b>(s: &str, buf: &'b mut [u8; 8]) -> &'b str {
    match buf.get_mut(..s.len()) {
        Some(out) => {
            out.copy_from_slice(s.as_bytes());
            out.make_ascii_lowercase();
            core::str::from_utf8(out).unwrap_or_default()
        }
        None => "",
    }
}

/// Parses a decrypted callback XML, borrowing the message's text from it.
pub fn parse_message(xml: &str) -> Result<Message<'_>, XmlError> {
    let mut f = Fields::new();
    f.read(xml)?;
    let msg_type = f.cow_req(Tag::MsgType)?;
    let mut lower = [0u8; 8];
    let body = match ascii_lower(&msg_type, &mut lower) {
        "text" => MessageBody::Text {
            content: f.cow_req(Tag::Content)?,
        },
        "image" => MessageBody::Image {
            pic_url: f.cow_or_empty(Tag::PicUrl),
            media_id: f.cow_req(Tag::MediaId)?,
        },
        "voice" => MessageBody::Voice {
            media_id: f.cow_req(Tag::MediaId)?,
            format: f.cow_or_empty(Tag::Format),
            recognition: f.cow(Tag::Recognition).filter(|r| !r.trim().is_empty()),
        },
        "video" => MessageBody::Video {
            media_id: f.cow_req(Tag::MediaId)?,
            thumb_media_id: f.cow_or_empty(Tag::ThumbMediaId),
        },
        "file" => MessageBody::File {
            media_id: f.cow_req(Tag::MediaId)?,
            file_name: f
                .cow(Tag::FileName)
                .or_else(|| f.cow(Tag::Title))
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(Cow::Borrowed("file")),
            file_size: f.text(Tag::FileSize).and_then(|s| s.trim().parse().ok()),
        },
        "location" => MessageBody::Location {
            latitude: f.num(Tag::LocationX)?,
            longitude: f.num(Tag::LocationY)?,
            scale: f.cow_or_empty(Tag::Scale),
            label: f.cow_or_empty(Tag::Label),
            app_type: f.cow(Tag::AppType),
        },
        "link" => MessageBody::Link {
            title: f.cow_or_empty(Tag::Title),
            description: f.cow_or_empty(Tag::Description),
            url: f.cow_req(Tag::Url)?,
            pic_url: f.cow_or_empty(Tag::PicUrl),
        },
        "event" => MessageBody::Event(parse_event(&f, xml)?),
        _ => MessageBody::Unknown {
            msg_type,
            raw: Cow::Borrowed(xml),
        },
    };
    Ok(Message {
        to_user_name: id_field(&mut f, Tag::ToUserName, MAX_ID_BYTES)?,
        from_user_name: id_field(&mut f, Tag::FromUserName, MAX_USER_ID_BYTES)?,
        create_time: f.num(Tag::CreateTime)?,
        msg_id: opt_id_field(&mut f, Tag::MsgId)?,
        agent_id: opt_id_field(&mut f, Tag::AgentId)?,
        body,
    })
}

impl Message<'_> {
    /// The message with its text copied out of the XML it was read from.
    pub fn into_owned(self) -> Message<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        let own_opt = |text: Option<Cow<'_, str>>| text.map(|t| Cow::Owned(t.into_owned()));
        Message {
            to_user_name: own(self.to_user_name),
            from_user_name: own(self.from_user_name),
            create_time: self.create_time,
            msg_id: own_opt(self.msg_id),
            agent_id: own_opt(self.agent_id),
            body: match self.body {
                MessageBody::Text { content } => MessageBody::Text {
                    content: own(content),
                },
                MessageBody::Image { pic_url, media_id } => MessageBody::Image {
                    pic_url: own(pic_url),
                    media_id: own(media_id),
                },
                MessageBody::Voice {
                    media_id,
                    format,
                    recognition,
                } => MessageBody::Voice {
                    media_id: own(media_id),
                    format: own(format),
                    recognition: own_opt(recognition),
                },
                MessageBody::Video {
                    media_id,
                    thumb_media_id,
                } => MessageBody::Video {
                    media_id: own(media_id),
                    thumb_media_id: own(thumb_media_id),
                },
                MessageBody::File {
                    media_id,
                    file_name,
                    file_size,
                } => MessageBody::File {
                    media_id: own(media_id),
                    file_name: own(file_name),
                    file_size,
                },
                MessageBody::Location {
                    latitude,
                    longitude,
                    scale,
                    label,
                    app_type,
                } => MessageBody::Location {
                    latitude,
                    longitude,
                    scale: own(scale),
                    label: own(label),
                    app_type: own_opt(app_type),
                },
                MessageBody::Link {
                    title,
                    description,
                    url,
                    pic_url,
                } => MessageBody::Link {
                    title: own(title),
                    description: own(description),
                    url: own(url),
                    pic_url: own(pic_url),
                },
                MessageBody::Event(event) => MessageBody::Event(event),
                MessageBody::Unknown { msg_type, raw } => MessageBody::Unknown {
                    msg_type: own(msg_type),
                    raw: own(raw),
                },
            },
        }
    }
}

fn parse_event(f: &Fields, xml: &str) -> Result<Event, XmlError> {
    let event = f.req(Tag::Event)?;
    let key = || f.opt(Tag::EventKey).unwrap_or_default();
    let lower = event.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "subscribe" => Event::Subscribe,
        "unsubscribe" => Event::Unsubscribe,
        "enter_agent" => Event::EnterAgent {
            event_key: f.opt(Tag::EventKey).filter(|k| !k.is_empty()),
        },
        "location" => Event::Location {
            latitude: f.num(Tag::Latitude)?,
            longitude: f.num(Tag::Longitude)?,
            precision: f.opt(Tag::Precision).unwrap_or_default(),
        },
        "click" => Event::Click { key: key() },
        "view" => Event::View { url: key() },
        "scancode_push" | "scancode_waitmsg" => {
            let info = f
                .child("ScanCodeInfo")
                .ok_or(XmlError::MissingField("ScanCodeInfo"))?;
            Event::ScanCode {
                waitmsg: lower == "scancode_waitmsg",
                key: key(),
                scan_type: info.opt("ScanType").unwrap_or_default(),
                scan_result: info.opt("ScanResult").unwrap_or_default(),
            }
        }
        "pic_sysphoto" | "pic_photo_or_album" | "pic_weixin" => {
            let info = f
                .child("SendPicsInfo")
                .ok_or(XmlError::MissingField("SendPicsInfo"))?;
            let md5s = info
                .child("PicList")
                .map(|list| {
                    list.children
                        .iter()
                        .filter_map(|item| item.opt("PicMd5Sum"))
                        .collect()
                })
                .unwrap_or_default();
            Event::Pics {
                kind: lower.clone(),
                key: key(),
                count: info.num("Count").unwrap_or(0),
                md5s,
            }
        }
        "location_select" => {
            let info = f
                .child("SendLocationInfo")
                .ok_or(XmlError::MissingField("SendLocationInfo"))?;
            Event::LocationSelect {
                key: key(),
                latitude: info.num("Location_X")?,
                longitude: info.num("Location_Y")?,
                scale: info.opt("Scale").unwrap_or_default(),
                label: info.opt("Label").unwrap_or_default(),
                poiname: info.opt("Poiname").filter(|p| !p.is_empty()),
            }
        }
        "template_card_event" => Event::TemplateCard {
            key: key(),
            task_id: f.opt(Tag::TaskId).unwrap_or_default(),
            card_type: f.opt(Tag::CardType).unwrap_or_default(),
            response_code: f.opt(Tag::ResponseCode).unwrap_or_default(),
        },
        _ => Event::Unknown {
            event,
            raw: xml.to_owned(),
        },
    })
}

/// Appends `text` as CDATA; a `]]>` inside is split across two sections.
fn push_cdata(out: &mut String, text: &str) {
    out.push_str("<![CDATA[");
    out.push_str(&text.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

/// The passive-reply envelope WeCom expects in the response body of a callback.
pub fn encrypted_reply_xml(sealed: &Sealed) -> String {
    let mut out = String::with_capacity(sealed.encrypt.len() + 200);
    out.push_str("<xml><Encrypt>");
    push_cdata(&mut out, &sealed.encrypt);
    out.push_str("</Encrypt><MsgSignature>");
    push_cdata(&mut out, &sealed.signature);
    out.push_str("</MsgSignature><TimeStamp>");
    out.push_str(&sealed.timestamp);
    out.push_str("</TimeStamp><Nonce>");
    push_cdata(&mut out, &sealed.nonce);
    out.push_str("</Nonce></xml>");
    out
}

/// The plaintext of a passive text reply, to be encrypted with [`crate::crypto::MsgCrypt::encrypt`].
pub fn text_reply_xml(to_user: &str, corp_id: &str, create_time: u64, content: &str) -> String {
    let mut out = String::with_capacity(content.len() + 200);
    out.push_str("<xml><ToUserName>");
    push_cdata(&mut out, to_user);
    out.push_str("</ToUserName><FromUserName>");
    push_cdata(&mut out, corp_id);
    let _ = write!(
        out,
        "</FromUserName><CreateTime>{create_time}</CreateTime><MsgType>"
    );
    push_cdata(&mut out, "text");
    out.push_str("</MsgType><Content>");
    push_cdata(&mut out, content);
    out.push_str("</Content></xml>");
    out
}

/// Builds the POST body WeCom would send; used by `probe`, `demo` and tests.
pub fn callback_envelope_xml(corp_id: &str, encrypt: &str, agent_id: &str) -> String {
    let mut out = String::with_capacity(encrypt.len() + 120);
    out.push_str("<xml><ToUserName>");
    push_cdata(&mut out, corp_id);
    out.push_str("</ToUserName><Encrypt>");
    push_cdata(&mut out, encrypt);
    out.push_str("</Encrypt><AgentID>");
    push_cdata(&mut out, agent_id);
    out.push_str("</AgentID></xml>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use alloc::format;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn wrap(inner: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[Alice]]></FromUserName>\
             <CreateTime>1700000000</CreateTime>{inner}<AgentID>1000002</AgentID></xml>"
        )
    }

    #[test]
    fn official_plaintexts_parse() {
        for set in vectors() {
            let env = parse_envelope(&set.callback.body).unwrap();
            assert_eq!(env.to_user_name.as_deref(), Some(set.corp_id.as_str()));
            assert_eq!(env.agent_id.as_deref(), Some(set.agent_id.as_str()));
            let msg = parse_message(&set.callback.expected_plaintext).unwrap();
            assert_eq!(msg.to_user_name, set.corp_id);
            assert!(matches!(msg.body, MessageBody::Text { .. }));
        }
        let sets = vectors();
        let msg = parse_message(&sets[0].callback.expected_plaintext).unwrap();
        assert_eq!(msg.from_user_name, "ChenJiaShun");
        assert_eq!(msg.create_time, 1476422779);
        assert_eq!(msg.msg_id.as_deref(), Some("1456453720"));
        assert_eq!(
            msg.body,
            MessageBody::Text {
                content: "你好".into()
            }
        );
    }

    #[test]
    fn every_message_type() {
        let cases: [(&str, MessageBody); 8] = [
            (
                "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[a < b & ]]]]><![CDATA[>]]></Content><MsgId>1</MsgId>",
                MessageBody::Text { content: "a < b & ]]>".into() },
            ),
            (
                "<MsgType>image</MsgType><PicUrl>http://p/1.jpg</PicUrl><MediaId>M1</MediaId><MsgId>2</MsgId>",
                MessageBody::Image { pic_url: "http://p/1.jpg".into(), media_id: "M1".into() },
            ),
            (
                "<MsgType>voice</MsgType><MediaId>V</MediaId><Format>amr</Format><MsgId>3</MsgId>",
                MessageBody::Voice { media_id: "V".into(), format: "amr".into(), recognition: None },
            ),
            (
                "<MsgType>voice</MsgType><MediaId>V</MediaId><Format>amr</Format><Recognition><![CDATA[明天开会]]></Recognition><MsgId>3</MsgId>",
                MessageBody::Voice { media_id: "V".into(), format: "amr".into(), recognition: Some("明天开会".into()) },
            ),
            (
                "<MsgType>video</MsgType><MediaId>V</MediaId><ThumbMediaId>T</ThumbMediaId><MsgId>4</MsgId>",
                MessageBody::Video { media_id: "V".into(), thumb_media_id: "T".into() },
            ),
            (
                "<MsgType>file</MsgType><MediaId>F</MediaId><FileName><![CDATA[季度报告.pdf]]></FileName><FileSize>2048</FileSize><MsgId>4</MsgId>",
                MessageBody::File { media_id: "F".into(), file_name: "季度报告.pdf".into(), file_size: Some(2048) },
            ),
            (
                "<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y>\
                 <Scale>20</Scale><Label><![CDATA[广州市]]></Label><MsgId>5</MsgId><AppType><![CDATA[wxwork]]></AppType>",
                MessageBody::Location {
                    latitude: 23.134521,
                    longitude: 113.358803,
                    scale: "20".into(),
                    label: "广州市".into(),
                    app_type: Some("wxwork".into()),
                },
            ),
            (
                "<MsgType>link</MsgType><Title>t</Title><Description>d &amp; e</Description><Url>http://u</Url><PicUrl>http://p</PicUrl><MsgId>6</MsgId>",
                MessageBody::Link {
                    title: "t".into(),
                    description: "d & e".into(),
                    url: "http://u".into(),
                    pic_url: "http://p".into(),
                },
            ),
        ];
        for (inner, expected) in cases {
            let xml = wrap(inner);
            let msg = parse_message(&xml).unwrap();
            assert_eq!(msg.body, expected);
            assert!(msg.msg_id.is_some());
            assert_eq!(msg.agent_id.as_deref(), Some("1000002"));
        }
    }

    #[test]
    fn every_event_type() {
        let ev =
            |inner: &str| match parse_message(&wrap(&format!("<MsgType>event</MsgType>{inner}")))
                .unwrap()
                .body
            {
                MessageBody::Event(e) => e,
                other => panic!("not an event: {other:?}"),
            };
        assert_eq!(ev("<Event>subscribe</Event>"), Event::Subscribe);
        assert_eq!(ev("<Event>UNSUBSCRIBE</Event>"), Event::Unsubscribe);
        assert_eq!(
            ev("<Event>enter_agent</Event><EventKey></EventKey>"),
            Event::EnterAgent { event_key: None }
        );
        assert_eq!(
            ev("<Event>LOCATION</Event><Latitude>23.1</Latitude><Longitude>113.3</Longitude><Precision>63</Precision>"),
            Event::Location { latitude: 23.1, longitude: 113.3, precision: "63".into() }
        );
        assert_eq!(
            ev("<Event>click</Event><EventKey>K</EventKey>"),
            Event::Click { key: "K".into() }
        );
        assert_eq!(
            ev("<Event>view</Event><EventKey>http://x</EventKey>"),
            Event::View {
                url: "http://x".into()
            }
        );
        assert_eq!(
            ev("<Event>scancode_waitmsg</Event><EventKey>K</EventKey><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>R</ScanResult></ScanCodeInfo>"),
            Event::ScanCode { waitmsg: true, key: "K".into(), scan_type: "qrcode".into(), scan_result: "R".into() }
        );
        assert!(matches!(
            ev("<Event>scancode_push</Event><EventKey>K</EventKey><ScanCodeInfo><ScanType>barcode</ScanType><ScanResult>R</ScanResult></ScanCodeInfo>"),
            Event::ScanCode { waitmsg: false, .. }
        ));
        assert_eq!(
            ev("<Event>pic_photo_or_album</Event><EventKey>K</EventKey><SendPicsInfo><Count>2</Count><PicList>\
                <item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo>"),
            Event::Pics { kind: "pic_photo_or_album".into(), key: "K".into(), count: 2, md5s: vec!["a".into(), "b".into()] }
        );
        assert_eq!(
            ev("<Event>location_select</Event><EventKey>K</EventKey><SendLocationInfo><Location_X>1.5</Location_X>\
                <Location_Y>2.5</Location_Y><Scale>15</Scale><Label>L</Label><Poiname>P</Poiname></SendLocationInfo>"),
            Event::LocationSelect {
                key: "K".into(),
                latitude: 1.5,
                longitude: 2.5,
                scale: "15".into(),
                label: "L".into(),
                poiname: Some("P".into())
            }
        );
        assert_eq!(
            ev("<Event>template_card_event</Event><EventKey>btn</EventKey><TaskId>t1</TaskId><CardType>vote_interaction</CardType><ResponseCode>rc</ResponseCode>"),
            Event::TemplateCard { key: "btn".into(), task_id: "t1".into(), card_type: "vote_interaction".into(), response_code: "rc".into() }
        );
    }

    #[test]
    fn unknown_types_and_events_are_kept() {
        let xml = wrap("<MsgType>hologram</MsgType><Shape>cube</Shape><MsgId>9</MsgId>");
        let msg = parse_message(&xml).unwrap();
        assert_eq!(
            msg.body,
            MessageBody::Unknown {
                msg_type: "hologram".into(),
                raw: xml.as_str().into()
            }
        );
        let xml = wrap("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>update_user</ChangeType>");
        match parse_message(&xml).unwrap().body {
            MessageBody::Event(Event::Unknown { event, raw }) => {
                assert_eq!(event, "change_contact");
                assert_eq!(raw, xml);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_and_broken_input_is_an_error_not_a_panic() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><Encrypt>&lol2;</Encrypt></xml>"#;
        assert_eq!(parse_envelope(bomb), Err(XmlError::Doctype));
        assert!(matches!(
            parse_envelope("<xml><Encrypt>&lol;</Encrypt></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            parse_envelope("<xml><Encrypt>abc</Encrypt>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(
            parse_envelope("<xml><Encrypt>abc</Nope></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert_eq!(
            parse_envelope("<root><Encrypt>a</Encrypt></root>"),
            Err(XmlError::NotWeComXml)
        );
        assert_eq!(
            parse_envelope("<xml><ToUserName>x</ToUserName></xml>"),
            Err(XmlError::MissingField("Encrypt"))
        );
        assert_eq!(
            parse_envelope("<xml><Encrypt>  </Encrypt></xml>"),
            Err(XmlError::MissingField("Encrypt"))
        );
        assert!(parse_envelope("").is_err());
        assert!(parse_envelope("not xml at all").is_err());
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(parse_envelope(&deep), Err(XmlError::TooDeep));
        assert_eq!(
            parse_message(&wrap("<MsgType>location</MsgType><Location_X>north</Location_X><Location_Y>1</Location_Y>")),
            Err(XmlError::InvalidField("Location_X"))
        );
        assert_eq!(
            parse_message(&wrap("<MsgType>text</MsgType>")),
            Err(XmlError::MissingField("Content"))
        );
    }

    #[test]
    fn large_flat_input_parses_in_one_pass() {
        // 100k sibling elements stop at the element cap, early: no tree is built for them.
        let xml = format!(
            "<xml><Encrypt>e</Encrypt>{}</xml>",
            "<x>1</x>".repeat(100_000)
        );
        assert_eq!(parse_envelope(&xml), Err(XmlError::TooManyElements));
        let attrs: String = (0..100_000).map(|i| format!(" a{i}=\"1\"")).collect();
        let xml = format!("<xml{attrs}><Encrypt>e</Encrypt></xml>");
        assert_eq!(parse_envelope(&xml).unwrap().encrypt, "e");
        let fields: String = (0..400).map(|i| format!("<x{i}>1</x{i}>")).collect();
        let xml = format!("<xml><Encrypt>e</Encrypt>{fields}</xml>");
        assert_eq!(parse_envelope(&xml).unwrap().encrypt, "e");
    }

    #[test]
    fn a_message_borrows_its_text_and_copies_only_what_it_must() {
        let xml = wrap("<MsgType>text</MsgType><Content><![CDATA[hi ]]]]><![CDATA[> there]]></Content><MsgId> 7 </MsgId>");
        let msg = parse_message(&xml).unwrap();
        let borrowed = |text: &Cow<'_, str>| matches!(text, Cow::Borrowed(_));
        assert!(borrowed(&msg.to_user_name) && borrowed(&msg.from_user_name));
        // Trimmed, and still borrowed.
        assert_eq!(msg.msg_id, Some(Cow::Borrowed("7")));
        assert!(borrowed(msg.agent_id.as_ref().unwrap()));
        // Split across two CDATA sections: the one field that must be joined into a copy.
        let MessageBody::Text { content } = &msg.body else {
            panic!("{:?}", msg.body)
        };
        assert_eq!(
            (content.as_ref(), borrowed(content)),
            ("hi ]]> there", false)
        );
        let xml = wrap("<MsgType>text</MsgType><Content><![CDATA[你好]]></Content>");
        let msg = parse_message(&xml).unwrap();
        assert_eq!(
            msg.body,
            MessageBody::Text {
                content: Cow::Borrowed("你好")
            }
        );
        // Owned, it is the same message and outlives the XML.
        let owned: Message<'static> = msg.clone().into_owned();
        drop(xml);
        assert_eq!(owned.body, msg_text("你好"));
        assert_eq!(owned.from_user_name, "Alice");
    }

    fn msg_text(text: &str) -> MessageBody<'static> {
        MessageBody::Text {
            content: Cow::Owned(text.into()),
        }
    }

    #[test]
    fn a_field_twice_is_refused() {
        assert_eq!(
            parse_envelope("<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"),
            Err(XmlError::DuplicateField("Encrypt".into()))
        );
        let twice = wrap("<MsgType>text</MsgType><Content>a</Content><Content>b</Content>");
        assert_eq!(
            parse_message(&twice),
            Err(XmlError::DuplicateField("Content".into()))
        );
        // Also where the first is split across CDATA sections, so that it is kept aside.
        let split = "<Content><![CDATA[a]]]]><![CDATA[>b]]></Content>";
        let twice = wrap(&format!(
            "<MsgType>text</MsgType>{split}<Content>c</Content>"
        ));
        assert_eq!(
            parse_message(&twice),
            Err(XmlError::DuplicateField("Content".into()))
        );
        let once = wrap(&format!("<MsgType>text</MsgType>{split}"));
        assert!(
            matches!(parse_message(&once).map(|m| m.body), Ok(MessageBody::Text { content }) if content == "a]]>b")
        );
    }

    #[test]
    fn ids_are_bounded() {
        let long = "u".repeat(MAX_USER_ID_BYTES + 1);
        let xml = format!(
            "<xml><ToUserName>ww1</ToUserName><FromUserName>{long}</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content></xml>"
        );
        assert_eq!(
            parse_message(&xml),
            Err(XmlError::InvalidField("FromUserName"))
        );
        let ok = xml.replace(&long, &"u".repeat(MAX_USER_ID_BYTES));
        assert!(parse_message(&ok).is_ok());
        let empty = xml.replace(&long, " ");
        assert_eq!(
            parse_message(&empty),
            Err(XmlError::InvalidField("FromUserName"))
        );
        let huge_id = ok.replace(
            "</xml>",
            &format!("<MsgId>{}</MsgId></xml>", "9".repeat(100)),
        );
        assert_eq!(
            parse_message(&huge_id),
            Err(XmlError::InvalidField("MsgId"))
        );
    }

    #[test]
    fn replies_round_trip_through_the_parser() {
        let plain = text_reply_xml("Alice", "ww1", 5, "x]]>y");
        let fields = parse_fields(&plain).unwrap();
        assert_eq!(fields.opt(Tag::Content).as_deref(), Some("x]]>y"));
        let sealed = Sealed {
            encrypt: "E".into(),
            signature: "S".into(),
            timestamp: "1".into(),
            nonce: "N".into(),
        };
        let env = encrypted_reply_xml(&sealed);
        assert_eq!(
            env,
            "<xml><Encrypt><![CDATA[E]]></Encrypt><MsgSignature><![CDATA[S]]></MsgSignature><TimeStamp>1</TimeStamp><Nonce><![CDATA[N]]></Nonce></xml>"
        );
        let xml = callback_envelope_xml("ww1", "ENC", "7");
        let env = parse_envelope(&xml).unwrap();
        assert_eq!(env.encrypt, "ENC");
        assert_eq!(env.agent_id.as_deref(), Some("7"));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use super::*;
    use alloc::format;
    use proptest::prelude::*;

    /// A field's content: CDATA (with `]]>` split across sections), plain text, entities,
    /// whitespace, and the odd things the fast path must leave to the general one.
    fn content() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[a-zA-Z0-9 你好😀\\]>\r\n\t]{0,12}".prop_map(|t| format!("<![CDATA[{t}]]>")),
            3 => "[a-zA-Z0-9 你好\\]>\r\n\t]{0,12}",
            1 => Just("&amp;".to_owned()),
            1 => Just("&#x4F60;".to_owned()),
            1 => Just("<!-- c -->".to_owned()),
            1 => Just("<Inner>x</Inner>".to_owned()),
            1 => Just("<![CDATA[unclosed".to_owned()),
            1 => Just("&bogus;".to_owned()),
        ];
        prop::collection::vec(piece, 0..4).prop_map(|p| p.concat())
    }

    /// A field, mostly well formed, sometimes with a broken or odd tag.
    fn field() -> impl Strategy<Value = String> {
        // Mostly fields the fast path knows; the rest send it to quick-xml.
        let name = prop_oneof![
            3 => Just("ToUserName"),
            3 => Just("FromUserName"),
            3 => Just("Content"),
            3 => Just("MsgId"),
            3 => Just("AgentID"),
            3 => Just("Encrypt"),
            1 => Just("content"),
            1 => Just("A"),
            1 => Just("x-y.z:w_1"),
        ];
        let shape = prop_oneof![
            12 => Just(0u8), // <N>content</N>
            1 => Just(1),    // <N/>
            1 => Just(2),    // <N a="1">content</N>
            1 => Just(3),    // <N>content</M>
            1 => Just(4),    // <N>content</N >
            1 => Just(5),    // <N>content (unclosed)
            1 => Just(6),    // <N>content</Nx>
            1 => Just(7),    // <N>content</Nx (no `>`: the next field's `<` follows)
        ];
        (name, content(), shape).prop_map(|(n, c, shape)| match shape {
            0 => format!("<{n}>{c}</{n}>"),
            1 => format!("<{n}/>"),
            2 => format!("<{n} a=\"1\">{c}</{n}>"),
            3 => format!("<{n}>{c}</Other>"),
            4 => format!("<{n}>{c}</{n} >"),
            6 => format!("<{n}>{c}</{n}x>"),
            7 => format!("<{n}>{c}</{n}x"),
            _ => format!("<{n}>{c}"),
        })
    }

    fn document() -> impl Strategy<Value = String> {
        let lead = prop_oneof![
            6 => Just(""),
            2 => Just(" \r\n\t"),
            1 => Just("<?xml version=\"1.0\"?>"),
            1 => Just("\u{feff}"),
            1 => Just("junk"),
        ];
        let sep = prop_oneof![6 => Just(""), 2 => Just("\n  "), 1 => Just("junk")];
        let root = prop_oneof![8 => Just("xml"), 1 => Just("XML"), 1 => Just("root")];
        let end = prop_oneof![
            8 => Just(None),
            1 => Just(Some("")),
            1 => Just(Some("</xml >")),
            1 => Just(Some("</x>")),
            1 => Just(Some("</xmlx>")),
            1 => Just(Some("</XML>")),
        ];
        let tail = prop_oneof![6 => Just(""), 1 => Just("\n"), 1 => Just("<after/>trailing")];
        (
            lead,
            root,
            prop::collection::vec((sep, field()), 0..8),
            tail,
            end,
        )
            .prop_map(|(lead, root, fields, tail, end)| {
                let body: String = fields.into_iter().map(|(s, f)| format!("{s}{f}")).collect();
                // Mostly the root's own end tag; sometimes none, a wrong one or an odd one.
                let end = end.map_or_else(|| format!("</{root}>"), str::to_owned);
                format!("{lead}<{root}>{body}{end}{tail}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Wherever the fast path answers, its tree is quick-xml's.
        #[test]
        fn the_fast_path_reads_what_quick_xml_reads(doc in document()) {
            prop_assert!(fast_path_agrees(&doc), "{doc:?}");
            // And parse_fields as a whole is the general path's answer.
            let general = general_fields(&doc);
            let general = general.as_ref().map(Fields::texts);
            let fields = parse_fields(&doc);
            prop_assert_eq!(fields.as_ref().map(Fields::texts), general);
        }
    }

    #[test]
    fn the_fast_path_takes_what_wecom_sends() {
        let message = "<xml><ToUserName><![CDATA[ww1]]></ToUserName>\n<FromUserName><![CDATA[Alice]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[a]]]]><![CDATA[>b]]></Content><MsgId>7</MsgId><AgentID>1000002</AgentID></xml>";
        let fields = flat_fields(message).expect("the fast path reads a WeCom message");
        assert_eq!(fields.text(Tag::Content), Some("a]]>b"));
        assert_eq!(fields.text(Tag::AgentId), Some("1000002"));
        assert_eq!(
            Some(fields.texts()),
            general_fields(message).ok().as_ref().map(Fields::texts)
        );
        let envelope = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>";
        assert!(flat_fields(envelope).is_some());
        // What it leaves to quick-xml: entities, nesting, empty elements, a declaration, a
        // field twice, a field it does not know.
        for other in [
            "<xml><A>&amp;</A></xml>",
            "<xml><A><B>1</B></A></xml>",
            "<xml><A/></xml>",
            "<?xml version=\"1.0\"?><xml><A>1</A></xml>",
            "<xml><MsgId>1</MsgId><MsgId>2</MsgId></xml>",
            "<xml><UserID>1</UserID></xml>",
            "<xml><Content a=\"1\">x</Content></xml>",
        ] {
            assert!(flat_fields(other).is_none(), "{other}");
        }
    }
}
