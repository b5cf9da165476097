"""(c) send-allgather across two "hosts": `rankmesh bench --only send_allgather` with its four
ranks split over two network namespaces (scripts/two_hosts.py), so that the pipeline stages sit
on different nodes and talk over tcp through a veth pair while each TP group shares a node.
Appends the measurements to OUT_JSON with transport "netns".

usage: bench/netns_bench.py RANKMESH OUT_JSON [--quick]
Skips (exit 0, with a message) where network namespaces cannot be created.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from two_hosts import TwoHosts, Unavailable  # noqa: E402

rankmesh, out_json = sys.argv[1:3]
quick = sys.argv[3:] == ["--quick"]

try:
    with TwoHosts(f"rb{os.getpid()}", subnet="10.78.0") as hosts, tempfile.TemporaryDirectory() as tmp:
        lines_path = os.path.join(tmp, "measurements.json")
        args = ["bench", "--worker", lines_path, "--only", "send_allgather"] + (["--quick"] if quick else [])
        outs = hosts.run(rankmesh, rankmesh, args, port=29410, timeout=600,
                         env_extra={"RANKMESH_TRANSPORT": "auto"})
        status = 0 if all(code == 0 for code, _, _ in outs) else 1
        measured = []
        if os.path.exists(lines_path):
            for line in open(lines_path):
                line = line.strip()
                if not line.startswith("{"):
                    print(f"netns: {line}", file=sys.stderr)
                    status = 1
                    continue
                m = json.loads(line)
                m["transport"] = "netns"
                measured.append(m)
        with open(out_json, "a") as out:
            for m in measured:
                out.write(json.dumps(m) + "\n")
                print(f"{m['name']:<22} netns  4 ranks  median {m['median']:.4g} {m['unit']}")
        if status:
            for code, _, err in outs:
                print(f"netns: a node exited with {code}: {err[-1500:]}", file=sys.stderr)
        sys.exit(status)
except Unavailable as e:
    print(f"SKIPPED: (c) across two namespaces: {e}")
