//! The knowledge base: articles in the database (the source of truth), chunked, embedded
//! and indexed; hybrid retrieval over the index; and the catch-up that brings the index
//! back in line with the database after a crash or a rebuild.
//!
//! Writes go database first, index second, and every index write re-reads the article
//! from the database under one lock, so whatever order concurrent writers and the
//! catch-up run in, the index ends with what the database holds.

mod article;
mod articles;
mod chunk;
mod fusion;
mod lexical;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use confidant_inference::{Batcher, EmbeddingModel, InferenceError, InputKind};

pub use article::{Problem, Rules, valid_id};
pub use chunk::{Chunk, chunk_at, chunks};
pub use fusion::{Fused, Fusion, Mode, Signal};
pub use lexical::Lexical;

use crate::index::{ChunkKind, IndexError, Point, Query, SearchFilter, VectorIndex};
use crate::store::{ArticleRow, Store, StoreError, Upserted, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("knowledge-base task failed: {0}")]
    Task(String),
}

impl From<StoreError> for KbError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => KbError::NotFound(what),
            other => KbError::Store(other),
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> KbError {
    KbError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct KbSettings {
    pub rules: Rules,
    /// Passage size, in estimated tokens; below the encoder's window.
    pub chunk_tokens: usize,
    /// Chunks each signal contributes before fusion.
    pub candidates: usize,
    pub fusion: Fusion,
    /// Texts per call to the inference queue while indexing.
    pub embed_batch: usize,
    /// MiB of search hits' articles kept in memory (0: read each from the database).
    pub article_cache_mb: usize,
}

impl Default for KbSettings {
    fn default() -> Self {
        Self {
            rules: Rules::default(),
            chunk_tokens: 200,
            candidates: 50,
            fusion: Fusion::Convex { dense_weight: 0.7 },
            embed_batch: 64,
            article_cache_mb: 64,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SearchParams {
    pub tenant: String,
    pub text: String,
    pub lang: Option<String>,
    pub channel: Option<String>,
    pub limit: usize,
    pub mode: Mode,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct SearchResult {
    pub article: ArticleRow,
    pub hit: Fused,
    pub matched: Chunk,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    pub indexed: u64,
    pub removed: u64,
}

pub const MAX_SEARCH_LIMIT: usize = 50;

pub struct Kb {
    store: Store,
    index: Arc<dyn VectorIndex>,
    lexical: Lexical,
    articles: articles::Articles,
    batcher: Arc<Batcher<EmbeddingModel>>,
    settings: KbSettings,
    /// Serialises index writes (see the module comment).
    write: tokio::sync::Mutex<()>,
    pending: AtomicU64,
    dirty: AtomicBool,
    /// Bumped on every index change, so caches of published content (type-ahead) know
    /// when to reload.
    generation: AtomicU64,
}

impl Kb {
    pub fn new(
        store: Store,
        index: Arc<dyn VectorIndex>,
        batcher: Arc<Batcher<EmbeddingModel>>,
        settings: KbSettings,
    ) -> Result<Self, KbError> {
        Ok(Self {
            store,
            index,
            lexical: Lexical::new().map_err(KbError::Task)?,
            articles: articles::Articles::new(
                (settings.article_cache_mb as u64).saturating_mul(1 << 20),
            ),
            batcher,
            settings,
            write: tokio::sync::Mutex::new(()),
            // Until the start-up catch-up has counted its work, report one thing pending.
            pending: AtomicU64::new(1),
            dirty: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    pub fn index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Validates every article; returns the normalised ones and every problem.
    pub fn validate(&self, articles: Vec<ArticleRow>) -> (Vec<ArticleRow>, Vec<Problem>) {
        let mut ok = Vec::with_capacity(articles.len());
        let mut problems = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, a) in articles.into_iter().enumerate() {
            match article::normalize(i, a, &self.settings.rules) {
                Ok(a) => {
                    if let Some(first) = seen.insert(a.id.clone(), i) {
                        problems.push(Problem {
                            index: i,
                            field: "id".into(),
                            message: format!("{:?} repeats articles[{first}]", a.id),
                        });
                    } else {
                        ok.push(a);
                    }
                }
                Err(p) => problems.extend(p),
            }
        }
        (ok, problems)
    }

    /// Writes and indexes `articles`; all or nothing at the database. When it returns,
    /// they are searchable.
    pub async fn upsert(
        &self,
        tenant: &str,
        articles: Vec<ArticleRow>,
    ) -> Result<Vec<Upserted>, KbError> {
        let (ok, problems) = self.validate(articles);
        if let Some(p) = problems.first() {
            let more = match problems.len() {
                1 => String::new(),
                n => format!(" ({} more problems; a dry run lists them all)", n - 1),
            };
            return Err(invalid(
                format!("articles[{}].{}", p.index, p.field),
                format!("{}{more}", p.message),
            ));
        }
        let done = self.store.kb_upsert(tenant, &ok).await?;
        let changed: Vec<String> = done
            .iter()
            .filter(|u| u.outcome != "unchanged")
            .map(|u| u.id.clone())
            .collect();
        // Drafts and unchanged articles may still be missing from the index after a
        // crash; the catch-up handles those, here only the changed ones.
        self.reindex_articles(tenant, &changed).await?;
        metrics::counter!("confidant_kb_articles_written_total").increment(changed.len() as u64);
        Ok(done)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<ArticleRow, KbError> {
        Ok(self.store.kb_get(tenant, id).await?)
    }

    pub async fn list(
        &self,
        tenant: &str,
        lang: Option<&str>,
        status: Option<&str>,
        after_id: &str,
        limit: usize,
    ) -> Result<Vec<ArticleRow>, KbError> {
        Ok(self
            .store
            .kb_list(tenant, lang, status, after_id, limit as i64)
            .await?)
    }

    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), KbError> {
        self.store.kb_tombstone(tenant, id).await?;
        // Re-reading under the write lock (rather than deleting blindly) keeps an article
        // that someone re-created meanwhile.
        self.reindex_articles(tenant, &[id.to_string()]).await?;
        self.store.kb_forget(tenant, id).await?;
        Ok(())
    }

    /// Erases a tenant's whole knowledge base from the index (the database rows are the
    /// caller's business): used by erasure.
    pub async fn drop_tenant_index(&self, tenant: &str) -> Result<(), KbError> {
        let _w = self.write.lock().await;
        self.blocking_index(|idx| {
            let t = tenant.to_string();
            move || idx.delete_all(Some(&t))
        })
        .await?;
        self.dirty.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Rebuilds a tenant's part of the index from the database: (articles, chunks).
    /// Each article's points are rewritten in place (same point ids), and only then is
    /// what the database no longer publishes taken out, so that searches keep finding the
    /// knowledge base while it is rebuilt.
    pub async fn reindex_tenant(&self, tenant: &str) -> Result<(u64, u64), KbError> {
        let ids: Vec<String> = self
            .store
            .kb_states()
            .await?
            .into_iter()
            .filter(|s| s.tenant == tenant && !s.deleted && s.published)
            .map(|s| s.id)
            .collect();
        let mut chunks = 0;
        for group in ids.chunks(64) {
            chunks += self.reindex_articles(tenant, group).await?;
        }
        let live: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let orphans: Vec<String> = self
            .blocking_index(|idx| move || idx.inventory())
            .await?
            .into_iter()
            .filter(|i| i.tenant == tenant && !live.contains(i.article_id.as_str()))
            .map(|i| i.article_id)
            .collect();
        // Re-read rather than deleted blindly: one published meanwhile stays.
        for group in orphans.chunks(64) {
            self.reindex_articles(tenant, group).await?;
        }
        Ok((ids.len() as u64, chunks))
    }

    async fn blocking_index<T, F>(
        &self,
        make: impl FnOnce(Arc<dyn VectorIndex>) -> F,
    ) -> Result<T, KbError>
    where
        F: FnOnce() -> Result<T, IndexError> + Send + 'static,
        T: Send + 'static,
    {
        let f = make(self.index.clone());
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| KbError::Task(e.to_string()))?
            .map_err(KbError::from)
    }

    async fn embed(&self, texts: Vec<String>, kind: InputKind) -> Result<Vec<Vec<f32>>, KbError> {
        let mut out = Vec::with_capacity(texts.len());
        for group in texts.chunks(self.settings.embed_batch.max(1)) {
            // Indexing is background work: when the queue is full, wait and retry rather
            // than fail an import because live traffic is busy.
            let mut delay = std::time::Duration::from_millis(20);
            loop {
                match self.batcher.embed(group, kind).await {
                    Ok(e) => {
                        out.extend(e.into_iter().map(|e| e.vector));
                        break;
                    }
                    Err(InferenceError::Overloaded { .. }) if delay.as_secs() < 5 => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    /// Re-reads `ids` from the database and puts them in the index as they are there
    /// (absent, deleted or draft: out of the index). Returns the chunks written.
    async fn reindex_articles(&self, tenant: &str, ids: &[String]) -> Result<u64, KbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let _w = self.write.lock().await;
        let mut live = Vec::new();
        for id in ids {
            match self.store.kb_get(tenant, id).await {
                Ok(a) if a.status == "published" => live.push(a),
                Ok(_) | Err(StoreError::NotFound(_)) => {
                    self.blocking_index(|idx| {
                        let (t, i) = (tenant.to_string(), id.clone());
                        move || idx.delete_article(&t, &i)
                    })
                    .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let per_article: Vec<Vec<Chunk>> = live
            .iter()
            .map(|a| chunks(a, self.settings.chunk_tokens))
            .collect();
        // Questions are embedded as queries (matched question to question), passages as
        // passages: asymmetric models (e5) need the distinction.
        let mut vectors: HashMap<(usize, usize), Vec<f32>> = HashMap::new();
        for (kind, input) in [
            (ChunkKind::Question, InputKind::Query),
            (ChunkKind::Passage, InputKind::Passage),
        ] {
            let (keys, texts): (Vec<(usize, usize)>, Vec<String>) = per_article
                .iter()
                .enumerate()
                .flat_map(|(a, cs)| {
                    cs.iter()
                        .enumerate()
                        .filter(|(_, c)| c.kind == kind)
                        .map(move |(c, ch)| ((a, c), ch.text.clone()))
                })
                .unzip();
            if texts.is_empty() {
                continue;
            }
            let embedded = self.embed(texts, input).await?;
            vectors.extend(keys.into_iter().zip(embedded));
        }
        let mut written = 0u64;
        for (ai, (a, cs)) in live.iter().zip(&per_article).enumerate() {
            let n = cs.len() as u32;
            let points: Vec<Point> = cs
                .iter()
                .enumerate()
                .map(|(ci, c)| Point {
                    tenant: tenant.to_string(),
                    article_id: a.id.clone(),
                    version: a.version,
                    chunk: ci as u32,
                    chunks: n,
                    kind: c.kind,
                    lang: a.lang.clone(),
                    channels: a.channels.clone(),
                    valid_from: a.valid_from,
                    valid_until: a.valid_until,
                    dense: vectors.remove(&(ai, ci)).unwrap_or_default(),
                    sparse: self.lexical.document(&c.text),
                })
                .collect();
            written += points.len() as u64;
            let (t, id, v) = (tenant.to_string(), a.id.clone(), a.version);
            self.blocking_index(|idx| move || idx.replace_article(&t, &id, v, points))
                .await?;
        }
        self.dirty.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(written)
    }

    pub async fn search(&self, p: &SearchParams) -> Result<Vec<SearchResult>, KbError> {
        let text = p.text.trim();
        if text.is_empty() {
            return Err(invalid("text", "must not be empty"));
        }
        let dense_vec = self
            .batcher
            .embed(&[text.to_string()], InputKind::Query)
            .await?
            .into_iter()
            .next()
            .map(|e| e.vector)
            .unwrap_or_default();
        self.search_with(p, dense_vec).await
    }

    /// `search` with the query's dense vector already computed (callers that also
    /// classify the text embed it once).
    pub async fn search_with(
        &self,
        p: &SearchParams,
        dense_vec: Vec<f32>,
    ) -> Result<Vec<SearchResult>, KbError> {
        let text = p.text.trim();
        if text.is_empty() {
            return Err(invalid("text", "must not be empty"));
        }
        if p.limit == 0 || p.limit > MAX_SEARCH_LIMIT {
            return Err(invalid(
                "limit",
                format!("must be between 1 and {MAX_SEARCH_LIMIT}"),
            ));
        }
        if let Some(lang) = &p.lang
            && !self.settings.rules.languages.contains(lang)
        {
            return Err(invalid(
                "lang",
                format!("{lang:?} is not a configured language"),
            ));
        }
        let filter = SearchFilter {
            tenant: p.tenant.clone(),
            lang: p.lang.clone(),
            channel: p.channel.clone(),
            at_ms: if p.at_ms > 0 { p.at_ms } else { now_ms() },
        };
        let candidates = self.settings.candidates.max(p.limit * 4);
        // Both signals are computed in every mode so each hit can report both.
        let sparse = self.lexical.query(text);
        let (dense, lexical) = self
            .blocking_index(|idx| {
                let f = filter.clone();
                move || {
                    // Timed on the blocking thread: the search's own cost, without the
                    // wait for a thread (the biggest part of an answer's CPU after the model).
                    let t0 = Instant::now();
                    let d = idx.search(&Query::Dense(dense_vec), &f, candidates)?;
                    let t1 = Instant::now();
                    let l = idx.search(&Query::Sparse(sparse), &f, candidates)?;
                    let histogram = |signal| metrics::histogram!("confidant_kb_search_seconds", "signal" => signal);
                    histogram("dense").record(t1 - t0);
                    histogram("lexical").record(t1.elapsed());
                    Ok((d, l))
                }
            })
            .await?;
        let fused = fusion::fuse(&dense, &lexical, p.mode, self.settings.fusion);
        let mut out = Vec::with_capacity(p.limit);
        let mut hits = fused.into_iter().peekable();
        // The articles of as many hits as are still wanted, one query per round: an
        // article deleted between the index read and now is simply skipped, and the next
        // round reads further down the list.
        while out.len() < p.limit && hits.peek().is_some() {
            let round: Vec<_> = hits.by_ref().take(p.limit - out.len()).collect();
            // Taken before the read: a write meanwhile makes what is read now stale at once.
            let generation = self.generation();
            let mut got: Vec<Option<Arc<ArticleRow>>> = round
                .iter()
                .map(|h| self.articles.get(&p.tenant, &h.article_id, generation))
                .collect();
            let missing: Vec<&str> = round
                .iter()
                .zip(&got)
                .filter(|(_, a)| a.is_none())
                .map(|(h, _)| h.article_id.as_str())
                .collect();
            if !missing.is_empty() {
                for a in self.store.kb_get_many(&p.tenant, &missing).await? {
                    let a = Arc::new(a);
                    self.articles.put(a.clone(), generation);
                    for (h, slot) in round.iter().zip(got.iter_mut()) {
                        if slot.is_none() && h.article_id == a.id {
                            *slot = Some(a.clone());
                        }
                    }
                }
            }
            for (hit, article) in round.into_iter().zip(got) {
                let Some(article) = article else {
                    continue;
                };
                let article = Arc::unwrap_or_clone(article);
                let matched = chunk_at(
                    &article,
                    self.settings.chunk_tokens,
                    hit.best_chunk() as usize,
                )
                .unwrap_or(Chunk {
                    kind: ChunkKind::Passage,
                    text: article.answer.clone(),
                });
                out.push(SearchResult {
                    article,
                    hit,
                    matched,
                });
            }
        }
        Ok(out)
    }

    /// Brings the index in line with the database: indexes what is missing, stale or cut
    /// off, removes what the database no longer has. Run at start and on demand.
    pub async fn catch_up(&self) -> Result<CatchUp, KbError> {
        let indexed = self.blocking_index(|idx| move || idx.inventory()).await?;
        let mut in_index: HashMap<(String, String), crate::index::Indexed> = indexed
            .into_iter()
            .map(|i| ((i.tenant.clone(), i.article_id.clone()), i))
            .collect();
        let states = self.store.kb_states().await?;
        let mut todo: HashMap<String, Vec<String>> = HashMap::new();
        let mut tombstones = Vec::new();
        for s in &states {
            let held = in_index.remove(&(s.tenant.clone(), s.id.clone()));
            if s.deleted {
                tombstones.push((s.tenant.clone(), s.id.clone()));
            } else if s.published {
                if !held.is_some_and(|h| h.is_complete(s.version)) {
                    todo.entry(s.tenant.clone()).or_default().push(s.id.clone());
                }
            } else if held.is_some() {
                // A draft in the index: reindexing removes it.
                todo.entry(s.tenant.clone()).or_default().push(s.id.clone());
            }
        }
        let strays: Vec<(String, String)> = in_index.into_keys().collect();
        let total = todo.values().map(Vec::len).sum::<usize>() + tombstones.len() + strays.len();
        self.pending.store(total as u64, Ordering::Relaxed);
        let mut report = CatchUp::default();
        for (tenant, id) in tombstones.iter().chain(&strays) {
            self.reindex_articles(tenant, std::slice::from_ref(id))
                .await?;
            self.store.kb_forget(tenant, id).await?;
            report.removed += 1;
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        for (tenant, ids) in &todo {
            for group in ids.chunks(32) {
                self.reindex_articles(tenant, group).await?;
                report.indexed += group.len() as u64;
                self.pending
                    .fetch_sub(group.len() as u64, Ordering::Relaxed);
            }
        }
        self.pending.store(0, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(report)
    }

    /// Flushes the index if anything was written since the last flush.
    pub async fn flush_if_dirty(&self) -> Result<(), KbError> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            self.blocking_index(|idx| move || idx.flush()).await?;
        }
        Ok(())
    }

    pub async fn counts(&self, tenant: &str) -> Result<(u64, u64, u64), KbError> {
        let (published, drafts) = self.store.kb_counts(tenant).await?;
        let chunks = self
            .blocking_index(|idx| {
                let t = tenant.to_string();
                move || idx.count(Some(&t))
            })
            .await?;
        Ok((published, drafts, chunks as u64))
    }
}
