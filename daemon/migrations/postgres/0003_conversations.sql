-- Bot conversations, their turns (customer text redacted before it is written) and the
-- bot's decisions; routing advice and where each contact was finally handled.
-- customer_id is the site's own id, kept so that a customer's data can be erased.
CREATE TABLE conversations (
    tenant          TEXT NOT NULL,
    id              TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    channel         TEXT NOT NULL,
    lang            TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    turns           BIGINT NOT NULL,
    failures        BIGINT NOT NULL,
    handoff_reason  TEXT NOT NULL,
    handoff_queue   TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX conversations_customer ON conversations (tenant, customer_id);
CREATE INDEX conversations_updated ON conversations (updated_at);

CREATE TABLE conversation_turns (
    tenant          TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    speaker         TEXT NOT NULL,
    text            TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (tenant, conversation_id, seq)
);

CREATE TABLE bot_decisions (
    tenant          TEXT NOT NULL,
    id              TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    outcome         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    article_id      TEXT NOT NULL,
    article_version BIGINT NOT NULL,
    confidence      DOUBLE PRECISION NOT NULL,
    intent          TEXT NOT NULL,
    queue           TEXT NOT NULL,
    priority        BIGINT NOT NULL,
    feedback        TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX bot_decisions_conversation ON bot_decisions (tenant, conversation_id);

CREATE TABLE routing_decisions (
    tenant          TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    intent          TEXT NOT NULL,
    risk            TEXT NOT NULL,
    queue           TEXT NOT NULL,
    priority        BIGINT NOT NULL,
    handled_queue   TEXT NOT NULL,
    at              BIGINT NOT NULL,
    outcome_at      BIGINT,
    PRIMARY KEY (tenant, contact_id)
);
CREATE INDEX routing_decisions_customer ON routing_decisions (tenant, customer_id);
CREATE INDEX routing_decisions_at ON routing_decisions (at);
