//! Media in a job: the user's pictures, voice and files made ready for the agent before it is
//! asked, and the attachments of its answer uploaded and sent after. Both run in the job,
//! never in the callback, on every twin alike.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::runner::Runner;
use super::{ClientOf, Event};
use crate::agent::openai::{parse_transcription, transcription_request};
use crate::agent::Agent;
use crate::aibot::stream::{
    StreamImage, StreamOp, MAX_STREAM_IMAGES, MAX_STREAM_IMAGES_TOTAL, MAX_STREAM_IMAGE_BYTES,
};
use crate::apps::App;
use crate::config::Backend;
use crate::job::{AgentInput, Job, MediaLink};
use crate::media::drop_inline_bytes;
use crate::media::{
    self, as_text, data_url, extract_attachments, human_size, is_text_name, open_sealed,
    plan_upload, sniff, Attachment, Fetched, Gathered, MediaError, MediaInfo, MediaPolicy, Source,
    MAX_ATTACHMENTS, MAX_DOWNLOAD_BYTES, MAX_TEXT_FILE_BYTES, MAX_VISION_BYTES,
};
use crate::ports::{Clock, HttpClient, Platform, StreamStore};
use crate::wecom::api::{Content, MediaType};

/// What the configured agent does with media.
#[derive(Debug, Clone, Copy)]
struct Wants {
    /// Pictures as content parts.
    vision: bool,
    /// Text files' content.
    text_files: bool,
    /// Every medium's bytes (the webhook, on request).
    bytes: bool,
}

fn note_picture(why: &str) -> String {
    format!("[The user sent a picture that could not be read: {why}.]")
}

const NO_VISION_NOTE: &str = "[The user sent a picture; this assistant cannot see pictures.]";
const NO_TRANSCRIPT_NOTE: &str =
    "[The user sent a voice message that came without a transcript, so its words are unknown.]";
const VIDEO_NOTE: &str = "[The user sent a video; this assistant cannot watch videos.]";

fn file_note(name: &str, size: Option<u64>, content: Option<&str>) -> String {
    let size = size
        .map(|s| format!(", {}", human_size(s)))
        .unwrap_or_default();
    match content {
        Some(text) => {
            format!("[The user sent a file, {name}{size}. Its content:]\n```\n{text}\n```")
        }
        None => format!("[The user sent a file, {name}{size}; its content cannot be read here.]"),
    }
}

