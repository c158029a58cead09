// mppx (the MPP TypeScript SDK) as the client of satrouter's MPP offer. mppx ships no
// Lightning method, so the lightning/charge method of draft-lightning-charge-00 is declared
// here with mppx's own Method API, and its credential is built by mppx (Credential.serialize);
// the payment is made from an LNbits wallet. mppx.fetch reads the 402 (its several offers),
// picks the lightning charge challenge, pays and retries. Run by tests/test_offer_clients.py
// with SATROUTER, LNBITS and ADMINKEY in the environment; prints one JSON object.
import { Credential, Method, Receipt, z } from "mppx";
import { Mppx } from "mppx/client";
import { payments, wallet } from "./lnbits_wallet.mjs";

const { SATROUTER } = process.env;

const lightningCharge = Method.from({
  name: "lightning",
  intent: "charge",
  schema: {
    credential: { payload: z.object({ preimage: z.string() }) },
    request: z.looseObject({
      amount: z.string(),
      currency: z.string(),
      methodDetails: z.looseObject({ invoice: z.string() }),
    }),
  },
});

let credentialSent = null;
const lightning = Method.toClient(lightningCharge, {
  async createCredential({ challenge }) {
    const { preimage } = await wallet.payInvoice({ invoice: challenge.request.methodDetails.invoice });
    credentialSent = Credential.serialize({ challenge, payload: { preimage } });
    return credentialSent;
  },
});

const mppx = Mppx.create({ methods: [lightning], polyfill: false });
const init = () => ({
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({
    model: "meta-llama/llama-3.1-8b-instruct",
    messages: [{ role: "user", content: "asked by mppx" }],
    max_tokens: 30,
  }),
});

const response = await mppx.fetch(SATROUTER, init());
const body = await response.json();
const receipt = Receipt.fromResponse(response);
// The credential again, for the same request: the answer is replayed, nothing paid or run.
const again = await fetch(SATROUTER, { ...init(), headers: { ...init().headers, Authorization: credentialSent } });
const replayed = await again.json();
console.log(
  JSON.stringify({
    node: process.version,
    payments: payments.length,
    status: response.status,
    content: body.choices?.[0]?.message?.content ?? null,
    receipt,
    again: { status: again.status, replay: again.headers.get("x-satrouter-replay"), content: replayed.choices?.[0]?.message?.content ?? null },
  }),
);
