//! Running accepted jobs: a queue per user, so one user's messages are answered in order, under
//! a bound on how many run at once; each job is [`wecom_relay_core::Relay::resume_job`], which
//! owns retries and apologies. With a durable store, a job is committed before its callback is
//! answered, its progress is kept part by part, and whatever was pending at a crash is resumed
//! at the next start, in each user's order. On shutdown, intake stops and running work gets time
//! to finish.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wecom_relay_core::ports::{JobSink, SinkError};
use wecom_relay_core::{Job, JobState};

use crate::config::RuntimeConfig;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::store::Store;
use crate::NativeRelay;

/// A job waiting in a user's queue: held in memory, or, with the durable store, only its id
/// (the job waits on disk, so memory stays flat however many wait).
enum Pending {
    /// A job not begun, as MessagePack with its structs as arrays: a waiting job is only
    /// read once, when it starts, and this is its smallest form (about 100 bytes besides its
    /// text, where its JSON takes about 220 and the `Job` with its strings about 500). Its
    /// progress starts empty, so none is held while it waits.
    Held(Box<[u8]>),
    Stored(String),
    /// The job a worker took and is running: it stays at the front of its user's line, so the
    /// user's next job waits for it.
    Running,
}

/// A job as [`Pending::Held`] keeps it, written through `scratch` (which the caller keeps, so
/// that its buffer is grown once) and copied into a block of its exact size.
fn pack(job: &Job, scratch: &mut Vec<u8>) -> Result<Box<[u8]>, rmp_serde::encode::Error> {
    scratch.clear();
    rmp_serde::encode::write(scratch, job)?;
    Ok(scratch.as_slice().into())
}

/// A held job, read back.
fn unpack(packed: &[u8]) -> Result<Job, rmp_serde::decode::Error> {
    rmp_serde::from_slice(packed)
}

/// A user's line of jobs. Most users have one job waiting at a time, and one needs no buffer
/// of its own: in a burst of new messages from 20,000 members, each line's `VecDeque` was a
/// heap block as large as the map entry that held it.
enum Line {
    One(Pending),
    Many(VecDeque<Pending>),
}

impl Line {
    fn len(&self) -> usize {
        match self {
            Line::One(_) => 1,
            Line::Many(jobs) => jobs.len(),
        }
    }

    fn push(&mut self, job: Pending) {
        match self {
            Line::Many(jobs) => jobs.push_back(job),
            Line::One(_) => {
                let Line::One(first) = std::mem::replace(self, Line::Many(VecDeque::new())) else {
                    unreachable!("matched above")
                };
                *self = Line::Many(VecDeque::from([first, job]));
            }
        }
    }

    /// The front job, for a worker to run (it is marked running in its place).
    fn take_front(&mut self) -> Option<Pending> {
        let front = match self {
            Line::One(job) => job,
            Line::Many(jobs) => jobs.front_mut()?,
        };
        match front {
            Pending::Running => None,
            job => Some(std::mem::replace(job, Pending::Running)),
        }
    }

    /// Drops the finished front job; whether the line is now empty.
    fn pop(&mut self) -> bool {
        match self {
            Line::One(_) => true,
            Line::Many(jobs) => {
                jobs.pop_front();
                if jobs.len() == 1 {
                    let last = jobs.pop_front().expect("one job is left");
                    *self = Line::One(last);
                }
                false
            }
        }
    }
}

/// A user's line is found by a keyed digest of the user's key, not the key itself: eight
/// bytes in the map and in each wakeup instead of a string apiece. Two users whose digests
/// collide (about n²/2⁶⁵ for n users with lines) would only share a line: their jobs would
/// run one after the other.
type UserTag = u64;

#[derive(Default)]
struct Queues {
    by_user: HashMap<UserTag, Line>,
    depth: usize,
    closed: bool,
    /// Where a held job is written before it is copied into a block of its exact size (a
    /// string grown by doubling and then shrunk leaves a free remainder beside every job).
    scratch: Vec<u8>,
}

/// What the runner is woken for.
enum Wake {
    /// A user's line went from empty to non-empty.
    User(UserTag),
    /// Intake is closed; nothing more will arrive.
    Stop,
}

