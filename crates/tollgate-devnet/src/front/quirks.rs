//! Two ways anvil 1.7.1's Tempo mode differs from a Tempo node and breaks
//! unmodified clients (mppx opens and tops up channels with expiring nonces
//! and lets the node fill the gas); the front papers over both.
//!
//! 1. **Expiring nonces** (TIP-1009). anvil counts the expiring-nonce key
//!    (`U256::MAX`) like an ordinary 2D lane, so a sender's second expiring
//!    transaction looks stale and is silently dropped. Before forwarding one
//!    that is not on chain yet, the front sets that lane back to zero, one
//!    such transaction at a time. A transaction already mined keeps its
//!    lane, so a replay is still dropped.
//! 2. **Gas of Tempo batches.** `eth_estimateGas` and `eth_fillTransaction`
//!    ignore a request's `calls` and estimate an empty call, which the real
//!    transaction then overruns. The front raises the answer to
//!    [`GAS_PER_CALL`] per call; the transaction still pays only what it uses.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol_types::SolValue;
use serde_json::Value;

/// The Tempo nonce precompile ("NONCE").
pub(crate) const NONCE_PRECOMPILE: &str = "0x4e4f4e4345000000000000000000000000000000";
/// `nonces` (account => nonce key => nonce) is its first storage field.
const NONCES_SLOT: u64 = 0;
/// Enough for any single call our clients make on the devnet (a channel
/// open, an escrow open with its approve, a transfer), with margin.
pub(crate) const GAS_PER_CALL: u64 = 1_000_000;

/// Where anvil keeps `sender`'s counter for the expiring-nonce key.
pub(crate) fn expiring_lane_slot(sender: Address) -> B256 {
    let inner = keccak256((sender, U256::from(NONCES_SLOT)).abi_encode());
    keccak256((U256::MAX, inner).abi_encode())
}

/// A gas answer to raise once anvil has answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GasFloor {
    /// The request's JSON-RPC id, to find its answer in a batch.
    pub id: Value,
    pub fill: bool,
    pub floor: u64,
}

/// The floor for an `eth_estimateGas` / `eth_fillTransaction` request that
/// carries Tempo `calls`; `None` for anything else.
pub(crate) fn gas_floor(request: &Value) -> Option<GasFloor> {
    let fill = match request.get("method").and_then(Value::as_str)? {
        "eth_estimateGas" => false,
        "eth_fillTransaction" => true,
        _ => return None,
    };
    let calls = request.pointer("/params/0/calls")?.as_array()?.len();
    (calls > 0).then(|| GasFloor {
        id: request.get("id").cloned().unwrap_or(Value::Null),
        fill,
        floor: GAS_PER_CALL.saturating_mul(calls as u64),
    })
}

/// Raises the gas in the answers `floors` name. Returns whether anything
/// changed; errors and unexpected shapes are left as they are.
pub(crate) fn raise_gas(response: &mut Value, floors: &[GasFloor]) -> bool {
    let answers: Vec<&mut Value> = match response {
        Value::Array(batch) => batch.iter_mut().collect(),
        single @ Value::Object(_) => vec![single],
        _ => return false,
    };
    let mut changed = false;
    for answer in answers {
        let Some(floor) = floors.iter().find(|f| answer.get("id") == Some(&f.id)) else {
            continue;
        };
        let gas = match floor.fill {
            true => answer.pointer_mut("/result/tx/gas"),
            false => answer.get_mut("result"),
        };
        let Some(gas) = gas else { continue };
        let current = gas
            .as_str()
            .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
        if let Some(current) = current
            && current < floor.floor
        {
            *gas = Value::String(format!("{:#x}", floor.floor));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_estimates_of_batches_get_a_floor() {
        let estimate =
            json!({"id": 4, "method": "eth_estimateGas", "params": [{"calls": [{}, {}]}]});
        assert_eq!(
            gas_floor(&estimate),
            Some(GasFloor {
                id: json!(4),
                fill: false,
                floor: 2 * GAS_PER_CALL
            })
        );
        let fill = json!({"id": "a", "method": "eth_fillTransaction", "params": [{"calls": [{}]}]});
        assert_eq!(
            gas_floor(&fill).map(|f| (f.fill, f.floor)),
            Some((true, GAS_PER_CALL))
        );
        for other in [
            json!({"id": 1, "method": "eth_estimateGas", "params": [{"to": "0x01"}]}),
            json!({"id": 1, "method": "eth_estimateGas", "params": [{"calls": []}]}),
            json!({"id": 1, "method": "eth_call", "params": [{"calls": [{}]}]}),
            json!({"id": 1, "method": "eth_estimateGas"}),
        ] {
            assert_eq!(gas_floor(&other), None, "{other}");
        }
    }

    #[test]
    fn answers_below_the_floor_are_raised_in_place() {
        let floors = [
            GasFloor {
                id: json!(1),
                fill: false,
                floor: 1_000_000,
            },
            GasFloor {
                id: json!(2),
                fill: true,
                floor: 1_000_000,
            },
        ];
        let mut batch = json!([
            {"jsonrpc": "2.0", "id": 2, "result": {"raw": "0x76", "tx": {"gas": "0x18704", "nonce": "0x0"}}},
            {"jsonrpc": "2.0", "id": 3, "result": "0x1"},
            {"jsonrpc": "2.0", "id": 1, "result": "0x5208"},
        ]);
        assert!(raise_gas(&mut batch, &floors));
        assert_eq!(
            batch,
            json!([
                {"jsonrpc": "2.0", "id": 2, "result": {"raw": "0x76", "tx": {"gas": "0xf4240", "nonce": "0x0"}}},
                {"jsonrpc": "2.0", "id": 3, "result": "0x1"},
                {"jsonrpc": "2.0", "id": 1, "result": "0xf4240"},
            ])
        );
        // Above the floor, or an error: unchanged.
        let mut high = json!({"id": 1, "result": "0x2000000"});
        assert!(!raise_gas(&mut high, &floors));
        assert_eq!(high["result"], "0x2000000");
        let mut error = json!({"id": 1, "error": {"code": 3, "message": "execution reverted"}});
        assert!(!raise_gas(&mut error, &floors));
        assert_eq!(error["error"]["code"], 3);
    }
}
