//! A v2 (channel reserve) session payer for tests, built on the client
//! library's v2 transactions; it can also sign what a bad client would.

#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use mpp::PaymentChallenge;
use serde_json::{Value, json};
use tollgate_client::challenge::SessionOffer;
use tollgate_client::reserve;
use tollgate_devnet::ALPHA_USD;

use super::session::credential;

pub struct Payer {
    pub key: PrivateKeySigner,
    pub rpc: tollgate_devnet::RpcClient,
    pub reserve: Address,
    pub chain_id: u64,
    descriptors: Mutex<HashMap<B256, Value>>,
}

impl Payer {
    pub fn new(key: PrivateKeySigner, rpc_url: &str, reserve: &str) -> Self {
        Self {
            key,
            rpc: tollgate_devnet::RpcClient::new(rpc_url),
            reserve: reserve.parse().unwrap(),
            chain_id: 42431,
            descriptors: Mutex::new(HashMap::new()),
        }
    }

    pub fn descriptor(&self, id: B256) -> Value {
        self.descriptors.lock().unwrap()[&id].clone()
    }

    fn offer(&self, challenge: &PaymentChallenge) -> SessionOffer {
        let request = challenge.request.decode_value().unwrap();
        SessionOffer {
            amount: 0,
            worst_case: 0,
            currency: request["currency"].as_str().unwrap().parse().unwrap(),
            recipient: request["recipient"].as_str().unwrap().parse().unwrap(),
            suggested_deposit: None,
            escrow: self.reserve,
            chain_id: self.chain_id,
            min_voucher_delta: 0,
            v2: true,
        }
    }

    /// An open credential (fees in AlphaUSD, so pathUSD moves exactly).
    pub async fn open(
        &self,
        challenge: &PaymentChallenge,
        deposit: u128,
        initial: u128,
    ) -> (B256, String) {
        let gas_price: String = self.rpc.call("eth_gasPrice", json!([])).await.unwrap();
        let gas_price = u128::from_str_radix(gas_price.trim_start_matches("0x"), 16).unwrap();
        let block: Value = self
            .rpc
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await
            .unwrap();
        let chain_now = u64::from_str_radix(
            block["timestamp"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        let (opening, descriptor) = reserve::open_signed(
            &self.key,
            &self.offer(challenge),
            deposit,
            initial,
            ALPHA_USD.parse().unwrap(),
            gas_price,
            chain_now,
        )
        .await
        .unwrap();
        self.descriptors
            .lock()
            .unwrap()
            .insert(opening.channel_id, descriptor.to_json());
        (opening.channel_id, credential(challenge, opening.payload))
    }

    /// A voucher signature in the v2 domain of `reserve` on `chain_id`.
    pub async fn signature(
        &self,
        id: B256,
        cumulative: u128,
        reserve: Address,
        chain_id: u64,
    ) -> String {
        reserve::voucher_signature(&self.key, reserve, chain_id, id, cumulative)
            .await
            .unwrap()
    }

    pub fn payload(&self, action: &str, id: B256, cumulative: u128, signature: &str) -> Value {
        json!({
            "action": action,
            "channelId": format!("{id:#x}"),
            "descriptor": self.descriptor(id),
            "cumulativeAmount": cumulative.to_string(),
            "signature": signature,
        })
    }

    pub async fn pay_voucher(
        &self,
        challenge: &PaymentChallenge,
        id: B256,
        cumulative: u128,
    ) -> String {
        let signature = self
            .signature(id, cumulative, self.reserve, self.chain_id)
            .await;
        credential(
            challenge,
            self.payload("voucher", id, cumulative, &signature),
        )
    }

    pub async fn close(&self, challenge: &PaymentChallenge, id: B256, cumulative: u128) -> String {
        let signature = self
            .signature(id, cumulative, self.reserve, self.chain_id)
            .await;
        credential(challenge, self.payload("close", id, cumulative, &signature))
    }
}
