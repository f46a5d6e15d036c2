"""Hidden grader: runs in a fresh sandbox with the final workspace at $ENACT_WORKSPACE
and writes structured results to $ENACT_RESULTS. Its exit code is ignored."""
import json
import os
import sys

sys.path.insert(0, os.environ["ENACT_WORKSPACE"])
checks = []


def check(name, fn):
    try:
        ok = fn()
        checks.append({"name": name, "status": "passed" if ok else "failed", "detail": ""})
    except Exception as e:  # a crash in the code under test fails that check only
        checks.append({"name": name, "status": "failed", "detail": repr(e)})


try:
    import stats
except Exception as e:
    stats = None
    checks.append({"name": "import", "status": "failed", "detail": repr(e)})

if stats is not None:
    check("mean_two", lambda: stats.mean([2, 4]) == 3)
    check("mean_one", lambda: stats.mean([7]) == 7)
    check("mean_floats", lambda: abs(stats.mean([0.5, 1.5, 2.5]) - 1.5) < 1e-9)
    check("spread_unchanged", lambda: stats.spread([3, -1, 10]) == 11)

with open(os.environ["ENACT_RESULTS"], "w") as f:
    json.dump({"checks": checks}, f)
