//! Driving the channel reserve on a real devnet: 0x76 transactions signed
//! here and sent through the RPC front (or straight to anvil), raw JSON-RPC
//! so refusals keep their revert data, and EIP-712 vouchers signed by hand.

#![allow(dead_code, unused_imports)] // each test file uses its own part

mod calls;
mod signatures;

pub use calls::*;
pub use signatures::*;

use std::num::NonZeroU64;

use alloy::eips::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, LogData, TxKind, U256, aliases::U96, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use serde_json::{Value, json};
use tempo_alloy::primitives::TempoTransaction;
use tempo_alloy::primitives::transaction::{Call, TEMPO_EXPIRING_NONCE_KEY};
use tollgate_devnet::reserve::{self, ChannelDescriptor};
use tollgate_devnet::{
    ALPHA_USD, CHANNEL_RESERVE, CHANNEL_RESERVE_ADDRESS, DEV_ACCOUNTS, Devnet, DevnetOptions,
    ITIP20ChannelReserve, PATH_USD,
};

pub const CHAIN_ID: u64 = 42431;

pub fn path_usd() -> Address {
    PATH_USD.parse().unwrap()
}

pub fn dev(index: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[index].private_key.parse().unwrap()
}

alloy::sol! {
    interface IToken {
        function transfer(address to, uint256 amount) external returns (bool);
        function balanceOf(address holder) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
    }
    /// TIP-20's errors, which the reserve reverts with as the precompile does.
    interface ITip20Errors {
        error InvalidToken();
        error PolicyForbids();
    }
}

/// How a transaction picks its nonce.
#[derive(Debug, Clone, Copy)]
pub enum Nonce {
    /// A fresh random 2D nonce lane (nonce 0 on it).
    Lane,
    /// TIP-1009 expiring nonce, valid for the next 25 seconds (as mppx sends opens).
    Expiring,
}

pub struct Chain {
    pub devnet: Devnet,
    /// Through the front, as every client goes.
    pub front: String,
    /// Straight to anvil.
    pub anvil: String,
    http: reqwest::Client,
}

/// A mined transaction.
pub struct Sent {
    pub raw: Bytes,
    pub tx: TempoTransaction,
    pub sender: Address,
    pub receipt: Value,
}

impl Sent {
    pub fn succeeded(&self) -> bool {
        self.receipt["status"] == "0x1"
    }

    /// The reserve's logs, in order.
    pub fn reserve_logs(&self) -> Vec<LogData> {
        self.receipt["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|log| {
                log["address"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(CHANNEL_RESERVE)
            })
            .map(|log| {
                let topics = log["topics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().parse().unwrap())
                    .collect();
                let data: Bytes = log["data"].as_str().unwrap().parse().unwrap();
                LogData::new_unchecked(topics, data)
            })
            .collect()
    }

    pub fn events<E: SolEvent>(&self) -> Vec<E> {
        self.reserve_logs()
            .iter()
            .filter(|log| log.topics().first() == Some(&E::SIGNATURE_HASH))
            .map(|log| E::decode_log_data(log).unwrap())
            .collect()
    }

    /// TIP-1034's context hash, from the TIP's definition:
    /// keccak256(encodeForSigning || sender).
    pub fn expected_nonce_hash(&self) -> B256 {
        use alloy::consensus::SignableTransaction;
        let mut preimage = Vec::new();
        self.tx.encode_for_signing(&mut preimage);
        preimage.extend_from_slice(self.sender.as_slice());
        keccak256(preimage)
    }
}

impl Chain {
    pub async fn start() -> Self {
        let devnet = Devnet::start(DevnetOptions::default()).await.unwrap();
        let front = devnet.rpc_url();
        let anvil = devnet.anvil_url();
        assert_ne!(front, anvil, "the reserve is served through the front");
        Self {
            devnet,
            front,
            anvil,
            http: reqwest::Client::new(),
        }
    }

    /// One JSON-RPC call: `Ok(result)` or `Err(error object)`.
    pub async fn rpc(&self, url: &str, method: &str, params: Value) -> Result<Value, Value> {
        let response: Value = self
            .http
            .post(url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match response.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(response["result"].clone()),
        }
    }

