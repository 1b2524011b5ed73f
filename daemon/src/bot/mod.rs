//! Bot answers (self-service): each customer turn gets a curated knowledge-base answer, a
//! "did you mean…", a request to rephrase, or a hand-off with queue and priority. The
//! order of the checks is the policy: a conversation already handed off stays with the
//! human; the escape hatch ("I want a person") always wins; then human-only risk
//! categories; then retrieval, with the previous turn read in for short follow-ups.
//! Customer text is redacted before it is stored and never logged.

pub mod policy;
pub mod suggest;

use confidant_inference::{InferenceError, InputKind};

use crate::app::App;
use crate::classify::ClassifyError;
use crate::kb::{KbError, Mode, SearchParams, SearchResult, valid_id};
use crate::routing::{self, Priority, Risk};
use crate::store::{Conversation, Decision, StoreError, TurnRecord, now_ms};

pub use policy::{BotPolicy, Candidate, Pick};
pub use suggest::Suggester;

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Kb(#[from] KbError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("random source: {0}")]
    Random(String),
    /// Something the site must set up first (e.g. a QA rubric).
    #[error("{0}")]
    Precondition(String),
}

impl From<StoreError> for BotError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => BotError::NotFound(what),
            other => BotError::Store(other),
        }
    }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> BotError {
    BotError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// What the contact-center software tells us about the customer.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    pub customer_id: String,
    pub tier: String,
    pub waited_seconds: u32,
}

#[derive(Debug, Clone, Default)]
pub struct AnswerInput {
    pub tenant: String,
    pub conversation_id: String,
    pub text: String,
    pub lang: String,
    pub channel: String,
    pub customer: Customer,
    pub selected_article_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer,
    Clarify,
    NoMatch,
    Handoff,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answer => "answer",
            Outcome::Clarify => "clarify",
            Outcome::NoMatch => "no_match",
            Outcome::Handoff => "handoff",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Curated {
    pub article_id: String,
    pub version: i64,
    pub title: String,
    pub text: String,
    pub confidence: f32,
    pub matched_text: String,
}

#[derive(Debug, Clone)]
pub struct Choice {
    pub article_id: String,
    pub title: String,
    pub question: String,
    pub confidence: f32,
}

#[derive(Debug, Clone)]
pub struct Handoff {
    pub reason: String,
    pub queue: String,
    pub priority: Priority,
}

#[derive(Debug, Clone, Default)]
pub struct IntentGuess {
    pub label: String,
    pub probability: f32,
    pub out_of_scope: bool,
}

#[derive(Debug, Clone)]
pub struct AnswerOutput {
    pub decision_id: String,
    pub outcome: Outcome,
    pub answer: Option<Curated>,
    pub choices: Vec<Choice>,
    pub handoff: Option<Handoff>,
    pub intent: Option<IntentGuess>,
    pub lang: String,
    pub explanation: String,
    pub used_context: bool,
}

pub const MAX_ID_CHARS: usize = 128;

pub(crate) fn check_id(field: &str, id: &str) -> Result<(), BotError> {
    if !valid_id(id) {
        return Err(invalid(
            field,
            format!("{id:?}: 1–{MAX_ID_CHARS} of A–Z a–z 0–9 . _ : / -"),
        ));
    }
    Ok(())
}

pub(crate) fn check_text(app: &App, field: &str, text: &str) -> Result<(), BotError> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let max = app.config().limits.max_text_chars;
    let n = text.chars().count();
    if n > max {
        return Err(invalid(
            field,
            format!("{n} characters exceed the limit of {max}"),
        ));
    }
    Ok(())
}

/// The language a turn is read in: the one given (which must be configured) or detected.
pub(crate) fn language(app: &App, given: &str, text: &str) -> Result<String, BotError> {
    let langs = &app.config().kb.languages;
    if given.is_empty() {
        return Ok(policy::detect_lang(text, langs));
    }
    if !langs.iter().any(|l| l == given) {
        return Err(invalid(
            "lang",
            format!("{given:?} is not a configured language (kb.languages)"),
        ));
    }
    Ok(given.to_string())
}

