"""bench/report.py over several passes: each row keeps its side's best pass (lowest median time,
highest rate), counts the passes, and a failure in any pass stays reported; a target on rankmesh
alone divides two measurements of one pass.
usage: bench_report_test.py REPORT_PY"""
import importlib.util
import json
import os
import sys
import tempfile

spec = importlib.util.spec_from_file_location("report", sys.argv[1])
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def line(name, median, unit="us", transport="shm", size=8, library="mpi", ranks=2, **more):
    return json.dumps(dict(name=name, library=library, transport=transport, ranks=ranks, size=size,
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
assert [m["median"] for m in p2p["by_pass"]] == [2.0, 0.5, 1.0], p2p  # every pass, in file order
assert p2p["by_pass"][1] is p2p
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

# A target on rankmesh alone divides two measurements of one world: the ratio is taken within each
# pass, the best pass's reported with that pass's numbers. Each side's best pass would pair pass 2's
# auto with pass 2's sliced (1.02) for (c), although pass 1 showed 1.00 (whole the better there),
# and pass 1's big donated dict with pass 2's small one (1.25, which no pass showed).
mib64 = 64 << 20
passes = [  # (c): auto, sliced, whole (ms); donated dict: the big one, the 64 B one (µs)
    dict(auto=8.0, sliced=9.0, whole=8.0, big=5.0, small=5.0),  # 1.00 and 1.00
    dict(auto=7.14, sliced=7.0, whole=9.5, big=6.0, small=4.0),  # 1.02 and 1.50
]
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "rankmesh.json")
    with open(path, "w") as f:
        for p in passes:
            for path_name in ("auto", "sliced", "whole"):
                f.write(line(f"send_allgather_{path_name}", p[path_name], unit="ms", size=mib64,
                             library="rankmesh", ranks=4) + "\n")
            f.write(line("p2p_donated", p["small"], transport="inproc", size=64, library="rankmesh") + "\n")
            f.write(line("p2p_donated", p["big"], transport="inproc", size=mib64, library="rankmesh") + "\n")
    data = report.load(path, {})
table = report.Report(data)
table.build()
chosen = next(r for r in table.rows if r[:2] == ("(c) chosen path", "shm"))
assert chosen[10] == "1.00" and chosen[-1] == "holds", chosen
assert chosen[4:6] == ("8.000 ms", "16.0 ms"), chosen  # pass 1's auto, median and p99
donated = next(r for r in table.rows if r[0] == "donated dict")
assert donated[10] == "1.00" and donated[-1] == "holds", donated
assert donated[4:6] == ("5.000 µs", "10.0 µs"), donated  # pass 1's big dict
assert ("donated dict inproc", True, "1.00×") in table.verdicts, table.verdicts
print("report.py: a target on rankmesh alone divides two measurements of one pass")
