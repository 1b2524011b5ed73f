//! The Qdrant server back-end, for sites that run Qdrant themselves (a server or a
//! cluster), over its gRPC API with `qdrant-client`. Points, payload fields, payload
//! indexes and filters are the embedded back-end's, so one suite checks both.
//!
//! The index trait is blocking (the daemon calls it on its blocking pool); the client is
//! async, so the back-end owns a small runtime and waits for each call on a channel, which
//! works from any thread that is not one of that runtime's own.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use qdrant_client::qdrant::value::Kind;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    AcornSearchParamsBuilder, BinaryQuantizationBuilder, BinaryQuantizationEncoding,
    BinaryQuantizationQueryEncoding, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter,
    HnswConfigDiffBuilder, KeywordIndexParamsBuilder, Modifier, NamedVectors,
    PayloadIncludeSelector, PointId, PointStruct, QuantizationSearchParamsBuilder,
    QuantizationType, Query as QdrantQuery, QueryPointsBuilder, Range, ScalarQuantizationBuilder,
    ScrollPointsBuilder, SearchParamsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, TurboQuantBitSize, TurboQuantizationBuilder, UpsertPointsBuilder,
    Value as QValue, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use qdrant_edge::external::uuid::Uuid;
use serde_json::json;

use super::{
    ANY_CHANNEL, Hit, IndexError, IndexTuning, Indexed, InventoryBuilder, Point, Quantization,
    Query, SearchFilter, VectorIndex, point_uuid,
};

const DENSE: &str = "dense";
const SPARSE: &str = "bm25";
const KEYWORD_FIELDS: [&str; 4] = ["tenant", "article", "lang", "channels"];
const INTEGER_FIELDS: [&str; 4] = ["version", "chunk", "valid_from", "valid_until"];
const SCROLL_PAGE: u32 = 1000;

/// Where the server is and how to reach it.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The server's gRPC address, e.g. `http://qdrant.internal:6334` (`https://` for TLS).
    pub url: String,
    pub api_key: Option<String>,
    /// The collection's name; the daemon adds the model's fingerprint, so that another
    /// model gets a collection of its own, rebuilt from the database.
    pub collection: String,
    /// Per request.
    pub timeout: Duration,
    /// HNSW and quantisation for a collection this daemon creates (the server keeps an
    /// existing collection's own), and the search parameters.
    pub tuning: IndexTuning,
}

pub struct ServerIndex {
    client: Qdrant,
    collection: String,
    /// `None` only while dropping (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
    tuning: IndexTuning,
}

fn engine(e: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(e.to_string())
}

fn keyword(key: &str, value: &str) -> Condition {
    Condition::matches(key, value.to_string())
}

fn article_filter(tenant: &str, article_id: &str) -> Filter {
    Filter::must([keyword("tenant", tenant), keyword("article", article_id)])
}

fn search_filter(f: &SearchFilter) -> Filter {
    // Unix milliseconds are far below 2^53: exact as the f64 Qdrant's ranges take.
    let at = f.at_ms as f64;
    let mut must = vec![
        keyword("tenant", &f.tenant),
        Condition::range(
            "valid_from",
            Range {
                lte: Some(at),
                ..Default::default()
            },
        ),
        Condition::range(
            "valid_until",
            Range {
                gt: Some(at),
                ..Default::default()
            },
        ),
    ];
    if let Some(lang) = &f.lang {
        must.push(keyword("lang", lang));
    }
    if let Some(channel) = &f.channel {
        must.push(Condition::matches(
            "channels",
            vec![channel.clone(), ANY_CHANNEL.to_string()],
        ));
    }
    Filter::must(must)
}

fn point_id(tenant: &str, article_id: &str, chunk: u32) -> PointId {
    PointId::from(Uuid::from_bytes(point_uuid(tenant, article_id, chunk)).to_string())
}

