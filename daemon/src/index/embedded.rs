//! The embedded back-end: Qdrant's own engine in-process (`qdrant-edge`), on disk under
//! the state directory, with its write-ahead log replayed on open. The appliance needs no
//! second server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::external::uuid::Uuid;
use qdrant_edge::{
    AcornSearchParams, Condition, Distance, EdgeConfig, EdgeConfigBuilder, EdgeShard,
    EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder, FieldCondition, Filter, JsonPath,
    Match, Modifier, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, QuantizationConfig, QuantizationSearchParams, QueryEnum, QueryRequest, Range,
    ScoringQuery, ScrollRequest, SearchParams, UpdateOperation, VectorInternal,
    WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

use super::locator::{Locator, Needs, Scope};
use super::{
    ANY_CHANNEL, Hit, IndexError, IndexTuning, Indexed, InventoryBuilder, Point, Quantization,
    Query, SearchFilter, VectorIndex, point_uuid,
};

const DENSE: &str = "dense";
const SPARSE: &str = "bm25";

/// Payload fields with an index: every filter the daemon uses needs one.
const KEYWORD_FIELDS: [&str; 4] = ["tenant", "article", "lang", "channels"];
const INTEGER_FIELDS: [&str; 4] = ["version", "chunk", "valid_from", "valid_until"];

pub struct EmbeddedIndex {
    shard: EdgeShard,
    /// qdrant-edge's `flush` panics when it finds the WAL or the segment holder locked, so
    /// writers and the optimiser share this gate and a flush takes it alone. Searches do
    /// not take it: they never wait for a flush or an optimisation.
    gate: RwLock<()>,
    /// Candidates the HNSW search explores: higher is slower and closer to exact.
    hnsw_ef: usize,
    /// Set when the dense vectors have int8 copies: searched first, re-scored after.
    quantized_search: Option<QuantizationSearchParams>,
    acorn: bool,
    /// Exhaustive search instead of the graph walk (benches measure recall against it).
    exact: bool,
    keys: Keys,
    /// Each point's article and chunk, so that searches read no payloads.
    locator: RwLock<Locator>,
    /// The inventory read by the same scroll as the locator at open, for the catch-up that
    /// follows: at a million chunks a second scroll of every payload took ~10 s of the
    /// start. Dropped by the first write, after which only a fresh scroll is right.
    opening_inventory: std::sync::Mutex<Option<Vec<Indexed>>>,
}

/// The payload keys searches filter on, parsed once: a filter is built for every search,
/// and building it from JSON cost ~3% of a bot answer's CPU.
struct Keys {
    tenant: JsonPath,
    lang: JsonPath,
    channels: JsonPath,
    valid_from: JsonPath,
    valid_until: JsonPath,
    article: JsonPath,
    chunk: JsonPath,
}

impl Keys {
    fn new() -> Result<Self, IndexError> {
        let key = |k: &str| {
            k.parse::<JsonPath>()
                .map_err(|_| engine(format!("payload key {k}")))
        };
        Ok(Self {
            tenant: key("tenant")?,
            lang: key("lang")?,
            channels: key("channels")?,
            valid_from: key("valid_from")?,
            valid_until: key("valid_until")?,
            article: key("article")?,
            chunk: key("chunk")?,
        })
    }
}

fn range(lte: Option<i64>, gt: Option<i64>) -> Range<OrderedFloat<f64>> {
    // Millisecond timestamps are far below 2^53: exact as f64.
    Range {
        lt: None,
        gt: gt.map(|v| OrderedFloat(v as f64)),
        gte: None,
        lte: lte.map(|v| OrderedFloat(v as f64)),
    }
}

fn engine(e: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(e.to_string())
}

fn filter(value: Value) -> Result<Filter, IndexError> {
    serde_json::from_value(value).map_err(engine)
}

fn keyword(key: &str, value: &str) -> Value {
    json!({"key": key, "match": {"value": value}})
}

impl EmbeddedIndex {
    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, op: UpdateOperation) -> Result<(), IndexError> {
        // Taken before the write: even one that fails half-way may have changed the index.
        self.opening().take();
        let _g = self.shared();
        self.shard.update(op).map_err(engine)
    }

    /// Writes `tuning` into an engine configuration. The optimiser compares it with each
    /// segment's and rebuilds those that differ, so a change reaches an existing index.
    fn tune(config: &mut EdgeConfig, tuning: &IndexTuning) -> Result<(), String> {
        config.hnsw_config.m = tuning.hnsw_m;
        config.hnsw_config.ef_construct = tuning.hnsw_ef_construct;
        // Always in RAM, whatever the full vectors' storage: the walk reads them.
        let quantization = match tuning.quantization {
            Quantization::None => None,
            // Quantile 0.99 clips the rare extreme components so that the other 255 steps
            // are spent where the values are.
            Quantization::Int8 => Some(json!({
                "scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}
            })),
            Quantization::Turbo4 => Some(json!({"turbo": {"bits": "bits4", "always_ram": true}})),
            Quantization::Turbo2 => Some(json!({"turbo": {"bits": "bits2", "always_ram": true}})),
            Quantization::Binary2 => Some(json!({"binary": {
                "encoding": "two_bits", "query_encoding": "scalar8bits", "always_ram": true
            }})),
        }
        .map(serde_json::from_value::<QuantizationConfig>)
        .transpose()
        .map_err(|e| e.to_string())?;
        let dense = config
            .vectors
            .get_mut(DENSE)
            .ok_or("the index has no dense vectors")?;
        dense.quantization_config = quantization;
        // A per-vector graph setting would override the shard-wide one just written.
        dense.hnsw_config = None;
        let o = &mut config.optimizers;
        o.max_segment_size = (tuning.max_segment_mb > 0).then_some(tuning.max_segment_mb * 1024);
        o.default_segment_number = (tuning.segments > 0).then_some(tuning.segments);
        o.indexing_threshold =
            (tuning.indexing_threshold_kb > 0).then_some(tuning.indexing_threshold_kb);
        Ok(())
    }

    /// Opens the index at `dir`, creating it for `dimension`-sized vectors if absent. An
    /// existing index made for another dimension is refused (the caller rebuilds it).
    pub fn open(dir: &Path, dimension: usize, tuning: &IndexTuning) -> Result<Self, IndexError> {
        let open_err = |message: String| IndexError::Open {
            path: dir.display().to_string(),
            message,
        };
        let exists = dir.join("edge_config.json").is_file();
        let shard = if exists {
            let mut config = match EdgeConfig::load(dir) {
                Some(loaded) => loaded.map_err(|e| open_err(e.to_string()))?,
                None => return Err(open_err("edge_config.json cannot be read".into())),
            };
            if config.vectors.contains_key(DENSE) {
                Self::tune(&mut config, tuning).map_err(open_err)?;
            }
            EdgeShard::load(dir, Some(config)).map_err(|e| open_err(e.to_string()))?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
            let mut config = EdgeConfigBuilder::new()
                .vector(
                    DENSE,
                    EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).build(),
                )
                .sparse_vector(
                    SPARSE,
                    EdgeSparseVectorParamsBuilder::new()
                        .modifier(Modifier::Idf)
                        .build(),
                )
                .build();
            Self::tune(&mut config, tuning).map_err(open_err)?;
            let shard = EdgeShard::new(dir, config).map_err(|e| open_err(e.to_string()))?;
            for (fields, schema) in [
                (&KEYWORD_FIELDS[..], PayloadSchemaType::Keyword),
                (&INTEGER_FIELDS[..], PayloadSchemaType::Integer),
            ] {
                for field in fields {
                    let op = UpdateOperation::FieldIndexOperation(
                        qdrant_edge::FieldIndexOperations::CreateIndex(qdrant_edge::CreateIndex {
                            field_name: field.parse().map_err(|_| open_err(field.to_string()))?,
                            field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                        }),
                    );
                    shard.update(op).map_err(|e| open_err(e.to_string()))?;
                }
            }
            shard.flush();
            shard
        };
        let have = shard
            .config()
            .vectors
            .get(DENSE)
            .map(|v| v.size)
            .unwrap_or(0);
        if have != dimension {
            return Err(open_err(format!(
                "holds {have}-dimensional vectors but the model makes {dimension}-dimensional ones"
            )));
        }
        let index = Self {
            shard,
            gate: RwLock::new(()),
            hnsw_ef: tuning.hnsw_ef.max(1),
            quantized_search: (tuning.quantization != Quantization::None).then_some(
                QuantizationSearchParams {
                    ignore: false,
                    rescore: Some(true),
                    oversampling: Some(tuning.oversampling.max(1.0)),
                },
            ),
            acorn: tuning.acorn,
            exact: false,
            keys: Keys::new()?,
            locator: RwLock::new(Locator::default()),
            opening_inventory: std::sync::Mutex::new(None),
        };
        index.locate_all()?;
        Ok(index)
    }

    /// Fills the locator and the opening inventory from every point's payload (at open).
    fn locate_all(&self) -> Result<(), IndexError> {
        let mut locator = Locator::default();
        let mut inventory = InventoryBuilder::default();
        self.scroll_all(None, |p| {
            let s = |k: &str| p.get(k).and_then(Value::as_str);
            let n = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(-1);
            let chunk = p.get("chunk").and_then(Value::as_u64);
            if let (Some(t), Some(a), Some(c)) = (s("tenant"), s("article"), chunk) {
                // A field missing (never written so) reads as the scope needing most.
                let all_channels = p
                    .get("channels")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c.as_str() == Some(ANY_CHANNEL)));
                let scope = Scope::new(
                    s("lang").unwrap_or(""),
                    n("valid_from"),
                    n("valid_until"),
                    all_channels,
                );
                locator.add(t, a, c as u32, scope);
            } else {
                locator.add_stray();
            }
            inventory.add(
                s("tenant").unwrap_or("").to_string(),
                s("article").unwrap_or("").to_string(),
                n("version"),
                n("chunks"),
            );
        })?;
        *self.locator_mut() = locator;
        *self.opening() = Some(inventory.finish());
        Ok(())
    }

    fn opening(&self) -> std::sync::MutexGuard<'_, Option<Vec<Indexed>>> {
        self.opening_inventory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn locator(&self) -> std::sync::RwLockReadGuard<'_, Locator> {
        self.locator.read().unwrap_or_else(|p| p.into_inner())
    }

    fn locator_mut(&self) -> std::sync::RwLockWriteGuard<'_, Locator> {
        self.locator.write().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn forget_locations(&self) {
        self.locator_mut().forget(None);
    }

    #[cfg(test)]
    pub(crate) fn located_points(&self) -> usize {
        self.locator().len()
    }

    /// Where the points the locator does not know yet (or whose language a write is
    /// changing) are, from their payloads.
    fn hits_from_payloads(
        &self,
        points: &[(PointId, f32)],
    ) -> Result<HashMap<PointId, FromPayload>, IndexError> {
        let ids: Vec<PointId> = points.iter().map(|(id, _)| *id).collect();
        let records = self
            .shard
            .retrieve(
                &ids,
                Some(WithPayloadInterface::Fields(vec![
                    self.keys.article.clone(),
                    self.keys.chunk.clone(),
                    self.keys.lang.clone(),
                ])),
                None,
            )
            .map_err(engine)?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let payload = r.payload?;
                let article = payload.0.get("article")?.as_str()?.to_string();
                let chunk = payload.0.get("chunk")?.as_u64()? as u32;
                // Read only to check it; a point without one fails any language check.
                let lang = payload.0.get("lang").and_then(Value::as_str).unwrap_or("");
                let lang = lang.to_string();
                Some((
                    r.id,
                    FromPayload {
                        article,
                        chunk,
                        lang,
                    },
                ))
            })
            .collect())
    }

    /// Changes how many candidates a search explores, for comparisons on one built index.
    pub fn set_hnsw_ef(&mut self, hnsw_ef: usize) {
        self.hnsw_ef = hnsw_ef.max(1);
    }

    /// Searches exhaustively (true) or by the graph, for recall measurements.
    pub fn set_exact(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// Segments and how many of the dense vectors an HNSW graph covers (the rest are
    /// searched by brute force until the optimiser gets to them).
    pub fn segments(&self) -> (usize, usize) {
        let info = self.shard.info();
        (info.segments_count, info.indexed_vectors_count)
    }

    fn article_filter(tenant: &str, article_id: &str) -> Result<Filter, IndexError> {
        filter(json!({"must": [keyword("tenant", tenant), keyword("article", article_id)]}))
    }

    /// The conditions of `f` that `needs` keeps; `None` when every point meets them all.
    fn search_filter(&self, f: &SearchFilter, needs: Needs) -> Option<Filter> {
        let k = &self.keys;
        let field = |c: FieldCondition| Condition::Field(c);
        let mut must = Vec::new();
        if needs.tenant {
            must.push(field(FieldCondition::new_match(
                k.tenant.clone(),
                Match::from(f.tenant.clone()),
            )));
        }
        if needs.window {
            must.push(field(FieldCondition::new_range(
                k.valid_from.clone(),
                range(Some(f.at_ms), None),
            )));
            must.push(field(FieldCondition::new_range(
                k.valid_until.clone(),
                range(None, Some(f.at_ms)),
            )));
        }
        if let Some(lang) = f.lang.as_ref().filter(|_| needs.lang) {
            must.push(field(FieldCondition::new_match(
                k.lang.clone(),
                Match::from(lang.clone()),
            )));
        }
        if let Some(channel) = f.channel.as_ref().filter(|_| needs.channel) {
            must.push(field(FieldCondition::new_match(
                k.channels.clone(),
                Match::from(vec![channel.clone(), ANY_CHANNEL.to_string()]),
            )));
        }
        (!must.is_empty()).then(|| Filter {
            must: Some(must),
            ..Filter::new()
        })
    }

    fn scroll_all(
        &self,
        filter: Option<Filter>,
        mut each: impl FnMut(&serde_json::Map<String, Value>),
    ) -> Result<(), IndexError> {
        let mut offset = None;
        loop {
            let (records, next) = self
                .shard
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(1000),
                    filter: filter.clone(),
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(engine)?;
            for r in &records {
                if let Some(p) = &r.payload {
                    each(&p.0);
                }
            }
            match next {
                Some(n) => offset = Some(n),
                None => return Ok(()),
            }
        }
    }
}