/// The per-user job queues: the relay's job sink.
pub struct JobQueue {
    queues: Mutex<Queues>,
    tags: std::hash::RandomState,
    store: Option<Store>,
    shared: Option<Shared>,
    stop: Arc<AtomicBool>,
    max_total: usize,
    max_per_user: usize,
    wake: mpsc::UnboundedSender<Wake>,
    workers: usize,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

/// The other end of a [`JobQueue`]: hand it to [`spawn_runner`].
pub struct Wakeups(mpsc::UnboundedReceiver<Wake>);

impl JobQueue {
    /// A queue that runs at most `runtime.concurrency` jobs at once and holds at most
    /// `runtime.max_queued_jobs` (`max_queued_per_user` for one user).
    pub fn new(
        runtime: &RuntimeConfig,
        store: Option<Store>,
        shared: Option<Shared>,
        metrics: Arc<Metrics>,
    ) -> (Self, Wakeups) {
        let (wake, wakeups) = mpsc::unbounded_channel();
        let concurrency = runtime.concurrency;
        let queue = Self {
            queues: Mutex::default(),
            tags: std::hash::RandomState::new(),
            store,
            shared,
            stop: Arc::new(AtomicBool::new(false)),
            max_total: runtime.max_queued_jobs,
            max_per_user: runtime.max_queued_per_user,
            wake,
            workers: concurrency.max(1),
            tracker: TaskTracker::new(),
            metrics,
        };
        (queue, Wakeups(wakeups))
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Jobs waiting or running.
    pub fn depth(&self) -> usize {
        self.queues().depth
    }

    fn tag(&self, user_key: &str) -> UserTag {
        self.tags.hash_one(user_key)
    }

    /// The user's next job, marked running.
    fn take_front(&self, user: UserTag) -> Option<Pending> {
        self.queues()
            .by_user
            .get_mut(&user)
            .and_then(Line::take_front)
    }

    /// The job and its progress, from memory or from the store.
    fn resolve(&self, pending: Pending) -> Option<(Job, JobState)> {
        match pending {
            Pending::Held(packed) => match unpack(&packed) {
                Ok(job) => Some((job, JobState::default())),
                Err(_) => {
                    // Not the error's text, which can quote the message. Unreachable while
                    // the relay reads what it wrote itself, in the same process.
                    warn!("a held job could not be read");
                    None
                }
            },
            Pending::Running => None,
            Pending::Stored(id) => {
                let store = self.store.as_ref()?;
                match store.load_job(&id) {
                    Ok(found) => found,
                    Err(e) => {
                        warn!(job = %id, error = %e, "a stored job could not be read");
                        None
                    }
                }
            }
        }
    }

    /// Drops the user's finished job; whether another one waits.
    fn pop(&self, user: UserTag) -> bool {
        let mut queues = self.queues();
        queues.depth -= 1;
        self.metrics.set_queue_depth(queues.depth);
        let line = queues
            .by_user
            .get_mut(&user)
            .expect("a user's line lives while drained");
        if line.pop() {
            queues.by_user.remove(&user);
            return false;
        }
        true
    }

    /// Puts the jobs (ids and users) that were pending in the store when the process last
    /// stopped back in their users' queues, in the order they were accepted. Call before
    /// serving.
    pub fn resume(&self, pending: Vec<(String, String)>) {
        for (id, user) in pending {
            let tag = self.tag(&user);
            let mut queues = self.queues();
            self.enqueue(&mut queues, tag, Pending::Stored(id));
        }
    }

    fn enqueue(&self, queues: &mut Queues, user: UserTag, job: Pending) {
        queues.depth += 1;
        self.metrics.set_queue_depth(queues.depth);
        if let Some(line) = queues.by_user.get_mut(&user) {
            line.push(job);
            return;
        }
        queues.by_user.insert(user, Line::One(job));
        let _ = self.wake.send(Wake::User(user));
    }

    /// Stops intake and waits up to `timeout` for queued and running jobs. Returns whether
    /// everything finished.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        {
            let mut queues = self.queues();
            queues.closed = true;
            // Sent under the lock: every job accepted before this is already announced.
            let _ = self.wake.send(Wake::Stop);
        }
        // Shared queue: finish the job at hand, leave the rest to the other replicas.
        self.stop.store(true, Ordering::SeqCst);
        self.tracker.close();
        let drained = tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok();
        if drained {
            info!("all in-flight work finished");
        } else {
            warn!(
                left = self.depth(),
                "drain timeout: unfinished jobs dropped"
            );
        }
        drained
    }
}

