-- Several gateway instances on one database. Every hold (reservation,
-- pending claim, in-flight Idempotency-Key) records the instance that owns
-- it; an owner's holds are live while its lease is (`lease_until`, unix
-- milliseconds, renewed by the instance's keeper). Holds written before this
-- migration have no owner and count as free.
CREATE TABLE IF NOT EXISTS instances (
    id           TEXT PRIMARY KEY,
    lease_until  INTEGER NOT NULL,
    started_at   INTEGER NOT NULL
);

-- Roles exactly one live instance plays (the settlement worker): held by an
-- instance while its lease lives.
CREATE TABLE IF NOT EXISTS leader_leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL
);

ALTER TABLE session_reservations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE payment_claims ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotent_responses ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS session_reservations_owner ON session_reservations (owner);
CREATE INDEX IF NOT EXISTS session_reservations_channel ON session_reservations (channel_id);
