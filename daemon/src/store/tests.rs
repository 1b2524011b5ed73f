use super::testing::backends;
use super::*;

fn token(id: &str, tenant: &str, created: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        tenant: tenant.into(),
        roles: vec!["bot".into(), "qa".into()],
        token_hash: format!("hash-{id}"),
        description: "desk".into(),
        created_at: created,
        last_used_at: None,
        revoked_at: None,
    }
}

#[tokio::test]
async fn tokens_round_trip_revoke_and_touch() {
    for db in backends("tokens_round_trip_revoke_and_touch").await {
        let s = &db.store;
        s.insert_token(&token("a", "bank1", 1)).await.unwrap();
        s.insert_token(&token("b", "bank2", 2)).await.unwrap();
        assert_eq!(s.list_tokens(None).await.unwrap().len(), 2, "{}", db.name);
        let mine = s.list_tokens(Some("bank1")).await.unwrap();
        assert_eq!(mine, vec![token("a", "bank1", 1)], "{}", db.name);
        // The hash is unique: a duplicate insert fails and changes nothing.
        let mut dup = token("c", "bank1", 3);
        dup.token_hash = "hash-a".into();
        assert!(s.insert_token(&dup).await.is_err(), "{}", db.name);
        s.revoke_token("a").await.unwrap();
        let first = s.get_token("a").await.unwrap().revoked_at;
        assert!(first.is_some());
        s.revoke_token("a").await.unwrap();
        assert_eq!(s.get_token("a").await.unwrap().revoked_at, first);
        assert!(matches!(
            s.revoke_token("zzz").await,
            Err(StoreError::NotFound(_))
        ));
        s.touch_tokens(&[("b".into(), 99)]).await.unwrap();
        assert_eq!(s.get_token("b").await.unwrap().last_used_at, Some(99));
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn audit_is_filtered_by_tenant_newest_first_and_purgeable() {
    for db in backends("audit_is_filtered_by_tenant_newest_first_and_purgeable").await {
        let s = &db.store;
        s.audit("local:0", "bank1", "token.create", "a", "roles=bot")
            .await
            .unwrap();
        s.audit("token:a", "bank2", "token.revoke", "b", "")
            .await
            .unwrap();
        s.audit("token:a", "bank1", "model.reload", "", "")
            .await
            .unwrap();
        let all = s.list_audit(&AuditFilter::default()).await.unwrap();
        assert_eq!(all.len(), 3, "{}", db.name);
        let b1 = s
            .list_audit(&AuditFilter {
                tenant: Some("bank1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(b1.len(), 2);
        assert_eq!(b1[0].action, "model.reload", "newest first on {}", db.name);
        assert!(b1.iter().all(|e| e.tenant == "bank1"));
        assert_eq!(s.purge_audit_before(now_ms() + 1000).await.unwrap(), 3);
        assert!(
            s.list_audit(&AuditFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = Store::open(&url).await.unwrap();
    s.insert_token(&token("a", "t", 1)).await.unwrap();
    s.close().await;
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.list_tokens(None).await.unwrap().len(), 1);
    assert!(matches!(
        Store::open("mysql://x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

#[tokio::test]
async fn every_sqlite_connection_syncs_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    // SQLite's codes: 1 NORMAL, 2 FULL.
    for (sync, code) in [(Synchronous::Normal, 1i64), (Synchronous::Full, 2)] {
        let s = Store::open_with(&url, sync).await.unwrap();
        // Several connections at once, so that more than the first is checked.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = s.pool().acquire().await.unwrap();
            let row = sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(
                sqlx::Row::try_get::<i64, _>(&row, 0).unwrap(),
                code,
                "{sync:?}"
            );
            held.push(c);
        }
        drop(held);
        s.close().await;
    }
    assert_eq!(Synchronous::parse("normal"), Some(Synchronous::Normal));
    assert_eq!(Synchronous::parse("off"), None);
}

/// A store on a SQLite file of its own (kept while the directory lives).
async fn scratch_sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("confidant.db").display());
    let s = Store::open(&url).await.unwrap();
    (dir, s)
}

/// Fails unless a read gets a pooled connection within 3 s: writers waiting at SQLite's
/// lock (its busy handler) would hold all four until its busy timeout ran out.
async fn assert_a_read_gets_a_connection(s: &Store) {
    let read = tokio::time::timeout(std::time::Duration::from_secs(3), s.list_tokens(None)).await;
    assert!(read.is_ok(), "a read found no free connection");
}

async fn count(s: &Store, sql: &'static str) -> i64 {
    sqlx::Row::get(&sqlx::query(sql).fetch_one(s.pool()).await.unwrap(), 0)
}

#[tokio::test]
async fn sqlite_writers_wait_for_their_turn_without_holding_connections() {
    let (_dir, s) = scratch_sqlite().await;
    let first = s.write_tx().await.unwrap();
    // More writers than the pool has connections, all waiting for the first.
    let mut writers = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut tx = s.write_tx().await.unwrap();
            sqlx::query(
                "INSERT INTO audit_log (at, actor, tenant, action, target, detail) \
                 VALUES ($1, 'w', 't', 'a', 'x', '')",
            )
            .bind(i64::from(i))
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Waiting writers hold no connection, so a read still gets one (had they queued at
    // SQLite's lock, they would hold all four until its busy timeout ran out).
    assert_a_read_gets_a_connection(&s).await;
    first.commit().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM audit_log WHERE actor = 'w'").await,
        6
    );
}

#[tokio::test]
async fn routes_wait_for_the_writer_turn_without_holding_connections() {
    let (_dir, s) = scratch_sqlite().await;
    let busy = s.write_tx().await.unwrap();
    // More routes than the pool has connections, all behind the open writer.
    let mut routes = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        routes.push(tokio::spawn(async move {
            let r = RouteRecord {
                contact_id: format!("contact-{i}"),
                queue: "cards".into(),
                ..Default::default()
            };
            s.route_record("t", &r).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Waiting in SQLite's busy handler instead, they would hold all four connections.
    assert_a_read_gets_a_connection(&s).await;
    assert!(
        routes.iter().all(|r| !r.is_finished()),
        "a route wrote past the writer"
    );
    busy.commit().await.unwrap();
    for r in routes {
        r.await.unwrap().unwrap();
    }
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM routing_decisions WHERE tenant = 't'"
        )
        .await,
        6
    );
}

/// Bot turns queued while the writer is busy: `same` for conversation `c`, one each for
/// `o0`, `o1`… (`others` of them), decision ids `d0`, `d1`… unless `ids` overrides one.
async fn queue_turns(
    s: &Store,
    same: usize,
    others: usize,
    ids: &[(usize, &str)],
) -> Vec<tokio::task::JoinHandle<Result<Conversation, StoreError>>> {
    let mut calls = Vec::new();
    for i in 0..same + others {
        let conv = if i < same {
            "c".to_string()
        } else {
            format!("o{}", i - same)
        };
        let id = ids
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(format!("d{i}"), |(_, id)| id.to_string());
        let s = s.clone();
        calls.push(tokio::spawn(async move { answered(&s, &conv, &id).await }));
    }
    calls
}

#[tokio::test]
async fn bot_turns_waiting_for_the_writer_commit_together() {
    let (_dir, s) = scratch_sqlite().await;
    let busy = s.write_tx().await.unwrap();
    let calls = queue_turns(&s, 5, 3, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    busy.commit().await.unwrap();
    let mut turns_of_c = Vec::new();
    for call in calls {
        let c = settled(call).await.unwrap();
        if c.id == "c" {
            turns_of_c.push(c.turns);
        } else {
            assert_eq!(c.turns, 1);
        }
    }
    // Each concurrent turn of one conversation got its own number.
    turns_of_c.sort_unstable();
    assert_eq!(turns_of_c, [1, 2, 3, 4, 5]);
    let seqs: Vec<i64> = s
        .decisions("t", "c")
        .await
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(s.conversation_turns("t", "c").await.unwrap().len(), 5);
    // Eight turns, queued behind one writer: the first the writer task picked up alone
    // at most, the rest together (one transaction each would make eight).
    assert!(
        (1..=2).contains(&s.group_commits()),
        "{} commits for 8 queued turns",
        s.group_commits()
    );
    // While SQLite is free, a turn is written by its own call, not handed over.
    let before = s.group_commits();
    answered(&s, "later", "dl").await.unwrap();
    assert_eq!(s.group_commits(), before);
    assert_eq!(s.conversation_turns("t", "later").await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_bad_turn_does_not_fail_the_others_in_its_group() {
    let (_dir, s) = scratch_sqlite().await;
    answered(&s, "first", "taken").await.unwrap();
    let busy = s.write_tx().await.unwrap();
    // The fourth turn reuses a decision id: its insert fails inside the group.
    let calls = queue_turns(&s, 2, 4, &[(3, "taken")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    busy.commit().await.unwrap();
    let mut failed = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match settled(call).await {
            Ok(_) => {}
            Err(StoreError::Database(_)) => failed.push(i),
            Err(e) => panic!("turn {i}: {e}"),
        }
    }
    assert_eq!(failed, [3]);
    assert_eq!(s.conversation_turns("t", "c").await.unwrap().len(), 2);
    for (conv, stored) in [("o0", 1), ("o1", 0), ("o2", 1), ("o3", 1)] {
        assert_eq!(
            s.conversation_turns("t", conv).await.unwrap().len(),
            stored,
            "{conv}"
        );
    }
    // Nothing of the failed turn is left, not even its conversation.
    assert!(matches!(
        s.conversation_get("t", "o1").await,
        Err(StoreError::NotFound(_))
    ));
}

/// A turn of conversation `conv` answered by the bot, decision id `id`.
async fn answered(s: &Store, conv: &str, id: &str) -> Result<Conversation, StoreError> {
    s.conversation_record(turn(
        start("t", conv, ""),
        &format!("turn of {id}"),
        decision(id, conv, 0, "answer"),
        false,
        None,
    ))
    .await
}

/// A queued turn's outcome; a turn left without an answer fails the test instead of
/// hanging it.
async fn settled(
    call: tokio::task::JoinHandle<Result<Conversation, StoreError>>,
) -> Result<Conversation, StoreError> {
    tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .expect("a queued turn got no answer")
        .unwrap()
}

fn turn(
    start: Conversation,
    text: &str,
    decision: Decision,
    failed: bool,
    handoff: Option<(&str, &str)>,
) -> TurnRecord {
    TurnRecord {
        start,
        text: text.into(),
        decision,
        failed,
        handoff: handoff.map(|(r, q)| (r.into(), q.into())),
    }
}

fn start(tenant: &str, id: &str, customer: &str) -> Conversation {
    Conversation {
        tenant: tenant.into(),
        id: id.into(),
        customer_id: customer.into(),
        channel: "chat".into(),
        lang: "en".into(),
        ..Default::default()
    }
}

fn decision(id: &str, conv: &str, seq: i64, outcome: &str) -> Decision {
    Decision {
        id: id.into(),
        conversation_id: conv.into(),
        seq,
        outcome: outcome.into(),
        article_id: if outcome == "answer" {
            "a1".into()
        } else {
            String::new()
        },
        article_version: 1,
        confidence: 0.75,
        at: now_ms(),
        ..Default::default()
    }
}

#[tokio::test]
async fn conversations_decisions_feedback_report_and_erasure() {
    for db in backends("conversations_decisions_feedback_report_and_erasure").await {
        let s = &db.store;
        let c = s
            .conversation_record(turn(
                start("t1", "c1", ""),
                "hello",
                decision("d1", "c1", 0, "answer"),
                true,
                None,
            ))
            .await
            .unwrap();
        assert_eq!((c.turns, c.failures), (1, 1), "{}", db.name);
        assert_eq!(
            s.conversation_last_turn("t1", "c1", "customer")
                .await
                .unwrap()
                .as_deref(),
            Some("hello")
        );
        // The customer id learnt on a later turn is kept; failures add up; the first
        // hand-off stays.
        let c = s
            .conversation_record(turn(
                start("t1", "c1", "cust-1"),
                "more",
                decision("d2", "c1", 0, "handoff"),
                true,
                Some(("fraud", "fraud-queue")),
            ))
            .await
            .unwrap();
        assert_eq!(
            (c.turns, c.failures, c.customer_id.as_str()),
            (2, 2, "cust-1"),
            "{}",
            db.name
        );
        let c = s
            .conversation_record(turn(
                start("t1", "c1", "cust-other"),
                "again",
                decision("d2b", "c1", 0, "handoff"),
                false,
                Some(("complaint", "complaints")),
            ))
            .await
            .unwrap();
        assert_eq!(
            (
                c.turns,
                c.failures,
                c.customer_id.as_str(),
                c.handoff_reason.as_str(),
                c.handoff_queue.as_str()
            ),
            (3, 2, "cust-1", "fraud", "fraud-queue"),
            "{}",
            db.name
        );
        let got = s.conversation_get("t1", "c1").await.unwrap();
        assert_eq!(got, c, "{}", db.name);
        let turns = s.conversation_turns("t1", "c1").await.unwrap();
        assert_eq!(
            turns.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
            ["hello", "more", "again"]
        );
        let ds = s.decisions("t1", "c1").await.unwrap();
        assert_eq!(
            ds.iter()
                .map(|d| (d.id.as_str(), d.seq))
                .collect::<Vec<_>>(),
            [("d1", 1), ("d2", 2), ("d2b", 3)],
            "{}",
            db.name
        );
        assert!((ds[0].confidence - 0.75).abs() < 1e-6, "{}", db.name);
        assert_eq!(
            s.conversation_last_turn("t1", "nope", "customer")
                .await
                .unwrap(),
            None
        );

        // Feedback: unresolved counts one failure however often it is repeated.
        s.conversation_record(turn(
            start("t1", "c2", "cust-2"),
            "hi",
            decision("d3", "c2", 0, "answer"),
            false,
            None,
        ))
        .await
        .unwrap();
        let (_, c2) = s.decision_feedback("t1", "c2", "d3", false).await.unwrap();
        assert_eq!(c2.failures, 1);
        let (_, c2) = s.decision_feedback("t1", "c2", "d3", false).await.unwrap();
        assert_eq!(c2.failures, 1);
        let (d, c2) = s.decision_feedback("t1", "c2", "d3", true).await.unwrap();
        assert_eq!((d.feedback.as_str(), c2.failures), ("resolved", 0));
        assert!(matches!(
            s.decision_feedback("t2", "c2", "d3", true).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.decision_feedback("t1", "c2", "d1", true).await,
            Err(StoreError::NotFound(_))
        ));

        // Routing: the first advice stays; outcomes score it.
        let route = |contact: &str, customer: &str, queue: &str| RouteRecord {
            contact_id: contact.into(),
            customer_id: customer.into(),
            queue: queue.into(),
            priority: 20,
            ..Default::default()
        };
        s.route_record("t1", &route("k1", "cust-1", "cards"))
            .await
            .unwrap();
        s.route_record("t1", &route("k1", "cust-1", "other"))
            .await
            .unwrap();
        s.route_record("t1", &route("k2", "cust-2", "cards"))
            .await
            .unwrap();
        assert!(s.route_outcome("t1", "k1", "cards").await.unwrap());
        assert!(!s.route_outcome("t1", "k2", "loans").await.unwrap());
        assert!(matches!(
            s.route_outcome("t2", "k1", "cards").await,
            Err(StoreError::NotFound(_))
        ));

        let r = s.report("t1", 0).await.unwrap();
        assert_eq!(
            (r.conversations, r.answered, r.handed_off, r.resolved),
            (2, 2, 1, 1),
            "{}: {r:?}",
            db.name
        );
        assert_eq!(r.handoffs_by_reason, vec![("fraud".to_string(), 1)]);
        assert_eq!((r.feedback_resolved, r.feedback_unresolved), (1, 0));
        assert_eq!(
            (r.routed, r.routed_with_outcome, r.routed_first_try),
            (2, 2, 1)
        );
        assert_eq!(s.report("t2", 0).await.unwrap(), Report::default());

        // Erasure by customer takes everything of theirs and nothing else.
        let e = s.erase_customer("t1", "cust-1").await.unwrap();
        assert_eq!(
            e,
            Erased {
                conversations: 1,
                turns: 3,
                decisions: 3,
                routes: 1,
                qa_results: 0,
            },
            "{}",
            db.name
        );
        assert!(s.conversation_get("t1", "c1").await.is_err());
        assert!(s.conversation_get("t1", "c2").await.is_ok());
        // Retention by age.
        let e = s.erase_conversations_before(now_ms() + 1).await.unwrap();
        assert_eq!(
            (e.conversations, e.turns, e.decisions, e.routes),
            (1, 1, 1, 1)
        );
        assert_eq!(s.report("t1", 0).await.unwrap(), Report::default());
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn qa_results_replace_report_and_erase() {
    for db in backends("qa_results_replace_report_and_erase").await {
        let s = &db.store;
        let rec = |id: &str, agent: &str, total: f64, critical: bool, fail: &str| QaRecord {
            conversation_id: id.into(),
            customer_id: format!("cust-{id}"),
            agent_id: agent.into(),
            team: "cards".into(),
            rubric: "r".into(),
            total,
            critical_failed: critical,
            outcomes: [
                ("greeting".to_string(), fail.to_string()),
                ("gap".to_string(), "not_applicable".to_string()),
            ]
            .into(),
        };
        s.qa_record("t1", &rec("c1", "a1", 50.0, false, "fail"))
            .await
            .unwrap();
        // Re-scoring replaces.
        s.qa_record("t1", &rec("c1", "a1", 80.0, false, "pass"))
            .await
            .unwrap();
        s.qa_record("t1", &rec("c2", "a1", 0.0, true, "fail"))
            .await
            .unwrap();
        s.qa_record("t1", &rec("c3", "a2", 100.0, false, "pass"))
            .await
            .unwrap();
        s.qa_record("t2", &rec("c9", "a9", 10.0, false, "fail"))
            .await
            .unwrap();
        let r = s.qa_report("t1", 0).await.unwrap();
        assert_eq!(r.contacts, 3, "{}", db.name);
        assert_eq!(r.by_agent.len(), 2);
        assert_eq!(r.by_agent[0].name, "a1");
        assert_eq!(r.by_agent[0].contacts, 2);
        assert!(
            (r.by_agent[0].mean_total - 40.0).abs() < 1e-9,
            "{}",
            db.name
        );
        assert_eq!(r.by_agent[0].critical_failed, 1);
        assert_eq!(r.by_team.len(), 1);
        assert_eq!(r.by_rule.get("greeting"), Some(&(1, 3)));
        assert_eq!(r.by_rule.get("gap"), Some(&(0, 0)));
        let e = s.erase_customer("t1", "cust-c2").await.unwrap();
        assert_eq!(e.qa_results, 1);
        assert_eq!(s.qa_report("t1", 0).await.unwrap().contacts, 2);
        assert_eq!(s.erase_qa_before(now_ms() + 1).await.unwrap(), 3);
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn articles_are_read_many_at_once_live_ones_only() {
    for db in backends("articles_are_read_many_at_once_live_ones_only").await {
        let s = &db.store;
        let article = |id: &str| ArticleRow {
            tenant: "t1".into(),
            id: id.into(),
            title: format!("title {id}"),
            questions: vec![format!("question {id}?")],
            answer: format!("answer {id}"),
            lang: "en".into(),
            status: "published".into(),
            content_hash: format!("hash {id}"),
            ..Default::default()
        };
        s.kb_upsert("t1", &[article("a1"), article("a2"), article("a3")])
            .await
            .unwrap();
        s.kb_upsert("t2", &[article("a4")]).await.unwrap();
        s.kb_tombstone("t1", "a2").await.unwrap();
        let mut got: Vec<(String, String)> = s
            .kb_get_many("t1", &["a3", "a1", "a2", "a4", "missing"])
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.id, a.answer))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a1".to_string(), "answer a1".to_string()),
                ("a3".to_string(), "answer a3".to_string())
            ],
            "{}: deleted, missing and other tenants' articles are left out",
            db.name
        );
        assert!(s.kb_get_many("t1", &[]).await.unwrap().is_empty());
        db.drop_schema().await;
    }
}