    pub async fn timestamp(&self) -> u64 {
        let block = self
            .rpc(
                &self.front,
                "eth_getBlockByNumber",
                json!(["latest", false]),
            )
            .await
            .unwrap();
        u64::from_str_radix(
            block["timestamp"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap()
    }

    pub async fn sign(
        &self,
        key: &PrivateKeySigner,
        calls: Vec<(Address, Vec<u8>)>,
        nonce: Nonce,
    ) -> (Bytes, TempoTransaction) {
        let gas_price = self
            .rpc(&self.front, "eth_gasPrice", json!([]))
            .await
            .unwrap();
        let gas_price =
            u128::from_str_radix(gas_price.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let (nonce_key, valid_before) = match nonce {
            Nonce::Lane => (
                U256::from_be_slice(&B256::random()[..16]) + U256::from(1),
                None,
            ),
            Nonce::Expiring => (
                TEMPO_EXPIRING_NONCE_KEY,
                NonZeroU64::new(self.timestamp().await.max(now()) + 25),
            ),
        };
        let tx = TempoTransaction {
            chain_id: CHAIN_ID,
            // Fees in another token keep the pathUSD accounting exact.
            fee_token: Some(ALPHA_USD.parse().unwrap()),
            nonce_key,
            nonce: 0,
            valid_before,
            gas_limit: 5_000_000,
            max_fee_per_gas: gas_price * 2,
            max_priority_fee_per_gas: gas_price,
            calls: calls
                .into_iter()
                .map(|(to, input)| Call {
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    input: Bytes::from(input),
                })
                .collect(),
            ..Default::default()
        };
        let signature = key.sign_hash_sync(&tx.signature_hash()).unwrap();
        let raw = Bytes::from(tx.clone().into_signed(signature.into()).encoded_2718());
        (raw, tx)
    }

    /// Signs, sends to `url` and waits for the receipt.
    pub async fn send_to(
        &self,
        url: &str,
        key: &PrivateKeySigner,
        calls: Vec<(Address, Vec<u8>)>,
        nonce: Nonce,
    ) -> Sent {
        let (raw, tx) = self.sign(key, calls, nonce).await;
        let hash = self
            .rpc(url, "eth_sendRawTransaction", json!([raw.clone()]))
            .await
            .unwrap();
        let receipt = self
            .devnet
            .rpc()
            .wait_receipt(hash.as_str().unwrap())
            .await
            .unwrap();
        Sent {
            raw,
            tx,
            sender: key.address(),
            receipt,
        }
    }

    /// Through the front, on a fresh nonce lane.
    pub async fn send(&self, key: &PrivateKeySigner, calls: Vec<(Address, Vec<u8>)>) -> Sent {
        self.send_to(&self.front, key, calls, Nonce::Lane).await
    }

    /// One reserve call through the front.
    pub async fn call_reserve(&self, key: &PrivateKeySigner, data: Vec<u8>) -> Sent {
        self.send(key, vec![(CHANNEL_RESERVE_ADDRESS, data)]).await
    }

    /// The revert data of `data` from `from`, simulated at `url`; fails the
    /// test if the call succeeds.
    pub async fn revert_at(&self, url: &str, from: Address, data: &[u8]) -> Vec<u8> {
        let call =
            json!({"from": from, "to": CHANNEL_RESERVE, "data": Bytes::copy_from_slice(data)});
        match self.rpc(url, "eth_call", json!([call, "latest"])).await {
            Ok(result) => panic!("expected a revert, the call returned {result}"),
            Err(error) => {
                let data = error["data"].as_str().unwrap_or("0x");
                hex::decode(data.trim_start_matches("0x")).unwrap()
            }
        }
    }

    /// The reserve's revert for `data` from `from`, through the front.
    pub async fn revert(&self, from: Address, data: &[u8]) -> Vec<u8> {
        self.revert_at(&self.front, from, data).await
    }

    /// What `data` returns when simulated through the front.
    pub async fn view(&self, from: Address, data: &[u8]) -> Vec<u8> {
        let call =
            json!({"from": from, "to": CHANNEL_RESERVE, "data": Bytes::copy_from_slice(data)});
        let out = self
            .rpc(&self.front, "eth_call", json!([call, "latest"]))
            .await
            .unwrap();
        hex::decode(out.as_str().unwrap().trim_start_matches("0x")).unwrap()
    }

    pub async fn balance(&self, token: Address, holder: Address) -> u128 {
        self.devnet
            .rpc()
            .token_balance(&format!("{token:#x}"), &format!("{holder:#x}"))
            .await
            .unwrap()
    }

    /// Opens a channel through the front and checks the event against the
    /// TIP's derivations; returns the descriptor the event discloses.
    pub async fn open(&self, payer: &PrivateKeySigner, terms: &Terms, nonce: Nonce) -> Opened {
        let sent = self
            .send_to(
                &self.front,
                payer,
                vec![(CHANNEL_RESERVE_ADDRESS, terms.open_call())],
                nonce,
            )
            .await;
        assert!(sent.succeeded(), "open failed: {}", sent.receipt);
        let events = sent.events::<ITIP20ChannelReserve::ChannelOpened>();
        let [opened] = events.as_slice() else {
            panic!("one ChannelOpened expected: {}", sent.receipt)
        };
        let opened = opened.clone();
        let descriptor = terms.descriptor(payer.address(), opened.expiringNonceHash);
        assert_eq!(opened.expiringNonceHash, sent.expected_nonce_hash());
        assert_eq!(opened.channelId, reserve::channel_id(&descriptor, CHAIN_ID));
        assert_eq!(opened.deposit, U96::from(terms.deposit));
        Opened {
            id: opened.channelId,
            descriptor,
            sent,
        }
    }

    pub async fn state(&self, id: B256) -> (u128, u128, u32) {
        let state = reserve::read_channel_state(self.devnet.rpc(), id)
            .await
            .unwrap();
        (
            state.settled.to::<u128>(),
            state.deposit.to::<u128>(),
            state.closeRequestedAt,
        )
    }
}

pub struct Opened {
    pub id: B256,
    pub descriptor: ChannelDescriptor,
    pub sent: Sent,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What a payer chooses when opening.
/// A contract that opens, closes and reopens one channel in a single call.
const REOPENER_SOURCE: &str = r#"
pragma solidity ^0.8.28;
interface IToken { function approve(address spender, uint256 amount) external returns (bool); }
interface IReserve {
    struct ChannelDescriptor { address payer; address payee; address operator; address token; bytes32 salt; address authorizedSigner; bytes32 expiringNonceHash; }
    function open(address payee, address operator, address token, uint96 deposit, bytes32 salt, address authorizedSigner) external returns (bytes32);
    function close(ChannelDescriptor calldata descriptor, uint96 cumulativeAmount, uint96 captureAmount, bytes calldata signature) external;
}
contract Reopener {
    function run(address reserve, address token, bytes32 salt, bytes32 context, bool reopen) external {
        IToken(token).approve(reserve, type(uint256).max);
        IReserve(reserve).open(address(this), address(0), token, 1, salt, address(0));
        IReserve(reserve).close(IReserve.ChannelDescriptor(address(this), address(this), address(0), token, salt, address(0), context), 0, 0, "");
        if (reopen) IReserve(reserve).open(address(this), address(0), token, 1, salt, address(0));
    }
}
"#;

alloy::sol! {
    interface Reopener {
        function run(address reserve, address token, bytes32 salt, bytes32 context, bool reopen) external;
    }
}

impl Chain {
    /// Compiles and installs the reopener, funded with pathUSD.
    pub async fn install_reopener(&self) -> Address {
        let job = tollgate_devnet::solc::Job {
            artefact: "test-reopener",
            file_name: "Reopener.sol",
            source: REOPENER_SOURCE,
            contract: "Reopener",
            evm_version: Some("cancun"),
        };
        let code = tollgate_devnet::solc::compile(&tollgate_devnet::cache_dir(), &job)
            .await
            .unwrap();
        let address = Address::repeat_byte(0x77);
        self.devnet
            .rpc()
            .set_code(&format!("{address:#x}"), &code.runtime)
            .await
            .unwrap();
        let transfer = IToken::transferCall {
            to: address,
            amount: U256::from(100),
        };
        let sent = self
            .send(&dev(0), vec![(path_usd(), transfer.abi_encode())])
            .await;
        assert!(sent.succeeded());
        address
    }

    /// Simulates a call to `to` through the front: `Ok(output)` or
    /// `Err(revert data)`.
    pub async fn simulate(&self, to: Address, data: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
        let call = json!({"to": to, "data": Bytes::copy_from_slice(data)});
        let decode =
            |v: &Value| hex::decode(v.as_str().unwrap_or("0x").trim_start_matches("0x")).unwrap();
        match self
            .rpc(&self.front, "eth_call", json!([call, "latest"]))
            .await
        {
            Ok(out) => Ok(decode(&out)),
            Err(error) => Err(decode(&error["data"])),
        }
    }
}
