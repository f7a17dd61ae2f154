-- Charges refunded on chain because the paid answer was not delivered (an
-- upstream failure after the transfer was broadcast, or a stream that broke
-- off). One row per charge: the challenge id makes a refund idempotent. The
-- signed transfer is stored before it is broadcast, so after a crash the
-- very same bytes are sent again (its nonce can be used once: it can never
-- pay twice).
CREATE TABLE IF NOT EXISTS refunds (
    challenge_id     TEXT PRIMARY KEY,
    route            TEXT NOT NULL,
    charge_reference TEXT NOT NULL,          -- the charge's transaction hash
    payer            TEXT,                   -- who is refunded, once known
    amount           TEXT NOT NULL,          -- base units, decimal
    currency         TEXT NOT NULL,
    reason           TEXT NOT NULL,          -- 'undelivered' | 'partial'
    state            TEXT NOT NULL CHECK (state IN ('owed', 'sent', 'refunded')),
    tx_hash          TEXT,                   -- the refund transfer, once signed
    signed_tx        TEXT,                   -- its signed bytes (0x-hex)
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_open ON refunds (state) WHERE state != 'refunded';

-- The part of a reservation already charged while its stream runs
-- (checkpoints): moved from `reserved` to `spent`, so a crash mid-stream
-- keeps what was delivered. `amount` is what is still held beyond it.
ALTER TABLE session_reservations ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
