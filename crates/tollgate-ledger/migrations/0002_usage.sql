-- What each paid call actually used and what that usage costs at list price
-- (plus markup). `quoted` is what was asked up front.
CREATE TABLE IF NOT EXISTS usage_records (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge_id      TEXT,
    route             TEXT NOT NULL,
    model             TEXT NOT NULL,
    quoted            TEXT NOT NULL,
    input_tokens      INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    output_tokens     INTEGER NOT NULL,
    actual_cost       TEXT NOT NULL,
    usage_reported    INTEGER NOT NULL,
    recorded_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_challenge ON usage_records (challenge_id);
