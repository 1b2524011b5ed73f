//! Configuration of the contact-center jobs: `[bot]`, `[routing]` (with its risk
//! categories) and `[redact]`. The defaults are a working policy for a bank in English and
//! Chinese; every pattern is a Rust regular expression, compiled and checked at start.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::redact::CustomPattern;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// The best article's dense similarity must reach this for the bot to answer…
    /// (unset: the model manifest's `scores.answer`, else 0.6)
    pub min_score: Option<f32>,
    /// …per language where the encoder is weaker (e.g. `{ zh = 0.8 }`; a language named
    /// here overrides the manifest's `scores.answer_by_lang`)…
    pub min_score_by_lang: BTreeMap<String, f32>,
    /// …and lead the runner-up by this much; closer articles are offered as choices
    /// (unset: the manifest's `scores.answer_margin`, else 0.06).
    pub min_margin: Option<f32>,
    /// At most this many choices in a "did you mean…".
    pub max_choices: usize,
    /// Failures (turns without an answer, answers that did not help) before a hand-off.
    pub max_failures: u32,
    /// A turn of at most this many words is read together with the previous customer turn
    /// when that finds a better answer ("and for a credit card?").
    pub followup_words: usize,
    /// The classifier head used for intents (missing: the bot runs on retrieval alone).
    pub intent_classifier: String,
    /// Risk categories (`routing.risk`) the bot never handles: it hands off at once.
    pub human_only: Vec<String>,
    /// "I want a person", in every supported language: always hands off.
    pub escape_patterns: Vec<String>,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            // Similarities mean different things per model: the thresholds measured for
            // each model live in its manifest.
            min_score: None,
            min_score_by_lang: BTreeMap::new(),
            min_margin: None,
            max_choices: 3,
            max_failures: 2,
            followup_words: 6,
            intent_classifier: "intent".into(),
            human_only: ["self_harm", "medical_emergency", "fraud", "complaint"]
                .map(String::from)
                .to_vec(),
            escape_patterns: [
                r"(?i)\b(speak|talk|chat|connect me|put me through|transfer me)\b.{0,24}\b(human|person|agent|representative|operator|advis[eo]r|someone|somebody|staff|people)\b",
                r"(?i)\b(want|need|get me|give me)\b.{0,16}\b(human|real person|live agent|representative|operator)\b",
                r"(?i)\b(real|live|actual)\s+(person|human|agent)\b",
                r"(?i)^\W*(human|agent|operator|representative|person)\W*$",
                r"转人工|人工客服|人工服务|找人工|接人工|人工坐席|真人|客服人员",
                r"(?i)hablar con (una persona|un agente|alguien|un humano)",
                r"(?i)parler (à|a) (un conseiller|quelqu'un|une personne|un humain|un agent)",
                r"(?i)mit einem (menschen|mitarbeiter|berater|agenten) sprechen",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// A kind of contact that needs a human and jumps the queue.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// The hand-off reason and the name `bot.human_only` uses.
    pub name: String,
    /// Intent labels (of the intent classifier) in this category.
    #[serde(default)]
    pub intents: Vec<String>,
    /// Regular expressions on the customer's text.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// The skill queue for it.
    pub queue: String,
    /// Priority points it adds.
    pub points: i32,
}