pub(crate) fn new_id() -> Result<String, BotError> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| BotError::Random(e.to_string()))?;
    Ok(hex::encode(id))
}

pub(crate) async fn embed(app: &App, text: &str) -> Result<Vec<f32>, BotError> {
    Ok(app
        .batcher()
        .embed(&[text.to_string()], InputKind::Query)
        .await?
        .into_iter()
        .next()
        .map(|e| e.vector)
        .unwrap_or_default())
}

/// The intent head's guess, when one is loaded.
pub(crate) async fn intent(
    app: &App,
    head: &str,
    text: &str,
    vector: &[f32],
) -> Result<Option<IntentGuess>, BotError> {
    Ok(app
        .classifiers()
        .guess(app.batcher(), head, text, vector, 3)
        .await?
        .map(|(_, p)| {
            let (label, probability) = p.top.first().cloned().unwrap_or_default();
            IntentGuess {
                label: if p.out_of_scope { String::new() } else { label },
                probability,
                out_of_scope: p.out_of_scope,
            }
        }))
}

/// The probability of the "negative" label of the sentiment head, when one is loaded.
pub(crate) async fn negative_sentiment(
    app: &App,
    head: &str,
    text: &str,
    vector: &[f32],
) -> Result<Option<f32>, BotError> {
    let texts = [text.to_string()];
    let vectors = [vector.to_vec()];
    let p = negative_sentiments(app, head, &texts, &vectors).await?;
    Ok(p.and_then(|p| p.first().copied()))
}

/// `negative_sentiment` of several texts, classified together.
pub(crate) async fn negative_sentiments(
    app: &App,
    head: &str,
    texts: &[String],
    vectors: &[Vec<f32>],
) -> Result<Option<Vec<f32>>, BotError> {
    let Some((h, predictions)) = app
        .classifiers()
        .guess_many(app.batcher(), head, texts, vectors, usize::MAX)
        .await?
    else {
        return Ok(None);
    };
    if !h.classifier.labels().iter().any(|l| l == "negative") {
        return Ok(None);
    }
    Ok(Some(
        predictions
            .iter()
            .map(|p| {
                p.top
                    .iter()
                    .find(|(l, _)| l == "negative")
                    .map(|(_, p)| *p)
                    .unwrap_or(0.0)
            })
            .collect(),
    ))
}

fn signals<'a>(c: &'a Customer, negative: Option<f32>) -> routing::Signals<'a> {
    routing::Signals {
        tier: &c.tier,
        waited_seconds: c.waited_seconds,
        negative,
    }
}

/// Queue and priority for a hand-off.
fn hand_off(
    app: &App,
    reason: &str,
    risk: Option<&Risk>,
    intent: Option<&IntentGuess>,
    customer: &Customer,
    negative: Option<f32>,
) -> Handoff {
    let policies = app.policies();
    let r = &policies.routing;
    let (queue, _) = r.queue(
        risk,
        intent
            .filter(|i| !i.out_of_scope && !i.label.is_empty())
            .map(|i| (i.label.as_str(), i.probability)),
    );
    Handoff {
        reason: reason.to_string(),
        queue,
        priority: r.priority(risk, &signals(customer, negative)),
    }
}

fn curated(r: &SearchResult, confidence: f32) -> Curated {
    Curated {
        article_id: r.article.id.clone(),
        version: r.article.version,
        title: r.article.title.clone(),
        text: r.article.answer.clone(),
        confidence,
        matched_text: r.matched.text.clone(),
    }
}

fn confidence(r: &SearchResult) -> f32 {
    r.hit.dense.map(|s| s.score).unwrap_or(0.0)
}

/// The question to offer for a choice: the variant that matched, else the first one.
fn question_of(r: &SearchResult) -> String {
    if r.matched.kind == crate::index::ChunkKind::Question {
        return r.matched.text.clone();
    }
    r.article
        .questions
        .first()
        .cloned()
        .unwrap_or_else(|| r.article.title.clone())
}

struct Retrieved {
    results: Vec<SearchResult>,
    used_context: bool,
}

