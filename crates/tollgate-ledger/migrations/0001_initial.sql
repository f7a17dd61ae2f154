-- Single-use claims: a challenge id or a transaction hash can pay for one request.
-- The PRIMARY KEY makes the claim an atomic insert.
CREATE TABLE IF NOT EXISTS payment_claims (
    claim_key   TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'settled')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per paid request served (revenue reporting).
CREATE TABLE IF NOT EXISTS charge_payments (
    challenge_id TEXT PRIMARY KEY,
    route        TEXT NOT NULL,
    amount       TEXT NOT NULL,
    currency     TEXT NOT NULL,
    reference    TEXT NOT NULL,
    settled_at   INTEGER NOT NULL
);

-- Key-value store backing the protocol SDK's replay/state store.
CREATE TABLE IF NOT EXISTS protocol_kv (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
