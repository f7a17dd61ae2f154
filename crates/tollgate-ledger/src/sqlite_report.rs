//! SQLite queries behind [`Ledger::revenue`](crate::Ledger::revenue).
//!
//! A charge is one `charge_payments` row: its amount is what was paid, less
//! its refund (`refunds`, owed or sent or done: the money goes back); its
//! model and tokens come from the (first) usage record of the same
//! challenge, when the route is metered. Every other usage record with a challenge was paid
//! by a session (its `actual_cost` is what the channel was charged).

use rusqlite::params;

use crate::report::{RevenueIntent, RevenueQuery, RevenueRow};
use crate::{LedgerError, SqliteLedger};

const REVENUE_SQL: &str = "
SELECT (c.settled_at / ?3) * ?3 AS bucket, c.route, COALESCE(u.model, '') AS model, 0,
       COUNT(*), SUM(CAST(c.amount AS INTEGER)),
       COALESCE(SUM(u.input_tokens), 0), COALESCE(SUM(u.output_tokens), 0),
       COALESCE(SUM(CAST(r.amount AS INTEGER)), 0)
FROM charge_payments c
LEFT JOIN usage_records u
    ON u.id = (SELECT MIN(id) FROM usage_records WHERE challenge_id = c.challenge_id)
LEFT JOIN refunds r ON r.challenge_id = c.challenge_id
WHERE c.settled_at >= ?1 AND c.settled_at < ?2
GROUP BY bucket, c.route, model
UNION ALL
SELECT (u.recorded_at / ?3) * ?3 AS bucket, u.route, u.model, 1,
       COUNT(*), SUM(CAST(u.actual_cost AS INTEGER)),
       SUM(u.input_tokens), SUM(u.output_tokens), 0
FROM usage_records u
WHERE u.challenge_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM charge_payments c WHERE c.challenge_id = u.challenge_id)
  AND u.recorded_at >= ?1 AND u.recorded_at < ?2
GROUP BY bucket, u.route, u.model
ORDER BY 1, 2, 3, 4";

pub(crate) async fn revenue(
    ledger: &SqliteLedger,
    query: RevenueQuery,
) -> Result<Vec<RevenueRow>, LedgerError> {
    let since = query.since.unwrap_or(i64::MIN);
    let until = query.until.unwrap_or(i64::MAX);
    // One bucket for everything: integer division by a width wider than any
    // timestamp puts every row in bucket 0.
    let width = query.bucket_secs.map_or(i64::MAX, |w| i64::from(w.max(1)));
    ledger
        .with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(REVENUE_SQL)?;
            let rows = stmt.query_map(params![since, until, width], |r| {
                let count = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(RevenueRow {
                    bucket: r.get(0)?,
                    route: r.get(1)?,
                    model: r.get(2)?,
                    intent: if r.get::<_, i64>(3)? == 0 {
                        RevenueIntent::Charge
                    } else {
                        RevenueIntent::Session
                    },
                    requests: count(4)?,
                    amount: u128::from(count(5)?).saturating_sub(u128::from(count(8)?)),
                    input_tokens: count(6)?,
                    output_tokens: count(7)?,
                    refunded: u128::from(count(8)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}
