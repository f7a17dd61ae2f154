// Opens and tops up TIP-1034 channels on the devnet exactly as the reference
// TypeScript SDK's v2 session client does (mppx@0.11.0, `tempo.session`):
// its own channel operations build the expiring-nonce transactions, the
// descriptors, the channel ids and a voucher. They live in mppx's dist
// (not a public entry point), so they are imported by path; the pinned
// version keeps that stable. Nothing about the transport is patched: the
// node fills the gas, the SDK signs, this script broadcasts.
//
// Run from the npm prefix holding mppx and viem. Environment:
//   RPC_URL    the devnet's RPC URL (its front)
//   PAYER_KEY  the payer's private key
//   PAYEE      the payee's address
// Prints one JSON object on stdout.

import { createClient, createPublicClient, http, parseEventLogs } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { tempoModerato } from 'viem/tempo/chains';
import * as ChannelOps from './node_modules/mppx/dist/tempo/session/client/ChannelOps.js';
import { escrowAbi } from './node_modules/mppx/dist/tempo/session/precompile/escrow.abi.js';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const rpcUrl = env('RPC_URL');
const payee = env('PAYEE');
const chain = { ...tempoModerato, rpcUrls: { default: { http: [rpcUrl] } } };
const account = privateKeyToAccount(env('PAYER_KEY'));
const client = createClient({ account, chain, transport: http(rpcUrl) });
const reader = createPublicClient({ chain, transport: http(rpcUrl) });
const pathUsd = '0x20c0000000000000000000000000000000000000';

const broadcast = async (transaction) => {
  const hash = await reader.request({ method: 'eth_sendRawTransaction', params: [transaction] });
  return reader.waitForTransactionReceipt({ hash, timeout: 30_000 });
};
const event = (receipt, eventName) =>
  parseEventLogs({ abi: escrowAbi, logs: receipt.logs, eventName }).map((log) => log.args);

const opens = [];
// Two channels from one payer: each open and top-up is an expiring-nonce
// transaction, which anvil alone would drop after the first.
for (let i = 0; i < 2; i++) {
  const open = await ChannelOps.createOpenPayload(client, account, {
    chainId: chain.id,
    payee,
    token: pathUsd,
    deposit: 1_000_000n,
    initialAmount: 1_000n,
  });
  const opened = await broadcast(open.transaction);
  const topUp = await ChannelOps.createTopUpPayload(
    client,
    account,
    open.descriptor,
    500_000n,
    chain.id,
  );
  const toppedUp = await broadcast(topUp.transaction);
  opens.push({
    channelId: open.channelId,
    descriptor: open.descriptor,
    openStatus: opened.status,
    emitted: event(opened, 'ChannelOpened').map((e) => ({
      channelId: e.channelId,
      expiringNonceHash: e.expiringNonceHash,
    })),
    topUpStatus: toppedUp.status,
    newDeposit: event(toppedUp, 'TopUp').map((e) => e.newDeposit.toString()),
    initialVoucher: { cumulativeAmount: open.cumulativeAmount, signature: open.signature },
  });
}
console.log(JSON.stringify({ opens }));
