//! The behaviour every back-end must have, as one suite each back-end runs.

#![allow(clippy::unwrap_used)]

use super::*;

const DIM: usize = 4;

fn unit(v: [f32; DIM]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

pub fn point(tenant: &str, article: &str, version: i64, chunk: u32, chunks: u32) -> Point {
    let mut v = [0.1f32; DIM];
    v[(chunk as usize + article.len()) % DIM] = 1.0;
    Point {
        tenant: tenant.into(),
        article_id: article.into(),
        version,
        chunk,
        chunks,
        kind: ChunkKind::Passage,
        lang: "en".into(),
        channels: Vec::new(),
        valid_from: VALID_FROM_OPEN,
        valid_until: VALID_UNTIL_OPEN,
        dense: unit(v),
        sparse: SparseVector {
            indices: vec![article.len() as u32, 1000 + chunk],
            values: vec![1.0, 1.0],
        },
    }
}

pub fn filter(tenant: &str) -> SearchFilter {
    SearchFilter {
        tenant: tenant.into(),
        lang: None,
        channel: None,
        at_ms: 1_000,
    }
}

fn articles(hits: &[Hit]) -> Vec<String> {
    let mut a: Vec<String> = hits.iter().map(|h| h.article_id.clone()).collect();
    a.sort();
    a.dedup();
    a
}

fn everything(index: &dyn VectorIndex, tenant: &str) -> Vec<String> {
    articles(
        &index
            .search(&Query::Dense(unit([1.0; DIM])), &filter(tenant), 100)
            .unwrap(),
    )
}

pub fn run_all<I: VectorIndex>(open: &dyn Fn() -> I) {
    let index = open();
    index.delete_all(None).unwrap();
    tenants_never_mix(&index);
    index.delete_all(None).unwrap();
    filters_narrow(&index);
    index.delete_all(None).unwrap();
    replacing_leaves_no_stale_chunks(&index);
    index.delete_all(None).unwrap();
    sparse_search_finds_shared_terms(&index);
    index.delete_all(None).unwrap();
    filters_hold_as_content_changes(&index);
    index.delete_all(None).unwrap();
    a_minority_language_never_crowds_out_the_asked_one(&index);
    index.delete_all(None).unwrap();
    index
        .replace_article("t1", "kept", 3, vec![point("t1", "kept", 3, 0, 1)])
        .unwrap();
    let mut old = point("t1", "expired", 1, 0, 1);
    old.valid_until = 500;
    index
        .replace_article("t1", "expired", 1, vec![old])
        .unwrap();
    index.flush().unwrap();
    drop(index);
    let index = open();
    assert_eq!(
        everything(&index, "t1"),
        ["kept"],
        "survives reopening, and so does the filter"
    );
    index.delete_article("t1", "expired").unwrap();
    let inv = index.inventory().unwrap();
    assert_eq!(inv.len(), 1);
    assert!(inv[0].is_complete(3));
    index.optimize().unwrap();
    assert_eq!(everything(&index, "t1"), ["kept"], "survives optimisation");
}

fn tenants_never_mix(index: &dyn VectorIndex) {
    index
        .replace_article("t1", "a", 1, vec![point("t1", "a", 1, 0, 1)])
        .unwrap();
    index
        .replace_article("t2", "b", 1, vec![point("t2", "b", 1, 0, 1)])
        .unwrap();
    // The same article id in two tenants: two articles.
    index
        .replace_article("t2", "a", 1, vec![point("t2", "a", 1, 0, 1)])
        .unwrap();
    assert_eq!(everything(index, "t1"), ["a"]);
    assert_eq!(everything(index, "t2"), ["a", "b"]);
    assert_eq!(index.count(Some("t1")).unwrap(), 1);
    index.delete_article("t2", "a").unwrap();
    assert_eq!(everything(index, "t1"), ["a"], "delete stays in its tenant");
    index.delete_all(Some("t2")).unwrap();
    assert!(everything(index, "t2").is_empty());
    assert_eq!(
        everything(index, "t1"),
        ["a"],
        "erasure stays in its tenant"
    );
}

fn filters_narrow(index: &dyn VectorIndex) {
    let mut zh = point("t1", "zh", 1, 0, 1);
    zh.lang = "zh".into();
    let mut phone = point("t1", "phone", 1, 0, 1);
    phone.channels = vec!["voice".into()];
    let mut old = point("t1", "expired", 1, 0, 1);
    old.valid_until = 500;
    let mut future = point("t1", "future", 1, 0, 1);
    future.valid_from = 2_000;
    for p in [zh, phone, old, future, point("t1", "plain", 1, 0, 1)] {
        let (t, a) = (p.tenant.clone(), p.article_id.clone());
        index.replace_article(&t, &a, 1, vec![p]).unwrap();
    }
    assert_eq!(everything(index, "t1"), ["phone", "plain", "zh"]);
    let q = Query::Dense(unit([1.0; DIM]));
    let mut f = filter("t1");
    f.lang = Some("zh".into());
    assert_eq!(articles(&index.search(&q, &f, 10).unwrap()), ["zh"]);
    let mut f = filter("t1");
    f.channel = Some("chat".into());
    assert_eq!(
        articles(&index.search(&q, &f, 10).unwrap()),
        ["plain", "zh"],
        "a channel-bound article stays off other channels"
    );
    f.channel = Some("voice".into());
    assert_eq!(
        articles(&index.search(&q, &f, 10).unwrap()),
        ["phone", "plain", "zh"]
    );
    let mut f = filter("t1");
    f.at_ms = 3_000;
    assert!(articles(&index.search(&q, &f, 10).unwrap()).contains(&"future".to_string()));
    // A windowed article of another tenant, valid now, stays in its tenant.
    let mut theirs = point("t2", "theirs", 1, 0, 1);
    theirs.valid_from = 500;
    index
        .replace_article("t2", "theirs", 1, vec![theirs])
        .unwrap();
    assert!(!articles(&index.search(&q, &f, 10).unwrap()).contains(&"theirs".to_string()));
    assert_eq!(
        articles(&index.search(&q, &filter("t2"), 10).unwrap()),
        ["theirs"]
    );
}

/// A back-end may leave out conditions every point meets; whatever it keeps, each write
/// must show in the very next search.
fn filters_hold_as_content_changes(index: &dyn VectorIndex) {
    let q = Query::Dense(unit([1.0; DIM]));
    let found = |lang: Option<&str>, channel: Option<&str>, tenant: &str| {
        let mut f = filter(tenant);
        f.lang = lang.map(Into::into);
        f.channel = channel.map(Into::into);
        let mut a = articles(&index.search(&q, &f, 10).unwrap());
        let s = Query::Sparse(point(tenant, "a", 1, 0, 1).sparse);
        a.extend(articles(&index.search(&s, &f, 10).unwrap()));
        a.sort();
        a.dedup();
        a
    };
    let put = |p: Point| {
        let (t, a, v) = (p.tenant.clone(), p.article_id.clone(), p.version);
        index.replace_article(&t, &a, v, vec![p]).unwrap();
    };
    put(point("t1", "a", 1, 0, 1));
    assert_eq!(found(Some("en"), Some("chat"), "t1"), ["a"]);
    let mut expired = point("t1", "a", 2, 0, 1);
    expired.valid_until = 500;
    put(expired);
    assert!(
        found(Some("en"), Some("chat"), "t1").is_empty(),
        "a new version out of its window is gone at once"
    );
    put(point("t1", "a", 3, 0, 1));
    assert_eq!(found(Some("en"), Some("chat"), "t1"), ["a"]);
    let mut phone = point("t1", "b", 1, 0, 1);
    phone.channels = vec!["voice".into()];
    put(phone);
    assert_eq!(found(Some("en"), Some("chat"), "t1"), ["a"]);
    assert_eq!(found(Some("en"), Some("voice"), "t1"), ["a", "b"]);
    index.delete_article("t1", "b").unwrap();
    let mut zh = point("t1", "c", 1, 0, 1);
    zh.lang = "zh".into();
    put(zh);
    assert_eq!(found(Some("en"), None, "t1"), ["a"]);
    assert_eq!(found(Some("zh"), None, "t1"), ["c"]);
    index.delete_article("t1", "c").unwrap();
    assert!(found(Some("zh"), None, "t1").is_empty());
    put(point("t2", "z", 1, 0, 1));
    assert_eq!(found(Some("en"), None, "t1"), ["a"]);
    assert_eq!(found(Some("en"), None, "t2"), ["z"]);
    index.delete_all(Some("t2")).unwrap();
    assert_eq!(found(Some("en"), None, "t1"), ["a"]);
    assert!(found(Some("en"), None, "t2").is_empty());
}

/// A back-end may check a language most articles share after the search: the other
/// languages' hits must neither show nor leave the search short.
fn a_minority_language_never_crowds_out_the_asked_one(index: &dyn VectorIndex) {
    let q = unit([1.0; DIM]);
    for i in 0..12 {
        let mut p = point("t1", &format!("en{i}"), 1, 0, 1);
        p.dense = unit([1.0, 0.5 + i as f32, 0.1, 0.1]);
        index
            .replace_article("t1", &p.article_id.clone(), 1, vec![p])
            .unwrap();
    }
    // One Chinese article whose 40 chunks are all nearer the query than any English one.
    let zh: Vec<Point> = (0..40)
        .map(|c| {
            let mut p = point("t1", "zh", 1, c, 40);
            p.lang = "zh".into();
            p.dense = q.clone();
            p
        })
        .collect();
    index.replace_article("t1", "zh", 1, zh).unwrap();
    let mut f = filter("t1");
    f.lang = Some("en".into());
    let hits = index.search(&Query::Dense(q.clone()), &f, 5).unwrap();
    assert_eq!(hits.len(), 5, "{hits:?}");
    assert!(
        hits.iter().all(|h| h.article_id.starts_with("en")),
        "{hits:?}"
    );
    f.lang = Some("zh".into());
    let hits = index.search(&Query::Dense(q), &f, 5).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.article_id == "zh"));
}

