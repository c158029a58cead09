// A payer's wallet over LNbits' payments API (LNBITS, ADMINKEY in the environment): Alby's
// Wallet interface (payInvoice -> {preimage}), counting what it paid.
const { LNBITS, ADMINKEY } = process.env;

export const payments = [];

export const wallet = {
  async payInvoice({ invoice }) {
    const headers = { "X-Api-Key": ADMINKEY, "Content-Type": "application/json" };
    const paid = await fetch(`${LNBITS}/api/v1/payments`, {
      method: "POST",
      headers,
      body: JSON.stringify({ out: true, bolt11: invoice }),
    });
    if (!paid.ok) throw new Error(`LNbits ${paid.status}: ${await paid.text()}`);
    const { payment_hash } = await paid.json();
    const status = await (await fetch(`${LNBITS}/api/v1/payments/${payment_hash}`, { headers })).json();
    if (!status.paid || !status.preimage) throw new Error(`not settled: ${JSON.stringify(status)}`);
    payments.push(payment_hash);
    return { preimage: status.preimage };
  },
};