impl JobSink for JobQueue {
    async fn submit(&self, job: Job) -> Result<(), SinkError> {
        if let Some(shared) = &self.shared {
            if self.queues().closed {
                return Err(SinkError("shutting down".into()));
            }
            // Several replicas: the queue is Redis's, committed before the callback is answered.
            return shared
                .enqueue(&job)
                .await
                .map_err(|e| SinkError(format!("the shared queue refused the job: {e}")));
        }
        let key = self.tag(&job.user.key());
        let mut queues = self.queues();
        if queues.closed {
            return Err(SinkError("shutting down".into()));
        }
        // Bounded memory: beyond the bounds WeCom keeps the message and retries later.
        if queues.depth >= self.max_total {
            return Err(SinkError(format!(
                "the job queue is full ({} jobs, relay.max_queued_jobs)",
                self.max_total
            )));
        }
        let pending = queues.by_user.get(&key).map_or(0, Line::len);
        if pending >= self.max_per_user {
            return Err(SinkError(format!(
                "the user's queue is full ({} jobs, relay.max_queued_per_user)",
                self.max_per_user
            )));
        }
        // Committed before the callback is answered: from here on the job survives a crash,
        // and waits on disk.
        let pending = match &self.store {
            Some(store) => {
                store
                    .insert_job(&job)
                    .map_err(|e| SinkError(format!("the durable store refused the job: {e}")))?;
                Pending::Stored(job.id)
            }
            None => {
                let packed = pack(&job, &mut queues.scratch)
                    .map_err(|e| SinkError(format!("the job could not be held: {e}")))?;
                Pending::Held(packed)
            }
        };
        self.enqueue(&mut queues, key, pending);
        Ok(())
    }

    async fn progress(&self, job: &Job, state: &JobState) {
        let kept = match (&self.store, &self.shared) {
            (Some(store), _) => store.save_state(&job.id, state),
            (_, Some(shared)) => shared.save_state(&job.id, state).await,
            _ => Ok(()),
        };
        if let Err(e) = kept {
            warn!(job = %job.id, error = %e, "job progress not kept");
        }
    }
}

/// Starts the workers: `concurrency` tasks that take users whose queue holds a job, run that
/// user's next job, and hand the user back if more wait. A user is handed to one worker at a
/// time, so each user's jobs run in order; memory is one task per worker, not per user.
pub fn spawn_runner(relay: Arc<NativeRelay>, wakeups: Wakeups) {
    let queue = relay.platform().jobs();
    let tracker = queue.tracker.clone();
    if let Some(shared) = queue.shared.clone() {
        let stop = queue.stop.clone();
        crate::shared::spawn_partitions(relay, shared, stop, &tracker);
        return;
    }
    let wakeups = Arc::new(tokio::sync::Mutex::new(wakeups.0));
    for _ in 0..queue.workers {
        tracker.spawn(work(relay.clone(), wakeups.clone()));
    }
}

