-- Neither table needs AUTOINCREMENT, which cost every insert a lookup and
-- an update of `sqlite_sequence` and every group commit one more page:
-- usage record ids only order a challenge's records (rowids of a table
-- never deleted from only grow), and reservation ids are drawn by each
-- process so that none is ever reused (src/reservation_ids.rs). SQLite
-- cannot drop AUTOINCREMENT in place, so both tables are rebuilt; the ids
-- are kept.
CREATE TABLE usage_records_rebuilt (
    id                INTEGER PRIMARY KEY,
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
INSERT INTO usage_records_rebuilt (id, challenge_id, route, model, quoted, input_tokens,
    cached_tokens, output_tokens, actual_cost, usage_reported, recorded_at)
SELECT id, challenge_id, route, model, quoted, input_tokens,
    cached_tokens, output_tokens, actual_cost, usage_reported, recorded_at
FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_rebuilt RENAME TO usage_records;
CREATE INDEX usage_records_challenge ON usage_records (challenge_id);

CREATE TABLE session_reservations_rebuilt (
    id           INTEGER PRIMARY KEY,
    channel_id   TEXT NOT NULL REFERENCES session_channels (channel_id),
    amount       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    charged      INTEGER NOT NULL DEFAULT 0,
    owner        TEXT NOT NULL DEFAULT ''
);
INSERT INTO session_reservations_rebuilt (id, channel_id, amount, created_at, charged, owner)
SELECT id, channel_id, amount, created_at, charged, owner FROM session_reservations;
DROP TABLE session_reservations;
ALTER TABLE session_reservations_rebuilt RENAME TO session_reservations;
