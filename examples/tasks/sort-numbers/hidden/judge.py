"""The judge of sort-numbers: it never runs candidate code and never sees the candidate's
files, only the outputs enact recorded (/outputs/outputs.json) and this hidden directory.
It checks that each output is the sorted input, and writes the results to $ENACT_RESULTS."""
import json
import os

cases = {c["id"]: c for c in json.load(open(os.path.join(os.environ["ENACT_HIDDEN"], "cases.json")))}
record = json.load(open(os.environ["ENACT_OUTPUTS"]))
checks = []
for out in record["outputs"]:
    case = cases[out["id"]]
    want = sorted(int(x) for x in case["input"].split())
    if out["status"] != "exited" or out["exit_code"] != 0:
        checks.append({"name": out["id"], "status": "failed", "detail": f"program {out['status']}"})
        continue
    try:
        got = [int(x) for x in out["stdout"].split()]
    except ValueError:
        checks.append({"name": out["id"], "status": "failed", "detail": "output is not integers"})
        continue
    ok = got == want
    checks.append({"name": out["id"], "status": "passed" if ok else "failed",
                   "detail": "" if ok else f"got {got[:20]}"})
with open(os.environ["ENACT_RESULTS"], "w") as f:
    json.dump({"checks": checks}, f)
