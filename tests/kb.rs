//! End-to-end tests of the knowledge base through the real daemon: import, hybrid search,
//! update, delete, export, reindex, tenant isolation, and the index's recovery after a
//! restart, a `kill -9` in the middle of an import and the loss of its directory; on
//! SQLite and (where reachable) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, model_dir, with_token};
use confidant_proto::v1 as pb;
use pb::knowledge_base_service_client::KnowledgeBaseServiceClient;
use tonic::Code;
use tonic::transport::Channel;

type Kb = KnowledgeBaseServiceClient<Channel>;

fn article(id: &str, lang: &str, questions: &[&str], answer: &str) -> pb::Article {
    pb::Article {
        id: id.into(),
        questions: questions.iter().map(|q| q.to_string()).collect(),
        answer: answer.into(),
        lang: lang.into(),
        ..Default::default()
    }
}

fn bank_kb() -> Vec<pb::Article> {
    vec![
        pb::Article {
            title: "Lost or stolen card".into(),
            tags: vec!["cards".into()],
            ..article(
                "card-lost",
                "en",
                &["I lost my credit card", "My card was stolen"],
                "Call 0800 123 456 at once: we block the card and send a new one.",
            )
        },
        article(
            "pin-reset",
            "en",
            &["How do I reset my PIN?", "I forgot my PIN"],
            "Choose a new PIN at any of our ATMs with your card and ID.",
        ),
        article(
            "swift-fee",
            "en",
            &["What does an international transfer cost?"],
            "SWIFT transfers cost 15 EUR; SEPA transfers are free.",
        ),
        article(
            "card-lost-zh",
            "zh",
            &["我的信用卡丢了", "信用卡被盗了怎么办"],
            "请立即致电 95588 挂失，我们会冻结卡片并补发新卡。",
        ),
        pb::Article {
            channels: vec!["voice".into()],
            ..article(
                "ivr-menu",
                "en",
                &["How do I talk to an agent on the phone?"],
                "Press 0 at any time in the phone menu.",
            )
        },
    ]
}

async fn upsert(kb: &mut Kb, token: &str, articles: Vec<pb::Article>) -> Vec<pb::UpsertResult> {
    kb.upsert_articles(with_token(
        pb::UpsertArticlesRequest {
            tenant: String::new(),
            articles,
            dry_run: false,
        },
        token,
    ))
    .await
    .unwrap()
    .into_inner()
    .results
}

fn search_req(text: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        text: text.into(),
        ..Default::default()
    }
}

async fn search(kb: &mut Kb, token: &str, req: pb::SearchRequest) -> Vec<pb::SearchHit> {
    kb.search(with_token(req, token))
        .await
        .unwrap()
        .into_inner()
        .hits
}

async fn top(kb: &mut Kb, token: &str, text: &str) -> String {
    search(kb, token, search_req(text))
        .await
        .first()
        .map(|h| h.article_id.clone())
        .unwrap_or_default()
}

async fn export(kb: &mut Kb, token: &str) -> Vec<pb::Article> {
    let mut s = kb
        .export_articles(with_token(pb::ExportArticlesRequest::default(), token))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = s.message().await.unwrap() {
        out.push(a);
    }
    out
}