fn to_point(p: Point) -> Result<PointStruct, IndexError> {
    let id = point_id(&p.tenant, &p.article_id, p.chunk);
    let channels = if p.channels.is_empty() {
        vec![ANY_CHANNEL.to_string()]
    } else {
        p.channels
    };
    let payload = Payload::try_from(json!({
        "tenant": p.tenant,
        "article": p.article_id,
        "version": p.version,
        "chunk": p.chunk,
        "chunks": p.chunks,
        "kind": p.kind.as_str(),
        "lang": p.lang,
        "channels": channels,
        "valid_from": p.valid_from,
        "valid_until": p.valid_until,
    }))
    .map_err(engine)?;
    let mut vectors = NamedVectors::default().add_vector(DENSE, Vector::new_dense(p.dense));
    // A chunk of stop words only has no lexical vector; the point is still found densely.
    if !p.sparse.indices.is_empty() {
        vectors = vectors.add_vector(
            SPARSE,
            Vector::new_sparse(p.sparse.indices, p.sparse.values),
        );
    }
    Ok(PointStruct::new(id, vectors, payload))
}

fn text(payload: &std::collections::HashMap<String, QValue>, key: &str) -> Option<String> {
    match payload.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn integer(payload: &std::collections::HashMap<String, QValue>, key: &str) -> Option<i64> {
    match payload.get(key)?.kind.as_ref()? {
        Kind::IntegerValue(i) => Some(*i),
        Kind::DoubleValue(d) => Some(*d as i64),
        _ => None,
    }
}

impl ServerIndex {
    /// Connects and makes sure the collection exists for `dimension`-sized vectors: it is
    /// created with its payload indexes when absent; one made for another dimension is
    /// refused.
    pub fn open(options: &ServerOptions, dimension: usize) -> Result<Self, IndexError> {
        let open_err = |message: String| IndexError::Open {
            path: format!("{} (collection {})", options.url, options.collection),
            message,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qdrant-client")
            .enable_all()
            .build()
            .map_err(|e| open_err(format!("cannot start the client's runtime: {e}")))?;
        let client = Qdrant::from_url(&options.url)
            .api_key(options.api_key.clone())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let index = Self {
            client,
            collection: options.collection.clone(),
            runtime: Some(runtime),
            timeout: options.timeout,
            tuning: options.tuning.clone(),
        };
        let at_open = |e: IndexError| match e {
            IndexError::Engine(m) => open_err(m),
            other => other,
        };
        index
            .call("health check", |c| async move { c.health_check().await })
            .map_err(at_open)?;
        index.ensure_collection(dimension).map_err(at_open)?;
        Ok(index)
    }

    /// Runs one client call on the back-end's runtime and waits for it (bounded by the
    /// request timeout, plus slack for the connection).
    fn call<T, F, Fut>(&self, what: &str, make: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(Qdrant) -> Fut,
        Fut: Future<Output = Result<T, QdrantError>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| engine("the Qdrant client is shutting down"))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let fut = make(self.client.clone());
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv_timeout(self.timeout * 2 + Duration::from_secs(5)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(engine(format!("Qdrant {what}: {e}"))),
            Err(_) => Err(engine(format!("Qdrant {what}: no answer in time"))),
        }
    }

    fn search_params(&self, query: &Query, limit: usize) -> SearchParamsBuilder {
        let mut params =
            SearchParamsBuilder::default().hnsw_ef(self.tuning.hnsw_ef.max(limit) as u64);
        if self.tuning.acorn && matches!(query, Query::Dense(_)) {
            params = params.acorn(AcornSearchParamsBuilder::new(true));
        }
        match (query, self.tuning.quantization) {
            (Query::Dense(_), Quantization::None) | (Query::Sparse(_), _) => params,
            (Query::Dense(_), _) => params.quantization(
                QuantizationSearchParamsBuilder::default()
                    .rescore(true)
                    .oversampling(self.tuning.oversampling.max(1.0)),
            ),
        }
    }

    fn ensure_collection(&self, dimension: usize) -> Result<(), IndexError> {
        let name = self.collection.clone();
        let exists = self.call("collection check", |c| async move {
            c.collection_exists(name).await
        })?;
        if !exists {
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(
                SPARSE,
                SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
            );
            let t = &self.tuning;
            let mut params = VectorParamsBuilder::new(dimension as u64, Distance::Cosine)
                .hnsw_config(
                    HnswConfigDiffBuilder::default()
                        .m(t.hnsw_m as u64)
                        .ef_construct(t.hnsw_ef_construct as u64),
                );
            // The embedded index's settings (embedded.rs `tune`), in the client's terms.
            params = match t.quantization {
                Quantization::None => params,
                Quantization::Int8 => params.quantization_config(
                    ScalarQuantizationBuilder::default()
                        .r#type(QuantizationType::Int8.into())
                        .quantile(0.99)
                        .always_ram(true),
                ),
                Quantization::Turbo4 | Quantization::Turbo2 => params.quantization_config(
                    TurboQuantizationBuilder::default()
                        .bits(if t.quantization == Quantization::Turbo4 {
                            TurboQuantBitSize::Bits4
                        } else {
                            TurboQuantBitSize::Bits2
                        })
                        .always_ram(true),
                ),
                Quantization::Binary2 => params.quantization_config(
                    BinaryQuantizationBuilder::default()
                        .encoding(BinaryQuantizationEncoding::TwoBits)
                        .query_encoding(BinaryQuantizationQueryEncoding::scalar8bits())
                        .always_ram(true),
                ),
            };
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(DENSE, params);
            let create = CreateCollectionBuilder::new(self.collection.clone())
                .vectors_config(dense)
                .sparse_vectors_config(sparse);
            let created = self.call("create collection", |c| async move {
                c.create_collection(create).await
            });
            // Another daemon of the same site may have created it meanwhile.
            if let Err(e) = created {
                let name = self.collection.clone();
                let now = self.call("collection check", |c| async move {
                    c.collection_exists(name).await
                })?;
                if !now {
                    return Err(e);
                }
            }
            self.create_field_indexes()?;
        }
        let name = self.collection.clone();
        let info = self.call("collection info", |c| async move {
            c.collection_info(name).await
        })?;
        let have = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|kind| match kind {
                VectorsConfigKind::ParamsMap(m) => m.map.get(DENSE).map(|p| p.size),
                VectorsConfigKind::Params(_) => None,
            });
        match have {
            Some(size) if size == dimension as u64 => Ok(()),
            Some(size) => Err(engine(format!(
                "holds {size}-dimensional vectors but the model makes {dimension}-dimensional ones"
            ))),
            None => Err(engine(format!(
                "has no {DENSE:?} vector: it was not made by Confidant"
            ))),
        }
    }

    fn create_field_indexes(&self) -> Result<(), IndexError> {
        for field in KEYWORD_FIELDS {
            let mut b = CreateFieldIndexCollectionBuilder::new(
                self.collection.clone(),
                field,
                FieldType::Keyword,
            )
            .wait(true);
            if field == "tenant" {
                // Qdrant keeps each tenant's points together: filtered searches stay fast.
                b = b.field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true));
            }
            self.call("create payload index", |c| async move {
                c.create_field_index(b).await
            })?;
        }
        for field in INTEGER_FIELDS {
            let b = CreateFieldIndexCollectionBuilder::new(
                self.collection.clone(),
                field,
                FieldType::Integer,
            )
            .wait(true);
            self.call("create payload index", |c| async move {
                c.create_field_index(b).await
            })?;
        }
        Ok(())
    }

    /// Drops the whole collection (the test suite's clean-up).
    #[cfg(test)]
    pub(crate) fn drop_collection(&self) -> Result<(), IndexError> {
        let name = self.collection.clone();
        self.call("drop collection", |c| async move {
            c.delete_collection(name).await
        })?;
        Ok(())
    }

    fn delete_where(&self, filter: Filter) -> Result<(), IndexError> {
        let b = DeletePointsBuilder::new(self.collection.clone())
            .points(filter)
            .wait(true);
        self.call("delete", |c| async move { c.delete_points(b).await })?;
        Ok(())
    }
}

