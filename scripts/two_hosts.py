"""Two "hosts" on one machine, for tests and benchmarks: two network namespaces joined by a veth
pair, and `rankmesh launch` started in each namespace as one node of a two-node world.

    with TwoHosts(tag) as hosts:          # raises Unavailable where namespaces are not permitted
        outs = hosts.run(RANKMESH, program, args, timeout=150)

Needs root. Every namespace it creates is removed on exit, and every process it starts is
waited for.
"""
import os
import subprocess


class Unavailable(Exception):
    """Network namespaces cannot be created here (not root, or not permitted)."""


def _sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


class TwoHosts:
    def __init__(self, tag, subnet="10.77.0"):
        self.names = [f"{tag}a", f"{tag}b"]
        self.addresses = {self.names[0]: f"{subnet}.1", self.names[1]: f"{subnet}.2"}
        self.links = (f"{tag}x", f"{tag}y")

    def __enter__(self):
        if os.geteuid() != 0:
            raise Unavailable("creating network namespaces needs root")
        try:
            a, b = self.names
            _sh("ip", "netns", "add", a)
            _sh("ip", "netns", "add", b)
            _sh("ip", "link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
            for ns, dev in zip(self.names, self.links):
                _sh("ip", "link", "set", dev, "netns", ns)
                _sh("ip", "-n", ns, "addr", "add", f"{self.addresses[ns]}/24", "dev", dev)
                _sh("ip", "-n", ns, "link", "set", dev, "up")
                _sh("ip", "-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            self._remove_namespaces()
            raise Unavailable(f"network namespaces are not permitted here ({e})")
        return self

    def __exit__(self, *exc):
        self._remove_namespaces()
        return False

    def _remove_namespaces(self):
        for ns in self.names:
            _sh("ip", "netns", "del", ns, check=False)

    @property
    def master(self):
        return self.addresses[self.names[0]]

    def run(self, rankmesh, program, args, nproc_per_node=2, port=29400, timeout=150, env_extra=None):
        """`rankmesh launch` as node 0 in the first namespace and node 1 in the second; returns
        [(returncode, stdout, stderr)] per node."""
        env = dict(os.environ, RANKMESH_SECRET="two-hosts-secret", **(env_extra or {}))
        procs = []
        for node, ns in enumerate(self.names):
            cmd = ["ip", "netns", "exec", ns, rankmesh, "launch", "--nnodes", "2", "--node-rank", str(node),
                   "--nproc-per-node", str(nproc_per_node), "--master-addr", self.master,
                   "--master-port", str(port), "--timeout-s", str(int(timeout * 0.8)), "--", program, *args]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            outs.append((p.returncode, out, err))
        return outs
