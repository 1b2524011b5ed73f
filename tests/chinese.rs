//! Chinese end to end on the multilingual model (`models/install-multilingual`): the real
//! daemon serving multilingual-e5-small finds Chinese articles from paraphrases that share
//! almost no characters with them (and across languages), trains and serves a Chinese
//! intent classifier, and suggests the right article to an agent on a Chinese call.
//!
//! CI installs the model first, so there a missing model fails the test; elsewhere the test
//! says loudly that it skipped.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Daemon, multilingual_model_dir, with_token};
use confidant_proto::v1 as pb;
use pb::assist_service_client::AssistServiceClient;
use pb::bot_service_client::BotServiceClient;
use pb::intent_service_client::IntentServiceClient;
use pb::knowledge_base_service_client::KnowledgeBaseServiceClient;
use pb::qa_service_client::QaServiceClient;

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidantctl"))
        .args(args)
        .env_remove("CONFIDANT_ADDR")
        .env_remove("CONFIDANT_TENANT")
        .output()
        .expect("run confidantctl")
}

fn article(id: &str, lang: &str, questions: &[&str], answer: &str) -> pb::Article {
    pb::Article {
        id: id.into(),
        questions: questions.iter().map(|q| q.to_string()).collect(),
        answer: answer.into(),
        lang: lang.into(),
        ..Default::default()
    }
}

fn kb() -> Vec<pb::Article> {
    vec![
        article(
            "card-stolen",
            "zh",
            &["信用卡被盗刷了怎么办"],
            "请立即致电 95588 冻结卡片，我们将为您调查交易并补发新卡。",
        ),
        article(
            "atm-card",
            "zh",
            &["ATM机吞卡了怎么办"],
            "请携带身份证到该ATM所属网点领取，或致电 95588 办理挂失。",
        ),
        article(
            "exchange",
            "zh",
            &["外币怎么兑换"],
            "您可在任一网点或手机银行办理外币兑换。",
        ),
        article(
            "appointment",
            "zh",
            &["怎么在网上预约挂号"],
            "请在医院公众号或官网选择科室和医生预约挂号。",
        ),
        article(
            "lab-results",
            "zh",
            &["检查报告什么时候能出来"],
            "常规检验当天可出结果，可在自助机或公众号查询。",
        ),
        article(
            "pin-reset",
            "en",
            &["How do I reset my PIN?"],
            "Choose a new PIN at any of our ATMs with your card and ID.",
        ),
    ]
}

const DENSE: pb::SearchMode = pb::SearchMode::Dense;

async fn search(d: &Daemon, text: &str, lang: &str) -> Vec<pb::SearchHit> {
    search_mode(d, text, lang, pb::SearchMode::Hybrid).await
}

