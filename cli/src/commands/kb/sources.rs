//! Reading articles from files: JSONL (one article per line, the export format), CSV
//! (FAQ question/answer pairs) and folders of Markdown files with front matter. Every
//! problem carries the file, the line and the field.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use confidant_proto::v1 as pb;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceProblem {
    pub at: Location,
    pub field: String,
    pub message: String,
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.at, self.message)
        } else {
            write!(f, "{}: {}: {}", self.at, self.field, self.message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
    Md,
}

#[derive(Debug, Clone)]
pub struct CsvColumns {
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub format: Option<Format>,
    /// For records that name no language.
    pub lang: Option<String>,
    pub csv: CsvColumns,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub articles: Vec<(Location, pb::Article)>,
    pub problems: Vec<SourceProblem>,
}

impl Loaded {
    fn problem(&mut self, file: &Path, line: usize, field: &str, message: impl Into<String>) {
        self.problems.push(SourceProblem {
            at: Location {
                file: file.to_path_buf(),
                line,
            },
            field: field.into(),
            message: message.into(),
        });
    }
}

fn format_of(path: &Path, given: Option<Format>) -> Option<Format> {
    if given.is_some() {
        return given;
    }
    if path.is_dir() {
        return Some(Format::Md);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson" | "json") => Some(Format::Jsonl),
        Some("csv") => Some(Format::Csv),
        Some("md" | "markdown") => Some(Format::Md),
        _ => None,
    }
}

/// Reads every path; duplicates across files are problems too.
pub fn load(paths: &[PathBuf], opts: &Options) -> Loaded {
    let mut out = Loaded::default();
    for path in paths {
        match format_of(path, opts.format) {
            Some(Format::Jsonl) => jsonl(path, opts, &mut out),
            Some(Format::Csv) => csv_file(path, opts, &mut out),
            Some(Format::Md) if path.is_dir() => md_dir(path, opts, &mut out),
            Some(Format::Md) => md_file(path, opts, &mut out),
            None => out.problem(
                path,
                0,
                "",
                "unknown format: name it .jsonl, .csv or .md (or a folder of .md), or pass --format",
            ),
        }
    }
    let mut first: HashMap<String, Location> = HashMap::new();
    let mut dups = Vec::new();
    for (at, a) in &out.articles {
        if let Some(prev) = first.get(&a.id) {
            dups.push(SourceProblem {
                at: at.clone(),
                field: "id".into(),
                message: format!("{:?} repeats the article at {prev}", a.id),
            });
        } else {
            first.insert(a.id.clone(), at.clone());
        }
    }
    out.problems.extend(dups);
    out
}

fn read(path: &Path, out: &mut Loaded) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            out.problem(path, 0, "", format!("cannot read: {e}"));
            None
        }
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

fn jsonl(path: &Path, opts: &Options, out: &mut Loaded) {
    let Some(bytes) = read(path, out) else {
        return;
    };
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            out.problem(path, line, "", "invalid UTF-8");
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                out.problem(path, line, "", "expected a JSON object");
                continue;
            }
            Err(e) => {
                out.problem(path, line, "", format!("not JSON: {e}"));
                continue;
            }
        };
        let mut a = pb::Article::default();
        let mut ok = true;
        for (k, v) in &obj {
            let text_field = |target: &mut String| -> bool {
                match v {
                    Value::String(s) => {
                        *target = s.clone();
                        true
                    }
                    Value::Null => true,
                    _ => false,
                }
            };
            let good = match k.as_str() {
                "id" => text_field(&mut a.id),
                "title" => text_field(&mut a.title),
                "answer" => text_field(&mut a.answer),
                "body" => text_field(&mut a.body),
                "lang" => text_field(&mut a.lang),
                "status" => text_field(&mut a.status),
                "questions" | "tags" | "channels" => match strings(v) {
                    Some(list) => {
                        match k.as_str() {
                            "questions" => a.questions = list,
                            "tags" => a.tags = list,
                            _ => a.channels = list,
                        }
                        true
                    }
                    None => false,
                },
                "valid_from_ms" | "valid_until_ms" => match v {
                    Value::Null => true,
                    v => match v.as_i64() {
                        Some(n) if k == "valid_from_ms" => {
                            a.valid_from_ms = n;
                            true
                        }
                        Some(n) => {
                            a.valid_until_ms = n;
                            true
                        }
                        None => false,
                    },
                },
                // What an export adds; set by the daemon, ignored here.
                "version" | "updated_at_ms" | "tenant" => true,
                other => {
                    out.problem(path, line, other, "not an article field");
                    ok = false;
                    continue;
                }
            };
            if !good {
                out.problem(path, line, k, "wrong type");
                ok = false;
            }
        }
        if a.lang.is_empty()
            && let Some(l) = &opts.lang
        {
            a.lang = l.clone();
        }
        if ok {
            out.articles.push((
                Location {
                    file: path.to_path_buf(),
                    line,
                },
                a,
            ));
        }
    }
}

