//! API tokens: only their SHA-256 is stored. Tokens carry 256 random bits, so a fast
//! hash is enough (no password stretching needed) and lookups stay cheap.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub token_hash: String,
    pub description: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn record(row: &sqlx::any::AnyRow) -> Result<TokenRecord, sqlx::Error> {
    let roles: String = row.try_get("roles")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        token_hash: row.try_get("token_hash")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const COLUMNS: &str =
    "id, tenant, roles, token_hash, description, created_at, last_used_at, revoked_at";

impl Store {
    pub async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant, roles, token_hash, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.tenant)
        .bind(t.roles.join(","))
        .bind(&t.token_hash)
        .bind(&t.description)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// All tokens, or one tenant's; revoked ones included (they are history).
    pub async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM api_tokens WHERE tenant = $1 ORDER BY created_at, id"
                )))
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    pub async fn get_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        Ok(record(&row)?)
    }

    /// Marks a token revoked; revoking twice keeps the first time.
    pub async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.get_token(id).await?;
        }
        Ok(())
    }

    pub async fn touch_tokens(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        for (id, at) in used {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(*at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