impl<P: Platform, A: Agent> Runner<'_, P, A> {
    fn wants(&self) -> Wants {
        let s = self.settings;
        match s.backend {
            Backend::OpenAi { .. } => Wants {
                vision: s.vision,
                text_files: true,
                bytes: false,
            },
            Backend::Webhook { .. } => Wants {
                vision: false,
                text_files: false,
                bytes: s.webhook_media_bytes,
            },
            Backend::Echo => Wants {
                vision: false,
                text_files: false,
                bytes: false,
            },
        }
    }

    /// The user's message made ready for the agent: downloads what the agent will use (at
    /// most [`MAX_DOWNLOAD_BYTES`] each), transcribes voice when configured, and says in the
    /// text what could not be had. Never fails: a medium that cannot be read becomes a note.
    pub(crate) async fn gather(&self, job: &Job, input: &AgentInput) -> Gathered {
        let wants = self.wants();
        let mut out = Gathered::plain(input);
        match input {
            AgentInput::Image { media_id, pic_url } => {
                let mut info = MediaInfo {
                    kind: "image".into(),
                    media_id: Some(media_id.clone()).filter(|m| !m.is_empty()),
                    url: Some(pic_url.clone()).filter(|u| !u.is_empty()),
                    ..MediaInfo::default()
                };
                if wants.vision || wants.bytes {
                    let got = self.app_picture(job, media_id, pic_url).await;
                    let note = self.use_picture(&mut out, &mut info, got, wants);
                    if wants.vision {
                        // Seen, the picture needs no words; unseen, the note says why.
                        out.text = note.unwrap_or_default();
                    }
                } else if matches!(self.settings.backend, Backend::OpenAi { .. }) {
                    out.text = NO_VISION_NOTE.into();
                }
                out.media.push(info);
            }
            AgentInput::Voice {
                media_id,
                format,
                transcript: None,
            } => {
                let mut info = MediaInfo {
                    kind: "voice".into(),
                    media_id: Some(media_id.clone()),
                    ..MediaInfo::default()
                };
                let model = match &self.settings.backend {
                    Backend::OpenAi { .. } => self.settings.transcription_model.as_deref(),
                    _ => None,
                };
                if model.is_some() || wants.bytes {
                    match self.app_download(job, media_id, MAX_DOWNLOAD_BYTES).await {
                        Ok(f) => {
                            info.size = Some(f.bytes.len() as u64);
                            info.mime = f.content_type.clone();
                            if wants.bytes {
                                info.base64 = Some(media::base64(&f.bytes));
                            }
                            if let Some(model) = model {
                                out.text = match self.transcribe(model, format, f).await {
                                    Ok(text) if !text.is_empty() => text,
                                    _ => NO_TRANSCRIPT_NOTE.into(),
                                };
                            }
                        }
                        Err(e) => {
                            info.error = Some(e.0);
                            if model.is_some() {
                                out.text = NO_TRANSCRIPT_NOTE.into();
                            }
                        }
                    }
                } else if matches!(self.settings.backend, Backend::OpenAi { .. }) {
                    out.text = NO_TRANSCRIPT_NOTE.into();
                }
                out.media.push(info);
            }
            AgentInput::Voice {
                media_id,
                transcript: Some(_),
                ..
            } => out.media.push(MediaInfo {
                kind: "voice".into(),
                media_id: Some(media_id.clone()),
                ..MediaInfo::default()
            }),
            AgentInput::Video { media_id, .. } => {
                let mut info = MediaInfo {
                    kind: "video".into(),
                    media_id: Some(media_id.clone()),
                    ..MediaInfo::default()
                };
                if wants.bytes {
                    self.fill_bytes(
                        &mut info,
                        self.app_download(job, media_id, MAX_DOWNLOAD_BYTES).await,
                    );
                }
                if matches!(self.settings.backend, Backend::OpenAi { .. }) {
                    out.text = VIDEO_NOTE.into();
                }
                out.media.push(info);
            }
            AgentInput::File {
                media_id,
                file_name,
                file_size,
            } => {
                let mut info = MediaInfo {
                    kind: "file".into(),
                    media_id: Some(media_id.clone()),
                    name: Some(file_name.clone()),
                    size: *file_size,
                    ..MediaInfo::default()
                };
                let readable = wants.text_files
                    && is_text_name(file_name)
                    && file_size.is_none_or(|s| s <= MAX_TEXT_FILE_BYTES as u64);
                let got = if wants.bytes || readable {
                    let max = if wants.bytes {
                        MAX_DOWNLOAD_BYTES
                    } else {
                        MAX_TEXT_FILE_BYTES
                    };
                    Some(self.app_download(job, media_id, max).await)
                } else {
                    None
                };
                let content = match &got {
                    Some(Ok(f)) if readable => as_text(&f.bytes)
                        .filter(|_| f.bytes.len() <= MAX_TEXT_FILE_BYTES)
                        .map(str::to_owned),
                    _ => None,
                };
                if wants.text_files {
                    out.text = file_note(file_name, *file_size, content.as_deref());
                }
                if let Some(got) = got.filter(|_| wants.bytes) {
                    self.fill_bytes(&mut info, got);
                }
                out.media.push(info);
            }
            AgentInput::Mixed { text, media } => {
                let mut notes: Vec<String> = Vec::new();
                for link in media {
                    let (note, info) = self.bot_medium(job, link, wants, &mut out).await;
                    notes.extend(note);
                    out.media.push(info);
                }
                if !matches!(self.settings.backend, Backend::Echo) {
                    let mut lines: Vec<&str> = Vec::new();
                    if !text.is_empty() {
                        lines.push(text);
                    }
                    lines.extend(notes.iter().map(String::as_str));
                    out.text = lines.join("\n");
                }
            }
            AgentInput::Text { .. }
            | AgentInput::Location { .. }
            | AgentInput::Link { .. }
            | AgentInput::Event { .. } => {}
        }
        out
    }

    /// One medium of an AI bot's message: fetched, opened with the bot's key, and used as
    /// the agent wants. Returns the note for the model's text, if any.
    async fn bot_medium(
        &self,
        job: &Job,
        link: &MediaLink,
        wants: Wants,
        out: &mut Gathered,
    ) -> (Option<String>, MediaInfo) {
        let mut info = MediaInfo {
            kind: link.kind.clone(),
            url: Some(link.url.clone()),
            ..MediaInfo::default()
        };
        let openai = matches!(self.settings.backend, Backend::OpenAi { .. });
        match link.kind.as_str() {
            "image" => {
                if !(wants.vision || wants.bytes) {
                    return (openai.then(|| NO_VISION_NOTE.into()), info);
                }
                let got = self.bot_download(job, &link.url, MAX_VISION_BYTES).await;
                let note = self.use_picture(out, &mut info, got, wants);
                (note.filter(|_| wants.vision), info)
            }
            "file" => {
                let got = if wants.bytes || wants.text_files {
                    let max = if wants.bytes {
                        MAX_DOWNLOAD_BYTES
                    } else {
                        MAX_TEXT_FILE_BYTES
                    };
                    Some(self.bot_download(job, &link.url, max).await)
                } else {
                    None
                };
                let name = match &got {
                    Some(Ok(f)) => f.file_name.clone(),
                    _ => None,
                }
                .unwrap_or_else(|| "a file".into());
                let content = match &got {
                    Some(Ok(f)) if is_text_name(&name) || f.file_name.is_none() => {
                        as_text(&f.bytes).filter(|_| {
                            f.bytes.len() <= MAX_TEXT_FILE_BYTES && sniff(&f.bytes).is_none()
                        })
                    }
                    _ => None,
                };
                let size = match &got {
                    Some(Ok(f)) => Some(f.bytes.len() as u64),
                    _ => None,
                };
                let note = wants.text_files.then(|| file_note(&name, size, content));
                info.name = Some(name).filter(|n| n != "a file");
                if let Some(got) = got.filter(|_| wants.bytes) {
                    self.fill_bytes(&mut info, got);
                }
                (note, info)
            }
            _ => {
                if wants.bytes {
                    let got = self.bot_download(job, &link.url, MAX_DOWNLOAD_BYTES).await;
                    self.fill_bytes(&mut info, got);
                }
                (openai.then(|| VIDEO_NOTE.into()), info)
            }
        }
    }

    /// Puts a downloaded picture where the agent wants it: its bytes in `info` for the
    /// webhook, a content part in `out.images` for a vision model. Returns the note for the
    /// model when it cannot see it.
    fn use_picture(
        &self,
        out: &mut Gathered,
        info: &mut MediaInfo,
        got: Result<Fetched, MediaError>,
        wants: Wants,
    ) -> Option<String> {
        let picture = got.and_then(|f| match sniff(&f.bytes) {
            Some((mime, _)) if mime.starts_with("image/") => Ok((mime, f)),
            _ => Err(MediaError("it is not a picture".into())),
        });
        match picture {
            Ok((mime, f)) => {
                info.size = Some(f.bytes.len() as u64);
                info.mime = Some(mime.into());
                if wants.bytes {
                    info.base64 = Some(media::base64(&f.bytes));
                }
                if wants.vision {
                    out.images.push(data_url(mime, &f.bytes));
                }
                None
            }
            Err(e) => {
                let note = note_picture(&e.0);
                info.error = Some(e.0);
                Some(note)
            }
        }
    }

    fn fill_bytes(&self, info: &mut MediaInfo, got: Result<Fetched, MediaError>) {
        match got {
            Ok(f) => {
                info.size = Some(f.bytes.len() as u64);
                info.mime = f.content_type;
                if info.name.is_none() {
                    info.name = f.file_name;
                }
                info.base64 = Some(media::base64(&f.bytes));
            }
            Err(e) => info.error = Some(e.0),
        }
    }

    /// An app's picture: `media/get`, else its `PicUrl` under the media policy.
    async fn app_picture(
        &self,
        job: &Job,
        media_id: &str,
        pic_url: &str,
    ) -> Result<Fetched, MediaError> {
        let by_id = if media_id.is_empty() {
            Err(MediaError("no media id".into()))
        } else {
            self.app_download(job, media_id, MAX_VISION_BYTES).await
        };
        match by_id {
            Err(_) if !pic_url.is_empty() => {
                media::fetch(
                    self.platform.media_http(),
                    self.media,
                    pic_url,
                    MAX_VISION_BYTES,
                )
                .await
            }
            other => other,
        }
    }

    /// `media/get` through the job's app, at most `max` bytes.
    async fn app_download(
        &self,
        job: &Job,
        media_id: &str,
        max: usize,
    ) -> Result<Fetched, MediaError> {
        let app = self
            .app(job)
            .map_err(|_| MediaError("the app is not configured".into()))?;
        let m = self
            .client
            .get_media(app, media_id, max)
            .await
            .map_err(|e| MediaError(format!("WeCom did not give it ({e})")))?;
        Ok(Fetched {
            bytes: m.bytes,
            content_type: Some(m.content_type).filter(|c| !c.is_empty()),
            file_name: m.filename,
        })
    }

    /// An AI bot's medium: fetched under the media policy and opened with the bot's key.
    async fn bot_download(&self, job: &Job, url: &str, max: usize) -> Result<Fetched, MediaError> {
        let bot = self
            .bots
            .by_name(&job.app)
            .ok_or_else(|| MediaError("the bot is not configured".into()))?;
        // Sealing adds at most one 32-byte block.
        let sealed = media::fetch(self.platform.media_http(), self.media, url, max + 32).await?;
        let bytes = open_sealed(bot.crypt().key(), &sealed.bytes)?;
        if bytes.len() > max {
            return Err(MediaError(format!(
                "it is larger than {} MB",
                max.div_ceil(1 << 20)
            )));
        }
        Ok(Fetched { bytes, ..sealed })
    }

    /// Sends voice to `{base_url}/audio/transcriptions`.
    async fn transcribe(
        &self,
        model: &str,
        format: &str,
        f: Fetched,
    ) -> Result<String, MediaError> {
        let Backend::OpenAi {
            base_url, api_key, ..
        } = &self.settings.backend
        else {
            return Err(MediaError("no transcription backend".into()));
        };
        let ext = match format.to_ascii_lowercase().as_str() {
            "speex" => "speex",
            _ => "amr",
        };
        let mime = f.content_type.unwrap_or_else(|| format!("audio/{ext}"));
        let req = transcription_request(
            base_url,
            api_key.expose(),
            model,
            &format!("voice.{ext}"),
            &mime,
            f.bytes,
        );
        let resp =
            self.platform.agent_http().send(req).await.map_err(|e| {
                MediaError(format!("the transcription API was not reached ({e:?})"))
            })?;
        parse_transcription(&resp).map_err(|e| MediaError(e.message))
    }
}