async fn retrieve(
    app: &App,
    input: &AnswerInput,
    lang: &str,
    vector: Vec<f32>,
    previous: Option<&str>,
) -> Result<Retrieved, BotError> {
    let policies = app.policies();
    let params = |text: &str| SearchParams {
        tenant: input.tenant.clone(),
        text: text.to_string(),
        lang: Some(lang.to_string()),
        channel: (!input.channel.is_empty()).then(|| input.channel.clone()),
        limit: policies.bot.max_choices + 2,
        mode: Mode::Hybrid,
        at_ms: 0,
    };
    let own = app.kb().search_with(&params(&input.text), vector).await?;
    // The better reading is the one whose answer (the retrieval's first) is surer.
    let best = |rs: &[SearchResult]| rs.first().map(confidence).unwrap_or(0.0);
    if let Some(prev) = previous
        && policies.bot.is_short(&input.text)
    {
        let joined = format!("{prev} {}", input.text.trim());
        let v = embed(app, &joined).await?;
        let with = app.kb().search_with(&params(&joined), v).await?;
        if best(&with) > best(&own) {
            return Ok(Retrieved {
                results: with,
                used_context: true,
            });
        }
    }
    Ok(Retrieved {
        results: own,
        used_context: false,
    })
}

fn validate(app: &App, input: &AnswerInput) -> Result<String, BotError> {
    check_id("conversation_id", &input.conversation_id)?;
    check_text(app, "text", &input.text)?;
    if !input.channel.is_empty() && input.channel.len() > 64 {
        return Err(invalid("channel", "at most 64 characters"));
    }
    if input.customer.customer_id.chars().count() > MAX_ID_CHARS {
        return Err(invalid(
            "customer.customer_id",
            format!("at most {MAX_ID_CHARS} characters"),
        ));
    }
    if !input.selected_article_id.is_empty() {
        check_id("selected_article_id", &input.selected_article_id)?;
    }
    language(app, &input.lang, &input.text)
}

