//! RPC simulations (`eth_call`, `eth_estimateGas`): a Tempo node runs them
//! with a fixed, non-zero context hash so a simulated `open` succeeds. The
//! front gives the stand-in the same value through a state override, which
//! exists only for that call.

use serde_json::{Map, Value, json};

use crate::reserve::layout::SIMULATION_CONTEXT_SLOT;
use crate::reserve::{CHANNEL_RESERVE, SIMULATION_CONTEXT};

/// Adds the simulation context to a simulation request's state overrides,
/// keeping whatever overrides the caller sent. Returns whether the request
/// changed.
pub(crate) fn add_simulation_context(request: &mut Value) -> bool {
    let Some(params) = request.get_mut("params").and_then(Value::as_array_mut) else {
        return false;
    };
    // [call, block?, stateOverrides?, blockOverrides?]
    let malformed = params.is_empty()
        || params
            .get(2)
            .is_some_and(|overrides| !overrides.is_null() && !overrides.is_object());
    if malformed {
        return false;
    }
    if params.len() < 2 {
        params.push(json!("latest"));
    }
    if params.len() < 3 {
        params.push(Value::Null);
    }
    if params[2].is_null() {
        params[2] = json!({});
    }
    let Some(overrides) = params[2].as_object_mut() else {
        return false;
    };
    let account_key = overrides
        .keys()
        .find(|k| k.eq_ignore_ascii_case(CHANNEL_RESERVE))
        .cloned()
        .unwrap_or_else(|| CHANNEL_RESERVE.to_owned());
    let account = overrides.entry(account_key).or_insert_with(|| json!({}));
    let Some(account) = account.as_object_mut() else {
        return true;
    };
    // `state` replaces all storage, `stateDiff` patches it: join the caller's.
    let field = if account.contains_key("state") {
        "state"
    } else {
        "stateDiff"
    };
    let slots = account
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(slots) = slots.as_object_mut() {
        let slot = format!("{SIMULATION_CONTEXT_SLOT:#x}");
        let already_set = slots.keys().any(|k| same_word(k, &slot));
        if !already_set {
            slots.insert(slot, json!(format!("{SIMULATION_CONTEXT:#x}")));
        }
    }
    true
}

fn same_word(a: &str, b: &str) -> bool {
    let digits = |s: &str| {
        s.trim_start_matches("0x")
            .trim_start_matches('0')
            .to_ascii_lowercase()
    };
    digits(a) == digits(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: &str = "0x0000000000000000000000000000000000000000000000000000000000000003";
    const CONTEXT: &str = "0x54454d504f5f5250435f53494d554c4154494f4e5f4d50505f434f4e54455854";

    #[test]
    fn a_bare_call_gets_a_block_and_the_override() {
        let mut request = json!({"method": "eth_estimateGas", "params": [{"to": "0x01"}]});
        assert!(add_simulation_context(&mut request));
        assert_eq!(
            request["params"],
            json!([{"to": "0x01"}, "latest", {CHANNEL_RESERVE: {"stateDiff": {SLOT: CONTEXT}}}])
        );
    }

    #[test]
    fn the_callers_overrides_are_kept() {
        let mut request = json!({"method": "eth_call", "params": [
            {"to": "0x01"},
            "0x10",
            {
                "0x4D50500000000000000000000000000000000000": {"state": {"0x01": "0x02"}},
                "0x0000000000000000000000000000000000000009": {"balance": "0x1"}
            },
            {"time": "0x5"}
        ]});
        assert!(add_simulation_context(&mut request));
        assert_eq!(
            request["params"],
            json!([
                {"to": "0x01"},
                "0x10",
                {
                    "0x4D50500000000000000000000000000000000000": {"state": {"0x01": "0x02", SLOT: CONTEXT}},
                    "0x0000000000000000000000000000000000000009": {"balance": "0x1"}
                },
                {"time": "0x5"}
            ])
        );
    }

    #[test]
    fn a_caller_setting_the_slot_wins() {
        let mut request = json!({"method": "eth_call", "params": [
            {"to": "0x01"}, "latest", {CHANNEL_RESERVE: {"stateDiff": {"0x3": "0x00"}}}
        ]});
        assert!(add_simulation_context(&mut request));
        assert_eq!(
            request["params"][2],
            json!({CHANNEL_RESERVE: {"stateDiff": {"0x3": "0x00"}}})
        );
    }

    #[test]
    fn malformed_requests_are_left_alone() {
        for params in [json!([]), json!([{"to": "0x01"}, "latest", 5]), json!("x")] {
            let mut request = json!({"method": "eth_call", "params": params.clone()});
            assert!(!add_simulation_context(&mut request));
            assert_eq!(request["params"], params);
        }
        let mut request = json!({"method": "eth_call"});
        assert!(!add_simulation_context(&mut request));
    }
}
