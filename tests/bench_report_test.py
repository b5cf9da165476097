"""bench/report.py over several passes: each row keeps its side's best pass (lowest median time,
highest rate), counts the passes, and a failure in any pass stays reported.
usage: bench_report_test.py REPORT_PY"""
import importlib.util
import json
import os
import sys
import tempfile

spec = importlib.util.spec_from_file_location("report", sys.argv[1])
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def line(name, median, unit="us", transport="shm", size=8, library="mpi", **more):
    return json.dumps(dict(name=name, library=library, transport=transport, ranks=2, size=size,
                           median=median, p99=median * 2, unit=unit, iterations=10, **more))


with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "mpi.json")
    with open(path, "w") as f:
        # three passes of a latency, two of a rate, one benchmark failing in its second pass
        for median in (2.0, 0.5, 1.0):
            f.write(line("p2p_latency", median) + "\n")
        for rate in (3.0, 5.0):
            f.write(line("dict_one_way", rate, unit="GB/s", size=64 << 20) + "\n")
        f.write(line("broadcast", 4.0, unit="ms") + "\n")
        f.write(json.dumps(dict(name="broadcast", library="mpi", transport="shm", ranks=2,
                                error="stale bytes")) + "\n")
    errors = {}
    data = report.load(path, errors)

p2p = data[("mpi", "p2p_latency", "shm", 2, 8)]
assert p2p["median"] == 0.5, p2p  # the fastest pass, not the last
assert p2p["passes"] == 3, p2p
rate = data[("mpi", "dict_one_way", "shm", 2, 64 << 20)]
assert rate["median"] == 5.0 and rate["passes"] == 2, rate  # a rate: the highest
assert data[("mpi", "broadcast", "shm", 2, 8)]["median"] == 4.0
# measured in one pass, failed in another: the failure is not hidden by the measurement
assert errors == {("mpi", "broadcast", "shm", 2): "stale bytes"}, errors
print("report.py: best pass per side, passes counted, failures kept")

# A row whose benchmark failed in a pass (here MPI's) says so, and its target does not hold,
# although another pass measured it.
table = report.Report(data, errors)
measured = data[("mpi", "broadcast", "shm", 2, 8)]
table.row("(d) broadcast", "shm", 2, 8, measured, measured, target=1.2, name="broadcast")
assert table.rows[-1][-1] == "failed", table.rows[-1]
assert table.verdicts[-1][1] is False, table.verdicts
table.row("(f) p2p latency", "shm", 2, 8, p2p, p2p, target=1.2, name="p2p_latency")
assert table.rows[-1][-1] == "holds", table.rows[-1]
print("report.py: a row with a failed pass is marked failed")
