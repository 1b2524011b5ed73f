//! PII redaction. Before customer or agent text is logged or stored, card numbers
//! (Luhn-checked), Chinese resident identity numbers (ISO 7064 checksum), phone numbers
//! (Chinese mobile and E.164), e-mail addresses, IBANs (mod-97) and operator-configured
//! patterns are replaced by masks that keep the kind: `[CARD]`, `[CN_ID]`, `[PHONE]`,
//! `[EMAIL]`, `[IBAN]`, `[NAME]` for a custom pattern called NAME.
//!
//! Digit strings that fail their checksum are left alone: order numbers and amounts
//! must survive for the analytics that read redacted transcripts.

mod checks;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("redact.patterns[{index}] ({name}): {message}")]
pub struct PatternError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

/// An operator-configured pattern (config `[[redact.patterns]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// The mask's label: matches become `[NAME]`. Upper-case letters, digits and `_`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax).
    pub regex: String,
}

struct Detector {
    label: String,
    re: Regex,
    /// Checksum or shape check on the match with separators removed.
    valid: fn(&str) -> bool,
    /// Whether a match may not touch further digits/letters on either side.
    isolated: bool,
}

pub struct Redactor {
    detectors: Vec<Detector>,
}

fn always(_: &str) -> bool {
    true
}

fn builtin(label: &str, re: &str, valid: fn(&str) -> bool) -> Detector {
    Detector {
        label: label.to_string(),
        // The built-in expressions are constants covered by the tests below.
        re: Regex::new(re).unwrap_or_else(|e| panic!("built-in pattern {label}: {e}")),
        valid,
        isolated: true,
    }
}

impl Redactor {
    pub fn new(custom: &[CustomPattern]) -> Result<Self, PatternError> {
        // Order is priority: an 18-digit resident ID is tried before a card number.
        let mut detectors = vec![
            builtin(
                "EMAIL",
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
                always,
            ),
            builtin(
                "IBAN",
                r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?",
                checks::iban,
            ),
            builtin("CN_ID", r"[1-9][0-9]{16}[0-9Xx]", checks::cn_resident_id),
            builtin("CARD", r"[0-9](?:[ \-]?[0-9]){12,18}", checks::luhn),
            builtin(
                "PHONE",
                r"(?:\+?86[ \-]?)?1[3-9][0-9](?:[ \-]?[0-9]){8}",
                checks::cn_mobile,
            ),
            builtin("PHONE", r"\+[1-9](?:[ \-]?[0-9]){7,14}", always),
        ];
        for (index, p) in custom.iter().enumerate() {
            let err = |message: String| PatternError {
                index,
                name: p.name.clone(),
                message,
            };
            if p.name.is_empty()
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(err("name must be upper-case letters, digits and _".into()));
            }
            let re = Regex::new(&p.regex).map_err(|e| err(e.to_string()))?;
            detectors.push(Detector {
                label: p.name.clone(),
                re,
                valid: always,
                isolated: false,
            });
        }
        Ok(Self { detectors })
    }

    /// The text with every detected item replaced by its mask.
    pub fn redact(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        for d in &self.detectors {
            for m in d.re.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                if d.isolated && !isolated(text, s, e) {
                    continue;
                }
                let compact: String = m
                    .as_str()
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-'))
                    .collect();
                if !(d.valid)(&compact) {
                    continue;
                }
                if spans.iter().any(|&(a, b, _)| s < b && a < e) {
                    continue;
                }
                spans.push((s, e, &d.label));
            }
        }
        if spans.is_empty() {
            return text.to_string();
        }
        spans.sort_by_key(|&(s, _, _)| s);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e, label) in spans {
            out.push_str(&text[at..s]);
            out.push('[');
            out.push_str(label);
            out.push(']');
            at = e;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// A match must not be part of a longer run of ASCII letters or digits: "order 1234…"
/// next to CJK text is fine, "A123…" is not a match for a digit pattern.
fn isolated(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let joins = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !joins(before) && !joins(after)
}

#[cfg(test)]
mod tests;