struct FromPayload {
    article: String,
    chunk: u32,
    lang: String,
}

fn to_point(p: Point) -> Result<qdrant_edge::PointStructPersisted, IndexError> {
    let id = PointId::Uuid(Uuid::from_bytes(point_uuid(
        &p.tenant,
        &p.article_id,
        p.chunk,
    )));
    let channels = if p.channels.is_empty() {
        vec![ANY_CHANNEL.to_string()]
    } else {
        p.channels
    };
    let payload = json!({
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
    });
    let vectors = qdrant_edge::Vectors::new_named([
        (DENSE.to_string(), qdrant_edge::Vector::new_dense(p.dense)),
        (
            SPARSE.to_string(),
            qdrant_edge::Vector::new_sparse(p.sparse.indices, p.sparse.values).map_err(engine)?,
        ),
    ]);
    // Payload is always a JSON object here, which `PointStruct::new` requires.
    Ok(qdrant_edge::PointStruct::new(id, vectors, payload).into())
}

impl EmbeddedIndex {
    /// One query. With `lang_after`, a language most of the tenant's articles share is
    /// checked on the hits instead of in the graph walk; `None` when that left fewer than
    /// `limit` hits though more might match (the caller searches again without it).
    fn search_once(
        &self,
        query: &Query,
        filter: &SearchFilter,
        limit: usize,
        lang_after: bool,
    ) -> Result<Option<Vec<Hit>>, IndexError> {
        let (vector, using) = match query {
            Query::Dense(v) => (VectorInternal::Dense(v.clone()), DENSE),
            Query::Sparse(s) => (
                VectorInternal::Sparse(qdrant_edge::SparseVector {
                    indices: s.indices.clone(),
                    values: s.values.clone(),
                }),
                SPARSE,
            ),
        };
        // Held to the end of the query: no write can admit a scope that needs a condition
        // left out here while this search runs (see `locator`).
        let locator = self.locator();
        let mut needs = locator.needs(filter);
        let after = if lang_after && needs.lang {
            locator.lang_after(filter)
        } else {
            None
        };
        // A few more hits than asked, for those the language check drops.
        let asked = match after {
            Some(a) => {
                needs.lang = false;
                limit + limit.min(usize::try_from(a.others.saturating_mul(8)).unwrap_or(limit))
            }
            None => limit,
        };
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(
                qdrant_edge::NamedQuery::new(vector, using),
            ))),
            filter: self.search_filter(filter, needs),
            score_threshold: None,
            limit: asked,
            offset: 0,
            params: Some(SearchParams {
                hnsw_ef: Some(self.hnsw_ef.max(asked)),
                exact: self.exact,
                quantization: match query {
                    Query::Dense(_) => self.quantized_search,
                    Query::Sparse(_) => None,
                },
                acorn: (self.acorn && matches!(query, Query::Dense(_))).then_some(
                    AcornSearchParams {
                        enable: true,
                        max_selectivity: None,
                    },
                ),
                ..Default::default()
            }),
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(false),
        };
        let points = self.shard.query(request).map_err(engine)?;
        let mut hits: Vec<Option<Hit>> = Vec::with_capacity(points.len());
        let mut unknown = Vec::new();
        for p in &points {
            let found = match &p.id {
                PointId::Uuid(u) => locator.get(u.as_u128()),
                PointId::NumId(_) => None,
            };
            match found {
                Some(w) if after.is_none_or(|a| w.lang == Some(a.lang)) => hits.push(Some(Hit {
                    article_id: w.article.to_string(),
                    chunk: w.chunk,
                    score: p.score,
                })),
                // Another language's point.
                Some(w) if w.lang.is_some() => {}
                _ => {
                    unknown.push((p.id, p.score));
                    hits.push(None);
                }
            }
        }
        let wanted = after.and_then(|a| locator.lang_of(a.lang).map(str::to_string));
        drop(locator);
        if !unknown.is_empty() {
            let mut read = self.hits_from_payloads(&unknown)?;
            let mut next = unknown.into_iter();
            for slot in hits.iter_mut().filter(|h| h.is_none()) {
                let Some((id, score)) = next.next() else {
                    break;
                };
                // A point deleted meanwhile has no payload left: it is dropped.
                *slot = read
                    .remove(&id)
                    .filter(|found| wanted.as_ref().is_none_or(|w| *w == found.lang))
                    .map(|found| Hit {
                        article_id: found.article,
                        chunk: found.chunk,
                        score,
                    });
            }
        }
        let mut hits: Vec<Hit> = hits.into_iter().flatten().collect();
        if after.is_some() && hits.len() < limit && points.len() == asked {
            return Ok(None);
        }
        hits.truncate(limit);
        Ok(Some(hits))
    }
}

