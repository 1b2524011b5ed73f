//! The audit trail: who did what, when, to which tenant's data. Append-only.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub tenant: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn audit(
        &self,
        actor: &str,
        tenant: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (at, actor, tenant, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(now_ms())
            .bind(actor)
            .bind(tenant)
            .bind(action)
            .bind(target)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = if f.limit <= 0 {
            100
        } else {
            f.limit.min(10_000)
        };
        let rows = sqlx::query(
            "SELECT id, at, actor, tenant, action, target, detail FROM audit_log \
             WHERE ($1 = '' OR tenant = $2) AND at >= $3 ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(f.tenant.clone().unwrap_or_default())
        .bind(f.tenant.clone().unwrap_or_default())
        .bind(f.since_ms.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    tenant: r.try_get("tenant")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deletes audit entries older than `before_ms`; returns how many.
    pub async fn purge_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
