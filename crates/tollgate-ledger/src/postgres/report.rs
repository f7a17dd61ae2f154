//! [`Ledger::revenue`](crate::Ledger::revenue) on PostgreSQL: the same
//! report as SQLite's (`sqlite_report`), with exact NUMERIC sums.

use super::{PgLedger, amount};
use crate::LedgerError;
use crate::report::{RevenueIntent, RevenueQuery, RevenueRow};

const REVENUE_SQL: &str = "
SELECT (c.settled_at / $3) * $3 AS bucket, c.route, COALESCE(u.model, '') AS model, 0 AS intent,
       COUNT(*), COALESCE(SUM(c.amount::numeric), 0)::text,
       COALESCE(SUM(u.input_tokens), 0)::bigint, COALESCE(SUM(u.output_tokens), 0)::bigint,
       COALESCE(SUM(r.amount), 0)::text
FROM charge_payments c
LEFT JOIN usage_records u
    ON u.id = (SELECT MIN(id) FROM usage_records WHERE challenge_id = c.challenge_id)
LEFT JOIN refunds r ON r.challenge_id = c.challenge_id
WHERE c.settled_at >= $1 AND c.settled_at < $2
GROUP BY 1, c.route, 3
UNION ALL
SELECT (u.recorded_at / $3) * $3 AS bucket, u.route, u.model, 1 AS intent,
       COUNT(*), COALESCE(SUM(u.actual_cost), 0)::text,
       SUM(u.input_tokens)::bigint, SUM(u.output_tokens)::bigint, '0'
FROM usage_records u
WHERE u.challenge_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM charge_payments c WHERE c.challenge_id = u.challenge_id)
  AND u.recorded_at >= $1 AND u.recorded_at < $2
GROUP BY 1, u.route, u.model
ORDER BY 1, 2, 3, 4";

pub(crate) async fn revenue(
    ledger: &PgLedger,
    query: RevenueQuery,
) -> Result<Vec<RevenueRow>, LedgerError> {
    let since = query.since.unwrap_or(i64::MIN);
    let until = query.until.unwrap_or(i64::MAX);
    let width = query.bucket_secs.map_or(i64::MAX, |w| i64::from(w.max(1)));
    let client = ledger.client().await?;
    let statement = client.prepare_cached(REVENUE_SQL).await?;
    client
        .query(&statement, &[&since, &until, &width])
        .await?
        .iter()
        .map(|r| {
            let count = |i: usize| r.try_get::<_, i64>(i).map(|v| v.max(0) as u64);
            let refunded = amount(r, 8)?;
            Ok(RevenueRow {
                bucket: r.try_get(0)?,
                route: r.try_get(1)?,
                model: r.try_get(2)?,
                intent: if r.try_get::<_, i32>(3)? == 0 {
                    RevenueIntent::Charge
                } else {
                    RevenueIntent::Session
                },
                requests: count(4)?,
                amount: amount(r, 5)?.saturating_sub(refunded),
                input_tokens: count(6)?,
                output_tokens: count(7)?,
                refunded,
            })
        })
        .collect()
}
