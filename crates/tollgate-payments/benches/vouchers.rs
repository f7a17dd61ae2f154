//! Session voucher acceptance: signature recovery + one durable SQLite
//! transaction per voucher, as `SessionGate::accept` does on every request
//! that carries a new voucher.
//!
//! Setup: a WAL SQLite ledger on a temp file, K = C channels opened directly
//! in the ledger, and for each channel `PER_TASK` vouchers with increasing
//! cumulative amounts, all signed before timing starts. Timed: C tokio tasks
//! (one channel each: a channel's vouchers are serialized) call
//! `gate.accept` back to back; per-call latency and overall accepts/s are
//! printed for C = 1, 8, 64, with `Durability::Normal` and `Durability::Full`.
//!
//! To show where the time goes it also times, separately: signature
//! recovery alone (`voucher::verify`, bare libsecp256k1, and k256 for comparison), the
//! channel read `accept` does first (`ledger.channel`), the ledger's
//! `accept_voucher` transaction alone, and the reserve + commit pair a
//! paid request adds.
//!
//! Run: `cargo bench -p tollgate-payments --bench vouchers`; v2 against v1
//! only: `cargo bench -p tollgate-payments --bench vouchers -- --v2-vs-v1`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use mpp::protocol::methods::tempo::precompile_voucher::precompile_voucher_signing_hash_with_escrow;
use tollgate_ledger::{
    ChannelRecord, ChannelStatus, Durability, Ledger, ReserveOutcome, SqliteLedger, StoredVoucher,
};
use tollgate_payments::session::{
    Protocol, Protocols, RESERVE_ADDRESS, SessionGate, SessionSettings, SignedVoucher,
    descriptor_json, voucher,
};
use tollgate_payments::session_v2::{self, Descriptor};

const CHAIN_ID: u64 = 42431;
const ESCROW: Address = Address::repeat_byte(0xe5);
const DEPOSIT: u128 = 1_000_000_000_000_000;
/// Accepts per concurrency level (split over the tasks).
const TOTAL: usize = 16_000;
const CONCURRENCY: [usize; 3] = [1, 8, 64];

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, count: usize, wall: Duration, samples: &mut [Duration]) {
    println!(
        "{name:<40} n={count:<6} {:>9.0}/s  p50={:>8.1} µs  p99={:>8.1} µs",
        count as f64 / wall.as_secs_f64(),
        percentile(samples, 0.50).as_secs_f64() * 1e6,
        percentile(samples, 0.99).as_secs_f64() * 1e6,
    );
}

fn record(id: B256, signer: Address) -> ChannelRecord {
    ChannelRecord {
        channel_id: format!("{id:#x}"),
        protocol: "v1".into(),
        escrow: format!("{ESCROW:#x}"),
        chain_id: CHAIN_ID,
        payer: format!("{signer:#x}"),
        payee: format!("{:#x}", Address::repeat_byte(0xbb)),
        token: format!("{:#x}", Address::repeat_byte(0x20)),
        authorized_signer: format!("{signer:#x}"),
        descriptor: None,
        deposit: DEPOSIT,
        accepted: 0,
        spent: 0,
        reserved: 0,
        settled: 0,
        units: 0,
        close_requested_at: 0,
        status: ChannelStatus::Open,
        opened_at: 0,
        updated_at: 0,
        last_settled_at: None,
        inflight: None,
    }
}

/// `count` channels opened in the ledger, each with `per_channel` vouchers
/// (cumulative 1, 2, …) signed up front, in `protocol`'s domain (v2 ones
/// carry their descriptor, as v2 credentials do).
async fn channels_of(
    ledger: &Arc<dyn Ledger>,
    count: usize,
    per_channel: usize,
    protocol: Protocol,
) -> Vec<Vec<SignedVoucher>> {
    let key = PrivateKeySigner::random();
    let mut all = Vec::new();
    for _ in 0..count {
        let (id, descriptor, record) = match protocol {
            Protocol::V1 => {
                let id = B256::random();
                (id, None, record(id, key.address()))
            }
            Protocol::V2 => {
                let d = Descriptor {
                    payer: key.address(),
                    payee: Address::repeat_byte(0xbb),
                    operator: Address::ZERO,
                    token: Address::repeat_byte(0x20),
                    salt: B256::random(),
                    authorized_signer: Address::ZERO,
                    expiring_nonce_hash: B256::random(),
                };
                let id = session_v2::channel_id(&d, RESERVE_ADDRESS, CHAIN_ID);
                let r = ChannelRecord {
                    protocol: "v2".into(),
                    escrow: format!("{RESERVE_ADDRESS:#x}"),
                    descriptor: Some(descriptor_json(&d).to_string()),
                    ..record(id, key.address())
                };
                (id, Some(d), r)
            }
        };
        ledger.open_channel(&record, None).await.unwrap();
        let vouchers = (1..=per_channel as u128)
            .map(|cumulative| {
                let digest = match protocol {
                    Protocol::V1 => voucher::signing_hash(ESCROW, CHAIN_ID, id, cumulative),
                    Protocol::V2 => precompile_voucher_signing_hash_with_escrow(
                        id,
                        cumulative,
                        RESERVE_ADDRESS,
                        CHAIN_ID,
                    )
                    .unwrap(),
                };
                let signature = key.sign_hash_sync(&digest).unwrap().as_bytes();
                SignedVoucher {
                    channel_id: id,
                    cumulative,
                    signature: Bytes::copy_from_slice(&signature),
                    descriptor,
                }
            })
            .collect();
        all.push(vouchers);
    }
    all
}