/// Takes the attachments out of an app's answer and uploads them: the answer's texts without
/// them (and a line for each one that cannot be sent), and the messages that carry the
/// uploaded ones. Jobs and `/api/send` share it.
pub(crate) async fn attach<P: Platform>(
    platform: &P,
    client: &ClientOf<'_, P>,
    policy: &MediaPolicy,
    app: &App,
    answer: Vec<String>,
) -> (Vec<String>, Vec<Content>) {
    let mut texts = Vec::with_capacity(answer.len());
    let mut found: Vec<Attachment> = Vec::new();
    for text in answer {
        let (clean, attachments) = extract_attachments(&text);
        found.extend(attachments);
        if !clean.trim().is_empty() {
            texts.push(clean);
        }
    }
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for (i, attachment) in found.into_iter().enumerate() {
        let result = if i < MAX_ATTACHMENTS {
            upload(platform, client, policy, app, &attachment).await
        } else {
            Err(MediaError(format!(
                "an answer carries at most {MAX_ATTACHMENTS} attachments"
            )))
        };
        match result {
            Ok(content) => sent.push(content),
            Err(why) => {
                platform.observe(&Event::AttachmentFailed { why: &why.0 });
                failed.push(format!("(Could not send {}: {}.)", attachment.name, why.0));
            }
        }
    }
    if !failed.is_empty() {
        texts.push(failed.join("\n"));
    }
    (texts, sent)
}

