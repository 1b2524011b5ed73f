//! Bot conversations, turns and decisions; routing advice and outcomes; the report over
//! them; and erasure (by customer, by age). Text reaching this module is already redacted.

use sqlx::Row;

use super::{Store, StoreError, WriteTx, now_ms};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub tenant: String,
    pub id: String,
    pub customer_id: String,
    pub channel: String,
    pub lang: String,
    pub started_at: i64,
    pub turns: i64,
    /// Turns the bot could not answer plus answers the customer said did not help.
    pub failures: i64,
    /// Empty while the bot holds the conversation.
    pub handoff_reason: String,
    pub handoff_queue: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub seq: i64,
    pub speaker: String,
    pub text: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    /// "answer", "clarify", "no_match" or "handoff".
    pub outcome: String,
    pub reason: String,
    pub article_id: String,
    pub article_version: i64,
    pub confidence: f64,
    pub intent: String,
    pub queue: String,
    pub priority: i64,
    /// "", "resolved" or "unresolved".
    pub feedback: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteRecord {
    pub contact_id: String,
    pub customer_id: String,
    pub intent: String,
    pub risk: String,
    pub queue: String,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub conversations: u64,
    pub answered: u64,
    pub handed_off: u64,
    pub handoffs_by_reason: Vec<(String, u64)>,
    pub resolved: u64,
    pub feedback_resolved: u64,
    pub feedback_unresolved: u64,
    pub routed: u64,
    pub routed_with_outcome: u64,
    pub routed_first_try: u64,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Erased {
    pub conversations: u64,
    pub turns: u64,
    pub decisions: u64,
    pub routes: u64,
    pub qa_results: u64,
}

const CONVERSATION: &str = "tenant, id, customer_id, channel, lang, started_at, turns, failures, \
                            handoff_reason, handoff_queue";
const DECISION: &str = "id, conversation_id, seq, outcome, reason, article_id, article_version, \
                        confidence, intent, queue, priority, feedback, at";

fn conversation(r: &sqlx::any::AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        tenant: r.try_get("tenant")?,
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        channel: r.try_get("channel")?,
        lang: r.try_get("lang")?,
        started_at: r.try_get("started_at")?,
        turns: r.try_get("turns")?,
        failures: r.try_get("failures")?,
        handoff_reason: r.try_get("handoff_reason")?,
        handoff_queue: r.try_get("handoff_queue")?,
    })
}

fn decision(r: &sqlx::any::AnyRow) -> Result<Decision, sqlx::Error> {
    Ok(Decision {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        seq: r.try_get("seq")?,
        outcome: r.try_get("outcome")?,
        reason: r.try_get("reason")?,
        article_id: r.try_get("article_id")?,
        article_version: r.try_get("article_version")?,
        confidence: r.try_get("confidence")?,
        intent: r.try_get("intent")?,
        queue: r.try_get("queue")?,
        priority: r.try_get("priority")?,
        feedback: r.try_get("feedback")?,
        at: r.try_get("at")?,
    })
}

fn count(r: &sqlx::any::AnyRow) -> Result<u64, sqlx::Error> {
    Ok(r.try_get::<i64, _>(0)?.max(0) as u64)
}

/// A customer turn (its text already redacted) and the bot's decision on it.
/// `failed` adds one to the conversation's failures; `handoff` (reason, queue) is kept
/// only if the conversation was not handed off before.
pub struct TurnRecord {
    pub start: Conversation,
    pub text: String,
    pub decision: Decision,
    pub failed: bool,
    pub handoff: Option<(String, String)>,
}

