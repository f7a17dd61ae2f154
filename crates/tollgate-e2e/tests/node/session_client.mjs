// Pays Tollgate with a v1 (escrow contract) session using the reference
// TypeScript SDK's legacy session client: `tempo.sessionLegacy` from
// mppx@0.11.0. Opens a channel on the first 402, pays three more requests
// (one of them streamed) with cumulative vouchers, then closes.
//
// Run from a directory whose node_modules holds mppx and viem (the test
// copies this file into the npm prefix). Inputs come from the environment:
//   TOLLGATE_URL  the gateway's base URL
//   RPC_URL       the local chain's JSON-RPC URL (chain id 42431)
//   PAYER_KEY     the payer's private key (0x-hex)
//   ESCROW        the v1 escrow contract the gateway advertises
// Prints one JSON object on stdout; diagnostics go to stderr.

import { tempo } from 'mppx/client';
import { createClient, http } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { tempoModerato } from 'viem/tempo/chains';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const base = env('TOLLGATE_URL');
const rpcUrl = env('RPC_URL');
const escrow = env('ESCROW');
const account = privateKeyToAccount(env('PAYER_KEY'));

// The local chain uses the testnet's id (42431); only the RPC differs.
const chain = {
  ...tempoModerato,
  rpcUrls: { default: { http: [rpcUrl] } },
};
const client = createClient({ account, chain, transport: http(rpcUrl) });

// Every HTTP exchange, for the test's failure message.
const trace = [];
const tracingFetch = async (input, init) => {
  const headers = new Headers(init?.headers);
  const authorization = headers.get('authorization');
  let action = null;
  if (authorization?.startsWith('Payment ')) {
    try {
      const credential = JSON.parse(
        Buffer.from(authorization.slice('Payment '.length), 'base64url').toString(),
      );
      action = credential.payload?.action ?? null;
    } catch {}
  }
  const response = await fetch(input, init);
  const entry = { method: init?.method ?? 'GET', action, status: response.status };
  if (!response.ok) entry.body = await response.clone().text();
  trace.push(entry);
  console.error(`mppx ${JSON.stringify(entry)}`);
  return response;
};

const manager = tempo.sessionLegacy({
  account,
  fetch: tracingFetch,
  client,
  // The built-in escrow for 42431 is the public testnet's; pin ours.
  escrowContract: escrow,
  // 1 token (6 decimals): the deposit is min(suggestedDeposit, maxDeposit).
  maxDeposit: '1',
});

const url = `${base}/v1/chat/completions`;
const chat = (content, stream) =>
  JSON.stringify({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content }],
    max_tokens: 32,
    ...(stream ? { stream: true } : {}),
  });
const post = (body) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body,
});

const out = { requests: [], stream: null, channelId: null, close: null };

// Three plain paid requests: the first opens the channel, the next two
// carry vouchers.
for (const prompt of ['hi', 'hello again', 'one more']) {
  const response = await manager.fetch(url, post(chat(prompt, false)));
  const text = await response.text();
  let object = null;
  try {
    object = JSON.parse(text);
  } catch {}
  out.requests.push({
    status: response.status,
    receipt: response.receipt,
    channelId: response.channelId,
    cumulative: response.cumulative.toString(),
    object: object?.object ?? null,
    body: response.ok ? undefined : text,
  });
  if (!response.ok) break;
}

// A streamed request through `sse()`: message data is yielded, the
// `payment-receipt` event goes to `onReceipt`.
if (out.requests.every((r) => r.status === 200)) {
  const receipts = [];
  const messages = [];
  try {
    const events = await manager.sse(url, {
      ...post(chat('stream please', true)),
      onReceipt: (receipt) => receipts.push(receipt),
    });
    for await (const data of events) messages.push(data);
    out.stream = { messages, receipts, cumulative: manager.cumulative.toString() };
  } catch (error) {
    out.stream = { error: String(error?.stack ?? error), messages, receipts };
  }
}

out.channelId = manager.channelId ?? null;
out.cumulative = manager.cumulative.toString();
out.trace = trace;
try {
  out.close = (await manager.close()) ?? null;
} catch (error) {
  out.closeError = String(error?.stack ?? error);
}

process.stdout.write(`${JSON.stringify(out)}\n`);