async fn stats(kb: &mut Kb, token: &str) -> pb::KbStatsResponse {
    kb.stats(with_token(pb::KbStatsRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
}

/// Waits for the start-up catch-up to finish (it runs in the background after READY).
async fn caught_up(kb: &mut Kb, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    // A first Stats may come before the catch-up has counted its work: ask twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while stats(kb, token).await.index_pending > 0 {
        assert!(Instant::now() < deadline, "the index never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Import, hybrid search, update, delete, export and validation, through gRPC.
async fn kb_suite(d: &Daemon) {
    let mut kb = Kb::new(d.channel().await);
    let t = &d.token;

    let created = upsert(&mut kb, t, bank_kb()).await;
    assert!(
        created
            .iter()
            .all(|r| r.outcome == "created" && r.version == 1)
    );

    // Paraphrases find their article; each hit explains itself with both signals.
    let hits = search(&mut kb, t, search_req("someone stole my credit card")).await;
    assert_eq!(hits[0].article_id, "card-lost", "{hits:?}");
    assert_eq!(hits[0].rank, 1);
    assert!(
        hits[0].dense_rank >= 1 && hits[0].dense_score > 0.5,
        "{hits:?}"
    );
    assert!(
        hits[0].lexical_rank >= 1 && hits[0].lexical_score > 0.0,
        "{hits:?}"
    );
    assert_eq!(hits[0].matched_kind, "question");
    assert!(hits[0].answer.contains("0800"));
    assert_eq!(
        top(&mut kb, t, "forgot the PIN for my card").await,
        "pin-reset"
    );
    // An exact code only BM25 can see.
    let lexical = search(
        &mut kb,
        t,
        pb::SearchRequest {
            mode: pb::SearchMode::Lexical as i32,
            ..search_req("SWIFT")
        },
    )
    .await;
    assert_eq!(lexical[0].article_id, "swift-fee");
    assert_eq!(lexical[0].matched_kind, "passage");
    // Chinese, by language.
    let zh = search(
        &mut kb,
        t,
        pb::SearchRequest {
            lang: "zh".into(),
            ..search_req("信用卡丢失")
        },
    )
    .await;
    assert_eq!(zh.len(), 1);
    assert_eq!(zh[0].article_id, "card-lost-zh");
    assert!(
        zh[0].lexical_rank >= 1,
        "Chinese words match lexically: {zh:?}"
    );
    // A channel-bound article stays off other channels.
    let chat = search(
        &mut kb,
        t,
        pb::SearchRequest {
            channel: "chat".into(),
            limit: 50,
            ..search_req("talk to an agent on the phone")
        },
    )
    .await;
    assert!(chat.iter().all(|h| h.article_id != "ivr-menu"));
    assert_eq!(
        top(&mut kb, t, "talk to an agent on the phone").await,
        "ivr-menu"
    );

    // Re-importing: unchanged keeps its version, a change makes a new one at once.
    let again = upsert(&mut kb, t, bank_kb()).await;
    assert!(
        again
            .iter()
            .all(|r| r.outcome == "unchanged" && r.version == 1)
    );
    // Read once before the change, so that the daemon holds this version in memory.
    let hits = search(&mut kb, t, search_req("I forgot my PIN")).await;
    assert_eq!(hits[0].version, 1);
    let mut changed = bank_kb().remove(1);
    changed.answer = "Reset your PIN in the mobile app under Cards > PIN.".into();
    let r = upsert(&mut kb, t, vec![changed]).await;
    assert_eq!((r[0].outcome.as_str(), r[0].version), ("updated", 2));
    let hits = search(&mut kb, t, search_req("I forgot my PIN")).await;
    assert_eq!(hits[0].version, 2);
    assert!(hits[0].answer.contains("mobile app"));

    // Validation: one bad article rejects the whole call, naming it; nothing is written.
    let before = stats(&mut kb, t).await;
    let mut bad = bank_kb();
    bad[1].answer = "  ".into();
    bad[3].lang = "xx".into();
    bad[0].id = "new-one".into();
    let err = kb
        .upsert_articles(with_token(
            pb::UpsertArticlesRequest {
                tenant: String::new(),
                articles: bad.clone(),
                dry_run: false,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("articles[1].answer"),
        "{}",
        err.message()
    );
    assert_eq!(stats(&mut kb, t).await, before, "nothing written");
    let get = kb
        .get_article(with_token(
            pb::GetArticleRequest {
                tenant: String::new(),
                id: "new-one".into(),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    // A dry run lists every problem.
    let dry = kb
        .upsert_articles(with_token(
            pb::UpsertArticlesRequest {
                tenant: String::new(),
                articles: bad,
                dry_run: true,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    let problems: Vec<(u32, &str)> = dry
        .problems
        .iter()
        .map(|p| (p.index, p.field.as_str()))
        .collect();
    assert_eq!(problems, [(1, "answer"), (3, "lang")]);
    let empty = kb
        .search(with_token(search_req("   "), t))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().starts_with("text"));

    // Delete: gone from the database and from searches.
    kb.delete_article(with_token(
        pb::DeleteArticleRequest {
            tenant: String::new(),
            id: "swift-fee".into(),
        },
        t,
    ))
    .await
    .unwrap();
    let hits = search(&mut kb, t, search_req("international transfer cost")).await;
    assert!(hits.iter().all(|h| h.article_id != "swift-fee"));
    let err = kb
        .delete_article(with_token(
            pb::DeleteArticleRequest {
                tenant: String::new(),
                id: "swift-fee".into(),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Export re-imports to the same state: into another tenant, then back unchanged.
    let exported = export(&mut kb, t).await;
    assert_eq!(exported.len(), 4);
    let t2 = d.create_token(&["kb-editor", "bot"], "t2").await;
    let into_t2 = upsert(&mut kb, &t2, exported.clone()).await;
    assert!(into_t2.iter().all(|r| r.outcome == "created"));
    let back = upsert(&mut kb, t, exported).await;
    assert!(back.iter().all(|r| r.outcome == "unchanged"), "{back:?}");
    assert_eq!(
        top(&mut kb, &t2, "I lost my credit card").await,
        "card-lost"
    );

    // Reindex rebuilds from the database with the same results.
    let r = kb
        .reindex(with_token(pb::ReindexRequest::default(), t))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.articles, 4);
    assert_eq!(stats(&mut kb, t).await.indexed_chunks, r.chunks);
    assert_eq!(top(&mut kb, t, "I lost my credit card").await, "card-lost");

    // The audit trail has the writes, the delete, the export and the reindex.
    let mut admin = pb::admin_service_client::AdminServiceClient::new(d.channel().await);
    let audit = admin
        .list_audit(with_token(pb::ListAuditRequest::default(), t))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.records.iter().map(|e| e.action.as_str()).collect();
    for a in ["kb.upsert", "kb.delete", "kb.export", "kb.reindex"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_base_end_to_end_on_sqlite() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    kb_suite(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_base_end_to_end_on_postgresql() {
    let Some(model) = model_dir() else { return };
    let Some((url, schema)) = common::postgres_schema("kb").await else {
        return;
    };
    {
        let d = Daemon::start_with_env(&model, "", &[("CONFIDANT__STORAGE__URL", &url)]).await;
        kb_suite(&d).await;
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_roles_hold_in_the_knowledge_base() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let mut kb = Kb::new(d.channel().await);
    upsert(&mut kb, &d.token, bank_kb()).await;
    let bot2 = d.create_token(&["bot"], "t2").await;
    let bot1 = d.create_token(&["bot"], "t1").await;

    // Another tenant sees nothing of t1's, by search, get, list or stats.
    assert!(
        search(&mut kb, &bot2, search_req("I lost my credit card"))
            .await
            .is_empty()
    );
    let err = kb
        .get_article(with_token(
            pb::GetArticleRequest {
                tenant: String::new(),
                id: "card-lost".into(),
            },
            &bot2,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = kb
        .list_articles(with_token(pb::ListArticlesRequest::default(), &bot2))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.articles.is_empty());
    assert_eq!(stats(&mut kb, &bot2).await.published, 0);
    // Naming t1 from a t2 token is refused, not honoured.
    let err = kb
        .search(with_token(
            pb::SearchRequest {
                tenant: "t1".into(),
                ..search_req("card")
            },
            &bot2,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Bots search but do not write, export or delete.
    assert_eq!(
        top(&mut kb, &bot1, "I lost my credit card").await,
        "card-lost"
    );
    let err = kb
        .upsert_articles(with_token(
            pb::UpsertArticlesRequest {
                tenant: String::new(),
                articles: bank_kb(),
                dry_run: false,
            },
            &bot1,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = kb
        .export_articles(with_token(pb::ExportArticlesRequest::default(), &bot1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A t2 editor deleting "card-lost" finds nothing to delete; t1's article stays.
    let ed2 = d.create_token(&["kb-editor"], "t2").await;
    let err = kb
        .delete_article(with_token(
            pb::DeleteArticleRequest {
                tenant: String::new(),
                id: "card-lost".into(),
            },
            &ed2,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        top(&mut kb, &bot1, "I lost my credit card").await,
        "card-lost"
    );
    // The local operator must say which tenant.
    let mut local = Kb::new(d.local_channel().await);
    let err = local.search(search_req("card")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("tenant"));
    let hits = local
        .search(pb::SearchRequest {
            tenant: "t1".into(),
            ..search_req("I lost my credit card")
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].article_id, "card-lost");
}

/// Many small articles, each findable by its own unusual question.
fn numbered(n: usize, tag: &str) -> Vec<pb::Article> {
    (0..n)
        .map(|i| {
            article(
                &format!("{tag}-{i}"),
                "en",
                &[&format!("What is the {tag} code number {i}?")],
                &format!("The {tag} code number {i} is {}.", i * 7919),
            )
        })
        .collect()
}

/// With one Chinese article among a dozen English ones, the index checks the language on
/// its hits rather than in the graph walk: Chinese chunks, the nearest to a Chinese query,
/// must still never answer a search in English, and the search still fills its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_most_articles_share_lets_no_other_through() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let mut kb = Kb::new(d.channel().await);
    let mut articles = numbered(12, "fee");
    articles.push(bank_kb().remove(3));
    assert_eq!(articles[12].lang, "zh");
    upsert(&mut kb, &d.token, articles).await;
    let ask = |lang: &str| pb::SearchRequest {
        lang: lang.into(),
        limit: 5,
        ..search_req("信用卡丢失")
    };
    let en = search(&mut kb, &d.token, ask("en")).await;
    assert_eq!(en.len(), 5, "{en:?}");
    assert!(
        en.iter().all(|h| h.article_id.starts_with("fee-")),
        "{en:?}"
    );
    let zh = search(&mut kb, &d.token, ask("zh")).await;
    assert_eq!(zh.len(), 1, "{zh:?}");
    assert_eq!(zh[0].article_id, "card-lost-zh");
}

/// A rebuild rewrites the index under the searches, never empties it first: an article in
/// the last group rebuilt is found by every search made while the rebuild runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_keeps_the_knowledge_base_searchable() {
    let Some(model) = model_dir() else { return };
    let d = Daemon::start(&model, "").await;
    let t = d.token.clone();
    let mut kb = Kb::new(d.channel().await);
    // Three groups of the rebuild's 64 articles.
    upsert(&mut kb, &t, numbered(150, "gamma")).await;
    caught_up(&mut kb, &t).await;
    let before = stats(&mut kb, &t).await.indexed_chunks;

    let mut rebuilder = Kb::new(d.channel().await);
    let token = t.clone();
    let rebuild = tokio::spawn(async move {
        rebuilder
            .reindex(with_token(pb::ReindexRequest::default(), &token))
            .await
            .unwrap()
            .into_inner()
    });
    let req = pb::SearchRequest {
        mode: pb::SearchMode::Lexical as i32,
        ..search_req("What is the gamma code number 149?")
    };
    let mut searches = 0;
    while !rebuild.is_finished() {
        let hits = search(&mut kb, &t, req.clone()).await;
        assert!(
            hits.iter().any(|h| h.article_id == "gamma-149"),
            "search {searches} during the rebuild lost gamma-149: {hits:?}"
        );
        searches += 1;
    }
    let r = rebuild.await.unwrap();
    assert!(searches > 0, "no search ran during the rebuild");
    assert_eq!(r.articles, 150);
    assert_eq!(r.chunks, before);
    assert_eq!(consistent(&mut kb, &t).await, 150);
}

/// Every article the database lists is in the index, complete, and nothing else is.
async fn consistent(kb: &mut Kb, token: &str) -> usize {
    let listed = kb
        .list_articles(with_token(
            pb::ListArticlesRequest {
                limit: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .articles;
    let mut chunks = 0;
    for a in &listed {
        // Question + answer passage per article.
        chunks += a.questions.len() as u64 + 1;
        let hits = search(
            kb,
            token,
            pb::SearchRequest {
                mode: pb::SearchMode::Lexical as i32,
                ..search_req(&a.questions[0])
            },
        )
        .await;
        assert!(
            hits.iter()
                .any(|h| h.article_id == a.id && h.version == a.version),
            "{} v{} not searchable: {hits:?}",
            a.id,
            a.version
        );
    }
    assert_eq!(
        stats(kb, token).await.indexed_chunks,
        chunks,
        "the index holds exactly the database's articles"
    );
    listed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_recovers_from_restart_kill9_and_loss() {
    let Some(model) = model_dir() else { return };
    let mut d = Daemon::start(&model, "").await;
    let t = d.token.clone();
    let mut kb = Kb::new(d.channel().await);
    upsert(&mut kb, &t, numbered(20, "alpha")).await;

    // A clean restart keeps everything.
    d.restart(false).await;
    let mut kb = Kb::new(d.channel().await);
    caught_up(&mut kb, &t).await;
    assert_eq!(consistent(&mut kb, &t).await, 20);

    // kill -9 in the middle of an import: batches in flight, one being indexed.
    let ch = d.channel().await;
    let token = t.clone();
    let writer = tokio::spawn(async move {
        let mut kb = Kb::new(ch);
        for batch in numbered(300, "beta").chunks(30) {
            if kb
                .upsert_articles(with_token(
                    pb::UpsertArticlesRequest {
                        tenant: String::new(),
                        articles: batch.to_vec(),
                        dry_run: false,
                    },
                    &token,
                ))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    // Wait until some of the import has landed, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats(&mut kb, &t).await.published < 50 {
        assert!(Instant::now() < deadline, "the import never progressed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.restart(true).await;
    let _ = writer.await;
    let mut kb = Kb::new(d.channel().await);
    caught_up(&mut kb, &t).await;
    let n = consistent(&mut kb, &t).await;
    assert!((50..=320).contains(&n), "{n} articles after the crash");

    // The index directory lost while stopped: rebuilt from the database at start.
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(60));
    std::fs::remove_dir_all(d.dir.path().join("index")).unwrap();
    d.restart(true).await;
    let mut kb = Kb::new(d.channel().await);
    caught_up(&mut kb, &t).await;
    assert_eq!(consistent(&mut kb, &t).await, n);
    assert!(d.log_text().contains("index caught up"), "{}", d.log_text());
}