impl TurnRecord {
    pub(crate) async fn write(&self, tx: &mut WriteTx) -> Result<Conversation, StoreError> {
        let now = now_ms();
        let (reason, queue) = self
            .handoff
            .as_ref()
            .map_or(("", ""), |(r, q)| (r.as_str(), q.as_str()));
        let (start, d) = (&self.start, &self.decision);
        // In the update every right-hand side reads the row as it was, so the queue's
        // condition sees the old reason.
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO conversations (tenant, id, customer_id, channel, lang, started_at, \
             updated_at, turns, failures, handoff_reason, handoff_queue) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10) \
             ON CONFLICT (tenant, id) DO UPDATE SET \
             turns = conversations.turns + 1, \
             updated_at = excluded.updated_at, \
             customer_id = CASE WHEN conversations.customer_id = '' \
               THEN excluded.customer_id ELSE conversations.customer_id END, \
             failures = conversations.failures + excluded.failures, \
             handoff_reason = CASE WHEN conversations.handoff_reason = '' \
               THEN excluded.handoff_reason ELSE conversations.handoff_reason END, \
             handoff_queue = CASE WHEN conversations.handoff_reason = '' \
               THEN excluded.handoff_queue ELSE conversations.handoff_queue END \
             RETURNING {CONVERSATION}"
        )))
        .bind(&start.tenant)
        .bind(&start.id)
        .bind(&start.customer_id)
        .bind(&start.channel)
        .bind(&start.lang)
        .bind(now)
        .bind(now)
        .bind(i64::from(self.failed))
        .bind(reason)
        .bind(queue)
        .fetch_one(&mut **tx)
        .await?;
        let c = conversation(&r)?;
        sqlx::query(
            "INSERT INTO conversation_turns (tenant, conversation_id, seq, speaker, text, at) \
             VALUES ($1, $2, $3, 'customer', $4, $5)",
        )
        .bind(&c.tenant)
        .bind(&c.id)
        .bind(c.turns)
        .bind(&self.text)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bot_decisions (tenant, {DECISION}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(&c.tenant)
        .bind(&d.id)
        .bind(&c.id)
        .bind(c.turns)
        .bind(&d.outcome)
        .bind(&d.reason)
        .bind(&d.article_id)
        .bind(d.article_version)
        .bind(d.confidence)
        .bind(&d.intent)
        .bind(&d.queue)
        .bind(d.priority)
        .bind(&d.feedback)
        .bind(d.at)
        .execute(&mut **tx)
        .await?;
        Ok(c)
    }
}

