//! `confidantctl kb`: import, list, show, delete, export, search, reindex, stats and a
//! retrieval evaluation, all through the daemon.

mod eval;
mod sources;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use confidant_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::knowledge_base_service_client::KnowledgeBaseServiceClient;
use serde_json::json;

use crate::output::{json, table};
use crate::{Cli, client};

pub use sources::Format;

#[derive(Args)]
pub struct KbArgs {
    /// The tenant (required on the local socket; a token implies its own).
    #[arg(long, global = true, env = "CONFIDANT_TENANT", default_value = "")]
    tenant: String,
    #[command(subcommand)]
    command: KbCommand,
}

#[derive(Subcommand)]
enum KbCommand {
    /// Import articles from JSONL, CSV (FAQ question/answer) or folders of Markdown.
    Import(ImportArgs),
    /// List articles (id, version, language, status, title).
    List {
        #[arg(long, default_value = "")]
        lang: String,
        /// published or draft
        #[arg(long, default_value = "")]
        status: String,
    },
    /// Show one article in full.
    Show { id: String },
    /// Delete an article from the database and the index.
    Delete { id: String },
    /// Export every article as JSONL (re-importable); to a file or standard output.
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Search the knowledge base as the bot and agent assist do.
    Search(SearchArgs),
    /// Rebuild the tenant's index from the database.
    Reindex,
    /// Article and index counts.
    Stats,
    /// Measure retrieval: recall@1, recall@5 and MRR@10 per mode over labelled queries.
    Eval(eval::EvalArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// Files (.jsonl, .csv, .md) or folders of .md files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Read every path as this format instead of going by its extension.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The language of articles that do not name one.
    #[arg(long)]
    lang: Option<String>,
    /// Validate only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Import the valid articles and list the invalid ones (default: any problem rejects
    /// the whole import and nothing is written).
    #[arg(long)]
    skip_invalid: bool,
    /// CSV: the column holding the question.
    #[arg(long, default_value = "question")]
    question_column: String,
    /// CSV: the column holding the answer.
    #[arg(long, default_value = "answer")]
    answer_column: String,
    /// Articles per request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=500))]
    batch: u32,
}

#[derive(Args)]
struct SearchArgs {
    text: String,
    #[arg(long, default_value = "")]
    lang: String,
    #[arg(long, default_value = "")]
    channel: String,
    #[arg(long, default_value_t = 5)]
    limit: u32,
    #[arg(long, value_enum, default_value = "hybrid")]
    mode: eval::ModeArg,
}

type Client = KnowledgeBaseServiceClient<client::Conn>;

pub async fn run(cli: &Cli, args: &KbArgs) -> anyhow::Result<()> {
    let mut c: Client = KnowledgeBaseServiceClient::new(client::connect(cli).await?)
        .max_decoding_message_size(64 * 1024 * 1024);
    let tenant = args.tenant.clone();
    match &args.command {
        KbCommand::Import(a) => import(cli, &mut c, &tenant, a).await,
        KbCommand::List { lang, status } => list(cli, &mut c, &tenant, lang, status).await,
        KbCommand::Show { id } => {
            let a = c
                .get_article(pb::GetArticleRequest {
                    tenant,
                    id: id.clone(),
                })
                .await?
                .into_inner();
            if cli.json {
                json(&article_json(&a));
            } else {
                print_article(&a);
            }
            Ok(())
        }
        KbCommand::Delete { id } => {
            c.delete_article(pb::DeleteArticleRequest {
                tenant,
                id: id.clone(),
            })
            .await?;
            if cli.json {
                json(&json!({"deleted": id}));
            } else {
                println!("deleted {id}");
            }
            Ok(())
        }
        KbCommand::Export { output } => export(&mut c, &tenant, output.as_deref()).await,
        KbCommand::Search(s) => search(cli, &mut c, &tenant, s).await,
        KbCommand::Reindex => {
            let r = c.reindex(pb::ReindexRequest { tenant }).await?.into_inner();
            if cli.json {
                json(&json!({"articles": r.articles, "chunks": r.chunks}));
            } else {
                println!("reindexed {} articles ({} chunks)", r.articles, r.chunks);
            }
            Ok(())
        }
        KbCommand::Stats => {
            let s = c.stats(pb::KbStatsRequest { tenant }).await?.into_inner();
            if cli.json {
                json(&json!({
                    "published": s.published, "drafts": s.drafts,
                    "indexed_chunks": s.indexed_chunks, "index_pending": s.index_pending,
                }));
            } else {
                println!("published:      {}", s.published);
                println!("drafts:         {}", s.drafts);
                println!("indexed chunks: {}", s.indexed_chunks);
                println!("index pending:  {}", s.index_pending);
            }
            Ok(())
        }
        KbCommand::Eval(e) => eval::run(cli, &mut c, &tenant, e).await,
    }
}

pub fn article_json(a: &pb::Article) -> serde_json::Value {
    json!({
        "id": a.id, "title": a.title, "questions": a.questions, "answer": a.answer,
        "body": a.body, "lang": a.lang, "tags": a.tags, "channels": a.channels,
        "valid_from_ms": a.valid_from_ms, "valid_until_ms": a.valid_until_ms,
        "status": a.status, "version": a.version, "updated_at_ms": a.updated_at_ms,
    })
}

fn print_article(a: &pb::Article) {
    println!("id:        {}", a.id);
    println!("version:   {}", a.version);
    println!("status:    {}", a.status);
    println!("lang:      {}", a.lang);
    println!("title:     {}", a.title);
    for q in &a.questions {
        println!("question:  {q}");
    }
    println!("tags:      {}", a.tags.join(", "));
    println!(
        "channels:  {}",
        if a.channels.is_empty() {
            "all".to_string()
        } else {
            a.channels.join(", ")
        }
    );
    println!("answer:\n{}", a.answer);
    if !a.body.is_empty() {
        println!("body:\n{}", a.body);
    }
}

async fn import(cli: &Cli, c: &mut Client, tenant: &str, a: &ImportArgs) -> anyhow::Result<()> {
    let opts = sources::Options {
        format: a.format,
        lang: a.lang.clone(),
        csv: sources::CsvColumns {
            question: a.question_column.clone(),
            answer: a.answer_column.clone(),
        },
    };
    let loaded = sources::load(&a.paths, &opts);
    let mut problems = loaded.problems;
    let batch = a.batch as usize;
    // The daemon validates too (languages, sizes): ask it first, write nothing yet.
    let mut valid = Vec::new();
    for group in loaded.articles.chunks(batch) {
        let r = c
            .upsert_articles(pb::UpsertArticlesRequest {
                tenant: tenant.to_string(),
                articles: group.iter().map(|(_, a)| a.clone()).collect(),
                dry_run: true,
            })
            .await?
            .into_inner();
        let mut bad = vec![false; group.len()];
        for p in r.problems {
            let i = p.index as usize;
            if let Some((at, _)) = group.get(i) {
                bad[i] = true;
                problems.push(sources::SourceProblem {
                    at: at.clone(),
                    field: p.field,
                    message: p.message,
                });
            }
        }
        valid.extend(
            group
                .iter()
                .zip(bad)
                .filter(|(_, b)| !b)
                .map(|(x, _)| x.clone()),
        );
    }
    // Problems found by the CLI (duplicates) may name articles the daemon accepted.
    valid.retain(|(at, _)| !problems.iter().any(|p| p.at == *at));
    for p in &problems {
        eprintln!("{p}");
    }
    if a.dry_run {
        if cli.json {
            json(&json!({"valid": valid.len(), "invalid": problems.len(), "written": 0}));
        } else {
            println!(
                "dry run: {} valid articles, {} problems; nothing written",
                valid.len(),
                problems.len()
            );
        }
        if problems.is_empty() {
            return Ok(());
        }
        anyhow::bail!("{} problems", problems.len());
    }
    if !problems.is_empty() && !a.skip_invalid {
        anyhow::bail!(
            "{} problems: nothing imported (fix them, or pass --skip-invalid to import the {} valid articles)",
            problems.len(),
            valid.len()
        );
    }
    let bar = ProgressBar::new(valid.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:30}] {pos}/{len} articles  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    for group in valid.chunks(batch) {
        let r = c
            .upsert_articles(pb::UpsertArticlesRequest {
                tenant: tenant.to_string(),
                articles: group.iter().map(|(_, a)| a.clone()).collect(),
                dry_run: false,
            })
            .await;
        let r = match r {
            Ok(r) => r.into_inner(),
            Err(e) => {
                bar.abandon();
                let first = group
                    .first()
                    .map(|(at, _)| at.to_string())
                    .unwrap_or_default();
                return Err(anyhow::Error::from(e))
                    .with_context(|| format!("importing the batch starting at {first}"));
            }
        };
        for u in r.results {
            match u.outcome.as_str() {
                "created" => created += 1,
                "updated" => updated += 1,
                _ => unchanged += 1,
            }
        }
        bar.inc(group.len() as u64);
    }
    bar.finish_and_clear();
    let skipped = problems.len();
    if cli.json {
        json(
            &json!({"created": created, "updated": updated, "unchanged": unchanged, "skipped": skipped}),
        );
    } else {
        println!(
            "imported: {created} created, {updated} updated, {unchanged} unchanged, {skipped} skipped"
        );
    }
    Ok(())
}

