// Alby's fetch402, fetchWithMpp and fetchWithX402 (@getalby/lightning-tools) against a running
// satrouter, each paying one of the 402's offers from an LNbits wallet, then reusing the
// credential it got. Run by tests/test_offer_clients.py with SATROUTER (the chat URL), LNBITS
// and ADMINKEY in the environment; prints one JSON object of what it saw.
//
// fetch402 takes the first offer it understands (L402). To make it pay the MPP or the x402
// offer, the server's 402 is shown to it with only that offer (the response's other offers
// removed), as a server offering only that scheme would send it.
import { fetch402, fetchWithMpp, fetchWithX402 } from "@getalby/lightning-tools/402";
import { payments, wallet } from "./lnbits_wallet.mjs";

const { SATROUTER } = process.env;
const realFetch = globalThis.fetch;

function showOnly(scheme) {
  globalThis.fetch = async (url, init) => {
    const response = await realFetch(url, init);
    if (response.status !== 402 || scheme === "all") return response;
    const headers = new Headers(response.headers);
    const offered = headers.get("www-authenticate") ?? "";
    headers.delete("www-authenticate");
    if (scheme === "mpp") {
      headers.delete("payment-required");
      headers.set("www-authenticate", offered.slice(offered.indexOf("Payment ")));
    }
    return new Response(await response.text(), { status: 402, headers });
  };
}

const request = (text) => ({
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({
    model: "meta-llama/llama-3.1-8b-instruct",
    messages: [{ role: "user", content: text }],
    max_tokens: 30,
  }),
});

async function seen(response) {
  const body = await response.json();
  return {
    status: response.status,
    replay: response.headers.get("x-satrouter-replay"),
    receipt: response.headers.get("payment-receipt"),
    paymentResponse: response.headers.get("payment-response"),
    type: body.type ?? null,
    content: body.choices?.[0]?.message?.content ?? null,
    paid: response.payment?.paid ?? null,
    credentialHeader: response.payment?.credentials?.header ?? null,
  };
}

const runs = {};
const ways = [
  ["fetch402_l402", "all", fetch402],
  ["fetch402_mpp", "mpp", fetch402],
  ["fetch402_x402", "x402", fetch402],
  ["fetchWithMpp", "mpp", fetchWithMpp],
  ["fetchWithX402", "all", fetchWithX402],
];
for (const [name, scheme, pay] of ways) {
  showOnly(scheme);
  const first = await pay(SATROUTER, request(`asked by ${name}`), { wallet });
  const credentials = first.payment?.credentials;
  const paid = await seen(first);
  // The same request with the credential it got: the answer again, nothing paid or run.
  const reused = await seen(await pay(SATROUTER, request(`asked by ${name}`), { wallet, credentials }));
  runs[name] = { paid, reused };
}
globalThis.fetch = realFetch;
console.log(JSON.stringify({ node: process.version, payments: payments.length, runs }));
