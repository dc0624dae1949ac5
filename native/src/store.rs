//! The durable store (`relay.state_dir`): one SQLite database (through rusqlite) holding the
//! accepted jobs and their progress, dedup markers, access tokens, conversation memory and send
//! budgets, so that `kill -9`, a crash or a deploy loses nothing WeCom was told had arrived.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit survives the process
//! dying at any moment (what the relay promises), though not the machine losing power before
//! the WAL is checkpointed. Every statement is short and runs under one connection lock, which
//! also makes each read-modify-write (a dedup claim, a budget take) atomic.
//!
//! A dedup claim and its job are one fact: a marker becomes durable in the same transaction
//! that commits the job it admitted. A claim whose job never committed (the process died in
//! between) is dropped at the next start, so WeCom's retry of that message gets in.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use wecom_relay_core::aibot::stream::{Stream, StreamOp, STREAM_TTL_SECS};
use wecom_relay_core::kv::KeyValue;
use wecom_relay_core::pacing::SendWindow;
use wecom_relay_core::ports::{Claim, DedupStore, SendBudget, StoreError, StreamStore};
use wecom_relay_core::{Job, JobState};

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "wecom-relay.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT NOT NULL UNIQUE,
    user  TEXT NOT NULL,
    job   TEXT NOT NULL,
    state TEXT
);
CREATE TABLE IF NOT EXISTS dedup (
    key       TEXT PRIMARY KEY,
    until     INTEGER NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS budgets (key TEXT PRIMARY KEY, window TEXT NOT NULL);
";

/// One SQLite database; clones share the connection.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("sqlite: {e}"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating when needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join(DB_FILE)).map_err(store_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(store_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(store_error)?;
        conn.execute_batch(SCHEMA).map_err(store_error)?;
        // Claims whose job never committed: let WeCom's retries of those messages in.
        conn.execute("DELETE FROM dedup WHERE committed = 0", [])
            .map_err(store_error)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits an accepted job, and with it the dedup claim of its id. Returns once both are
    /// on disk.
    pub fn insert_job(&self, job: &Job) -> Result<(), StoreError> {
        let text = serde_json::to_string(job).map_err(store_error)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_error)?;
        tx.execute(
            "INSERT OR IGNORE INTO jobs (id, user, job) VALUES (?1, ?2, ?3)",
            params![job.id, job.user.key(), text],
        )
        .map_err(store_error)?;
        tx.execute(
            "UPDATE dedup SET committed = 1 WHERE key = ?1",
            params![job.id],
        )
        .map_err(store_error)?;
        tx.commit().map_err(store_error)
    }

    /// Keeps a job's progress.
    pub fn save_state(&self, id: &str, state: &JobState) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).map_err(store_error)?;
        self.conn()
            .execute(
                "UPDATE jobs SET state = ?2 WHERE id = ?1",
                params![id, text],
            )
            .map_err(store_error)?;
        Ok(())
    }

    /// Forgets a job that ended (answered or given up).
    pub fn finish_job(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM jobs WHERE id = ?1", params![id])
            .map_err(store_error)?;
        Ok(())
    }

    /// Every job not yet ended, in the order it was accepted: its id and its user's key.
    pub fn pending_jobs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, user FROM jobs ORDER BY seq")
            .map_err(store_error)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(store_error)?;
        rows.collect::<Result<_, _>>().map_err(store_error)
    }

    /// A pending job and its progress; `None` when it ended, or when this version cannot read
    /// it (it is then skipped rather than stopping every other job).
    pub fn load_job(&self, id: &str) -> Result<Option<(Job, JobState)>, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .conn()
            .query_row(
                "SELECT job, state FROM jobs WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(store_error)?;
        let Some((job, state)) = row else {
            return Ok(None);
        };
        let Ok(job) = serde_json::from_str::<Job>(&job) else {
            return Ok(None);
        };
        let state = state
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Ok(Some((job, state)))
    }
}

impl DedupStore for Store {
    async fn claim(&self, key: &str, now: u64, ttl: u64) -> Result<Claim, StoreError> {
        let until = now.saturating_add(ttl) as i64;
        // Atomic: insert, or take over a lapsed marker; a live one makes this a no-op.
        let changed = self
            .conn()
            .execute(
                "INSERT INTO dedup (key, until, committed) VALUES (?1, ?2, 0)
                 ON CONFLICT(key) DO UPDATE SET until = excluded.until, committed = 0
                 WHERE dedup.until <= ?3",
                params![key, until, now as i64],
            )
            .map_err(store_error)?;
        Ok(if changed == 1 {
            Claim::Fresh
        } else {
            Claim::Duplicate
        })
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM dedup WHERE key = ?1", params![key])
            .map_err(store_error)?;
        Ok(())
    }
}

impl SendBudget for Store {
    async fn take(&self, key: &str, now_ms: u64) -> Result<(), std::time::Duration> {
        let conn = self.conn();
        let window: Option<String> = conn
            .query_row(
                "SELECT window FROM budgets WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .unwrap_or(None);
        let mut window: SendWindow = window
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default();
        window.take(now_ms)?;
        if let Ok(text) = serde_json::to_string(&window) {
            // A failed write lets the send go: an outage must not stall replies.
            let _ = conn.execute(
                "INSERT INTO budgets (key, window) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET window = excluded.window",
                params![key, text],
            );
        }
        Ok(())
    }
}

impl KeyValue for Store {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT value FROM kv WHERE key = ?1 AND expires_at > ?2",
                params![key, unix_now()],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)
    }

    async fn put(&self, key: &str, value: String, ttl_secs: u64) -> Result<(), StoreError> {
        let expires_at = unix_now().saturating_add(ttl_secs as i64);
        let conn = self.conn();
        conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            params![key, value, expires_at],
        )
        .map_err(store_error)?;
        // Keep the table small: drop what expired, now and then.
        if rand_tick() {
            let _ = conn.execute("DELETE FROM kv WHERE expires_at <= ?1", params![unix_now()]);
            let _ = conn.execute("DELETE FROM dedup WHERE until <= ?1", params![unix_now()]);
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM kv WHERE key = ?1", params![key])
            .map_err(store_error)?;
        Ok(())
    }
}