/// A stable id for an FAQ row without one: re-importing the same question updates it.
fn id_from(text: &str) -> String {
    let h = Sha256::digest(text.trim().to_lowercase().as_bytes());
    format!("faq-{}", &hex::encode(h)[..16])
}

fn split_list(s: &str, sep: char) -> Vec<String> {
    s.split(sep)
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn csv_file(path: &Path, opts: &Options, out: &mut Loaded) {
    let Some(bytes) = read(path, out) else {
        return;
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(bytes.as_slice());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.problem(path, 1, "", format!("unreadable header: {e}"));
            return;
        }
    };
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(q), Some(ans)) = (col(&opts.csv.question), col(&opts.csv.answer)) else {
        out.problem(
            path,
            1,
            "",
            format!(
                "the header needs columns {:?} and {:?} (see --question-column, --answer-column)",
                opts.csv.question, opts.csv.answer
            ),
        );
        return;
    };
    let optional = [
        "id",
        "title",
        "lang",
        "tags",
        "channels",
        "category",
        "status",
        "questions",
        "body",
    ]
    .map(|n| (n, col(n)));
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(line);
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
                    _ => e.to_string(),
                };
                out.problem(path, line, "", message);
                // A broken record can leave the reader mid-field: stop at the first.
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    return;
                }
                continue;
            }
        }
        let line = record.position().map(|p| p.line() as usize).unwrap_or(line);
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim();
        let opt = |name: &str| {
            optional
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, i)| get(*i))
                .unwrap_or("")
        };
        let question = get(Some(q)).to_string();
        let mut questions = vec![question.clone()];
        questions.extend(split_list(opt("questions"), '|'));
        let mut tags = split_list(opt("tags"), ';');
        let category = opt("category");
        if !category.is_empty() {
            tags.push(category.replace(char::is_whitespace, "-"));
        }
        let lang = match opt("lang") {
            "" => opts.lang.clone().unwrap_or_default(),
            l => l.to_string(),
        };
        let id = match opt("id") {
            "" => id_from(&question),
            id => id.to_string(),
        };
        out.articles.push((
            Location {
                file: path.to_path_buf(),
                line,
            },
            pb::Article {
                id,
                title: opt("title").to_string(),
                questions,
                answer: get(Some(ans)).to_string(),
                body: opt("body").to_string(),
                lang,
                tags,
                channels: split_list(opt("channels"), ';'),
                status: opt("status").to_string(),
                ..Default::default()
            },
        ));
    }
}

fn md_dir(dir: &Path, opts: &Options, out: &mut Loaded) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("md"))
            .collect(),
        Err(e) => {
            out.problem(dir, 0, "", format!("cannot read the folder: {e}"));
            return;
        }
    };
    files.sort();
    if files.is_empty() {
        out.problem(dir, 0, "", "no .md files in this folder");
    }
    for f in files {
        md_file(&f, opts, out);
    }
}

