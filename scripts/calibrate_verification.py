"""Calibrate the server's norm bound and per-layer envelope on benign updates (#22 item 2).

Reads the global adapter a round issued and benign client adapters trained from it (safetensors, e.g. the
aggregator's stored updates of a clean round, or updates your own benign clients trained at the task's budget:
same lr, batch size and local steps as the deployment), and prints the aggregator settings:

    SAFE_FEDLLM_AGGREGATOR_VERIFICATION__NORM_BOUND=<quantile of benign ‖Δ‖ × margin>
    SAFE_FEDLLM_AGGREGATOR_VERIFICATION__LAYER_ENVELOPE=<{layer: [min / margin, max × margin]}>

    python scripts/calibrate_verification.py --issued global.safetensors benign/*.safetensors

Prints numbers only. The bound holds for the budget it was calibrated on: recalibrate when the task changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.aggregator.norm_bound import calibrate_norm_bound, delta_norm
from services.aggregator.verification import calibrate_envelope
from shared.lora_state import validate_lora_state
from shared.updates import decode_lora_state


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--issued", type=Path, required=True, help="the global adapter the round issued")
    parser.add_argument("updates", type=Path, nargs="+", help="benign adapters trained from it")
    parser.add_argument("--quantile", type=float, default=0.95, help="quantile of the benign norms")
    parser.add_argument("--margin", type=float, default=1.5, help="margin on that quantile")
    parser.add_argument("--envelope-margin", type=float, default=2.0, help="margin of the layer envelope")
    args = parser.parse_args()
    issued = decode_lora_state(args.issued.read_bytes())
    benign = []
    for path in args.updates:
        adapter = decode_lora_state(path.read_bytes())
        validate_lora_state(adapter, issued)
        benign.append((adapter, issued))
    norms = [delta_norm(adapter, issued) for adapter, _ in benign]
    bound = calibrate_norm_bound(norms, args.quantile, args.margin)
    envelope = calibrate_envelope(benign, args.envelope_margin)
    print(f"# {len(norms)} benign updates, |delta| min {min(norms):.4g} max {max(norms):.4g}")
    print(f"SAFE_FEDLLM_AGGREGATOR_VERIFICATION__NORM_BOUND={bound:.6g}")
    layers = {str(k): [round(low, 6), round(high, 6)] for k, (low, high) in envelope.items()}
    print(f"SAFE_FEDLLM_AGGREGATOR_VERIFICATION__LAYER_ENVELOPE='{json.dumps(layers)}'")


if __name__ == "__main__":
    main()
