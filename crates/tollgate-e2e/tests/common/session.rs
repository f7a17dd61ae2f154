//! A session payer for tests: signs the escrow transactions (approve +
//! open, topUp) and EIP-712 vouchers itself, like a wallet would.

use alloy::eips::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp::PaymentChallenge;
use serde_json::{Value, json};
use tempo_alloy::primitives::TempoTransaction;
use tempo_alloy::primitives::transaction::Call;
use tollgate_devnet::{ALPHA_USD, PATH_USD};

alloy::sol! {
    interface IToken {
        function approve(address spender, uint256 amount) external returns (bool);
    }
    interface IEscrow {
        function open(address payee, address token, uint128 deposit, bytes32 salt, address authorizedSigner) external returns (bytes32);
        function topUp(bytes32 channelId, uint256 additionalDeposit) external;
        function requestClose(bytes32 channelId) external;
        function withdraw(bytes32 channelId) external;
    }
}

pub struct Payer {
    pub key: PrivateKeySigner,
    pub rpc: tollgate_devnet::RpcClient,
    pub escrow: Address,
    pub chain_id: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Channel {
    pub id: B256,
}

impl Payer {
    pub fn new(key: PrivateKeySigner, rpc_url: &str, escrow: &str) -> Self {
        Self {
            key,
            rpc: tollgate_devnet::RpcClient::new(rpc_url),
            escrow: escrow.parse().unwrap(),
            chain_id: 42431,
        }
    }