impl Drop for ServerIndex {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's async context
        // (the daemon's shutdown): let its thread wind down on its own instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl VectorIndex for ServerIndex {
    fn replace_article(
        &self,
        tenant: &str,
        article_id: &str,
        version: i64,
        points: Vec<Point>,
    ) -> Result<(), IndexError> {
        let chunks = points.len() as u32;
        if !points.is_empty() {
            let list = points
                .into_iter()
                .map(to_point)
                .collect::<Result<Vec<_>, _>>()?;
            let b = UpsertPointsBuilder::new(self.collection.clone(), list).wait(true);
            self.call("upsert", |c| async move { c.upsert_points(b).await })?;
        }
        // As in the embedded back-end: new points first, then what the new version no
        // longer has (older versions, surplus chunks of a shrunk article).
        let stale = Filter {
            must: vec![keyword("tenant", tenant), keyword("article", article_id)],
            should: vec![
                Filter::must_not([Condition::matches("version", version)]).into(),
                Condition::range(
                    "chunk",
                    Range {
                        gte: Some(f64::from(chunks)),
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        };
        self.delete_where(stale)
    }

    fn delete_article(&self, tenant: &str, article_id: &str) -> Result<(), IndexError> {
        self.delete_where(article_filter(tenant, article_id))
    }

    fn delete_all(&self, tenant: Option<&str>) -> Result<(), IndexError> {
        match tenant {
            Some(t) => self.delete_where(Filter::must([keyword("tenant", t)])),
            // Every point of the collection: an empty filter matches all.
            None => self.delete_where(Filter::default()),
        }
    }

    fn search(
        &self,
        query: &Query,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let (input, using) = match query {
            Query::Dense(v) => (VectorInput::new_dense(v.clone()), DENSE),
            Query::Sparse(s) if s.indices.is_empty() => return Ok(Vec::new()),
            Query::Sparse(s) => (
                VectorInput::new_sparse(s.indices.clone(), s.values.clone()),
                SPARSE,
            ),
        };
        let b = QueryPointsBuilder::new(self.collection.clone())
            .query(QdrantQuery::new_nearest(input))
            .using(using)
            .filter(search_filter(filter))
            .limit(limit as u64)
            .params(self.search_params(query, limit))
            .with_payload(PayloadIncludeSelector::new(vec![
                "article".to_string(),
                "chunk".to_string(),
            ]));
        let response = self.call("query", |c| async move { c.query(b).await })?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                Some(Hit {
                    article_id: text(&p.payload, "article")?,
                    chunk: u32::try_from(integer(&p.payload, "chunk")?).ok()?,
                    score: p.score,
                })
            })
            .collect())
    }

