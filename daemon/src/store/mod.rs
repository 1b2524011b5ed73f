//! Storage through sqlx: a SQLite file by default (WAL mode), PostgreSQL for sites with
//! several daemons. One schema, kept as a migration set per back-end (they differ only in
//! column types); every query is written once, with `$N` placeholders both understand.

mod audit;
mod conversations;
mod group;
mod kb;
mod qa;
mod tokens;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

pub use audit::{AuditEntry, AuditFilter};
pub use conversations::{Conversation, Decision, Erased, Report, RouteRecord, Turn, TurnRecord};
pub use kb::{ArticleRow, ArticleState, Upserted};
pub use qa::{QaGroup, QaRecord, QaReport};
pub use tokens::TokenRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage.url: unsupported database {0:?} (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: one write transaction of this process at a time (see [`WriteTx`]).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// SQLite: bot turns committed in groups (`group.rs`); `None` writes them directly.
    recorder: Option<group::Recorder>,
}

/// A write transaction. On SQLite it also holds the process's writer turn until it
/// commits or is dropped: the daemon's own writers queue for the turn and each is woken
/// the moment the one before is done, instead of meeting at SQLite's write lock, whose
/// busy handler sleeps 1, 2, 5, 10… ms between tries (under bot load that was two sleeps
/// per commit; benches/README.md, "Writers queue in the daemon"). Other processes
/// writing the same file still meet the busy handler.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "tokens and audit",
        include_str!("../../migrations/sqlite/0001_tokens_audit.sql"),
    ),
    (
        2,
        "knowledge base",
        include_str!("../../migrations/sqlite/0002_kb.sql"),
    ),
    (
        3,
        "conversations and routing",
        include_str!("../../migrations/sqlite/0003_conversations.sql"),
    ),
    (
        4,
        "qa results",
        include_str!("../../migrations/sqlite/0004_qa.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "tokens and audit",
        include_str!("../../migrations/postgres/0001_tokens_audit.sql"),
    ),
    (
        2,
        "knowledge base",
        include_str!("../../migrations/postgres/0002_kb.sql"),
    ),
    (
        3,
        "conversations and routing",
        include_str!("../../migrations/postgres/0003_conversations.sql"),
    ),
    (
        4,
        "qa results",
        include_str!("../../migrations/postgres/0004_qa.sql"),
    ),
];

fn migrator(set: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = set
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// When SQLite syncs its write-ahead log to disk (`storage.sqlite_synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// At every commit.
    #[default]
    Full,
    /// At checkpoints.
    Normal,
}

impl Synchronous {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "normal" => Some(Self::Normal),
            _ => None,
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "PRAGMA synchronous = FULL",
            Self::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

impl Store {
    /// Connects and brings the schema up to date. `sqlite:` URLs create the file if needed.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Synchronous::default()).await
    }

    /// [`Store::open`] with SQLite's sync setting (ignored for PostgreSQL).
    pub async fn open_with(url: &str, sync: Synchronous) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // A per-connection setting: every connection of the pool gets it.
                    if backend == Backend::Sqlite {
                        sqlx::query(sync.pragma()).execute(conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // WAL: readers never block the writer; persistent for the file once set.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        let mut store = Self {
            pool,
            backend,
            writer: Arc::default(),
            recorder: None,
        };
        let m = match backend {
            Backend::Sqlite => migrator(SQLITE),
            Backend::Postgres => migrator(POSTGRES),
        };
        m.run(&store.pool).await?;
        if backend == Backend::Sqlite {
            store.recorder = Some(group::Recorder::spawn(store.clone()));
        }
        Ok(store)
    }

    /// A transaction that writes. On SQLite it waits for this process's writer turn, then
    /// takes the write lock at once (`BEGIN IMMEDIATE`, waiting out other processes with
    /// the busy timeout): a deferred transaction that reads first would fail with
    /// "database is locked" when another writer commits in between.
    pub(crate) async fn write_tx(&self) -> Result<WriteTx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                // The turn first: a writer waiting for it holds no pooled connection.
                let turn = self.writer.clone().lock_owned().await;
                self.write_tx_in_turn(turn).await?
            }
            Backend::Postgres => WriteTx {
                tx: self.pool.begin().await?,
                _turn: None,
            },
        })
    }

    /// SQLite: a write transaction in the writer turn the caller holds.
    async fn write_tx_in_turn(
        &self,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<WriteTx, StoreError> {
        Ok(WriteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _turn: Some(turn),
        })
    }

    /// SQLite: this process's writer turn, for a single statement that writes (it
    /// commits on its own, so it needs no transaction, only the turn); `None` on
    /// PostgreSQL.
    pub(crate) async fn writer_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    /// SQLite: the writer turn, if no one holds it now.
    fn free_writer_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.writer.clone().try_lock_owned().ok()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Transactions the group writer of bot turns has committed (0 on PostgreSQL).
    pub fn group_commits(&self) -> u64 {
        self.recorder.as_ref().map_or(0, group::Recorder::commits)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
