#!/usr/bin/env python3
"""A generic predictor for the tests: asks `mrlab predict --platform tdx --json` and reshapes its
registers into the predictor contract. Usage: reshape.py MRLAB SCENARIO [--wrong REG] INPUTS_JSON

--wrong REG flips one bit of REG, to check that a wrong predictor fails the scenario."""
import json
import subprocess
import sys

mrlab, scenario, *rest = sys.argv[1:]
inputs = json.load(open(rest[-1]))
assert inputs["contract"] == 1, inputs
wrong = rest[rest.index("--wrong") + 1] if "--wrong" in rest else None
out = subprocess.run(
    [mrlab, "predict", scenario, "--platform", "tdx", "--json"],
    check=True, capture_output=True, text=True,
).stdout
regs = json.loads(out)["registers"]
result = {name: regs[name] for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}
if wrong:
    value = bytearray.fromhex(result[wrong])
    value[0] ^= 1
    result[wrong] = value.hex()
print(json.dumps(result))