async fn channels(
    ledger: &Arc<dyn Ledger>,
    count: usize,
    per_channel: usize,
) -> Vec<Vec<SignedVoucher>> {
    channels_of(ledger, count, per_channel, Protocol::V1).await
}

/// Runs `work` on every voucher list from its own task, then reports the
/// overall rate and every call's latency.
async fn timed<F, Fut>(name: &str, lists: Vec<Vec<SignedVoucher>>, work: F)
where
    F: Fn(SignedVoucher) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = lists
        .into_iter()
        .map(|list| {
            let work = work.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(list.len());
                for v in list {
                    let t = Instant::now();
                    work(v).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let wall = started.elapsed();
    report(name, latencies.len(), wall, &mut latencies);
}

fn gate(ledger: Arc<dyn Ledger>) -> Arc<SessionGate> {
    let settings = SessionSettings {
        // Never contacted: every voucher is within the cached deposit.
        rpc_url: "http://127.0.0.1:9".into(),
        rpc_timeout: Duration::from_secs(1),
        protocols: Protocols::Both,
        escrow: ESCROW,
        reserve: RESERVE_ADDRESS,
        chain_id: CHAIN_ID,
        currency: Address::repeat_byte(0x20),
        recipient: Address::repeat_byte(0xbb),
        suggested_deposit: DEPOSIT,
        min_voucher_delta: 0,
        operator: None,
        fee_token: None,
    };
    Arc::new(SessionGate::new(settings, ledger).unwrap())
}

fn id(v: &SignedVoucher) -> String {
    format!("{:#x}", v.channel_id)
}

async fn accept_runs(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn Ledger> =
        Arc::new(SqliteLedger::open(&dir.path().join("ledger.db"), durability).unwrap());
    // Renew the instance's lease as a gateway does, so long runs keep taking holds.
    let _keeper = tollgate_ledger::spawn_keeper(&ledger);
    let gate = gate(Arc::clone(&ledger));
    let accept = move |v: SignedVoucher| {
        let gate = Arc::clone(&gate);
        async move {
            gate.accept(&v).await.unwrap();
        }
    };

    // Warm-up: page cache, prepared statements, blocking pool threads.
    let warm = channels(&ledger, 8, 200).await;
    timed("(warm-up)", warm, accept.clone()).await;

    for c in CONCURRENCY {
        let lists = channels(&ledger, c, TOTAL / c).await;
        let name = format!("gate.accept {durability:?} C={c}");
        timed(&name, lists, accept.clone()).await;
    }
    if durability != Durability::Normal {
        return;
    }

    // The ledger parts of `accept`, each alone; then what a request does
    // next on the channel (reserve + commit, two more transactions).
    for c in [1, 8] {
        let lists = channels(&ledger, c, TOTAL / c).await;
        let l = Arc::clone(&ledger);
        let name = format!("  ledger.channel (read) C={c}");
        timed(&name, lists.clone(), move |v| {
            let l = Arc::clone(&l);
            async move {
                l.channel(&id(&v)).await.unwrap();
            }
        })
        .await;
        let l = Arc::clone(&ledger);
        let name = format!("  ledger.accept_voucher (tx) C={c}");
        timed(&name, lists.clone(), move |v| {
            let l = Arc::clone(&l);
            async move {
                let stored = StoredVoucher {
                    cumulative: v.cumulative,
                    signature: format!("0x{}", alloy::hex::encode(&v.signature)),
                };
                l.accept_voucher(&id(&v), &stored, 0).await.unwrap();
            }
        })
        .await;
        let l = Arc::clone(&ledger);
        let name = format!("  ledger.reserve + commit (2 tx) C={c}");
        timed(&name, lists, move |v| {
            let l = Arc::clone(&l);
            async move {
                let reservation = match l.reserve(&id(&v), 1).await.unwrap() {
                    ReserveOutcome::Reserved { reservation, .. } => reservation,
                    other => panic!("not reserved: {other:?}"),
                };
                l.commit(reservation, 1, 1).await.unwrap();
            }
        })
        .await;
    }
}

/// Times `f` on every voucher, on the calling thread (one core).
fn time_each(name: &str, vouchers: &[SignedVoucher], mut f: impl FnMut(&SignedVoucher)) {
    let mut latencies = Vec::with_capacity(vouchers.len());
    let started = Instant::now();
    for v in vouchers {
        let t = Instant::now();
        f(v);
        latencies.push(t.elapsed());
    }
    let wall = started.elapsed();
    report(name, vouchers.len(), wall, &mut latencies);
}

/// Signature checking alone: the gateway's `voucher::verify` (EIP-712
/// digest + libsecp256k1 recovery), the digest alone, bare libsecp256k1
/// recovery, and k256 recovery (what `verify` used before) for comparison.
async fn recovery_alone() {
    let dummy: Arc<dyn Ledger> = Arc::new(SqliteLedger::in_memory().unwrap());
    let vouchers = channels(&dummy, 1, 4_000).await.remove(0);
    let signer: Address = dummy
        .channel(&format!("{:#x}", vouchers[0].channel_id))
        .await
        .unwrap()
        .unwrap()
        .authorized_signer
        .parse()
        .unwrap();
    time_each("  voucher::verify (1 core)", &vouchers, |v| {
        voucher::verify(
            ESCROW,
            CHAIN_ID,
            v.channel_id,
            v.cumulative,
            &v.signature,
            signer,
        )
        .unwrap()
    });
    time_each("  voucher::signing_hash (1 core)", &vouchers, |v| {
        std::hint::black_box(voucher::signing_hash(
            ESCROW,
            CHAIN_ID,
            v.channel_id,
            v.cumulative,
        ));
    });
    time_each("  k256 recover (1 core)", &vouchers, |v| {
        let digest = voucher::signing_hash(ESCROW, CHAIN_ID, v.channel_id, v.cumulative);
        let sig = alloy::primitives::Signature::from_raw(&v.signature).unwrap();
        assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), signer);
    });
    let secp = secp256k1::Secp256k1::verification_only();
    time_each("  libsecp256k1 recover (1 core)", &vouchers, |v| {
        use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
        let digest = voucher::signing_hash(ESCROW, CHAIN_ID, v.channel_id, v.cumulative);
        let id = RecoveryId::try_from(i32::from(v.signature[64] - 27)).unwrap();
        let sig = RecoverableSignature::from_compact(&v.signature[..64], id).unwrap();
        let message = secp256k1::Message::from_digest(digest.0);
        let key = secp.recover_ecdsa(&message, &sig).unwrap();
        let hash = alloy::primitives::keccak256(&key.serialize_uncompressed()[1..]);
        assert_eq!(Address::from_slice(&hash[12..]), signer);
    });
}

