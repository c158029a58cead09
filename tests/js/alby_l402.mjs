// Alby's fetchWithL402 (@getalby/lightning-tools) against a running satrouter, paying from an
// LNbits wallet. Run by tests/test_l402_clients.py with SATROUTER (the chat URL), LNBITS and
// ADMINKEY (the paying wallet) in the environment; prints one JSON object of what it saw.
import { fetchWithL402, parseL402 } from "@getalby/lightning-tools/402";

import { payments, wallet } from "./lnbits_wallet.mjs";

const { SATROUTER } = process.env;
const request = (text, model, maxTokens) => ({
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ model, messages: [{ role: "user", content: text }], max_tokens: maxTokens }),
});
const CHEAP = "meta-llama/llama-3.1-8b-instruct";
const DEAR = "anthropic/claude-opus-4";

async function seen(response) {
  const body = await response.json();
  return {
    status: response.status,
    replay: response.headers.get("x-satrouter-replay"),
    challenge: response.headers.get("www-authenticate"),
    type: body.type ?? null,
    content: body.choices?.[0]?.message?.content ?? null,
    paid: response.payment?.paid ?? null,
  };
}

const steps = {};
// 1. No token yet: the 402's challenge is paid and the request repeated.
const first = await fetchWithL402(SATROUTER, request("first question", CHEAP, 30), { wallet });
const credentials = first.payment.credentials;
steps.first = await seen(first);
// 2. The same request with the token: the answer again, nothing paid or run.
steps.same = await seen(
  await fetchWithL402(SATROUTER, request("first question", CHEAP, 30), { wallet, credentials }),
);
// 3. Another request with the token: its credit is short, and the 402 carries a fresh
//    challenge for this request (with credentials, fetchWithL402 never pays by itself).
const other = request("another question", DEAR, 2000);
const short = await fetchWithL402(SATROUTER, other, { wallet, credentials });
steps.short = await seen(short);
// 4. Pay that challenge and go on with its token.
const { token, invoice } = parseL402(steps.short.challenge);
const { preimage } = await wallet.payInvoice({ invoice });
const renewed = { header: "Authorization", value: `L402 ${token}:${preimage}` };
steps.renewed = await seen(
  await fetchWithL402(SATROUTER, request("another question", DEAR, 2000), { wallet, credentials: renewed }),
);
steps.renewed_again = await seen(
  await fetchWithL402(SATROUTER, request("another question", DEAR, 2000), { wallet, credentials: renewed }),
);
console.log(JSON.stringify({ node: process.version, payments: payments.length, steps }));