    /// A signed 0x76 transaction with `calls`, on its own 2D nonce lane.
    pub async fn sign(&self, calls: Vec<(Address, Vec<u8>)>) -> Bytes {
        let gas_price: String = self.rpc.call("eth_gasPrice", json!([])).await.unwrap();
        let gas_price = u128::from_str_radix(gas_price.trim_start_matches("0x"), 16).unwrap();
        let lane = U256::from_be_slice(&B256::random()[..16]) + U256::from(1);
        let tx = TempoTransaction {
            chain_id: self.chain_id,
            // Fees in another token keep the pathUSD accounting exact.
            fee_token: Some(ALPHA_USD.parse().unwrap()),
            nonce_key: lane,
            nonce: 0,
            gas_limit: 2_000_000,
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
        let signature = self.key.sign_hash_sync(&tx.signature_hash()).unwrap();
        Bytes::from(tx.into_signed(signature.into()).encoded_2718())
    }

    /// approve + open, and the channel id it creates.
    pub async fn open_tx(&self, payee: Address, deposit: u128) -> (Channel, Bytes) {
        let token: Address = PATH_USD.parse().unwrap();
        let salt = B256::random();
        let id = mpp::tempo::compute_channel_id(
            self.key.address(),
            payee,
            token,
            salt,
            Address::ZERO,
            self.escrow,
            self.chain_id,
        );
        let approve = IToken::approveCall {
            spender: self.escrow,
            amount: U256::from(deposit),
        }
        .abi_encode();
        let open = IEscrow::openCall {
            payee,
            token,
            deposit,
            salt,
            authorizedSigner: Address::ZERO,
        }
        .abi_encode();
        let tx = self.sign(vec![(token, approve), (self.escrow, open)]).await;
        (Channel { id }, tx)
    }

    pub async fn top_up_tx(&self, channel: Channel, amount: u128) -> Bytes {
        let token: Address = PATH_USD.parse().unwrap();
        let approve = IToken::approveCall {
            spender: self.escrow,
            amount: U256::from(amount),
        }
        .abi_encode();
        let top_up = IEscrow::topUpCall {
            channelId: channel.id,
            additionalDeposit: U256::from(amount),
        }
        .abi_encode();
        self.sign(vec![(token, approve), (self.escrow, top_up)])
            .await
    }

    /// Sends a payer-side escrow call (requestClose, withdraw) itself.
    pub async fn send(&self, input: Vec<u8>) -> Value {
        let tx = self.sign(vec![(self.escrow, input)]).await;
        self.rpc
            .call(
                "eth_sendRawTransactionSync",
                json!([format!("0x{}", alloy::hex::encode(&tx))]),
            )
            .await
            .unwrap()
    }

    pub fn request_close(channel: Channel) -> Vec<u8> {
        IEscrow::requestCloseCall {
            channelId: channel.id,
        }
        .abi_encode()
    }

    pub fn withdraw(channel: Channel) -> Vec<u8> {
        IEscrow::withdrawCall {
            channelId: channel.id,
        }
        .abi_encode()
    }

    /// A 65-byte voucher signature for `cumulative`.
    pub fn voucher(&self, channel: Channel, cumulative: u128) -> String {
        voucher_by(&self.key, self.escrow, self.chain_id, channel, cumulative)
    }

    pub async fn open(
        &self,
        challenge: &PaymentChallenge,
        deposit: u128,
        initial: u128,
    ) -> (Channel, String) {
        let payee: Address = challenge.request.decode_value().unwrap()["recipient"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (channel, tx) = self.open_tx(payee, deposit).await;
        let payload = json!({
            "action": "open",
            "type": "transaction",
            "channelId": format!("{:#x}", channel.id),
            "transaction": format!("0x{}", alloy::hex::encode(&tx)),
            "cumulativeAmount": initial.to_string(),
            "signature": self.voucher(channel, initial),
        });
        (channel, credential(challenge, payload))
    }

    pub fn pay_voucher(
        &self,
        challenge: &PaymentChallenge,
        channel: Channel,
        cumulative: u128,
    ) -> String {
        credential(
            challenge,
            voucher_payload(
                "voucher",
                channel,
                cumulative,
                &self.voucher(channel, cumulative),
            ),
        )
    }

    pub fn close(
        &self,
        challenge: &PaymentChallenge,
        channel: Channel,
        cumulative: u128,
    ) -> String {
        credential(
            challenge,
            voucher_payload(
                "close",
                channel,
                cumulative,
                &self.voucher(channel, cumulative),
            ),
        )
    }

    pub async fn top_up(
        &self,
        challenge: &PaymentChallenge,
        channel: Channel,
        amount: u128,
    ) -> String {
        let tx = self.top_up_tx(channel, amount).await;
        credential(
            challenge,
            json!({
                "action": "topUp",
                "type": "transaction",
                "channelId": format!("{:#x}", channel.id),
                "transaction": format!("0x{}", alloy::hex::encode(&tx)),
                "additionalDeposit": amount.to_string(),
            }),
        )
    }
}

pub fn voucher_by(
    key: &PrivateKeySigner,
    escrow: Address,
    chain_id: u64,
    channel: Channel,
    cumulative: u128,
) -> String {
    let digest =
        tollgate_payments::session::voucher::signing_hash(escrow, chain_id, channel.id, cumulative);
    let signature = key.sign_hash_sync(&digest).unwrap();
    format!("0x{}", alloy::hex::encode(signature.as_bytes()))
}

pub fn voucher_payload(action: &str, channel: Channel, cumulative: u128, signature: &str) -> Value {
    json!({
        "action": action,
        "channelId": format!("{:#x}", channel.id),
        "cumulativeAmount": cumulative.to_string(),
        "signature": signature,
    })
}

/// The `Authorization` value for `payload` answering `challenge`.
pub fn credential(challenge: &PaymentChallenge, payload: Value) -> String {
    mpp::format_authorization(&mpp::PaymentCredential::new(challenge.to_echo(), payload)).unwrap()
}

/// The session challenge among a 402's challenges.
pub fn session_challenge(challenges: &[PaymentChallenge]) -> PaymentChallenge {
    challenges
        .iter()
        .find(|c| c.intent.as_str() == "session")
        .expect("a session challenge is offered")
        .clone()
}

/// Decodes a session `Payment-Receipt` header.
pub fn receipt(response: &reqwest::Response) -> Value {
    let header = response.headers()["payment-receipt"].to_str().unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