impl StreamStore for Store {
    async fn apply(&self, id: &str, op: &StreamOp, now: u64) -> Result<Option<Stream>, StoreError> {
        // Read, change and write under the one connection lock: atomic per stream.
        let conn = self.conn();
        let key = format!("stream:{id}");
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let current: Option<String> = conn
            .query_row(
                "SELECT value FROM kv WHERE key = ?1 AND expires_at > ?2",
                params![key, now_i],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        let current = current.and_then(|text| serde_json::from_str::<Stream>(&text).ok());
        let next = Stream::apply(current.clone(), op, now);
        if next == current {
            return Ok(next);
        }
        match &next {
            Some(stream) => {
                let text = serde_json::to_string(stream).map_err(store_error)?;
                let expires_at = stream.started_at.saturating_add(STREAM_TTL_SECS);
                conn.execute(
                    "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    params![key, text, i64::try_from(expires_at).unwrap_or(i64::MAX)],
                )
                .map_err(store_error)?;
            }
            None => {
                conn.execute("DELETE FROM kv WHERE key = ?1", params![key])
                    .map_err(store_error)?;
            }
        }
        Ok(next)
    }
}

/// True about once in 256 calls.
fn rand_tick() -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TICKS: AtomicU32 = AtomicU32::new(0);
    TICKS.fetch_add(1, Ordering::Relaxed).is_multiple_of(256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wecom_relay_core::kv::{KvConversations, KvTokenCache};
    use wecom_relay_core::testing::block_on;

    fn temp_store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "wecom-relay-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open(&dir).unwrap()
    }

    mod sqlite_dedup {
        use super::*;
        wecom_relay_core::dedup_store_contract_tests!(temp_store("dedup"), block_on);
    }
    mod sqlite_tokens {
        use super::*;
        wecom_relay_core::token_cache_contract_tests!(KvTokenCache(temp_store("tokens")), block_on);
    }
    mod sqlite_conversations {
        use super::*;
        wecom_relay_core::conversation_store_contract_tests!(
            KvConversations(temp_store("conv")),
            block_on
        );
    }
    mod sqlite_streams {
        use super::*;
        wecom_relay_core::stream_store_contract_tests!(temp_store("streams"), block_on);
    }
    mod sqlite_budget {
        use super::*;
        wecom_relay_core::send_budget_contract_tests!(temp_store("budget"), block_on);
    }

    #[test]
    fn a_claim_lasts_only_if_its_job_committed() {
        use wecom_relay_core::ids::{AgentId, ScopedUser};
        use wecom_relay_core::job::JobKind;
        let dir = std::env::temp_dir().join(format!("wecom-relay-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = unix_now() as u64;
        {
            let store = Store::open(&dir).unwrap();
            block_on(async {
                assert_eq!(store.claim("kept", now, 600).await.unwrap(), Claim::Fresh);
                assert_eq!(store.claim("lost", now, 600).await.unwrap(), Claim::Fresh);
            });
            store
                .insert_job(&Job {
                    id: "kept".into(),
                    app: "a".into(),
                    agent_id: AgentId(1),
                    user: ScopedUser::new("ww1", "alice"),
                    create_time: 1,
                    kind: JobKind::Notice { text: "n".into() },
                })
                .unwrap();
        }
        // The process died after claiming "lost" but before its job committed.
        let store = Store::open(&dir).unwrap();
        block_on(async {
            assert_eq!(
                store.claim("kept", now, 600).await.unwrap(),
                Claim::Duplicate
            );
            assert_eq!(store.claim("lost", now, 600).await.unwrap(), Claim::Fresh);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn jobs_survive_reopening_in_order_with_their_progress() {
        use wecom_relay_core::ids::{AgentId, ScopedUser};
        use wecom_relay_core::job::{AgentInput, JobKind};
        let dir = std::env::temp_dir().join(format!("wecom-relay-jobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let job = |id: &str| Job {
            id: id.into(),
            app: "a".into(),
            agent_id: AgentId(1),
            user: ScopedUser::new("ww1", "alice"),
            create_time: 1,
            kind: JobKind::Answer {
                input: AgentInput::Text { text: id.into() },
            },
        };
        {
            let store = Store::open(&dir).unwrap();
            for id in ["j1", "j2", "j3"] {
                store.insert_job(&job(id)).unwrap();
            }
            store.insert_job(&job("j1")).unwrap();
            let state = JobState {
                parts_sent: 2,
                ..JobState::default()
            };
            store.save_state("j2", &state).unwrap();
            store.finish_job("j1").unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let pending = store.pending_jobs().unwrap();
        let ids: Vec<&str> = pending.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["j2", "j3"]);
        assert_eq!(pending[0].1, "ww1:alice");
        let (job, state) = store.load_job("j2").unwrap().unwrap();
        assert_eq!((job.id.as_str(), state.parts_sent), ("j2", 2));
        assert_eq!(
            store.load_job("j3").unwrap().unwrap().1,
            JobState::default()
        );
        assert!(store.load_job("j1").unwrap().is_none(), "finished");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