/// Front-matter keys with the line they are on and their values.
type FrontMatter = HashMap<String, (usize, Vec<String>)>;

/// Front matter values: `key: value`, `key: [a, b]`, or `key:` followed by `- item` lines.
/// Returns them and the line the body starts on.
fn front_matter(lines: &[&str], path: &Path, out: &mut Loaded) -> Option<(FrontMatter, usize)> {
    let mut map = FrontMatter::new();
    let mut current: Option<String> = None;
    for (i, raw) in lines.iter().enumerate().skip(1) {
        let line = i + 1;
        if raw.trim() == "---" {
            return Some((map, i + 1));
        }
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        if let Some(item) = raw.trim_start().strip_prefix("- ") {
            match &current {
                Some(k) => {
                    if let Some(e) = map.get_mut(k) {
                        e.1.push(unquote(item));
                    }
                }
                None => {
                    out.problem(path, line, "", "a list item with no key above it");
                    return None;
                }
            }
            continue;
        }
        let Some((k, v)) = raw.split_once(':') else {
            out.problem(path, line, "", "expected `key: value` in the front matter");
            return None;
        };
        let key = k.trim().to_string();
        let v = v.trim();
        let values = if let Some(inner) = v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            inner
                .split(',')
                .map(unquote)
                .filter(|x| !x.is_empty())
                .collect()
        } else if v.is_empty() {
            Vec::new()
        } else {
            vec![unquote(v)]
        };
        map.insert(key.clone(), (line, values));
        current = Some(key);
    }
    out.problem(path, 1, "", "the front matter has no closing `---`");
    None
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    s.to_string()
}