/// v2 against v1 in one run: signature check alone (1 core), then
/// `gate.accept` (signature + descriptor check + one SQLite transaction).
async fn v2_against_v1() {
    let dummy: Arc<dyn Ledger> = Arc::new(SqliteLedger::in_memory().unwrap());
    for protocol in [Protocol::V1, Protocol::V2] {
        let vouchers = channels_of(&dummy, 1, 4_000, protocol).await.remove(0);
        let signer = dummy
            .channel(&format!("{:#x}", vouchers[0].channel_id))
            .await
            .unwrap()
            .unwrap()
            .authorized_signer
            .parse()
            .unwrap();
        // v1: `voucher::verify` (libsecp256k1); v2: the pure
        // `session_v2::verify_voucher` (the SDK's k256 check). The gate's v2
        // path recovers through libsecp256k1 like v1 (see gate.accept below).
        let label = match protocol {
            Protocol::V1 => "  v1 voucher::verify (1 core)",
            Protocol::V2 => "  v2 session_v2::verify_voucher, k256 (1 core)",
        };
        time_each(label, &vouchers, |v| match protocol {
            Protocol::V1 => voucher::verify(
                ESCROW,
                CHAIN_ID,
                v.channel_id,
                v.cumulative,
                &v.signature,
                signer,
            )
            .unwrap(),
            Protocol::V2 => session_v2::verify_voucher(
                RESERVE_ADDRESS,
                CHAIN_ID,
                v.channel_id,
                v.cumulative,
                &v.signature,
                signer,
            )
            .unwrap(),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn Ledger> =
        Arc::new(SqliteLedger::open(&dir.path().join("ledger.db"), Durability::Normal).unwrap());
    let _keeper = tollgate_ledger::spawn_keeper(&ledger);
    let gate = gate(Arc::clone(&ledger));
    let accept = move |v: SignedVoucher| {
        let gate = Arc::clone(&gate);
        async move {
            gate.accept(&v).await.unwrap();
        }
    };
    let warm = channels(&ledger, 8, 200).await;
    timed("(warm-up)", warm, accept.clone()).await;
    for c in CONCURRENCY {
        for protocol in [Protocol::V1, Protocol::V2] {
            let lists = channels_of(&ledger, c, TOTAL / c, protocol).await;
            let name = format!("gate.accept {protocol} Normal C={c}");
            timed(&name, lists, accept.clone()).await;
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--v2-vs-v1") {
        println!(
            "voucher accept, v2 vs v1, {} cores, release build",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        v2_against_v1().await;
        return;
    }
    println!(
        "voucher accept, {} cores, release build",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    recovery_alone().await;
    accept_runs(Durability::Normal).await;
    accept_runs(Durability::Full).await;
}
