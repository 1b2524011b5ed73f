//! Article validation and normalisation: every problem is reported with the field at
//! fault, and a normalised article gets a content hash so that re-importing unchanged
//! content keeps its version.

use sha2::{Digest, Sha256};

use crate::index::{VALID_FROM_OPEN, VALID_UNTIL_OPEN};
use crate::store::ArticleRow;

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub index: usize,
    pub field: String,
    pub message: String,
}

/// Size limits and the languages an article may be in.
#[derive(Debug, Clone)]
pub struct Rules {
    pub languages: Vec<String>,
    pub max_answer_chars: usize,
    pub max_body_chars: usize,
    pub max_questions: usize,
    pub max_short_chars: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            languages: vec!["en".into(), "zh".into()],
            max_answer_chars: 20_000,
            max_body_chars: 200_000,
            max_questions: 50,
            max_short_chars: 500,
        }
    }
}

pub const MAX_ID_CHARS: usize = 128;

pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c))
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= 64
        && s.chars().all(|c| c.is_alphanumeric() || "._-".contains(c))
}

/// Trims, fills defaults, drops empty and duplicate question variants, and checks
/// everything. Returns the normalised article or the problems (all of them).
pub fn normalize(
    index: usize,
    mut a: ArticleRow,
    rules: &Rules,
) -> Result<ArticleRow, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, message: String| {
        problems.push(Problem {
            index,
            field: field.to_string(),
            message,
        })
    };
    a.id = a.id.trim().to_string();
    if !valid_id(&a.id) {
        bad(
            "id",
            format!(
                "{:?} is not an article id: 1–{MAX_ID_CHARS} of A–Z a–z 0–9 . _ : / -",
                a.id
            ),
        );
    }
    a.title = a.title.trim().to_string();
    a.answer = a.answer.trim().to_string();
    a.body = a.body.trim().to_string();
    a.lang = a.lang.trim().to_ascii_lowercase();
    if a.answer.is_empty() {
        bad("answer", "must not be empty".into());
    }
    for (field, text, max) in [
        ("title", &a.title, rules.max_short_chars),
        ("answer", &a.answer, rules.max_answer_chars),
        ("body", &a.body, rules.max_body_chars),
    ] {
        let n = text.chars().count();
        if n > max {
            bad(field, format!("{n} characters exceed the limit of {max}"));
        }
    }
    if !rules.languages.contains(&a.lang) {
        bad(
            "lang",
            format!(
                "{:?} is not a configured language (kb.languages: {})",
                a.lang,
                rules.languages.join(", ")
            ),
        );
    }
    let mut questions: Vec<String> = Vec::new();
    for (i, q) in a.questions.iter().enumerate() {
        let q = q.trim();
        let n = q.chars().count();
        if n > rules.max_short_chars {
            bad(
                &format!("questions[{i}]"),
                format!(
                    "{n} characters exceed the limit of {}",
                    rules.max_short_chars
                ),
            );
        } else if !q.is_empty() && !questions.iter().any(|x| x.eq_ignore_ascii_case(q)) {
            questions.push(q.to_string());
        }
    }
    if questions.len() > rules.max_questions {
        bad(
            "questions",
            format!(
                "{} question variants exceed the limit of {}",
                questions.len(),
                rules.max_questions
            ),
        );
    }
    a.questions = questions;
    for (field, list) in [("tags", &mut a.tags), ("channels", &mut a.channels)] {
        for (i, item) in list.iter_mut().enumerate() {
            *item = item.trim().to_string();
            if !valid_label(item) {
                bad(
                    &format!("{field}[{i}]"),
                    format!("{item:?}: 1–64 letters, digits, . _ -"),
                );
            }
        }
        list.sort();
        list.dedup();
    }
    if a.valid_from < 0 {
        bad("valid_from_ms", "must not be negative".into());
    }
    if a.valid_until < 0 {
        bad("valid_until_ms", "must not be negative".into());
    }
    if a.valid_from == 0 {
        a.valid_from = VALID_FROM_OPEN;
    }
    if a.valid_until == 0 {
        a.valid_until = VALID_UNTIL_OPEN;
    }
    if a.valid_until <= a.valid_from {
        bad("valid_until_ms", "must be after valid_from_ms".into());
    }
    match a.status.trim() {
        "" | "published" => a.status = "published".into(),
        "draft" => a.status = "draft".into(),
        other => bad(
            "status",
            format!("{other:?}: expected \"published\" or \"draft\""),
        ),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    a.content_hash = content_hash(&a);
    Ok(a)
}

fn content_hash(a: &ArticleRow) -> String {
    let canonical = serde_json::json!([
        a.title,
        a.questions,
        a.answer,
        a.body,
        a.lang,
        a.tags,
        a.channels,
        a.valid_from,
        a.valid_until,
        a.status
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> ArticleRow {
        ArticleRow {
            id: "card-lost".into(),
            questions: vec![
                "I lost my card".into(),
                " i lost my card ".into(),
                "".into(),
            ],
            answer: " Call us. ".into(),
            lang: "EN".into(),
            channels: vec!["chat".into(), "chat".into()],
            ..Default::default()
        }
    }

    #[test]
    fn normalises_and_hashes_content() {
        let a = normalize(0, article(), &Rules::default()).unwrap();
        assert_eq!(a.questions, ["I lost my card"]);
        assert_eq!(a.answer, "Call us.");
        assert_eq!(a.lang, "en");
        assert_eq!(a.channels, ["chat"]);
        assert_eq!(a.status, "published");
        assert_eq!(a.valid_until, VALID_UNTIL_OPEN);
        let b = normalize(0, article(), &Rules::default()).unwrap();
        assert_eq!(a.content_hash, b.content_hash);
        let mut changed = article();
        changed.answer = "Call us now.".into();
        let c = normalize(0, changed, &Rules::default()).unwrap();
        assert_ne!(a.content_hash, c.content_hash);
    }

    #[test]
    fn every_problem_names_its_field() {
        let bad = ArticleRow {
            id: "has space".into(),
            answer: "  ".into(),
            lang: "xx".into(),
            questions: vec!["q".repeat(501)],
            tags: vec!["ok".into(), "not ok".into()],
            valid_from: 10,
            valid_until: 5,
            status: "live".into(),
            ..Default::default()
        };
        let problems = normalize(3, bad, &Rules::default()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "id",
                "answer",
                "lang",
                "questions[0]",
                "tags[1]",
                "valid_until_ms",
                "status"
            ]
        );
        assert!(problems.iter().all(|p| p.index == 3));
    }
}