fn risk(name: &str, queue: &str, points: i32, patterns: &[&str]) -> RiskConfig {
    RiskConfig {
        name: name.into(),
        intents: Vec::new(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        queue: queue.into(),
        points,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// The queue for contacts no rule places.
    pub default_queue: String,
    /// Intent label → skill queue.
    pub queues: BTreeMap<String, String>,
    /// Below this intent probability the intent does not choose the queue.
    pub min_intent_probability: f32,
    pub intent_classifier: String,
    /// A head with a "negative" label; missing: sentiment does not count.
    pub sentiment_classifier: String,
    /// Every contact's starting priority.
    pub base_points: i32,
    /// Customer tier → points (an unknown tier counts 0).
    pub tier_points: BTreeMap<String, i32>,
    pub wait_points_per_minute: f32,
    pub max_wait_points: i32,
    /// Points at full negative sentiment (scaled by its probability, above 0.5 only).
    pub sentiment_points: i32,
    /// Checked in order; the first that matches counts.
    pub risk: Vec<RiskConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_queue: "general".into(),
            queues: BTreeMap::new(),
            min_intent_probability: 0.5,
            intent_classifier: "intent".into(),
            sentiment_classifier: "sentiment".into(),
            base_points: 20,
            tier_points: [
                ("standard", 0),
                ("silver", 5),
                ("gold", 15),
                ("private", 25),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
            wait_points_per_minute: 2.0,
            max_wait_points: 20,
            sentiment_points: 15,
            risk: vec![
                risk(
                    "self_harm",
                    "crisis",
                    60,
                    &[
                        r"(?i)\b(kill(ing)? myself|suicid\w*|end (it all|my life)|self[- ]harm|hurt(ing)? myself|(don'?t|do not) want to (live|be alive))\b",
                        r"自杀|轻生|不想活|结束(我的)?生命|伤害自己",
                    ],
                ),
                risk(
                    "medical_emergency",
                    "emergency",
                    60,
                    &[
                        r"(?i)\b(chest pains?|can'?t breathe|cannot breathe|unconscious|overdos\w*|heart attack|stroke|bleeding (heavily|badly)|severe bleeding|seizure)\b",
                        r"胸痛|呼吸困难|昏迷|晕倒|大出血|急救|心脏病发作|中风",
                    ],
                ),
                risk(
                    "fraud",
                    "fraud",
                    40,
                    &[
                        r"(?i)\b(fraud\w*|stolen|scam\w*|unauthori[sz]ed|hacked|phishing|someone (used|took|has|is using) my (card|account))\b",
                        r"盗刷|被盗|诈骗|欺诈|冒用|被骗",
                    ],
                ),
                risk(
                    "complaint",
                    "complaints",
                    20,
                    &[
                        r"(?i)\b(complain\w*|ombudsman|unacceptable|disgrace\w*)\b",
                        r"投诉|举报|太不像话",
                    ],
                ),
            ],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Site patterns masked on top of the built-in ones (cards, IDs, phones, e-mail,
    /// IBAN): `{ name = "ACCOUNT", regex = "\\bACC-\\d{8}\\b" }` masks as `[ACCOUNT]`.
    pub patterns: Vec<CustomPattern>,
}

/// One thing an agent must cover for an intent, ticked when an agent turn matches.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChecklistItemConfig {
    pub id: String,
    pub label: String,
    /// Regular expressions on the agent's words.
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhraseRule {
    pub name: String,
    /// A regular expression on the agent's words.
    pub pattern: String,
    pub message: String,
    /// Disclosures: must be said within the agent's first this many turns.
    #[serde(default)]
    pub within_agent_turns: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssistConfig {
    /// Articles suggested per customer turn, at most, and the dense similarity they need
    /// (unset: the model manifest's `scores.suggest`, else 0.5).
    pub max_articles: usize,
    pub min_score: Option<f32>,
    pub intent_classifier: String,
    pub sentiment_classifier: String,
    /// Alert when the customer's negative-sentiment probability reaches this, having been
    /// below it on their previous turn.
    pub negative_alert: f32,
    /// Intent label → what the agent must cover.
    pub checklists: BTreeMap<String, Vec<ChecklistItemConfig>>,
    /// Phrases an agent must never say.
    pub forbidden: Vec<PhraseRule>,
    /// Phrases an agent must say early (`within_agent_turns`).
    pub disclosures: Vec<PhraseRule>,
}

fn item(id: &str, label: &str, patterns: &[&str]) -> ChecklistItemConfig {
    ChecklistItemConfig {
        id: id.into(),
        label: label.into(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
    }
}

fn rule(name: &str, pattern: &str, message: &str, within: u32) -> PhraseRule {
    PhraseRule {
        name: name.into(),
        pattern: pattern.into(),
        message: message.into(),
        within_agent_turns: within,
    }
}

impl Default for AssistConfig {
    fn default() -> Self {
        Self {
            max_articles: 3,
            min_score: None,
            intent_classifier: "intent".into(),
            sentiment_classifier: "sentiment".into(),
            negative_alert: 0.7,
            checklists: [(
                "lost_card".to_string(),
                vec![
                    item(
                        "verify_identity",
                        "Verify the customer's identity",
                        &[
                            r"(?i)\b(date of birth|security question|verify|confirm your (identity|name|address)|postcode)\b",
                            r"身份|核实|验证|出生日期",
                        ],
                    ),
                    item(
                        "block_card",
                        "Block the card",
                        &[r"(?i)\b(block(ed)?|freez(e|ing)|frozen|cancel(led)? the card)\b", r"冻结|挂失|止付"],
                    ),
                    item(
                        "offer_replacement",
                        "Offer a replacement card",
                        &[r"(?i)\b(replacement|new card|send you a card)\b", r"补办|新卡|补卡"],
                    ),
                ],
            )]
            .into(),
            forbidden: vec![
                rule(
                    "guaranteed_returns",
                    r"(?i)\b(guarantee(d)? (returns?|profit|gains?)|risk[- ]free investment)\b|保证收益|稳赚|保本保息",
                    "Never promise investment returns",
                    0,
                ),
                rule(
                    "ask_full_pin",
                    r"(?i)\b(tell|give|read) me your (full )?(pin|password)\b|告诉我(你的)?密码",
                    "Never ask for a PIN or password",
                    0,
                ),
            ],
            disclosures: vec![rule(
                "call_recording",
                r"(?i)\b(call|conversation) (is|may be|will be) (being )?recorded\b|通话.{0,6}录音",
                "Tell the customer the call is recorded",
                2,
            )],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QaConfig {
    /// One rubric per tenant, `<tenant>.toml`, else `default.toml` (see
    /// `packaging/rubrics/`). Read when first used and again whenever the file changes.
    pub rubrics_dir: std::path::PathBuf,
    /// The head whose "negative" label the sentiment rules read.
    pub sentiment_classifier: String,
}

impl Default for QaConfig {
    fn default() -> Self {
        Self {
            rubrics_dir: "/etc/confidant/rubrics".into(),
            sentiment_classifier: "sentiment".into(),
        }
    }
}
