// Pays Tollgate with a v2 (TIP-20 channel reserve) session using the
// reference TypeScript SDK's default session client: `tempo.session` from
// mppx@0.11.0 (its manager, `tempo.session.manager`). The first request's
// 402 opens a channel (an open on the reserve, broadcast by the gateway);
// three more requests (two plain, one streamed) are paid with cumulative
// vouchers carrying the channel descriptor; then it closes. The stream may
// allow more output than its challenge asked for: past what is authorized
// it pauses (`event: payment-need-voucher`) and mppx posts a voucher.
// Each plain answer's `Payment-Session-Snapshot` is decoded with mppx's
// own codec. The report counts the pauses the client saw, records each exchange
// (phase, method, action, whether it had a body) and the open transaction
// (so the test can read its fee).
//
// Run from a directory whose node_modules holds mppx and viem (the test
// copies this file into the npm prefix). Inputs come from the environment:
//   TOLLGATE_URL  the gateway's base URL
//   RPC_URL       the local chain's JSON-RPC URL (chain id 42431)
//   PAYER_KEY     the payer's private key (0x-hex)
//   MAX_DEPOSIT   the deposit cap, in tokens (6 decimals)
// Prints one JSON object on stdout; diagnostics go to stderr.

import { Challenge } from 'mppx';
import { tempo } from 'mppx/client';
import { createClient, custom, http, keccak256 } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { tempoModerato } from 'viem/tempo/chains';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const base = env('TOLLGATE_URL');
const rpcUrl = env('RPC_URL');
const maxDeposit = env('MAX_DEPOSIT');
const account = privateKeyToAccount(env('PAYER_KEY'));

// The local chain uses the testnet's id (42431); only the RPC differs.
const chain = {
  ...tempoModerato,
  rpcUrls: { default: { http: [rpcUrl] } },
};
// The local chain (anvil 1.7.1 `--network tempo`) ignores the `calls` of a
// 0x76 request in eth_fillTransaction / eth_estimateGas and estimates an
// empty call, so mppx's approve+open would run out of gas (it signs the
// estimate + 5000). A real Tempo node estimates the calls; here the gas is
// raised to what the escrow open needs (new storage slots are expensive on
// Tempo). Nothing else about the transaction changes.
const LOCAL_GAS_FLOOR = 2_000_000n;
const rpc = http(rpcUrl)({ chain });
const floorGas = (gas) =>
  BigInt(gas ?? 0) < LOCAL_GAS_FLOOR ? `0x${LOCAL_GAS_FLOOR.toString(16)}` : gas;
const transport = custom({
  async request({ method, params }) {
    const result = await rpc.request({ method, params });
    if (method === 'eth_fillTransaction' && result?.tx) result.tx.gas = floorGas(result.tx.gas);
    if (method === 'eth_estimateGas') return floorGas(result);
    return result;
  },
});
const client = createClient({ account, chain, transport });

// Every HTTP exchange, for the test's assertions and failure messages.
const trace = [];
let phase = 'plain';
// `event: payment-need-voucher` lines that reached the client (mppx
// handles them inside its SSE reader and never yields them).
let needVoucherEvents = 0;
let openTransaction = null;
const countPauses = () => {
  let pending = '';
  const decoder = new TextDecoder();
  return new TransformStream({
    transform(chunk, controller) {
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split(/\r\n|\r|\n/);
      pending = lines.pop();
      for (const line of lines) if (line === 'event: payment-need-voucher') needVoucherEvents++;
      controller.enqueue(chunk);
    },
  });
};
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
      if (action === 'open') openTransaction = credential.payload.transaction;
    } catch {}
  }
  const response = await fetch(input, init);
  const entry = {
    phase,
    method: init?.method ?? 'GET',
    action,
    hasBody: init?.body != null,
    status: response.status,
  };
  if (!response.ok) entry.body = await response.clone().text();
  if (response.status === 402) {
    // The session challenge's amount: what mppx will authorize for this request.
    const session = Challenge.fromResponseList(response).find((c) => c.intent === 'session');
    entry.sessionAmount = session?.request?.amount ?? null;
  }
  trace.push(entry);
  console.error(`mppx ${JSON.stringify(entry)}`);
  if (response.body && response.headers.get('content-type')?.includes('text/event-stream')) {
    return new Response(response.body.pipeThrough(countPauses()), {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }
  return response;
};

// The reserve is at the TIP-1034 precompile address, mppx's default: no pin.
const manager = tempo.session.manager({
  account,
  fetch: tracingFetch,
  client,
  // The deposit is min(suggestedDeposit, maxDeposit); past it mppx tops up.
  maxDeposit,
});

const url = `${base}/v1/chat/completions`;
// gpt-4o with room for 256 tokens (the stream: 1024): mppx authorizes
// what each challenge asks — a plain request's worst case, a stream's
// prompt plus the gateway's `stream_challenge_tokens` — and the gateway
// charges what was delivered.
const chat = (content, stream) =>
  JSON.stringify({
    model: 'gpt-4o',
    messages: [{ role: 'user', content }],
    max_tokens: stream ? 1024 : 256,
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
try {
  for (const prompt of ['hi', 'hello again', 'one more']) {
    const response = await manager.fetch(url, post(chat(prompt, false)));
    const text = await response.text();
    let object = null;
    try {
      object = JSON.parse(text);
    } catch {}
    // The draft's channel headers, decoded with mppx's own snapshot codec.
    const snapshotHeader = response.headers.get('payment-session-snapshot');
    out.requests.push({
      status: response.status,
      receipt: response.receipt,
      session: response.headers.get('payment-session'),
      snapshot: snapshotHeader ? tempo.session.manager.deserializeSnapshot(snapshotHeader) : null,
      channelId: response.channelId,
      cumulative: response.cumulative.toString(),
      object: object?.object ?? null,
      body: response.ok ? undefined : text,
    });
    if (!response.ok) break;
  }
} catch (error) {
  out.error = String(error?.stack ?? error);
}

// A streamed request through `sse()`: message data is yielded, the
// `payment-receipt` event goes to `onReceipt`.
if (!out.error && out.requests.every((r) => r.status === 200)) {
  phase = 'stream';
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
out.needVoucherEvents = needVoucherEvents;
out.streamChallengeAmount =
  trace.find((t) => t.phase === 'stream' && t.status === 402)?.sessionAmount ?? null;
out.openTxHash = openTransaction ? keccak256(openTransaction) : null;
phase = 'close';

out.channelId = manager.channelId ?? null;
out.cumulative = manager.cumulative.toString();
out.trace = trace;
try {
  out.close = (await manager.close()) ?? null;
} catch (error) {
  out.closeError = String(error?.stack ?? error);
}

process.stdout.write(`${JSON.stringify(out)}\n`);