fn replacing_leaves_no_stale_chunks(index: &dyn VectorIndex) {
    let v1 = (0..3).map(|c| point("t1", "a", 1, c, 3)).collect();
    index.replace_article("t1", "a", 1, v1).unwrap();
    assert_eq!(index.count(Some("t1")).unwrap(), 3);
    index
        .replace_article("t1", "a", 2, vec![point("t1", "a", 2, 0, 1)])
        .unwrap();
    assert_eq!(index.count(Some("t1")).unwrap(), 1, "surplus chunks go");
    let inv = index.inventory().unwrap();
    assert_eq!(inv.len(), 1);
    assert!(inv[0].is_complete(2), "{inv:?}");
    assert!(!inv[0].is_complete(1));
    // A cut-off write (one chunk of a new version) shows as incomplete.
    index
        .replace_article("t1", "b", 1, vec![point("t1", "b", 1, 0, 2)])
        .unwrap();
    let inv = index.inventory().unwrap();
    let b = inv.iter().find(|i| i.article_id == "b").unwrap();
    assert!(!b.is_complete(1), "{b:?}");
}

fn sparse_search_finds_shared_terms(index: &dyn VectorIndex) {
    index
        .replace_article("t1", "abc", 1, vec![point("t1", "abc", 1, 0, 1)])
        .unwrap();
    index
        .replace_article("t1", "de", 1, vec![point("t1", "de", 1, 0, 1)])
        .unwrap();
    let q = Query::Sparse(SparseVector {
        indices: vec![3],
        values: vec![1.0],
    });
    let hits = index.search(&q, &filter("t1"), 10).unwrap();
    assert_eq!(articles(&hits), ["abc"]);
    assert!(hits[0].score > 0.0);
    let none = Query::Sparse(SparseVector::default());
    assert!(index.search(&none, &filter("t1"), 10).unwrap().is_empty());
}
