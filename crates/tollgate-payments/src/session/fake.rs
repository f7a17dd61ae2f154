//! An in-process chain for the gate's tests: channels in a map, client
//! transactions whose effect the test declares, our settlements applied as
//! the escrow/reserve would (a v2 close deletes the channel).

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{Address, B256, keccak256};

use super::chain::{ChainError, ChannelState, Confirmed, Protocol, SessionChain, SettlementCall};
use crate::session_v2::Descriptor;

/// What broadcasting a client transaction does.
#[derive(Debug, Clone)]
pub enum Effect {
    Open(B256, ChannelState),
    TopUp(B256, u128),
}

#[derive(Default)]
pub struct State {
    pub channels: HashMap<B256, ChannelState>,
    effects: HashMap<Vec<u8>, Effect>,
    signed: HashMap<Vec<u8>, SettlementCall>,
    /// Settlements that landed, in order.
    pub landed: Vec<SettlementCall>,
    /// Every transaction broadcast.
    pub broadcasts: usize,
    /// Channel reads.
    pub reads: usize,
    receipts: HashMap<B256, bool>,
    /// The next broadcast fails like this (and does not land).
    pub fail_next: Option<ChainError>,
    /// The next settlement lands but its broadcast reports a timeout.
    pub lose_next_answer: bool,
}

pub struct FakeChain {
    protocol: Protocol,
    escrow: Address,
    chain_id: u64,
    operator: Option<Address>,
    pub state: Mutex<State>,
}

impl FakeChain {
    pub fn new(
        protocol: Protocol,
        escrow: Address,
        chain_id: u64,
        operator: Option<Address>,
    ) -> Self {
        Self {
            protocol,
            escrow,
            chain_id,
            operator,
            state: Mutex::new(State::default()),
        }
    }

    pub fn on_broadcast(&self, tx: &[u8], effect: Effect) {
        self.state
            .lock()
            .unwrap()
            .effects
            .insert(tx.to_vec(), effect);
    }

    pub fn set(&self, id: B256, state: ChannelState) {
        self.state.lock().unwrap().channels.insert(id, state);
    }

    pub fn get(&self, id: B256) -> ChannelState {
        self.state
            .lock()
            .unwrap()
            .channels
            .get(&id)
            .copied()
            .unwrap_or(ChannelState::ABSENT)
    }

    pub fn landed(&self) -> Vec<SettlementCall> {
        self.state.lock().unwrap().landed.clone()
    }

    fn settle(&self, state: &mut State, call: &SettlementCall) -> Result<(), ChainError> {
        let channel = state
            .channels
            .get_mut(&call.channel_id)
            .filter(|c| c.exists)
            .ok_or_else(|| ChainError::Refused("channel not found".into()))?;
        if call.cumulative > channel.deposit {
            return Err(ChainError::Refused("amount exceeds deposit".into()));
        }
        if call.close {
            let paid = match self.protocol {
                Protocol::V1 => call.cumulative,
                Protocol::V2 => call.capture,
            };
            if paid < channel.settled {
                return Err(ChainError::Refused("capture below settled".into()));
            }
            match self.protocol {
                Protocol::V1 => {
                    channel.settled = paid;
                    channel.finalized = true;
                }
                Protocol::V2 => {
                    state.channels.remove(&call.channel_id);
                }
            }
        } else {
            if call.cumulative <= channel.settled {
                return Err(ChainError::Refused("amount not increasing".into()));
            }
            channel.settled = call.cumulative;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SessionChain for FakeChain {
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn escrow(&self) -> Address {
        self.escrow
    }

    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn operator(&self) -> Option<Address> {
        self.operator
    }

    async fn channel(
        &self,
        channel_id: B256,
        descriptor: Option<&Descriptor>,
    ) -> Result<ChannelState, ChainError> {
        if self.protocol == Protocol::V2 && descriptor.is_none() {
            return Err(ChainError::Invalid("v2 reads need a descriptor".into()));
        }
        self.state.lock().unwrap().reads += 1;
        Ok(self.get(channel_id))
    }

    async fn broadcast(&self, tx: &[u8]) -> Result<Confirmed, ChainError> {
        let mut state = self.state.lock().unwrap();
        state.broadcasts += 1;
        if let Some(error) = state.fail_next.take() {
            return Err(error);
        }
        let hash = keccak256(tx);
        if let Some(call) = state.signed.get(tx).cloned() {
            self.settle(&mut state, &call)?;
            state.landed.push(call);
            state.receipts.insert(hash, true);
            if std::mem::take(&mut state.lose_next_answer) {
                return Err(ChainError::Unavailable("rpc deadline passed".into()));
            }
            return Ok(Confirmed { tx_hash: hash });
        }
        match state.effects.get(tx).cloned() {
            Some(Effect::Open(id, opened)) => {
                if state.channels.get(&id).is_some_and(|c| c.exists) {
                    return Err(ChainError::Refused("channel already exists".into()));
                }
                state.channels.insert(id, opened);
            }
            Some(Effect::TopUp(id, amount)) => {
                let channel = state
                    .channels
                    .get_mut(&id)
                    .ok_or_else(|| ChainError::Refused("channel not found".into()))?;
                channel.deposit += amount;
                channel.close_requested_at = 0;
            }
            None => return Err(ChainError::Refused("unknown transaction".into())),
        }
        state.receipts.insert(hash, true);
        Ok(Confirmed { tx_hash: hash })
    }

    async fn sign_settlement(&self, call: &SettlementCall) -> Result<(B256, Vec<u8>), ChainError> {
        if self.operator.is_none() {
            return Err(ChainError::Invalid("no operator key configured".into()));
        }
        let mut state = self.state.lock().unwrap();
        let tx = format!("{call:?}#{}", state.signed.len()).into_bytes();
        state.signed.insert(tx.clone(), call.clone());
        Ok((keccak256(&tx), tx))
    }

    async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, ChainError> {
        Ok(self.state.lock().unwrap().receipts.get(&tx_hash).copied())
    }
}
