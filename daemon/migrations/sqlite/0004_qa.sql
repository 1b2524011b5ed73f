-- QA results: one row per scored contact (re-scoring replaces it), the rules' outcomes as
-- JSON ({"rule id": "pass" | "fail" | "not_applicable"}). No transcript text is kept.
CREATE TABLE qa_results (
    tenant          TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    team            TEXT NOT NULL,
    rubric          TEXT NOT NULL,
    total           REAL NOT NULL,
    critical_failed BIGINT NOT NULL,
    outcomes        TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (tenant, conversation_id)
);
CREATE INDEX qa_results_at ON qa_results (at);
CREATE INDEX qa_results_customer ON qa_results (tenant, customer_id);