/// One customer turn: decide, store (redacted), count.
pub async fn answer(app: &App, input: AnswerInput) -> Result<AnswerOutput, BotError> {
    let lang = validate(app, &input)?;
    let policies = app.policies();
    let bot = &policies.bot;
    let store = app.store();
    // Under overload a turn is refused here, before the reads below: refused after them,
    // every call of a 10x overload read SQLite and the accepted ones waited seconds for a
    // connection. The escape hatch needs no model and is let through.
    let wants_person = bot.wants_person(&input.text);
    let admission = if wants_person {
        None
    } else {
        Some(app.batcher().admit()?)
    };
    // One read for a new conversation (the usual first turn), two for an ongoing one.
    let reads = async {
        let conv = match store
            .conversation_get(&input.tenant, &input.conversation_id)
            .await
        {
            Ok(c) => Some(c),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(BotError::from(e)),
        };
        let previous = match &conv {
            Some(c) if c.turns > 0 => {
                store
                    .conversation_last_turn(&input.tenant, &input.conversation_id, "customer")
                    .await?
            }
            _ => None,
        };
        // A pick that cannot be answered is refused before anything is stored.
        let selected = if input.selected_article_id.is_empty() {
            None
        } else {
            let a = app
                .kb()
                .get(&input.tenant, &input.selected_article_id)
                .await?;
            if a.status != "published" {
                return Err(BotError::NotFound(format!(
                    "article {:?}",
                    input.selected_article_id
                )));
            }
            Some(a)
        };
        Ok((conv, previous, selected))
    };
    // From here the queue counts the call itself. The model pass runs beside the reads
    // rather than after them (they cost every turn a trip to the database): the model
    // runs before anything is written, so under overload the call is refused
    // (RESOURCE_EXHAUSTED) at no write cost and leaves no half-recorded turn. The escape
    // hatch skips the model; a conversation the reads find handed off leaves its vector
    // unused (the turns after a hand-off, rare).
    drop(admission);
    let ((conv, previous, selected), vector) = if wants_person {
        (reads.await?, Vec::new())
    } else {
        tokio::try_join!(reads, embed(app, &input.text))?
    };
    let start = Conversation {
        tenant: input.tenant.clone(),
        id: input.conversation_id.clone(),
        customer_id: input.customer.customer_id.clone(),
        channel: input.channel.clone(),
        lang: lang.clone(),
        ..Default::default()
    };
    // The conversation as it stood before this turn; the turn and the decision are
    // written together once decided.
    let mut conv = conv.unwrap_or_else(|| start.clone());
    let redacted = policies.redactor.redact(&input.text);

    let mut out = AnswerOutput {
        decision_id: new_id()?,
        outcome: Outcome::NoMatch,
        answer: None,
        choices: Vec::new(),
        handoff: None,
        intent: None,
        lang: lang.clone(),
        explanation: String::new(),
        used_context: false,
    };
    let mut failed = false;
    // The sentiment head only matters for a hand-off's priority: it runs only then.
    let decide = async {
        if !conv.handoff_reason.is_empty() {
            out.outcome = Outcome::Handoff;
            out.explanation = format!(
                "the conversation was handed off before ({})",
                conv.handoff_reason
            );
            out.handoff = Some(Handoff {
                reason: "handed_off".into(),
                queue: conv.handoff_queue.clone(),
                priority: policies
                    .routing
                    .priority(None, &signals(&input.customer, None)),
            });
            return Ok::<(), BotError>(());
        }
        if wants_person {
            out.outcome = Outcome::Handoff;
            out.explanation = "the customer asked for a person (bot.escape_patterns)".into();
            out.handoff = Some(hand_off(
                app,
                "customer_request",
                None,
                None,
                &input.customer,
                None,
            ));
            return Ok(());
        }
        out.intent = intent(app, &bot.intent_classifier, &input.text, &vector).await?;
        let negative = || {
            negative_sentiment(
                app,
                &policies.routing.sentiment_classifier,
                &input.text,
                &vector,
            )
        };
        let label = out
            .intent
            .as_ref()
            .filter(|i| !i.label.is_empty())
            .map(|i| i.label.as_str());
        if let Some((risk, why)) = policies.routing.classify_risk(&input.text, label)
            && bot.human_only.contains(&risk.name)
        {
            let negative = negative().await?;
            out.outcome = Outcome::Handoff;
            out.explanation = format!(
                "{} is human-only (bot.human_only), found by {why}",
                risk.name
            );
            out.handoff = Some(hand_off(
                app,
                &risk.name,
                Some(risk),
                out.intent.as_ref(),
                &input.customer,
                negative,
            ));
            return Ok(());
        }
        if let Some(a) = &selected {
            out.outcome = Outcome::Answer;
            out.explanation = format!("the customer chose article {}", a.id);
            out.answer = Some(Curated {
                article_id: a.id.clone(),
                version: a.version,
                title: a.title.clone(),
                text: a.answer.clone(),
                confidence: 1.0,
                matched_text: String::new(),
            });
            return Ok(());
        }
        let r = retrieve(app, &input, &lang, vector.clone(), previous.as_deref()).await?;
        out.used_context = r.used_context;
        let candidates: Vec<Candidate> = r
            .results
            .iter()
            .map(|x| Candidate {
                article_id: x.article.id.clone(),
                confidence: confidence(x),
            })
            .collect();
        let (pick, why) = bot.pick(&lang, &candidates);
        out.explanation = why;
        match pick {
            Pick::Answer(i) => {
                out.outcome = Outcome::Answer;
                out.answer = Some(curated(&r.results[i], candidates[i].confidence));
            }
            Pick::Clarify(is) => {
                out.outcome = Outcome::Clarify;
                out.choices = is
                    .iter()
                    .map(|&i| Choice {
                        article_id: r.results[i].article.id.clone(),
                        title: r.results[i].article.title.clone(),
                        question: question_of(&r.results[i]),
                        confidence: candidates[i].confidence,
                    })
                    .collect();
            }
            Pick::NoMatch => {
                failed = true;
                conv.failures += 1;
                if conv.failures >= i64::from(bot.max_failures) {
                    let negative = negative().await?;
                    out.outcome = Outcome::Handoff;
                    out.explanation = format!(
                        "{}; {} failures reach bot.max_failures {}",
                        out.explanation, conv.failures, bot.max_failures
                    );
                    out.handoff = Some(hand_off(
                        app,
                        "repeated_failure",
                        None,
                        out.intent.as_ref(),
                        &input.customer,
                        negative,
                    ));
                } else {
                    out.outcome = Outcome::NoMatch;
                }
            }
        }
        Ok(())
    };
    decide.await?;

    let new_handoff = out
        .handoff
        .as_ref()
        .filter(|_| conv.handoff_reason.is_empty());
    if let Some(h) = new_handoff {
        metrics::counter!("confidant_bot_handoffs_total", "reason" => h.reason.clone())
            .increment(1);
    }
    let d = Decision {
        id: out.decision_id.clone(),
        conversation_id: conv.id.clone(),
        seq: 0,
        outcome: out.outcome.as_str().into(),
        reason: out
            .handoff
            .as_ref()
            .map(|h| h.reason.clone())
            .unwrap_or_default(),
        article_id: out
            .answer
            .as_ref()
            .map(|a| a.article_id.clone())
            .unwrap_or_default(),
        article_version: out.answer.as_ref().map(|a| a.version).unwrap_or(0),
        confidence: f64::from(out.answer.as_ref().map(|a| a.confidence).unwrap_or(0.0)),
        intent: out
            .intent
            .as_ref()
            .map(|i| i.label.clone())
            .unwrap_or_default(),
        queue: out
            .handoff
            .as_ref()
            .map(|h| h.queue.clone())
            .unwrap_or_default(),
        priority: out
            .handoff
            .as_ref()
            .map(|h| i64::from(h.priority.value))
            .unwrap_or(0),
        feedback: String::new(),
        at: now_ms(),
    };
    let handoff = new_handoff.map(|h| (h.reason.clone(), h.queue.clone()));
    let conv = store
        .conversation_record(TurnRecord {
            start,
            text: redacted,
            decision: d,
            failed,
            handoff,
        })
        .await?;
    metrics::counter!("confidant_bot_decisions_total", "outcome" => out.outcome.as_str())
        .increment(1);
    tracing::debug!(
        conversation = %conv.id, decision = %out.decision_id, outcome = out.outcome.as_str(),
        reason = out.handoff.as_ref().map_or("", |h| h.reason.as_str()),
        article = out.answer.as_ref().map_or("", |a| a.article_id.as_str()), "bot decision"
    );
    Ok(out)
}

