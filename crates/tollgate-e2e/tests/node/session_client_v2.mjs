// Pays Tollgate with a v2 (TIP-20 channel reserve) session using the
// reference TypeScript SDK's default session client: `tempo.session` from
// mppx@0.11.0 (its manager, `tempo.session.manager`). The first request's
// 402 opens a channel (an open on the reserve, broadcast by the gateway);
// three more requests (two plain, one streamed) are paid with cumulative
// vouchers carrying the channel descriptor; then it closes.
//
// Run from a directory whose node_modules holds mppx and viem (the test
// copies this file into the npm prefix). Inputs come from the environment:
//   TOLLGATE_URL  the gateway's base URL
//   RPC_URL       the local chain's JSON-RPC URL (chain id 42431)
//   PAYER_KEY     the payer's private key (0x-hex)
//   MAX_DEPOSIT   the deposit cap, in tokens (6 decimals)
// Prints one JSON object on stdout; diagnostics go to stderr.

import { tempo } from 'mppx/client';
import { createClient, custom, http } from 'viem';
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

// The reserve is at the TIP-1034 precompile address, mppx's default: no pin.
const manager = tempo.session.manager({
  account,
  fetch: tracingFetch,
  client,
  // The deposit is min(suggestedDeposit, maxDeposit); past it mppx tops up.
  maxDeposit,
});

const url = `${base}/v1/chat/completions`;
// gpt-4o with room for 256 tokens: the worst case the gateway quotes (and
// mppx authorizes per request) is well above what the short mock answer
// costs, so the gateway charges less than was authorized.
const chat = (content, stream) =>
  JSON.stringify({
    model: 'gpt-4o',
    messages: [{ role: 'user', content }],
    max_tokens: 256,
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
} catch (error) {
  out.error = String(error?.stack ?? error);
}

// A streamed request through `sse()`: message data is yielded, the
// `payment-receipt` event goes to `onReceipt`.
if (!out.error && out.requests.every((r) => r.status === 200)) {
  const receipts = [];
  const messages = [];
  try {
    const events = await manager.sse(url, {
      ...post(chat('stream please', true)),
      onReceipt: (receipt) => receipts.push(receipt),
    });
    for await (const data of events) messages.push(data);
    out.stream = { messages, receipts, cumulative: manager.cumulative.toString() };
    out.needVoucher = messages.some((m) => String(m).includes('payment-need-voucher'));
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