    fn inventory(&self) -> Result<Vec<Indexed>, IndexError> {
        let mut inventory = InventoryBuilder::default();
        let mut offset: Option<PointId> = None;
        loop {
            let mut b = ScrollPointsBuilder::new(self.collection.clone())
                .limit(SCROLL_PAGE)
                .with_payload(true)
                .with_vectors(false);
            if let Some(o) = offset.take() {
                b = b.offset(o);
            }
            let page = self.call("scroll", |c| async move { c.scroll(b).await })?;
            for r in &page.result {
                let p = &r.payload;
                inventory.add(
                    text(p, "tenant").unwrap_or_default(),
                    text(p, "article").unwrap_or_default(),
                    integer(p, "version").unwrap_or(-1),
                    integer(p, "chunks").unwrap_or(-1),
                );
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(inventory.finish()),
            }
        }
    }

    fn count(&self, tenant: Option<&str>) -> Result<usize, IndexError> {
        let mut b = CountPointsBuilder::new(self.collection.clone()).exact(true);
        if let Some(t) = tenant {
            b = b.filter(Filter::must([keyword("tenant", t)]));
        }
        let r = self.call("count", |c| async move { c.count(b).await })?;
        Ok(r.result.map_or(0, |r| r.count as usize))
    }

    /// Writes are acknowledged after the server's WAL has them (`wait`): nothing to do.
    fn flush(&self) -> Result<(), IndexError> {
        Ok(())
    }

    /// The server runs its own optimiser.
    fn optimize(&self) -> Result<bool, IndexError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_embedded_back_ends() {
        // The same UUID for the same chunk, in both back-ends: a site can move between them.
        let id = point_id("t", "a", 3);
        let want = Uuid::from_bytes(point_uuid("t", "a", 3)).to_string();
        assert_eq!(id, PointId::from(want));
    }

    #[test]
    fn empty_lexical_vectors_are_left_out() {
        let mut p = crate::index::suite::point("t", "a", 1, 0, 1);
        p.sparse.indices.clear();
        p.sparse.values.clear();
        let s = to_point(p).unwrap();
        let named = match s.vectors.and_then(|v| v.vectors_options) {
            Some(qdrant_client::qdrant::vectors::VectorsOptions::Vectors(n)) => n,
            other => panic!("expected named vectors, got {other:?}"),
        };
        assert!(named.vectors.contains_key(DENSE));
        assert!(!named.vectors.contains_key(SPARSE));
    }
}