/// "Did that solve it?". Returns a hand-off when this feedback made the conversation
/// reach `bot.max_failures`.
pub async fn feedback(
    app: &App,
    tenant: &str,
    conversation_id: &str,
    decision_id: &str,
    resolved: bool,
) -> Result<Option<Handoff>, BotError> {
    check_id("conversation_id", conversation_id)?;
    if decision_id.is_empty() {
        return Err(invalid("decision_id", "must not be empty"));
    }
    let store = app.store();
    let (d, conv) = store
        .decision_feedback(tenant, conversation_id, decision_id, resolved)
        .await?;
    metrics::counter!("confidant_bot_feedback_total", "resolved" => if resolved { "true" } else { "false" })
        .increment(1);
    if resolved && conv.handoff_reason.is_empty() && d.outcome == "answer" {
        metrics::counter!("confidant_bot_resolutions_total").increment(1);
    }
    let policies = app.policies();
    if resolved
        || !conv.handoff_reason.is_empty()
        || conv.failures < i64::from(policies.bot.max_failures)
    {
        return Ok(None);
    }
    let intent = (!d.intent.is_empty()).then(|| IntentGuess {
        label: d.intent.clone(),
        probability: 1.0,
        out_of_scope: false,
    });
    let h = hand_off(
        app,
        "repeated_failure",
        None,
        intent.as_ref(),
        &Customer::default(),
        None,
    );
    store
        .conversation_hand_off(tenant, conversation_id, &h.reason, &h.queue)
        .await?;
    metrics::counter!("confidant_bot_handoffs_total", "reason" => h.reason.clone()).increment(1);
    Ok(Some(h))
}