/// Fetches (or decodes) one attachment, sorts it into WeCom's kinds and uploads it.
async fn upload<P: Platform>(
    platform: &P,
    client: &ClientOf<'_, P>,
    policy: &MediaPolicy,
    app: &App,
    attachment: &Attachment,
) -> Result<Content, MediaError> {
    let (bytes, mime, name) = match &attachment.source {
        Source::Url(url) => {
            let f = media::fetch(platform.media_http(), policy, url, MAX_DOWNLOAD_BYTES).await?;
            let name = if attachment.name == "attachment" {
                f.file_name
                    .clone()
                    .unwrap_or_else(|| attachment.name.clone())
            } else {
                attachment.name.clone()
            };
            (f.bytes, f.content_type, name)
        }
        Source::Bytes { mime, bytes } => (bytes.clone(), mime.clone(), attachment.name.clone()),
    };
    if bytes.len() > MAX_DOWNLOAD_BYTES {
        return Err(MediaError(format!(
            "it is larger than {} MB",
            MAX_DOWNLOAD_BYTES >> 20
        )));
    }
    let plan = plan_upload(&name, mime.as_deref(), attachment.kind, &bytes)?;
    let media_id = client
        .upload(app, plan.kind, &plan.file_name, &plan.mime, &bytes)
        .await
        .map_err(|e| MediaError(format!("WeCom refused the upload ({e})")))?;
    Ok(match plan.kind {
        MediaType::Image => Content::Image { media_id },
        MediaType::Voice => Content::Voice { media_id },
        MediaType::File => Content::File { media_id },
        MediaType::Video => Content::Video {
            media_id,
            title: plan.file_name,
            description: String::new(),
        },
    })
}

