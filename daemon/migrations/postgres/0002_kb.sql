-- Knowledge-base articles: the source of truth the vector index is derived from.
-- A deleted article stays as a tombstone (deleted_at set) until the index has dropped it.
CREATE TABLE kb_articles (
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,
    title        TEXT NOT NULL,
    questions    TEXT NOT NULL,
    answer       TEXT NOT NULL,
    body         TEXT NOT NULL,
    lang         TEXT NOT NULL,
    tags         TEXT NOT NULL,
    channels     TEXT NOT NULL,
    valid_from   BIGINT NOT NULL,
    valid_until  BIGINT NOT NULL,
    status       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX kb_articles_deleted ON kb_articles (deleted_at);