impl Store {
    pub async fn conversation_get(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Conversation, StoreError> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION} FROM conversations WHERE tenant = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("conversation {id:?}")))?;
        Ok(conversation(&r)?)
    }

    /// Records a customer turn and the bot's decision on it in one transaction (on a busy
    /// SQLite shared with the other turns waiting, `group.rs`), starting the conversation if it
    /// is new. Counts are added to what is stored, so concurrent turns of one
    /// conversation are all counted. Returns the conversation as it now stands; the
    /// decision is stored with the turn's sequence number (`decision.seq` is ignored).
    pub async fn conversation_record(
        &self,
        record: TurnRecord,
    ) -> Result<Conversation, StoreError> {
        // While SQLite is free the turn is written by its own call (no hand-over to the
        // writer task, whose scheduling would add to the latency); while it is busy, the
        // turn joins the group the writer task commits next.
        let mut tx = match &self.recorder {
            Some(recorder) => match self.free_writer_turn() {
                Some(turn) => self.write_tx_in_turn(turn).await?,
                None => return recorder.record(record).await,
            },
            None => self.write_tx().await?,
        };
        let c = record.write(&mut tx).await?;
        tx.commit().await?;
        super::group::turns_committed(1);
        Ok(c)
    }

    /// The text of the conversation's latest turn by `speaker`, if any.
    pub async fn conversation_last_turn(
        &self,
        tenant: &str,
        id: &str,
        speaker: &str,
    ) -> Result<Option<String>, StoreError> {
        let r = sqlx::query(
            "SELECT text FROM conversation_turns \
             WHERE tenant = $1 AND conversation_id = $2 AND speaker = $3 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(id)
        .bind(speaker)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("text")?),
            None => None,
        })
    }

    /// The conversation's turns in order.
    pub async fn conversation_turns(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<Turn>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, speaker, text, at FROM conversation_turns \
             WHERE tenant = $1 AND conversation_id = $2 ORDER BY seq",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Turn {
                    seq: r.try_get("seq")?,
                    speaker: r.try_get("speaker")?,
                    text: r.try_get("text")?,
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The conversation's decisions in order.
    pub async fn decisions(
        &self,
        tenant: &str,
        conversation_id: &str,
    ) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DECISION} FROM bot_decisions WHERE tenant = $1 AND conversation_id = $2 ORDER BY seq"
        )))
        .bind(tenant)
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(decision)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Records "did that solve it?" on one decision of one conversation. An answer that did
    /// not help counts as a failure of the conversation (once, however often it is
    /// repeated). Returns the decision and the conversation as they now stand.
    pub async fn decision_feedback(
        &self,
        tenant: &str,
        conversation_id: &str,
        decision_id: &str,
        resolved: bool,
    ) -> Result<(Decision, Conversation), StoreError> {
        let mut tx = self.write_tx().await?;
        let c = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION} FROM conversations WHERE tenant = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(conversation_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("conversation {conversation_id:?}")))?;
        let mut c = conversation(&c)?;
        let d = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DECISION} FROM bot_decisions WHERE tenant = $1 AND id = $2 AND conversation_id = $3"
        )))
        .bind(tenant)
        .bind(decision_id)
        .bind(conversation_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "decision {decision_id:?} in conversation {conversation_id:?}"
            ))
        })?;
        let mut d = decision(&d)?;
        let feedback = if resolved { "resolved" } else { "unresolved" };
        if !resolved && d.feedback != "unresolved" {
            c.failures += 1;
        } else if resolved && d.feedback == "unresolved" {
            c.failures = (c.failures - 1).max(0);
        }
        d.feedback = feedback.to_string();
        sqlx::query("UPDATE bot_decisions SET feedback = $1 WHERE tenant = $2 AND id = $3")
            .bind(feedback)
            .bind(tenant)
            .bind(decision_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE conversations SET failures = $1, updated_at = $2 WHERE tenant = $3 AND id = $4",
        )
        .bind(c.failures)
        .bind(now_ms())
        .bind(tenant)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((d, c))
    }

    /// Marks the conversation handed off (after feedback pushed it over the failure limit).
    pub async fn conversation_hand_off(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        queue: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET handoff_reason = $1, handoff_queue = $2 WHERE tenant = $3 AND id = $4",
        )
        .bind(reason)
        .bind(queue)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Routing advice for a contact. A contact routed again keeps its first advice: that
    /// is what first-try accuracy measures.
    pub async fn route_record(&self, tenant: &str, r: &RouteRecord) -> Result<(), StoreError> {
        // In the writer turn: concurrent routes (and bot turns) queue in the daemon instead
        // of meeting at SQLite's lock, whose busy handler sleeps between tries.
        let _turn = self.writer_turn().await;
        sqlx::query(
            "INSERT INTO routing_decisions (tenant, contact_id, customer_id, intent, risk, queue, \
             priority, handled_queue, at) VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8) \
             ON CONFLICT (tenant, contact_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(&r.contact_id)
        .bind(&r.customer_id)
        .bind(&r.intent)
        .bind(&r.risk)
        .bind(&r.queue)
        .bind(r.priority)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Where a routed contact was finally handled; returns whether the advice was right.
    pub async fn route_outcome(
        &self,
        tenant: &str,
        contact_id: &str,
        handled_queue: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "SELECT queue FROM routing_decisions WHERE tenant = $1 AND contact_id = $2",
        )
        .bind(tenant)
        .bind(contact_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("contact {contact_id:?}")))?;
        let advised: String = r.try_get("queue")?;
        sqlx::query(
            "UPDATE routing_decisions SET handled_queue = $1, outcome_at = $2 WHERE tenant = $3 AND contact_id = $4",
        )
        .bind(handled_queue)
        .bind(now_ms())
        .bind(tenant)
        .bind(contact_id)
        .execute(&self.pool)
        .await?;
        Ok(advised == handled_queue)
    }

    pub async fn report(&self, tenant: &str, since_ms: i64) -> Result<Report, StoreError> {
        let one = |sql: &'static str| {
            sqlx::query(sql)
                .bind(tenant.to_string())
                .bind(since_ms)
                .fetch_one(&self.pool)
        };
        let conversations = count(
            &one("SELECT COUNT(*) FROM conversations WHERE tenant = $1 AND started_at >= $2")
                .await?,
        )?;
        let handed_off = count(
            &one("SELECT COUNT(*) FROM conversations WHERE tenant = $1 AND started_at >= $2 AND handoff_reason <> ''")
                .await?,
        )?;
        let answered = count(
            &one(
                "SELECT COUNT(DISTINCT c.id) FROM conversations c JOIN bot_decisions d \
                  ON d.tenant = c.tenant AND d.conversation_id = c.id \
                  WHERE c.tenant = $1 AND c.started_at >= $2 AND d.outcome = 'answer'",
            )
            .await?,
        )?;
        let resolved = count(
            &one(
                "SELECT COUNT(DISTINCT c.id) FROM conversations c JOIN bot_decisions d \
                  ON d.tenant = c.tenant AND d.conversation_id = c.id \
                  WHERE c.tenant = $1 AND c.started_at >= $2 AND d.feedback = 'resolved' \
                  AND c.handoff_reason = ''",
            )
            .await?,
        )?;
        let feedback = one(
            "SELECT COUNT(CASE WHEN d.feedback = 'resolved' THEN 1 END), \
             COUNT(CASE WHEN d.feedback = 'unresolved' THEN 1 END) \
             FROM bot_decisions d JOIN conversations c ON d.tenant = c.tenant AND d.conversation_id = c.id \
             WHERE c.tenant = $1 AND c.started_at >= $2",
        )
        .await?;
        let routing = one("SELECT COUNT(*), COUNT(outcome_at), \
             COUNT(CASE WHEN outcome_at IS NOT NULL AND handled_queue = queue THEN 1 END) \
             FROM routing_decisions WHERE tenant = $1 AND at >= $2")
        .await?;
        let reasons = sqlx::query(
            "SELECT handoff_reason, COUNT(*) FROM conversations WHERE tenant = $1 AND started_at >= $2 \
             AND handoff_reason <> '' GROUP BY handoff_reason ORDER BY handoff_reason",
        )
        .bind(tenant)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let get = |r: &sqlx::any::AnyRow, i: usize| -> Result<u64, sqlx::Error> {
            Ok(r.try_get::<i64, _>(i)?.max(0) as u64)
        };
        Ok(Report {
            conversations,
            answered,
            handed_off,
            handoffs_by_reason: reasons
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, get(r, 1)?)))
                .collect::<Result<_, sqlx::Error>>()?,
            resolved,
            feedback_resolved: get(&feedback, 0)?,
            feedback_unresolved: get(&feedback, 1)?,
            routed: get(&routing, 0)?,
            routed_with_outcome: get(&routing, 1)?,
            routed_first_try: get(&routing, 2)?,
        })
    }

    /// Erases everything held about one customer of one tenant: conversations with their
    /// turns and decisions, routing records and QA results. One transaction.
    pub async fn erase_customer(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Erased, StoreError> {
        let mut tx = self.write_tx().await?;
        let of_customer = "(SELECT id FROM conversations WHERE tenant = $1 AND customer_id = $2)";
        let turns = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM conversation_turns WHERE tenant = $1 AND conversation_id IN {of_customer}"
        )))
        .bind(tenant)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let decisions = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM bot_decisions WHERE tenant = $1 AND conversation_id IN {of_customer}"
        )))
        .bind(tenant)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let conversations =
            sqlx::query("DELETE FROM conversations WHERE tenant = $1 AND customer_id = $2")
                .bind(tenant)
                .bind(customer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let routes =
            sqlx::query("DELETE FROM routing_decisions WHERE tenant = $1 AND customer_id = $2")
                .bind(tenant)
                .bind(customer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let qa_results =
            sqlx::query("DELETE FROM qa_results WHERE tenant = $1 AND customer_id = $2")
                .bind(tenant)
                .bind(customer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(Erased {
            conversations,
            turns,
            decisions,
            routes,
            qa_results,
        })
    }

    /// Erases conversations (with turns and decisions) last active before `before_ms`, and
    /// routing records made before it (QA results have their own window:
    /// `erase_qa_before`).
    pub async fn erase_conversations_before(&self, before_ms: i64) -> Result<Erased, StoreError> {
        let mut tx = self.write_tx().await?;
        // Children first, matched on both key columns with EXISTS (portable to both
        // databases, unlike row-value IN).
        let turns = sqlx::query(
            "DELETE FROM conversation_turns WHERE EXISTS (SELECT 1 FROM conversations c \
             WHERE c.tenant = conversation_turns.tenant AND c.id = conversation_turns.conversation_id \
             AND c.updated_at < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let decisions = sqlx::query(
            "DELETE FROM bot_decisions WHERE EXISTS (SELECT 1 FROM conversations c \
             WHERE c.tenant = bot_decisions.tenant AND c.id = bot_decisions.conversation_id \
             AND c.updated_at < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let conversations = sqlx::query("DELETE FROM conversations WHERE updated_at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let routes = sqlx::query("DELETE FROM routing_decisions WHERE at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Erased {
            conversations,
            turns,
            decisions,
            routes,
            qa_results: 0,
        })
    }

    /// Erases QA results stored before `before_ms`.
    pub async fn erase_qa_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM qa_results WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
