-- The whole ledger on PostgreSQL, shared by several gateway instances.
-- Amounts are exact: NUMERIC(39,0) holds every u128. Times are unix seconds,
-- except leases: unix milliseconds on the database server's clock, so the
-- instances' clocks never have to agree.

CREATE FUNCTION tollgate_now_ms() RETURNS BIGINT LANGUAGE SQL VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;

-- Gateway instances: a hold is live while its owner's lease is.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    lease_until  BIGINT NOT NULL,
    started_at   BIGINT NOT NULL
);

-- Single-use claims (a challenge id or a transaction hash pays once).
-- A pending claim belongs to the instance verifying it.
CREATE TABLE payment_claims (
    claim_key   TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'settled')),
    owner       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX payment_claims_pending ON payment_claims (owner) WHERE state = 'pending';

-- One row per paid request served (revenue reporting).
CREATE TABLE charge_payments (
    challenge_id TEXT PRIMARY KEY,
    route        TEXT NOT NULL,
    amount       TEXT NOT NULL,
    currency     TEXT NOT NULL,
    reference    TEXT NOT NULL,
    settled_at   BIGINT NOT NULL,
    seq          BIGSERIAL NOT NULL
);

-- Key-value store backing the protocol SDK's replay/state store.
CREATE TABLE protocol_kv (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);

CREATE TABLE usage_records (
    id              BIGSERIAL PRIMARY KEY,
    challenge_id    TEXT,
    route           TEXT NOT NULL,
    model           TEXT NOT NULL,
    quoted          NUMERIC(39, 0) NOT NULL,
    input_tokens    BIGINT NOT NULL,
    cached_tokens   BIGINT NOT NULL,
    output_tokens   BIGINT NOT NULL,
    actual_cost     NUMERIC(39, 0) NOT NULL,
    usage_reported  BOOLEAN NOT NULL,
    recorded_at     BIGINT NOT NULL
);
CREATE INDEX usage_records_challenge ON usage_records (challenge_id);

-- Session channels. Every update is one conditional statement on the
-- channel's row (or takes its row lock), and the CHECKs hold the money rules
-- whatever the interleaving.
CREATE TABLE session_channels (
    channel_id          TEXT PRIMARY KEY,
    protocol            TEXT NOT NULL,
    escrow              TEXT NOT NULL,
    chain_id            BIGINT NOT NULL,
    payer               TEXT NOT NULL,
    payee               TEXT NOT NULL,
    token               TEXT NOT NULL,
    authorized_signer   TEXT NOT NULL,
    descriptor          TEXT,
    deposit             NUMERIC(39, 0) NOT NULL,
    accepted            NUMERIC(39, 0) NOT NULL DEFAULT 0,
    spent               NUMERIC(39, 0) NOT NULL DEFAULT 0,
    reserved            NUMERIC(39, 0) NOT NULL DEFAULT 0,
    settled             NUMERIC(39, 0) NOT NULL DEFAULT 0,
    units               BIGINT NOT NULL DEFAULT 0,
    close_requested_at  BIGINT NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'open',
    opened_at           BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    last_settled_at     BIGINT,
    inflight_kind       TEXT,
    inflight_tx         TEXT,
    inflight_amount     NUMERIC(39, 0),
    inflight_since      BIGINT,
    seq                 BIGSERIAL NOT NULL,
    CHECK (spent >= 0 AND reserved >= 0),
    CHECK (spent + reserved <= accepted),
    CHECK (accepted <= deposit),
    CHECK (settled <= deposit)
);

CREATE TABLE session_vouchers (
    channel_id   TEXT NOT NULL REFERENCES session_channels (channel_id),
    cumulative   NUMERIC(39, 0) NOT NULL,
    signature    TEXT NOT NULL,
    accepted_at  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, cumulative)
);

-- Amounts held for requests in flight, each owned by an instance.
CREATE TABLE session_reservations (
    id           BIGSERIAL PRIMARY KEY,
    channel_id   TEXT NOT NULL REFERENCES session_channels (channel_id),
    amount       NUMERIC(39, 0) NOT NULL CHECK (amount >= 0),
    -- Already charged while its stream runs (checkpoints): in `spent`, not
    -- in `reserved`; `amount` is what is still held beyond it.
    charged      NUMERIC(39, 0) NOT NULL DEFAULT 0 CHECK (charged >= 0),
    owner        TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX session_reservations_owner ON session_reservations (owner);
CREATE INDEX session_reservations_channel ON session_reservations (channel_id);

-- Responses kept for `Idempotency-Key` retries (keyed hash, never the key).
CREATE TABLE idempotent_responses (
    key_hash     TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL,
    owner        TEXT NOT NULL,
    status       INTEGER,
    headers      TEXT,
    body         BYTEA,
    created_at   BIGINT NOT NULL
);
CREATE INDEX idempotent_responses_pending ON idempotent_responses (owner) WHERE state = 'pending';

-- Charges refunded on chain because their answer was not delivered; one row
-- per charge, the signed transfer kept until confirmed (see SQLite's 0004).
CREATE TABLE refunds (
    challenge_id     TEXT PRIMARY KEY,
    route            TEXT NOT NULL,
    charge_reference TEXT NOT NULL,
    payer            TEXT,
    amount           NUMERIC(39, 0) NOT NULL,
    currency         TEXT NOT NULL,
    reason           TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('owed', 'sent', 'refunded')),
    tx_hash          TEXT,
    signed_tx        TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    seq              BIGSERIAL NOT NULL
);
CREATE INDEX refunds_open ON refunds (state) WHERE state <> 'refunded';