async fn list(
    cli: &Cli,
    c: &mut Client,
    tenant: &str,
    lang: &str,
    status: &str,
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let r = c
            .list_articles(pb::ListArticlesRequest {
                tenant: tenant.to_string(),
                lang: lang.to_string(),
                status: status.to_string(),
                after_id: after.clone(),
                limit: 1000,
            })
            .await?
            .into_inner();
        all.extend(r.articles);
        if r.next_after_id.is_empty() {
            break;
        }
        after = r.next_after_id;
    }
    if cli.json {
        json(&json!(all.iter().map(article_json).collect::<Vec<_>>()));
    } else {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.version.to_string(),
                    a.lang.clone(),
                    a.status.clone(),
                    a.title.chars().take(60).collect(),
                ]
            })
            .collect();
        table(&["id", "version", "lang", "status", "title"], &rows);
    }
    Ok(())
}

async fn export(
    c: &mut Client,
    tenant: &str,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut stream = c
        .export_articles(pb::ExportArticlesRequest {
            tenant: tenant.to_string(),
        })
        .await?
        .into_inner();
    let mut out: Box<dyn Write> = match output {
        // Written beside the target and renamed, so a failed export leaves no half file.
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p.with_extension("partial"))
                .with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut n = 0;
    while let Some(a) = stream.message().await? {
        writeln!(out, "{}", article_json(&a))?;
        n += 1;
    }
    out.flush()?;
    drop(out);
    if let Some(p) = output {
        std::fs::rename(p.with_extension("partial"), p)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("exported {n} articles to {}", p.display());
    }
    Ok(())
}