async fn search_mode(
    d: &Daemon,
    text: &str,
    lang: &str,
    mode: pb::SearchMode,
) -> Vec<pb::SearchHit> {
    let mut c = KnowledgeBaseServiceClient::new(d.channel().await);
    c.search(with_token(
        pb::SearchRequest {
            text: text.into(),
            lang: lang.into(),
            mode: mode.into(),
            ..Default::default()
        },
        &d.token,
    ))
    .await
    .unwrap()
    .into_inner()
    .hits
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn chinese_search_intents_and_assist_on_the_multilingual_model() {
    let Some(model) = multilingual_model_dir() else {
        return;
    };
    // The bank rubric as every tenant's; its exemplars match at the model's own threshold.
    let rubrics = tempfile::tempdir().unwrap();
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/rubrics/bank.toml"),
        rubrics.path().join("default.toml"),
    )
    .unwrap();
    let d = Daemon::start(
        &model,
        &format!("[qa]\nrubrics_dir = \"{}\"\n", rubrics.path().display()),
    )
    .await;
    let mut c = KnowledgeBaseServiceClient::new(d.channel().await);
    let results = c
        .upsert_articles(with_token(
            pb::UpsertArticlesRequest {
                articles: kb(),
                ..Default::default()
            },
            &d.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 6, "{results:?}");

    // Paraphrases sharing (almost) no characters with the stored question: the dense
    // signal has to carry them.
    for (query, want) in [
        ("有人偷用了我的卡消费", "card-stolen"),
        ("取款机把我的卡收走了", "atm-card"),
        ("化验结果多久可以拿到", "lab-results"),
        ("我想约个大夫看病", "appointment"),
        ("我想换一些美元", "exchange"),
    ] {
        let hits = search(&d, query, "zh").await;
        assert_eq!(
            hits.first().map(|h| h.article_id.as_str()),
            Some(want),
            "{query}: {hits:?}"
        );
        // The dense signal alone has it first or second (the ATM question scores a hair
        // below "stolen card": both are about a card someone took).
        assert!((1..=2).contains(&hits[0].dense_rank), "{query}: {hits:?}");
    }
    // Across languages the dense signal carries alone (BM25 cannot match words of another
    // language): an English question finds the Chinese article and vice versa.
    let hits = search_mode(&d, "Someone used my stolen credit card", "", DENSE).await;
    assert_eq!(hits[0].article_id, "card-stolen", "{hits:?}");
    let hits = search_mode(&d, "我忘记了密码，怎么重新设置", "en", DENSE).await;
    assert_eq!(hits[0].article_id, "pin-reset", "{hits:?}");

    // A Chinese intent classifier trained through the daemon on its encoder.
    let addr = format!("unix:{}", d.socket().display());
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/zh_intents.csv");
    let heads = d.dir.path().join("classifiers");
    let o = ctl(&[
        "--addr",
        &addr,
        "--json",
        "intents",
        "train",
        "--data",
        s(&data),
        "--out",
        s(&heads.join("intent")),
        "--text-column",
        "utterance",
        "--label-column",
        "intent",
        "--min-examples",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trained: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(trained["encoder"], "multilingual-e5-small");
    d.signal("HUP");
    let mut ic = IntentServiceClient::new(d.channel().await);
    let texts = [
        "我的卡好像弄丢了",
        "帮我看看账上还剩多少",
        "血常规的结果出来了吗",
    ];
    let mut served = None;
    for _ in 0..200 {
        let req = pb::ClassifyRequest {
            classifier: "intent".into(),
            texts: texts.iter().map(|t| t.to_string()).collect(),
            top_k: 2,
        };
        if let Ok(r) = ic.classify(with_token(req, &d.token)).await {
            served = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = served.expect("the Chinese head is served after SIGHUP");
    let labels: Vec<&str> = r.results.iter().map(|x| x.label.as_str()).collect();
    assert_eq!(labels, ["lost_card", "balance", "test_results"], "{r:?}");

    // Agent assist on a Chinese call: the customer's words bring the right article.
    let mut ac = AssistServiceClient::new(d.channel().await);
    let events = vec![
        pb::AssistRequest {
            event: Some(pb::assist_request::Event::Start(pb::AssistStart {
                conversation_id: "zh-1".into(),
                lang: "zh".into(),
                ..Default::default()
            })),
        },
        pb::AssistRequest {
            event: Some(pb::assist_request::Event::Turn(pb::AssistTurn {
                speaker: "customer".into(),
                text: "你好，我发现信用卡有几笔不是我刷的".into(),
                at_ms: 1_000,
            })),
        },
    ];
    let mut stream = ac
        .assist(with_token(tokio_stream::iter(events), &d.token))
        .await
        .unwrap()
        .into_inner();
    let update = stream.message().await.unwrap().expect("an update");
    let suggested: Vec<String> = update
        .suggestions
        .iter()
        .filter_map(|s| match &s.kind {
            Some(pb::assist_suggestion::Kind::Article(a)) => Some(a.article_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        suggested.first().map(String::as_str),
        Some("card-stolen"),
        "{update:?}"
    );

    // The bot answers Chinese paraphrases with the curated article and leaves off-topic
    // questions unanswered: its thresholds are the multilingual model's own (manifest
    // [scores]), not the English model's, whose 0.6 this model's unrelated pairs exceed.
    let mut bot = BotServiceClient::new(d.channel().await);
    let mut ask = async |conversation: &str, text: &str| {
        bot.answer(with_token(
            pb::AnswerRequest {
                conversation_id: conversation.into(),
                text: text.into(),
                ..Default::default()
            },
            &d.token,
        ))
        .await
        .unwrap()
        .into_inner()
    };
    for (conversation, text, want) in [
        ("zh-b1", "在哪里可以换外币", "exchange"),
        ("zh-b2", "检查结果几天能出", "lab-results"),
    ] {
        let r = ask(conversation, text).await;
        assert_eq!(r.lang, "zh", "{r:?}");
        assert_eq!(
            r.answer.as_ref().map(|a| a.article_id.as_str()),
            Some(want),
            "{text}: {r:?}"
        );
    }
    for (conversation, text) in [("zh-b3", "明天天气怎么样"), ("zh-b4", "推荐一部好看的电影")]
    {
        let r = ask(conversation, text).await;
        assert_eq!(
            pb::Outcome::try_from(r.outcome).unwrap(),
            pb::Outcome::NoMatch,
            "{text}: {r:?}"
        );
    }

    // QA on a Chinese contact: a greeting the rubric's patterns miss is found by meaning
    // (close to its exemplar "您好，请问有什么可以帮您？"); a contact that opens with no
    // greeting fails the rule.
    let mut qa = QaServiceClient::new(d.channel().await);
    let mut score = async |turns: &[(&str, &str, i64)]| {
        let turns = turns
            .iter()
            .map(|(speaker, text, at_ms)| pb::QaTurn {
                speaker: speaker.to_string(),
                text: text.to_string(),
                at_ms: *at_ms,
            })
            .collect();
        qa.score(with_token(
            pb::ScoreRequest {
                conversation_id: "zh-qa".into(),
                agent_id: "agent-zh".into(),
                turns,
                ..Default::default()
            },
            &d.token,
        ))
        .await
        .unwrap()
        .into_inner()
    };
    let greeting = |r: &pb::ScoreResponse| {
        r.rules
            .iter()
            .find(|x| x.id == "greeting")
            .cloned()
            .unwrap()
    };
    let greeted = score(&[
        ("agent", "下午好，请问您需要什么帮助？", 1_000),
        ("customer", "我想查一下信用卡账单", 5_000),
    ])
    .await;
    let g = greeting(&greeted);
    assert_eq!(g.outcome, "pass", "{g:?}");
    assert!(g.evidence[0].similarity > 0.0, "matched by meaning: {g:?}");
    let blunt = score(&[
        ("agent", "卡号报一下。", 1_000),
        ("customer", "我想查一下信用卡账单", 5_000),
    ])
    .await;
    assert_eq!(greeting(&blunt).outcome, "fail", "{blunt:?}");
}