/// Gives an AI bot's stream the pictures its answer asks for (`msg_item` on the last answer:
/// JPG or PNG, at most [`MAX_STREAM_IMAGES`], [`MAX_STREAM_IMAGE_BYTES`] each and
/// [`MAX_STREAM_IMAGES_TOTAL`] in all), and returns the text to finish it with: the answer
/// without inline bytes, and a line for each picture or file that cannot go.
pub(crate) async fn stream_pictures<P: Platform>(
    platform: &P,
    policy: &MediaPolicy,
    stream: &str,
    answer: &str,
) -> String {
    let (_, found) = extract_attachments(answer);
    let mut text = drop_inline_bytes(answer);
    if found.is_empty() {
        return text;
    }
    let mut images = Vec::new();
    let mut total = 0usize;
    let mut failed = Vec::new();
    for a in found {
        if a.kind != Some(MediaType::Image) {
            if matches!(a.source, Source::Bytes { .. }) {
                failed.push(format!(
                    "(Could not send {}: an AI bot's answer carries pictures, not files.)",
                    a.name
                ));
            }
            continue;
        }
        let bytes = match &a.source {
            Source::Url(url) => {
                media::fetch(platform.media_http(), policy, url, MAX_STREAM_IMAGE_BYTES)
                    .await
                    .map(|f| f.bytes)
            }
            Source::Bytes { bytes, .. } => Ok(bytes.clone()),
        };
        let checked = bytes.and_then(|b| {
            if images.len() >= MAX_STREAM_IMAGES {
                return Err(MediaError(format!(
                    "an answer shows at most {MAX_STREAM_IMAGES} pictures"
                )));
            }
            if b.len() > MAX_STREAM_IMAGE_BYTES || total + b.len() > MAX_STREAM_IMAGES_TOTAL {
                return Err(MediaError(format!(
                    "an AI bot's answer takes pictures of at most {} KB, {} KB in all",
                    MAX_STREAM_IMAGE_BYTES >> 10,
                    MAX_STREAM_IMAGES_TOTAL >> 10
                )));
            }
            match sniff(&b) {
                Some((_, "jpg" | "png")) => Ok(b),
                _ => Err(MediaError("it is not a JPG or PNG picture".into())),
            }
        });
        match checked {
            Ok(b) => {
                total += b.len();
                images.push(StreamImage::new(&b));
            }
            Err(why) => {
                platform.observe(&Event::AttachmentFailed { why: &why.0 });
                failed.push(format!("(Could not show {}: {}.)", a.name, why.0));
            }
        }
    }
    if !images.is_empty() {
        let op = StreamOp::Attach { images };
        let now = platform.clock().now_unix();
        if let Ok(Some(s)) = platform.streams().apply(stream, &op, now).await {
            if s.images.is_empty() {
                failed.push(
                    "(The pictures could not be shown: the answer had already ended.)".into(),
                );
            }
        }
    }
    if !failed.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&failed.join("\n"));
    }
    text
}
