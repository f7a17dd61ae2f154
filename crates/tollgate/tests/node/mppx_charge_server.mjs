// A paid HTTP server written with the reference TypeScript SDK's server API
// (`mppx/server` from mppx@0.11.0): `GET`/`POST /paid` costs a fixed amount
// of pathUSD, paid with a Tempo charge (pull: the server broadcasts the
// signed transfer; push: the client broadcasts and sends the hash), and
// answers JSON. Everything else is a 404.
//
// Run from a directory whose node_modules holds mppx and viem (the test
// copies this file into the npm prefix). Inputs come from the environment:
//   RPC_URL     the local chain's JSON-RPC URL (chain id 42431)
//   RECIPIENT   who is paid
//   AMOUNT      the price, in base units (pathUSD: 6 decimals)
//   SECRET_KEY  the HMAC key binding challenges (at least 32 bytes)
//   FEE_PAYER_KEY  optional: sponsor the payer's fees with this account
//                  (`feePayer` in the challenge; pull only)
// Prints `listening on <port>` on stdout once it accepts connections;
// diagnostics go to stderr.

import * as http from 'node:http';
import { Mppx, NodeListener, Request as MppxRequest, tempo } from 'mppx/server';
import { createClient, formatUnits, http as viemHttp } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { tempoModerato } from 'viem/tempo/chains';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const rpcUrl = env('RPC_URL');
const recipient = env('RECIPIENT');
const amount = BigInt(env('AMOUNT'));
const PATH_USD = '0x20c0000000000000000000000000000000000000';
const CHAIN_ID = 42431;
const DECIMALS = 6;

// The local chain uses the testnet's id (42431); only the RPC differs.
const chain = { ...tempoModerato, rpcUrls: { default: { http: [rpcUrl] } } };
const client = createClient({ chain, transport: viemHttp(rpcUrl) });
const feePayer = process.env.FEE_PAYER_KEY
  ? privateKeyToAccount(process.env.FEE_PAYER_KEY)
  : undefined;

const mppx = Mppx.create({
  methods: [
    tempo.charge({
      currency: PATH_USD,
      decimals: DECIMALS,
      recipient,
      chainId: CHAIN_ID,
      getClient: () => client,
      ...(feePayer ? { feePayer } : {}),
    }),
  ],
  realm: 'mppx.test',
  secretKey: env('SECRET_KEY'),
});

// The price in the SDK's decimal notation (it scales by `decimals`).
const price = formatUnits(amount, DECIMALS);
const charge = mppx.charge({ amount: price, description: 'One paid answer' });
let served = 0;

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== '/paid' || !['GET', 'POST'].includes(req.method)) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'not found' }));
      return;
    }
    const request = MppxRequest.fromNodeListener(req, res);
    const result = await charge(request);
    if (result.status === 402) {
      const challenge = result.challenge;
      if (req.headers.authorization)
        console.error(`refused a credential: ${await challenge.clone().text()}`);
      await NodeListener.sendResponse(res, challenge);
      return;
    }
    served += 1;
    const body = { ok: true, served, method: req.method, answer: 'paid content from mppx' };
    await NodeListener.sendResponse(res, result.withReceipt(Response.json(body)));
  } catch (error) {
    console.error(error);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: String(error?.message ?? error) }));
  }
});

server.listen(0, '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
