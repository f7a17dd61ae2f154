-- Session (escrow payment channel) accounting. Amounts are integers in the
-- token's base units; SQLite INTEGER holds up to 2^63-1 (9.2e12 tokens at six
-- decimals), far above any channel we accept (the caller clamps).
CREATE TABLE IF NOT EXISTS session_channels (
    channel_id          TEXT PRIMARY KEY,          -- lowercase 0x-hex bytes32
    protocol            TEXT NOT NULL,             -- 'v1' | 'v2'
    escrow              TEXT NOT NULL,
    chain_id            INTEGER NOT NULL,
    payer               TEXT NOT NULL,
    payee               TEXT NOT NULL,
    token               TEXT NOT NULL,
    authorized_signer   TEXT NOT NULL,             -- who signs vouchers
    descriptor          TEXT,                      -- v2 channel descriptor (JSON)
    deposit             INTEGER NOT NULL,          -- latest verified on-chain deposit
    accepted            INTEGER NOT NULL DEFAULT 0,-- highest accepted cumulative voucher
    spent               INTEGER NOT NULL DEFAULT 0,-- charged for delivered service
    reserved            INTEGER NOT NULL DEFAULT 0,-- held by requests in flight
    settled             INTEGER NOT NULL DEFAULT 0,-- settled on chain
    units               INTEGER NOT NULL DEFAULT 0,-- metered units delivered
    close_requested_at  INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'open', -- open | closing | finalized
    opened_at           INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_settled_at     INTEGER,
    -- A settle/close transaction signed and possibly broadcast, not yet
    -- confirmed: reconciled after a crash.
    inflight_kind       TEXT,
    inflight_tx         TEXT,
    inflight_amount     INTEGER,
    inflight_since      INTEGER,
    CHECK (spent + reserved <= accepted),
    CHECK (accepted <= deposit),
    CHECK (settled <= deposit)
);

-- Every accepted voucher: the highest is what we can settle; the smallest one
-- covering `spent` is what a cooperative close captures.
CREATE TABLE IF NOT EXISTS session_vouchers (
    channel_id   TEXT NOT NULL REFERENCES session_channels (channel_id),
    cumulative   INTEGER NOT NULL,
    signature    TEXT NOT NULL,
    accepted_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, cumulative)
);

-- Amounts held for requests in flight. A restart releases them all: the
-- process that held them is gone, and nothing is charged for service that
-- was not committed.
CREATE TABLE IF NOT EXISTS session_reservations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id   TEXT NOT NULL REFERENCES session_channels (channel_id),
    amount       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);

-- Responses kept for `Idempotency-Key` retries. `key_hash` is a keyed hash of
-- (channel, key), never the key itself.
CREATE TABLE IF NOT EXISTS idempotent_responses (
    key_hash     TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,                    -- hash of method, path and body
    state        TEXT NOT NULL,                    -- 'pending' | 'done'
    status       INTEGER,
    headers      TEXT,                             -- JSON [[name, value], ...]
    body         BLOB,
    created_at   INTEGER NOT NULL
);