fn md_file(path: &Path, opts: &Options, out: &mut Loaded) {
    let Some(bytes) = read(path, out) else {
        return;
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            out.problem(path, line, "", "invalid UTF-8");
            return;
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let (meta, body_start) = if lines.first().map(|l| l.trim()) == Some("---") {
        match front_matter(&lines, path, out) {
            Some(x) => x,
            None => return,
        }
    } else {
        (HashMap::new(), 0)
    };
    let mut a = pb::Article::default();
    let mut ok = true;
    for (key, (line, values)) in &meta {
        let one = || values.first().cloned().unwrap_or_default();
        match key.as_str() {
            "id" => a.id = one(),
            "title" => a.title = one(),
            "answer" => a.answer = values.join(" "),
            "lang" => a.lang = one(),
            "status" => a.status = one(),
            "questions" => a.questions = values.clone(),
            "tags" => a.tags = values.clone(),
            "channels" => a.channels = values.clone(),
            "valid_from_ms" | "valid_until_ms" => match one().parse::<i64>() {
                Ok(n) if key == "valid_from_ms" => a.valid_from_ms = n,
                Ok(n) => a.valid_until_ms = n,
                Err(_) => {
                    out.problem(path, *line, key, "expected Unix milliseconds");
                    ok = false;
                }
            },
            other => {
                out.problem(path, *line, other, "not an article field");
                ok = false;
            }
        }
    }
    let mut body_lines: Vec<&str> = lines[body_start..].to_vec();
    // A leading `# Heading` is the title when the front matter names none.
    if let Some(pos) = body_lines.iter().position(|l| !l.trim().is_empty())
        && let Some(h) = body_lines[pos].strip_prefix("# ")
    {
        if a.title.is_empty() {
            a.title = h.trim().to_string();
        }
        body_lines.remove(pos);
    }
    let body = body_lines.join("\n").trim().to_string();
    if a.answer.is_empty() {
        // The first paragraph is the answer a customer may be shown.
        a.answer = body.split("\n\n").next().unwrap_or("").trim().to_string();
    }
    a.body = body;
    if a.id.is_empty() {
        a.id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
    }
    if a.lang.is_empty()
        && let Some(l) = &opts.lang
    {
        a.lang = l.clone();
    }
    if ok {
        out.articles.push((
            Location {
                file: path.to_path_buf(),
                line: 1,
            },
            a,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            format: None,
            lang: Some("en".into()),
            csv: CsvColumns {
                question: "question".into(),
                answer: "answer".into(),
            },
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn jsonl_reports_line_and_field() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = b"{\"id\":\"a\",\"answer\":\"x\",\"questions\":[\"q\"]}\n\n{\"id\":\"b\",\"anwser\":\"x\"}\n{\"id\":\"c\",\"tags\":5}\nnot json\n".to_vec();
        bytes.extend_from_slice(b"{\"id\":\"\xff\"}\n");
        let p = write(d.path(), "kb.jsonl", &bytes);
        let l = load(&[p], &opts());
        assert_eq!(l.articles.len(), 1);
        assert_eq!(l.articles[0].1.lang, "en", "--lang fills the gap");
        let got: Vec<(usize, &str)> = l
            .problems
            .iter()
            .map(|p| (p.at.line, p.field.as_str()))
            .collect();
        assert_eq!(got, [(3, "anwser"), (4, "tags"), (5, ""), (6, "")]);
        assert!(l.problems[3].message.contains("UTF-8"));
    }

    #[test]
    fn csv_faq_rows_get_stable_ids_and_tags() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "faq.csv",
            b"question,answer,category,extra\nHow do I reset my PIN?,\"At any ATM,\nwith your card.\",Cards & PINs,x\nSecond?,Yes,,y\n",
        );
        let l = load(std::slice::from_ref(&p), &opts());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.articles.len(), 2);
        let (at, a) = &l.articles[1];
        assert_eq!(at.line, 4, "the multi-line answer above is counted");
        assert_eq!(a.questions, ["Second?"]);
        assert_eq!(l.articles[0].1.tags, ["Cards-&-PINs"]);
        let again = load(&[p], &opts());
        assert_eq!(again.articles[0].1.id, l.articles[0].1.id);
        assert!(l.articles[0].1.id.starts_with("faq-"));
    }

    #[test]
    fn csv_without_the_columns_says_which() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "faq.csv", b"q,a\nx,y\n");
        let l = load(&[p], &opts());
        assert!(l.problems[0].message.contains("\"question\""));
    }

    #[test]
    fn markdown_front_matter_title_and_answer() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "lost-card.md",
            "---\nlang: en\ntags: [cards, urgent]\nquestions:\n  - I lost my card\n  - \"card stolen\"\n---\n# Lost or stolen card\n\nCall 0800 123 456 at once.\n\nWe block the card and send a new one.\n".as_bytes(),
        );
        write(
            d.path(),
            "bad.md",
            b"---\nlang: en\nmood: happy\n---\nText\n",
        );
        write(d.path(), "notes.txt", b"ignored");
        let l = load(&[d.path().to_path_buf()], &opts());
        assert_eq!(l.articles.len(), 1);
        let a = &l.articles[0].1;
        assert_eq!(a.id, "lost-card");
        assert_eq!(a.title, "Lost or stolen card");
        assert_eq!(a.questions, ["I lost my card", "card stolen"]);
        assert_eq!(a.tags, ["cards", "urgent"]);
        assert_eq!(a.answer, "Call 0800 123 456 at once.");
        assert!(a.body.ends_with("send a new one."));
        assert_eq!(l.problems.len(), 1);
        assert_eq!(l.problems[0].field, "mood");
        assert_eq!(l.problems[0].at.line, 3);
    }

    #[test]
    fn duplicates_across_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.jsonl", b"{\"id\":\"x\",\"answer\":\"1\"}\n");
        let b = write(d.path(), "b.jsonl", b"{\"id\":\"x\",\"answer\":\"2\"}\n");
        let l = load(&[a, b], &opts());
        assert_eq!(l.problems.len(), 1);
        assert!(l.problems[0].message.contains("a.jsonl:1"));
    }
}