async fn work(
    relay: Arc<NativeRelay>,
    wakeups: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Wake>>>,
) {
    let queue = relay.platform().jobs();
    loop {
        let wake = wakeups.lock().await.recv().await;
        let user = match wake {
            None => return,
            Some(Wake::User(user)) => user,
            Some(Wake::Stop) => {
                // Pass the word on, so every worker hears it; leave once nothing is left.
                let _ = queue.wake.send(Wake::Stop);
                if queue.depth() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(pending) = queue.take_front(user) else {
            continue;
        };
        if let Some((job, state)) = queue.resolve(pending) {
            relay.resume_job(&job, state).await;
            if let Some(store) = &queue.store {
                if let Err(e) = store.finish_job(&job.id) {
                    warn!(job = %job.id, error = %e, "finished job not removed from the store");
                }
            }
        }
        if queue.pop(user) {
            let _ = queue.wake.send(Wake::User(user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(text: &str) -> Pending {
        Pending::Held(text.as_bytes().into())
    }

    fn text(job: Option<Pending>) -> Option<String> {
        match job? {
            Pending::Held(text) => Some(String::from_utf8(text.into()).unwrap()),
            Pending::Stored(id) => Some(format!("stored {id}")),
            Pending::Running => Some("running".into()),
        }
    }

    /// Every shape a job can take, with its optional fields both present and absent: a held
    /// job is positional MessagePack, and one that did not read back would be a message lost.
    fn every_kind_of_job() -> Vec<Job> {
        use wecom_relay_core::ids::{AgentId, ScopedUser};
        use wecom_relay_core::job::{AgentInput, JobKind, MediaLink};
        use wecom_relay_core::xml::Event;
        let s = |v: &str| v.to_owned();
        let text = s("你好 👍🏻 \"quoted\" ]]> \u{0}\n line");
        let events = vec![
            Event::Subscribe,
            Event::Unsubscribe,
            Event::EnterAgent { event_key: None },
            Event::EnterAgent {
                event_key: Some(s("k")),
            },
            Event::Location {
                latitude: 23.1,
                longitude: -113.5,
                precision: s("30"),
            },
            Event::Click { key: s("menu") },
            Event::View {
                url: s("https://example.com/a?b=c"),
            },
            Event::ScanCode {
                waitmsg: true,
                key: s("k"),
                scan_type: s("qrcode"),
                scan_result: s("r"),
            },
            Event::ScanCode {
                waitmsg: false,
                key: s(""),
                scan_type: s(""),
                scan_result: s(""),
            },
            Event::Pics {
                kind: s("pic_sysphoto"),
                key: s("k"),
                count: 2,
                md5s: vec![s("a"), s("b")],
            },
            Event::Pics {
                kind: s("pic_weixin"),
                key: s("k"),
                count: 0,
                md5s: vec![],
            },
            Event::LocationSelect {
                key: s("k"),
                latitude: 1.5,
                longitude: 2.5,
                scale: s("15"),
                label: s("l"),
                poiname: None,
            },
            Event::LocationSelect {
                key: s("k"),
                latitude: 0.0,
                longitude: 0.0,
                scale: s(""),
                label: s(""),
                poiname: Some(s("p")),
            },
            Event::TemplateCard {
                key: s("k"),
                task_id: s("t"),
                card_type: s("c"),
                response_code: s("r"),
            },
            Event::Unknown {
                event: s("new_thing"),
                raw: s("<xml><A>1</A></xml>"),
            },
        ];
        let mut inputs = vec![
            AgentInput::Text { text: text.clone() },
            AgentInput::Text { text: s("") },
            AgentInput::Image {
                media_id: s("m"),
                pic_url: s("https://p/1"),
            },
            AgentInput::Voice {
                media_id: s("m"),
                format: s("amr"),
                transcript: None,
            },
            AgentInput::Voice {
                media_id: s("m"),
                format: s("amr"),
                transcript: Some(text.clone()),
            },
            AgentInput::Video {
                media_id: s("m"),
                thumb_media_id: s("t"),
            },
            AgentInput::Location {
                latitude: -33.9,
                longitude: 151.2,
                label: s("Sydney"),
            },
            AgentInput::Link {
                title: s("t"),
                description: s("d"),
                url: s("u"),
            },
            AgentInput::File {
                media_id: s("m"),
                file_name: s("a.pdf"),
                file_size: None,
            },
            AgentInput::File {
                media_id: s("m"),
                file_name: s("a.pdf"),
                file_size: Some(u64::MAX),
            },
            AgentInput::Mixed {
                text: text.clone(),
                media: vec![],
            },
            AgentInput::Mixed {
                text: s(""),
                media: vec![MediaLink {
                    kind: s("image"),
                    url: s("https://i/1"),
                }],
            },
        ];
        inputs.extend(events.into_iter().map(|event| AgentInput::Event { event }));
        let mut kinds: Vec<JobKind> = Vec::new();
        for input in inputs {
            kinds.push(JobKind::Stream {
                input: input.clone(),
                stream: s("st"),
                conversation: s("c"),
            });
            kinds.push(JobKind::Answer { input });
        }
        kinds.push(JobKind::Notice { text: text.clone() });
        kinds.push(JobKind::Feedback {
            feedback_id: s("f"),
            rating: 2,
            comment: text,
        });
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Job {
                id: format!("wwcorp:1000002:m:{i}"),
                app: s("app"),
                agent_id: AgentId(1000002),
                user: ScopedUser::new("wwcorp", format!("user{i}")),
                create_time: 1_764_787_000 + i as u64,
                kind,
            })
            .collect()
    }

    #[test]
    fn a_held_job_reads_back_as_it_was_in_every_shape() {
        let mut scratch = Vec::new();
        let jobs = every_kind_of_job();
        assert!(jobs.len() > 50);
        for job in jobs {
            let packed = pack(&job, &mut scratch).unwrap();
            let json = serde_json::to_string(&job).unwrap();
            assert!(packed.len() < json.len(), "{json}");
            assert_eq!(unpack(&packed).unwrap(), job, "{json}");
        }
    }

    #[test]
    fn a_damaged_held_job_is_an_error_not_a_panic() {
        let job = every_kind_of_job().remove(0);
        let packed = pack(&job, &mut Vec::new()).unwrap();
        for cut in 0..packed.len() {
            assert!(unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_line_runs_its_jobs_in_order_one_at_a_time() {
        let mut line = Line::One(held("a"));
        assert_eq!(line.len(), 1);
        assert_eq!(text(line.take_front()).as_deref(), Some("a"));
        assert!(
            line.take_front().is_none(),
            "the running job holds the front"
        );
        line.push(held("b"));
        line.push(Pending::Stored("c".into()));
        assert_eq!(line.len(), 3);
        assert!(line.take_front().is_none(), "still running a");
        assert!(!line.pop(), "b and c wait");
        assert_eq!(text(line.take_front()).as_deref(), Some("b"));
        assert!(!line.pop(), "c waits");
        assert!(matches!(line, Line::One(_)), "one job left needs no buffer");
        assert_eq!(text(line.take_front()).as_deref(), Some("stored c"));
        line.push(held("d"));
        assert!(!line.pop());
        assert_eq!(text(line.take_front()).as_deref(), Some("d"));
        assert!(line.pop(), "the line is empty");
    }
}
