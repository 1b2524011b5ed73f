//! Knowledge-base articles. List-valued fields are stored as JSON text so the schema is
//! the same on SQLite and PostgreSQL.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// One article as stored. `valid_from`/`valid_until` use the index's open-window sentinels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArticleRow {
    pub tenant: String,
    pub id: String,
    pub title: String,
    pub questions: Vec<String>,
    pub answer: String,
    pub body: String,
    pub lang: String,
    pub tags: Vec<String>,
    pub channels: Vec<String>,
    pub valid_from: i64,
    pub valid_until: i64,
    pub status: String,
    pub version: i64,
    pub content_hash: String,
    pub updated_at: i64,
}

/// What the index catch-up needs to know of every article.
#[derive(Debug, Clone, PartialEq)]
pub struct ArticleState {
    pub tenant: String,
    pub id: String,
    pub version: i64,
    pub published: bool,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    pub id: String,
    pub version: i64,
    /// "created", "updated" or "unchanged".
    pub outcome: &'static str,
}

const COLUMNS: &str = "tenant, id, title, questions, answer, body, lang, tags, channels, \
                       valid_from, valid_until, status, version, content_hash, updated_at";

fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn row(r: &sqlx::any::AnyRow) -> Result<ArticleRow, sqlx::Error> {
    Ok(ArticleRow {
        tenant: r.try_get("tenant")?,
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        questions: list(&r.try_get::<String, _>("questions")?),
        answer: r.try_get("answer")?,
        body: r.try_get("body")?,
        lang: r.try_get("lang")?,
        tags: list(&r.try_get::<String, _>("tags")?),
        channels: list(&r.try_get::<String, _>("channels")?),
        valid_from: r.try_get("valid_from")?,
        valid_until: r.try_get("valid_until")?,
        status: r.try_get("status")?,
        version: r.try_get("version")?,
        content_hash: r.try_get("content_hash")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Writes `articles` (already validated, all of `tenant`) in one transaction: all or
    /// nothing. An article whose content hash is unchanged keeps its version.
    pub async fn kb_upsert(
        &self,
        tenant: &str,
        articles: &[ArticleRow],
    ) -> Result<Vec<Upserted>, StoreError> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(articles.len());
        for a in articles {
            let existing = sqlx::query(
                "SELECT version, content_hash, deleted_at FROM kb_articles WHERE tenant = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(&a.id)
            .fetch_optional(&mut *tx)
            .await?;
            let (version, outcome) = match existing {
                None => (1, "created"),
                Some(r) => {
                    let version: i64 = r.try_get("version")?;
                    let hash: String = r.try_get("content_hash")?;
                    let deleted: Option<i64> = r.try_get("deleted_at")?;
                    if deleted.is_none() && hash == a.content_hash {
                        out.push(Upserted {
                            id: a.id.clone(),
                            version,
                            outcome: "unchanged",
                        });
                        continue;
                    }
                    // A tombstone comes back to life as a new version, so the index
                    // catch-up never confuses it with what it deleted.
                    (
                        version + 1,
                        if deleted.is_some() {
                            "created"
                        } else {
                            "updated"
                        },
                    )
                }
            };
            let q = if version == 1 {
                "INSERT INTO kb_articles (title, questions, answer, body, lang, tags, channels, \
                 valid_from, valid_until, status, version, content_hash, updated_at, tenant, id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            } else {
                "UPDATE kb_articles SET title = $1, questions = $2, answer = $3, body = $4, lang = $5, \
                 tags = $6, channels = $7, valid_from = $8, valid_until = $9, status = $10, \
                 version = $11, content_hash = $12, updated_at = $13, deleted_at = NULL \
                 WHERE tenant = $14 AND id = $15"
            };
            let mut query = sqlx::query(q)
                .bind(&a.title)
                .bind(json(&a.questions))
                .bind(&a.answer)
                .bind(&a.body)
                .bind(&a.lang)
                .bind(json(&a.tags))
                .bind(json(&a.channels))
                .bind(a.valid_from)
                .bind(a.valid_until)
                .bind(&a.status)
                .bind(version)
                .bind(&a.content_hash)
                .bind(now)
                .bind(tenant)
                .bind(&a.id);
            if version == 1 {
                query = query.bind(now);
            }
            query.execute(&mut *tx).await?;
            out.push(Upserted {
                id: a.id.clone(),
                version,
                outcome,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A live (not deleted) article.
    pub async fn kb_get(&self, tenant: &str, id: &str) -> Result<ArticleRow, StoreError> {
        let q = format!(
            "SELECT {COLUMNS} FROM kb_articles WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("article {id:?}")))?;
        Ok(row(&r)?)
    }

    /// The live articles among `ids`, in one query; missing and deleted ones are absent.
    pub async fn kb_get_many(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> Result<Vec<ArticleRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let q = format!(
            "SELECT {COLUMNS} FROM kb_articles WHERE tenant = $1 AND deleted_at IS NULL \
             AND id IN ({})",
            marks.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q)).bind(tenant);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Live articles in id order after `after_id`, optionally of one language and status.
    pub async fn kb_list(
        &self,
        tenant: &str,
        lang: Option<&str>,
        status: Option<&str>,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<ArticleRow>, StoreError> {
        let q = format!(
            "SELECT {COLUMNS} FROM kb_articles WHERE tenant = $1 AND id > $2 AND deleted_at IS NULL \
             AND ($3 = '' OR lang = $3) AND ($4 = '' OR status = $4) ORDER BY id LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(tenant)
            .bind(after_id)
            .bind(lang.unwrap_or(""))
            .bind(status.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Marks an article deleted (a tombstone until the index has dropped it).
    pub async fn kb_tombstone(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE kb_articles SET deleted_at = $1, version = version + 1, updated_at = $1 \
             WHERE tenant = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(now_ms())
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("article {id:?}")));
        }
        Ok(())
    }

    /// Removes a tombstone for good, once the index no longer holds the article.
    pub async fn kb_forget(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM kb_articles WHERE tenant = $1 AND id = $2 AND deleted_at IS NOT NULL",
        )
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every article's state, tombstones included, for the index catch-up.
    pub async fn kb_states(&self) -> Result<Vec<ArticleState>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, id, version, status, deleted_at FROM kb_articles ORDER BY tenant, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ArticleState {
                    tenant: r.try_get("tenant")?,
                    id: r.try_get("id")?,
                    version: r.try_get("version")?,
                    published: r.try_get::<String, _>("status")? == "published",
                    deleted: r.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// (published, drafts) among a tenant's live articles; an empty tenant counts the
    /// whole site.
    pub async fn kb_counts(&self, tenant: &str) -> Result<(u64, u64), StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM kb_articles WHERE ($1 = '' OR tenant = $2) \
             AND deleted_at IS NULL GROUP BY status",
        )
        .bind(tenant)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        let (mut published, mut drafts) = (0, 0);
        for r in rows {
            let n: i64 = r.try_get("n")?;
            match r.try_get::<String, _>("status")?.as_str() {
                "published" => published += n as u64,
                _ => drafts += n as u64,
            }
        }
        Ok((published, drafts))
    }
}
