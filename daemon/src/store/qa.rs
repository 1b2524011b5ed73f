//! QA results: the score of each contact and its rules' outcomes (no transcript text), and
//! the report over them by agent, team and rule.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaRecord {
    pub conversation_id: String,
    pub customer_id: String,
    pub agent_id: String,
    pub team: String,
    pub rubric: String,
    pub total: f64,
    pub critical_failed: bool,
    /// Rule id → "pass", "fail" or "not_applicable".
    pub outcomes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaGroup {
    pub name: String,
    pub contacts: u64,
    pub mean_total: f64,
    pub critical_failed: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct QaReport {
    pub contacts: u64,
    pub by_agent: Vec<QaGroup>,
    pub by_team: Vec<QaGroup>,
    /// Rule id → (failed, applicable).
    pub by_rule: BTreeMap<String, (u64, u64)>,
}

impl Store {
    /// Stores a contact's result; scoring the same contact again replaces it.
    pub async fn qa_record(&self, tenant: &str, r: &QaRecord) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM qa_results WHERE tenant = $1 AND conversation_id = $2")
            .bind(tenant)
            .bind(&r.conversation_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO qa_results (tenant, conversation_id, customer_id, agent_id, team, rubric, \
             total, critical_failed, outcomes, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(tenant)
        .bind(&r.conversation_id)
        .bind(&r.customer_id)
        .bind(&r.agent_id)
        .bind(&r.team)
        .bind(&r.rubric)
        .bind(r.total)
        .bind(i64::from(r.critical_failed))
        .bind(serde_json::to_string(&r.outcomes).unwrap_or_else(|_| "{}".into()))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn qa_report(&self, tenant: &str, since_ms: i64) -> Result<QaReport, StoreError> {
        let group = |column: &str| {
            format!(
                "SELECT {column}, COUNT(*), AVG(total), COUNT(CASE WHEN critical_failed = 1 THEN 1 END) \
                 FROM qa_results WHERE tenant = $1 AND at >= $2 GROUP BY {column} ORDER BY {column}"
            )
        };
        let mut groups = Vec::new();
        for column in ["agent_id", "team"] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(group(column)))
                .bind(tenant)
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?;
            groups.push(
                rows.iter()
                    .map(|r| {
                        Ok(QaGroup {
                            name: r.try_get(0)?,
                            contacts: r.try_get::<i64, _>(1)?.max(0) as u64,
                            mean_total: r.try_get::<f64, _>(2)?,
                            critical_failed: r.try_get::<i64, _>(3)?.max(0) as u64,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?,
            );
        }
        let rows = sqlx::query("SELECT outcomes FROM qa_results WHERE tenant = $1 AND at >= $2")
            .bind(tenant)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut by_rule: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in &rows {
            let outcomes: BTreeMap<String, String> =
                serde_json::from_str(&r.try_get::<String, _>(0)?).unwrap_or_default();
            for (rule, outcome) in outcomes {
                let e = by_rule.entry(rule).or_default();
                match outcome.as_str() {
                    "fail" => {
                        e.0 += 1;
                        e.1 += 1;
                    }
                    "pass" => e.1 += 1,
                    _ => {}
                }
            }
        }
        let by_team = groups.pop().unwrap_or_default();
        let by_agent = groups.pop().unwrap_or_default();
        Ok(QaReport {
            contacts: rows.len() as u64,
            by_agent,
            by_team,
            by_rule,
        })
    }
}