impl VectorIndex for EmbeddedIndex {
    fn replace_article(
        &self,
        tenant: &str,
        article_id: &str,
        version: i64,
        points: Vec<Point>,
    ) -> Result<(), IndexError> {
        let chunks = points.len() as u32;
        let mut scopes: Vec<Scope> = Vec::new();
        for p in &points {
            let s = Scope::of(p);
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        {
            let mut locator = self.locator_mut();
            for s in &scopes {
                locator.admit(tenant, article_id, s.clone());
            }
        }
        if !points.is_empty() {
            let list = points
                .into_iter()
                .map(to_point)
                .collect::<Result<Vec<_>, _>>()?;
            self.apply(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(list)),
            ))?;
        }
        // Then drop what the new version no longer has: older versions' points and, when
        // the article shrank, its surplus chunks.
        let stale = filter(json!({
            "must": [keyword("tenant", tenant), keyword("article", article_id)],
            "should": [
                {"must_not": [{"key": "version", "match": {"value": version}}]},
                {"key": "chunk", "range": {"gte": chunks}},
            ],
        }))?;
        self.apply(UpdateOperation::PointOperation(
            PointOperations::DeletePointsByFilter(stale),
        ))?;
        self.locator_mut().set(tenant, article_id, chunks, &scopes);
        Ok(())
    }

    fn delete_article(&self, tenant: &str, article_id: &str) -> Result<(), IndexError> {
        self.apply(UpdateOperation::PointOperation(
            PointOperations::DeletePointsByFilter(Self::article_filter(tenant, article_id)?),
        ))?;
        self.locator_mut().set(tenant, article_id, 0, &[]);
        Ok(())
    }

    fn delete_all(&self, tenant: Option<&str>) -> Result<(), IndexError> {
        let f = match tenant {
            Some(t) => filter(json!({"must": [keyword("tenant", t)]}))?,
            None => Filter::new(),
        };
        self.apply(UpdateOperation::PointOperation(
            PointOperations::DeletePointsByFilter(f),
        ))?;
        self.locator_mut().forget(tenant);
        Ok(())
    }

    fn search(
        &self,
        query: &Query,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        if let Query::Sparse(s) = query
            && s.indices.is_empty()
        {
            // Nothing lexical to match (only stop words, say).
            return Ok(Vec::new());
        }
        match self.search_once(query, filter, limit, true)? {
            Some(hits) => Ok(hits),
            // Too many hits in other languages: again, with the language in the filter.
            None => Ok(self
                .search_once(query, filter, limit, false)?
                .unwrap_or_default()),
        }
    }

    fn inventory(&self) -> Result<Vec<Indexed>, IndexError> {
        if let Some(opened) = self.opening().take() {
            return Ok(opened);
        }
        let mut inventory = InventoryBuilder::default();
        self.scroll_all(None, |p| {
            let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let n = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(-1);
            inventory.add(s("tenant"), s("article"), n("version"), n("chunks"));
        })?;
        Ok(inventory.finish())
    }

    fn count(&self, tenant: Option<&str>) -> Result<usize, IndexError> {
        let f = match tenant {
            Some(t) => Some(filter(json!({"must": [keyword("tenant", t)]}))?),
            None => None,
        };
        self.shard
            .count(qdrant_edge::CountRequest {
                filter: f,
                exact: true,
            })
            .map_err(engine)
    }

    fn flush(&self) -> Result<(), IndexError> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        // It also panics on an I/O error; that must not take the daemon down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shard.flush()))
            .map_err(|_| engine("flushing the index to disk failed (disk full or read-only?)"))
    }

    fn optimize(&self) -> Result<bool, IndexError> {
        let _g = self.shared();
        self.shard.optimize().map_err(engine)
    }
}
