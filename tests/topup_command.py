"""The operator's top-up program for the command-executor test: asks the seller for an invoice
for the amount in its environment and prints it."""

import json
import os
import sys
import urllib.parse
import urllib.request

query = urllib.parse.urlencode(
    {
        "amount_sat": os.environ["SATROUTER_TOPUP_SATS"],
        "amount_usd": os.environ["SATROUTER_TOPUP_USD"],
        "id": os.environ["SATROUTER_TOPUP_ID"],
    }
)
with urllib.request.urlopen(f"{sys.argv[1]}?{query}", timeout=10) as response:  # noqa: S310
    print(json.load(response)["invoice"])