async fn search(cli: &Cli, c: &mut Client, tenant: &str, s: &SearchArgs) -> anyhow::Result<()> {
    let r = c
        .search(pb::SearchRequest {
            tenant: tenant.to_string(),
            text: s.text.clone(),
            lang: s.lang.clone(),
            channel: s.channel.clone(),
            limit: s.limit,
            mode: s.mode.to_pb() as i32,
            at_ms: 0,
        })
        .await?
        .into_inner();
    if cli.json {
        json(&json!(
            r.hits
                .iter()
                .map(|h| json!({
                    "rank": h.rank, "article_id": h.article_id, "version": h.version,
                    "title": h.title, "answer": h.answer, "lang": h.lang,
                    "fused_score": h.fused_score,
                    "dense_score": h.dense_score, "dense_rank": h.dense_rank,
                    "lexical_score": h.lexical_score, "lexical_rank": h.lexical_rank,
                    "matched_kind": h.matched_kind, "matched_text": h.matched_text,
                }))
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    let rank = |r: u32| {
        if r == 0 {
            "-".to_string()
        } else {
            r.to_string()
        }
    };
    let rows: Vec<Vec<String>> = r
        .hits
        .iter()
        .map(|h| {
            vec![
                h.rank.to_string(),
                h.article_id.clone(),
                format!("{:.4}", h.fused_score),
                format!("{:.3} ({})", h.dense_score, rank(h.dense_rank)),
                format!("{:.2} ({})", h.lexical_score, rank(h.lexical_rank)),
                h.matched_text
                    .replace('\n', " / ")
                    .chars()
                    .take(60)
                    .collect(),
            ]
        })
        .collect();
    table(
        &[
            "rank",
            "article",
            "fused",
            "dense (rank)",
            "bm25 (rank)",
            "matched",
        ],
        &rows,
    );
    Ok(())
}
