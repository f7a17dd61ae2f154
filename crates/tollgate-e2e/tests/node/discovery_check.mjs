// Checks Tollgate's discovery document with the reference SDK's own
// parser and validator (`mppx/discovery` from mppx@0.11.0) and prints what
// it parsed, for the Rust side to compare with the live 402 challenges.
//
// Run from a directory whose node_modules holds mppx (the test copies this
// file into the npm prefix). Input: TOLLGATE_URL, the gateway's base URL.
// Prints one JSON object on stdout.

import { DiscoveryDocument, PaymentInfo, validate } from 'mppx/discovery';

const base = process.env.TOLLGATE_URL;
if (!base) throw new Error('TOLLGATE_URL is not set');

const response = await fetch(`${base}/openapi.json`);
if (!response.ok) throw new Error(`GET /openapi.json: HTTP ${response.status}`);
const doc = await response.json();

// Structural and semantic validation, errors and warnings alike.
const issues = validate(doc);
// The document schema itself must parse (throws otherwise).
const parsed = DiscoveryDocument.parse(doc);

const operations = [];
for (const [path, item] of Object.entries(parsed.paths ?? {})) {
  for (const [method, operation] of Object.entries(item)) {
    const info = operation?.['x-payment-info'];
    if (!info) continue;
    // The SDK's normalised form: always { offers: [...] }.
    const { offers } = PaymentInfo.parse(info);
    const json = operation.requestBody?.content?.['application/json'];
    operations.push({
      path,
      method: method.toUpperCase(),
      multiOffer: Array.isArray(info.offers),
      offers,
      example: json?.example ?? null,
      has402: Boolean(operation.responses?.['402']),
    });
  }
}

console.log(JSON.stringify({
  issues,
  contentType: response.headers.get('content-type'),
  cacheControl: response.headers.get('cache-control'),
  serviceInfo: parsed['x-service-info'] ?? null,
  operations,
}));
