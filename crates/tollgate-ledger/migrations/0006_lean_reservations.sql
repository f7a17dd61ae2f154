-- `session_reservations` only holds the requests in flight (a handful of
-- rows), so its indexes saved nothing on the rare scans by owner or channel
-- while every request's insert and delete rewrote three pages per commit
-- instead of one (docs/performance.md).
DROP INDEX IF EXISTS session_reservations_owner;
DROP INDEX IF EXISTS session_reservations_channel;
