"""Two "hosts" on one machine: network namespaces joined by a veth pair that this test creates
itself. Ranks in different namespaces count as different nodes and talk over tcp; the registry
runs over mutual TLS with certificates made for the run. The pipeline example and every
operation give what the in-process runtime gives.

usage: namespaces_test.py RANKMESH OPS_CHECK PIPELINE
Skips (exit 0, with a visible message) where namespaces cannot be created. Removes every
namespace and process it creates.
"""
import os
import re
import subprocess
import sys
import tempfile

RANKMESH, OPS, PIPELINE = sys.argv[1:4]
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
tag = f"rm{os.getpid()}"
hosts = {f"{tag}a": "10.77.0.1", f"{tag}b": "10.77.0.2"}
failures = []


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def setup():
    a, b = hosts
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    sh("ip", "link", "add", f"{tag}x", "type", "veth", "peer", "name", f"{tag}y")
    sh("ip", "link", "set", f"{tag}x", "netns", a)
    sh("ip", "link", "set", f"{tag}y", "netns", b)
    for ns, dev in ((a, f"{tag}x"), (b, f"{tag}y")):
        sh("ip", "-n", ns, "addr", "add", f"{hosts[ns]}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def teardown():
    for ns in hosts:
        sh("ip", "netns", "del", ns, check=False)


def run_two_hosts(program, args, certs, env_extra=None):
    """Starts `rankmesh launch` for node 0 in namespace a and node 1 in namespace b."""
    a = next(iter(hosts))
    env = dict(os.environ, RANKMESH_SECRET="two-hosts-secret",
               RANKMESH_TLS_CERT=certs["cert"], RANKMESH_TLS_KEY=certs["key"],
               RANKMESH_TLS_CA=certs["cert"], **(env_extra or {}))
    procs = []
    for node, ns in enumerate(hosts):
        cmd = ["ip", "netns", "exec", ns, RANKMESH, "launch", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "2", "--master-addr", hosts[a], "--master-port", "29400",
               "--timeout-s", str(int(120 * SCALE)), "--", program, *args]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=150 * SCALE)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        outs.append((p.returncode, out, err))
    return outs


def strip(lines):
    return [re.sub(r"^\[rank \d+\] ", "", l) for l in lines]


if os.geteuid() != 0:
    print("SKIPPED: namespaces_test needs root to create network namespaces")
    sys.exit(0)
try:
    setup()
except (subprocess.CalledProcessError, FileNotFoundError) as e:
    teardown()
    print(f"SKIPPED: network namespaces are not permitted here ({e})")
    sys.exit(0)

try:
    with tempfile.TemporaryDirectory() as tmp:
        certs = {"cert": os.path.join(tmp, "cert.pem"), "key": os.path.join(tmp, "key.pem")}
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", certs["key"],
           "-out", certs["cert"], "-days", "1", "-subj", "/CN=rankmesh-test",
           "-addext", "subjectAltName=" + ",".join(f"IP:{ip}" for ip in hosts.values()))

        alone = subprocess.run([PIPELINE], capture_output=True, text=True, timeout=60 * SCALE)
        want = alone.stdout.splitlines()[-1]
        outs = run_two_hosts(PIPELINE, [], certs)
        lines = strip(outs[0][1].splitlines())
        ok = all(code == 0 for code, _, _ in outs) and want in lines
        print(("ok   " if ok else "FAIL ") + "pipeline across two namespaces prints " + want)
        if not ok:
            failures.append(f"pipeline: {[(c, e[-1500:]) for c, _, e in outs]}")

        embedded = subprocess.run([OPS, "--world", "4"], capture_output=True, text=True, timeout=60 * SCALE)
        reference = sorted(l for l in embedded.stdout.splitlines() if " = " in l)
        outs = run_two_hosts(OPS, ["--world", "4"], certs)
        got = sorted(l for code, out, _ in outs for l in strip(out.splitlines()) if " = " in l)
        ok = all(code == 0 for code, _, _ in outs) and got == reference
        print(("ok   " if ok else "FAIL ") + "every operation across two namespaces as in one process")
        if not ok:
            failures.append(f"ops: {[(c, e[-1500:]) for c, _, e in outs]}")

        # Without certificates the registry refuses to serve beyond loopback.
        a = next(iter(hosts))
        env = dict(os.environ, RANK="0", WORLD_SIZE="2", MASTER_ADDR=hosts[a], MASTER_PORT="29401",
                   RANKMESH_SECRET="x")
        for k in ("RANKMESH_TLS_CERT", "RANKMESH_TLS_KEY", "RANKMESH_TLS_CA"):
            env.pop(k, None)
        r = subprocess.run(["ip", "netns", "exec", a, OPS, "--world", "2"], capture_output=True,
                           text=True, env=env, timeout=30 * SCALE)
        ok = r.returncode != 0 and "mutual TLS" in r.stderr
        print(("ok   " if ok else "FAIL ") + "no plain registry across hosts")
        if not ok:
            failures.append(f"plain registry: exit {r.returncode}: {r.stderr[-500:]}")
finally:
    teardown()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("namespaces: all checks passed")
