"""Compares rankmesh bench with the MPI program: a markdown table of rankmesh/MPI ratios against
the targets of issue 5 (each side's median, p99 and CPU time per iteration), a table of what
waiting costs in CPU, a latency table, and an SVG chart of latency against size.

usage: /usr/bin/python3 bench/report.py RANKMESH_JSON MPI_JSON [--svg FILE] [--markdown FILE]
                                        [--require rankmesh|mpi ...] [--python PYTHON_JSON]

Either file may be missing or empty (rows then show a dash). --require exits 1 unless every
measurement that library writes is there with a positive median (the CI smoke test).
--python: the rows of bench/python_vs_gloo.py (rankmesh.distributed against vLLM's gloo path),
a table of their own with issue 11's targets, and their p2p latencies in the chart.
Python 3 standard library only.
"""
import argparse
import itertools
import json
import math
import os
import statistics
import sys

TRANSPORTS = ["inproc", "shm", "tcp"]


def better(m, kept):
    """Whether measurement m is a better pass than kept: a lower median for times, a higher one
    for rates. scripts/bench.sh runs each side in several passes, interleaved, and the table shows
    each side's best: this machine's cost of a message between cores changes by up to 5x from one
    minute to the next, and a side measured only in a slow minute would be compared with the
    other's fast one."""
    if kept is None:
        return True
    if m["unit"] == "GB/s":
        return m["median"] > kept["median"]
    return m["median"] < kept["median"]


def best_of(ms):
    """The best (better()) of measurements ms, None among them skipped; None if there is none."""
    kept = None
    for m in ms:
        if m is not None and better(m, kept):
            kept = m
    return kept


def passes_of(m):
    """Measurement m's passes in file order (load()'s "by_pass"; m alone if it was built by hand),
    [] for None."""
    return [] if m is None else m.get("by_pass", [m])


def load(path, errors=None):
    """{(library, name, transport, ranks, size): measurement} from a JSON-lines file, the best of
    its passes (better()) with "passes" counting them and "by_pass" holding every pass's
    measurement in file order (the Nth line of a key is its Nth pass: Report.self_ratio divides
    two measurements of one pass); a benchmark that failed ({..., "error": ...}) in any pass goes
    to errors[(library, name, transport, ranks)] (the summary lists it even where another pass
    measured it: a failure is a wrong result, not a slow one)."""
    by_pass = {}
    failed = {}
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                m = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"report.py: {path}:{n}: not JSON ({e})")
            if "error" in m:
                failed[(m.get("library", "rankmesh"), m["name"], m["transport"], m.get("ranks", 2))] = m["error"]
                continue
            key = (m.get("library", "rankmesh"), m["name"], m["transport"], m.get("ranks", 2), m["size"])
            by_pass.setdefault(key, []).append(m)
    found = {}
    for key, ms in by_pass.items():
        found[key] = m = best_of(ms)
        m["by_pass"] = ms
        m["passes"] = len(ms)
    if errors is not None:
        errors.update(failed)
    return found


def pattern_of(name):
    """The benchmark (a world of its own in rankmesh bench) a measurement belongs to."""
    if name.startswith("send_allgather"):
        return "send_allgather"
    if name.startswith("dict_one_way"):
        return "dict_one_way"
    return name


def size_text(b):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale and b % scale == 0:
            return f"{b // scale} {unit}"
    return f"{b} B"


def number_text(v, unit):
    digits = 3 if v < 10 else (1 if v < 1000 else 0)
    return f"{v:.{digits}f} {unit.replace('us', 'µs')}"


def value_text(m):
    return "—" if m is None else number_text(m["median"], m["unit"])


def p99_text(m):
    return "—" if m is None or "p99" not in m else number_text(m["p99"], m["unit"])


def cpu_text(m):
    """CPU time per iteration of all the world's processes (cpu_us), in µs or ms."""
    if m is None or "cpu_us" not in m:
        return "—"
    us = m["cpu_us"]
    return number_text(us / 1000, "ms") if us >= 1000 else number_text(us, "us")


class Report:
    def __init__(self, data, errors=None):
        self.data = data
        self.errors = errors or {}
        self.rows = []  # (measurement, transport, ranks, size, rankmesh, mpi, ratio, target, verdict)
        self.verdicts = []  # (label, holds, ratio text)
        self.against_mpi = []  # (label, transport, ranks, size, rankmesh, mpi): rows with both

    def get(self, library, name, transport, ranks, size):
        return self.data.get((library, name, transport, ranks, size))

    def failed(self, name, transport, ranks):
        """Whether a pass of the benchmark failed, on either side: its row shows "failed" even
        where another pass measured it (a failure is a wrong result, not a slow one)."""
        return name is not None and any((library, pattern_of(name), transport, ranks) in self.errors
                                        for library in ("rankmesh", "mpi"))

    def cell(self, m, name, transport, ranks):
        return "failed" if m is None and self.failed(name, transport, ranks) else value_text(m)

    def row(self, label, transport, ranks, size, rm, mpi, target=None, higher_is_better=False,
            mpi_transport=None, name=None):
        ratio = rm["median"] / mpi["median"] if rm and mpi and mpi["median"] > 0 else None
        verdict = ""
        failed = self.failed(name, transport, ranks)
        if ratio is not None and not failed:
            self.against_mpi.append((label, transport, ranks, size, rm, mpi))
        if target is not None and ratio is not None and not failed:
            holds = ratio >= target if higher_is_better else ratio <= target
            verdict = "holds" if holds else "not yet"
            where = f"{transport}, {ranks} ranks" if label.startswith("(d)") else transport
            self.verdicts.append((f"{label} {where}", holds, f"{ratio:.2f}×"))
        target_text = "" if target is None else ("≥ " if higher_is_better else "≤ ") + f"{target}×"
        mpi_label = value_text(mpi) + (f" ({mpi_transport})" if mpi and mpi_transport else "")
        if failed:
            verdict = "failed"
            if target is not None:
                self.verdicts.append((f"{label} {transport}", False, "failed"))
        self.rows.append((label, transport, str(ranks), size_text(size), self.cell(rm, name, transport, ranks),
                          p99_text(rm), cpu_text(rm), mpi_label, p99_text(mpi), cpu_text(mpi),
                          "—" if ratio is None else f"{ratio:.2f}", target_text, verdict))

    def absolute(self, label, transport, ranks, size, rm, limit, unit, mpi=None, mpi_transport=None,
                 name=None):
        verdict = ""
        if self.failed(name, transport, ranks):
            verdict = "failed"
            self.verdicts.append((f"{label} {transport}", False, "failed"))
        elif rm is not None:
            holds = rm["median"] <= limit
            verdict = "holds" if holds else "not yet"
            self.verdicts.append((f"{label} {transport}", holds, value_text(rm)))
        ratio = rm["median"] / mpi["median"] if rm and mpi and mpi["median"] > 0 else None
        if ratio is not None and verdict != "failed":
            self.against_mpi.append((label, transport, ranks, size, rm, mpi))
        mpi_label = value_text(mpi) + (f" ({mpi_transport})" if mpi and mpi_transport else "")
        self.rows.append((label, transport, str(ranks), size_text(size), self.cell(rm, name, transport, ranks),
                          p99_text(rm), cpu_text(rm), mpi_label, p99_text(mpi), cpu_text(mpi),
                          "—" if ratio is None else f"{ratio:.2f}", f"≤ {limit} {unit}", verdict))

    def self_ratio(self, label, transport, ranks, size_text_, a_passes, b_passes, limit, what, name=None):
        """A target on rankmesh alone: a / b <= limit, a_passes and b_passes the two measurements'
        passes (pass k at index k, None where a pass lacks it). The two are measured in one world,
        so the ratio is taken within each pass and the best pass's reported, the rankmesh cell
        showing that pass's a: each side's best pass could pair one pass's fast minute with
        another's slow one and report a ratio that no pass showed."""
        verdict, ratio_text = "", "—"
        # Passes pair up by position only where both have every pass: a pass that failed or
        # crashed part-way leaves no line, and the passes after it would pair with the wrong ones
        # (such a row is marked failed anyway, below).
        ratios = [(a["median"] / b["median"], a) for a, b in zip(a_passes, b_passes)
                  if a and b and b["median"] > 0] if len(a_passes) == len(b_passes) else []
        ratio, rm_a = min(ratios, key=lambda r: r[0], default=(None, best_of(a_passes)))
        if ratio is not None:
            ratio_text = f"{ratio:.2f}"
            holds = ratio <= limit
            verdict = "holds" if holds else "not yet"
        if self.failed(name, transport, ranks):
            verdict = "failed"
            self.verdicts.append((f"{label} {transport}", False, "failed"))
        elif verdict:
            self.verdicts.append((f"{label} {transport}", holds, f"{ratio:.2f}×"))
        self.rows.append((label, transport, str(ranks), size_text_, self.cell(rm_a, name, transport, ranks),
                          p99_text(rm_a), cpu_text(rm_a), "—", "—", "—", ratio_text, f"≤ {limit}× {what}",
                          verdict))

    def build(self):
        g = self.get
        mib64, mib16 = 64 << 20, 16 << 20
        # Sizes as measured (the quick mode shrinks them): take whatever size each entry has.
        def any_size(name, transport, ranks, library="rankmesh"):
            for (lib, n, t, r, s), m in self.data.items():
                if lib == library and n == name and t == transport and r == ranks:
                    return s
            return None

        # (a)
        for t in TRANSPORTS:
            rm = g("rankmesh", "dict_roundtrip", t, 2, 1024)
            if t == "inproc":
                self.absolute("(a) dict round trip", t, 2, 1024, rm, 5, "µs",
                              g("mpi", "dict_roundtrip", "shm", 2, 1024), "shm", name="dict_roundtrip")
            else:
                self.row("(a) dict round trip", t, 2, 1024, rm, g("mpi", "dict_roundtrip", t, 2, 1024),
                         1.5 if t == "shm" else 1.2, name="dict_roundtrip")
        # (b)
        for t in TRANSPORTS:
            size = any_size("dict_one_way", t, 2) or any_size("dict_one_way", t, 2, "mpi") or mib64
            mpi_t = "shm" if t == "inproc" else t
            mpi = g("mpi", "dict_one_way", mpi_t, 2, size)
            target = {"shm": 1.5, "tcp": 1.0}.get(t)
            self.row("(b) dict one way", t, 2, size, g("rankmesh", "dict_one_way", t, 2, size), mpi,
                     target, higher_is_better=True, mpi_transport=mpi_t if t == "inproc" else None,
                     name="dict_one_way")
            self.row("(b) … donated", t, 2, size, g("rankmesh", "dict_one_way_donated", t, 2, size), mpi,
                     None, higher_is_better=True, mpi_transport=mpi_t if t == "inproc" else None,
                     name="dict_one_way")
        for t in ("shm", "tcp"):
            size = any_size("dict_one_way_reuse", t, 2, "mpi") or mib64
            self.row("(b) MPI reusing its buffer", t, 2, size, None, g("mpi", "dict_one_way_reuse", t, 2, size))
        # (c), also across two network namespaces (bench/netns_bench.py) where it could run
        netns = [t for t in ("netns",) if any_size("send_allgather_sliced", t, 4)]
        for t in TRANSPORTS + netns:
            size = any_size("send_allgather_sliced", t, 4) or mib64
            mpi_t = {"inproc": "shm", "netns": None}.get(t, t)
            sliced = g("rankmesh", "send_allgather_sliced", t, 4, size)
            whole = g("rankmesh", "send_allgather_whole", t, 4, size)
            auto = g("rankmesh", "send_allgather_auto", t, 4, size)
            lab = mpi_t if t == "inproc" else None
            self.row("(c) send-allgather, sliced", t, 4, size, sliced,
                     g("mpi", "send_allgather_sliced", mpi_t, 4, size), mpi_transport=lab,
                     name="send_allgather")
            self.row("(c) send whole", t, 4, size, whole,
                     g("mpi", "send_allgather_whole", mpi_t, 4, size), mpi_transport=lab,
                     name="send_allgather")
            # auto against the better of sliced and whole in each pass: the three are measured in
            # the same iterations of one world
            best = [best_of(ms) for ms in itertools.zip_longest(passes_of(sliced), passes_of(whole))]
            self.self_ratio("(c) chosen path", t, 4, size_text(size), passes_of(auto), best, 1.05,
                            "the better of the two", name="send_allgather")
        # (a) oversubscribed: pairs doing round trips at once, 4 and 16 ranks on this machine's cores
        for ranks in (4, 16):
            for t in TRANSPORTS:
                mpi_t = "shm" if t == "inproc" else t
                size = any_size("dict_roundtrip_pairs", t, ranks) or 1024
                self.row(f"(a) dict round trip, {ranks // 2} pairs", t, ranks, size,
                         g("rankmesh", "dict_roundtrip_pairs", t, ranks, size),
                         g("mpi", "dict_roundtrip_pairs", mpi_t, ranks, size),
                         mpi_transport=mpi_t if t == "inproc" else None, name="dict_roundtrip_pairs")
        # (d), reduce_scatter and broadcast measured without a target
        for name in ("all_gather", "all_reduce", "reduce_scatter", "broadcast"):
            for ranks in (2, 4):
                for t in TRANSPORTS:
                    size = any_size(name, t, ranks) or mib16
                    mpi_t = "shm" if t == "inproc" else t
                    target = None if t == "inproc" or name in ("reduce_scatter", "broadcast") else 1.2
                    self.row(f"(d) {name}", t, ranks, size, g("rankmesh", name, t, ranks, size),
                             g("mpi", name, mpi_t, ranks, size), target,
                             mpi_transport=mpi_t if t == "inproc" else None, name=name)
        # (e)
        for t in TRANSPORTS:
            mpi_t = "shm" if t == "inproc" else t
            self.row("(e) broadcast_object", t, 4, 1024, g("rankmesh", "broadcast_object", t, 4, 1024),
                     g("mpi", "broadcast_object", mpi_t, 4, 1024),
                     mpi_transport=mpi_t if t == "inproc" else None, name="broadcast_object")
        # (f) p2p latency at every size measured (the latency table below: the medians alone)
        for t in TRANSPORTS:
            mpi_t = "shm" if t == "inproc" else t
            sizes = sorted({s for (lib, n, tt, r, s) in self.data
                            if n == "p2p_latency" and (lib, tt) in (("rankmesh", t), ("mpi", mpi_t))})
            for size in sizes:
                self.row("(f) p2p latency", t, 2, size, g("rankmesh", "p2p_latency", t, 2, size),
                         g("mpi", "p2p_latency", mpi_t, 2, size),
                         mpi_transport=mpi_t if t == "inproc" else None, name="p2p_latency")
        # inproc donation
        small = g("rankmesh", "p2p_donated", "inproc", 2, 64)
        big_size = max((s for (lib, n, t, r, s) in self.data if n == "p2p_donated"), default=mib64)
        big = g("rankmesh", "p2p_donated", "inproc", 2, big_size)
        self.self_ratio("donated dict", "inproc", 2, f"{size_text(big_size)} vs 64 B", passes_of(big),
                        passes_of(small), 1.1, "the 64 B one", name="p2p_donated")

    def table(self):
        head = ("measurement", "transport", "ranks", "size", "rankmesh", "p99", "CPU/iter", "MPI", "p99",
                "CPU/iter", "rankmesh/MPI", "target", "verdict")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            lines.append("| " + " | ".join(r) + " |")
        return "\n".join(lines)

    def waiting_table(self):
        """What a wait costs in CPU: a rank parked for seconds (% of a core, target < 1%), and a
        1 ms wait (CPU per wait), under the default spin and spin 0, against MPI's."""
        g = self.get
        if not any(n.startswith(("parked_wait", "wait_1ms")) for (_, n, _, _, _) in self.data):
            return ""
        head = ("transport", "parked: rankmesh", "spin 0", "MPI", "verdict (< 1% of a core)",
                "1 ms wait, CPU per wait: rankmesh", "spin 0", "MPI", "its time: rankmesh", "MPI")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in TRANSPORTS:
            mpi_t = "shm" if t == "inproc" else t
            parked, parked0 = g("rankmesh", "parked_wait", t, 2, 0), g("rankmesh", "parked_wait_spin0", t, 2, 0)
            mpi_parked = g("mpi", "parked_wait", mpi_t, 2, 0)
            wait, wait0 = g("rankmesh", "wait_1ms", t, 2, 8), g("rankmesh", "wait_1ms_spin0", t, 2, 8)
            mpi_wait = g("mpi", "wait_1ms", mpi_t, 2, 8)
            verdict = ""
            if parked:
                holds = parked["median"] < 1
                verdict = "holds" if holds else "not yet"
                self.verdicts.append((f"parked wait {t} < 1% of a core", holds, f"{parked['median']:.2f}%"))
            pct = lambda m: "—" if m is None else f"{m['median']:.2f}%"
            mpi_suffix = f" ({mpi_t})" if t == "inproc" else ""
            lines.append(f"| {t} | {pct(parked)} | {pct(parked0)} | {pct(mpi_parked)}{mpi_suffix} | {verdict} | "
                         f"{cpu_text(wait)} | {cpu_text(wait0)} | {cpu_text(mpi_wait)}{mpi_suffix} | "
                         f"{value_text(wait)} | {value_text(mpi_wait)} |")
        return "\n".join(lines)

    def latency_table(self):
        series = latency_series(self.data)
        sizes = sorted({s for points in series.values() for s in points})
        if not sizes:
            return ""
        names = [n for n in SERIES if n in series]
        lines = ["| size | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for s in sizes:
            cells = []
            for n in names:
                v = series[n].get(s)
                cells.append("—" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}"))
            lines.append(f"| {size_text(s)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def behind_mpi(self, statistic):
        """The rows where rankmesh is behind MPI (a longer time, a lower rate), each side taken as
        its best pass ("best": the measurement load() kept, as the table shows) or its median
        pass ("median"): [(row, ratio)]."""
        def side(m):
            if statistic == "median":
                return statistics.median(p["median"] for p in passes_of(m))
            return m["median"]

        behind = []
        for label, transport, ranks, size, rm, mpi in self.against_mpi:
            rate = rm["unit"] == "GB/s"
            a, b = side(rm), side(mpi)
            if b <= 0:
                continue
            ratio = a / b
            if (ratio < 1.0) if rate else (ratio > 1.0):
                behind.append((f"{label} {transport} {ranks} ranks {size_text(size)}", ratio))
        return behind

    def summary(self):
        held = [v for v in self.verdicts if v[1]]
        missed = [v for v in self.verdicts if not v[1]]
        out = [f"targets holding: {len(held)} of {len(self.verdicts)}"]
        if held:
            out.append("  hold:    " + "; ".join(f"{l} ({r})" for l, _, r in held))
        if missed:
            out.append("  not yet: " + "; ".join(f"{l} ({r})" for l, _, r in missed))
        # Issue 12 asks for rankmesh behind MPI on no row. The table shows each side's best pass;
        # where one side's lucky pass decides a row (this machine's phases, README "Benchmarks"),
        # each side's median pass tells otherwise, so both are counted.
        if self.against_mpi:
            out.append(f"rows against MPI: {len(self.against_mpi)}")
            for statistic in ("best", "median"):
                behind = self.behind_mpi(statistic)
                out.append(f"  behind by each side's {statistic} pass: {len(behind)}"
                           + (": " + "; ".join(f"{row} ({ratio:.2f}×)" for row, ratio in behind)
                              if behind else ""))
        for (lib, name, t, ranks), error in sorted(self.errors.items()):
            out.append(f"  FAILED:  {lib} {name} on {t}, {ranks} ranks: {error}")
        return "\n".join(out)


SERIES = ["rankmesh inproc", "rankmesh shm", "rankmesh tcp", "MPI shm", "MPI tcp",
          "Python rankmesh shm", "Python gloo tcp"]
COLORS = {"rankmesh inproc": "#2ca02c", "rankmesh shm": "#1f77b4", "rankmesh tcp": "#d62728",
          "MPI shm": "#1f77b4", "MPI tcp": "#d62728",
          "Python rankmesh shm": "#9467bd", "Python gloo tcp": "#ff7f0e"}
# Series drawn with hollow squares (the others with dots), and their lines' dashes.
HOLLOW = ("MPI", "Python gloo")
DASHES = {"MPI": "6 4", "Python rankmesh": "2 3", "Python gloo": "2 3"}
# The label of each library's series: "<prefix><transport>".
SERIES_PREFIX = {"rankmesh": "rankmesh ", "mpi": "MPI ", "rankmesh-python": "Python rankmesh ",
                 "gloo": "Python gloo "}


def latency_series(data):
    """{series name: {size: median µs}} for p2p_latency."""
    series = {}
    for (lib, name, t, ranks, size), m in data.items():
        if name != "p2p_latency":
            continue
        if lib not in SERIES_PREFIX:
            continue
        series.setdefault(SERIES_PREFIX[lib] + t, {})[size] = m["median"]
    return series


def svg_chart(data):
    series = latency_series(data)
    width, height = 760, 470
    left, right, top, bottom = 70, 180, 40, 60
    pw, ph = width - left - right, height - top - bottom
    sizes = sorted({s for pts in series.values() for s in pts}) or [8, 64 << 20]
    values = [v for pts in series.values() for v in pts.values() if v > 0] or [1, 10]
    x_lo, x_hi = math.log2(min(sizes)), math.log2(max(sizes))
    if x_hi == x_lo:
        x_hi += 1
    y_lo = math.floor(math.log10(min(values)))
    y_hi = math.ceil(math.log10(max(values)))
    if y_hi == y_lo:
        y_hi += 1

    def x(size):
        return left + (math.log2(size) - x_lo) / (x_hi - x_lo) * pw

    def y(v):
        return top + ph - (math.log10(v) - y_lo) / (y_hi - y_lo) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="15">'
           'Point-to-point latency: a tensor dict of one tensor, until its acknowledgement returns</text>']
    for d in range(y_lo, y_hi + 1):
        yy = y(10 ** d)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        label = f"{10 ** d:g}" if d >= 0 else f"{10 ** d:.{-d}f}"
        out.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
    last_label = -1e9
    for s in sizes:
        xx = x(s)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#eee"/>')
        crowded = xx - last_label < 48  # a label too close to the previous one goes a line lower
        out.append(f'<text x="{xx:.1f}" y="{top + ph + (32 if crowded else 18)}" '
                   f'text-anchor="middle">{size_text(s)}</text>')
        last_label = -1e9 if crowded else xx
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">message size</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">median latency (µs, log scale)</text>')
    legend_y = top + 10
    for name in SERIES:
        pts = series.get(name)
        if not pts:
            continue
        color = COLORS[name]
        dash = next((f' stroke-dasharray="{d}"' for p, d in DASHES.items() if name.startswith(p)), "")
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in sorted(pts.items()) if v > 0)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for s, v in sorted(pts.items()):
            if v > 0:
                if name.startswith(HOLLOW):
                    out.append(f'<rect x="{x(s) - 3.5:.1f}" y="{y(v) - 3.5:.1f}" width="7" height="7" '
                               f'fill="white" stroke="{color}" stroke-width="1.5"/>')
                else:
                    out.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}"/>')
        lx = left + pw + 20
        out.append(f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 30}" y2="{legend_y}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 38}" y="{legend_y + 4}">{name}</text>')
        legend_y += 22
    out.append("</svg>")
    return "\n".join(out) + "\n"


# bench/python_vs_gloo.py: rankmesh.distributed (library "rankmesh-python", shm) against the way
# vLLM's GroupCoordinator communicates on CPU today (torch.distributed over gloo, library "gloo"),
# and the Python small-dict round trip against the C++ one ("rankmesh-cxx", measured in the same
# run; else "rankmesh" from rankmesh bench). Issue 11's targets: gloo/rankmesh at least ...
PYTHON_TARGETS = [("dict_roundtrip", 2, 30.0), ("dict_one_way", 2, 2.0), ("all_reduce", 2, 1.5),
                  ("all_reduce", 4, 1.5)]
PYTHON_OVERHEAD_TARGET = 2.0  # ... and the Python round trip at most this times the C++ one


def python_section(data, errors):
    """(markdown text, verdicts) for the Python rows; ("", []) when there are none."""
    libs = ("rankmesh-python", "gloo")
    if not any(k[0] in libs for k in data) and not any(k[0] in libs for k in errors):
        return "", []

    def get(lib, name, ranks, transport=None):
        found = [m for (l, n, t, r, _), m in data.items()
                 if (l, n, r) == (lib, name, ranks) and transport in (None, t)]
        return max(found, key=lambda m: m["size"], default=None)

    def cell(lib, m, name, ranks):
        if m is None:
            return "failed" if any(k[:2] == (lib, name) and k[3] == ranks for k in errors) else "—"
        p99 = f" (p99 {value_text(dict(m, median=m['p99']))})" if "p99" in m else ""
        return value_text(m) + p99

    head = ("measurement", "ranks", "size", "rankmesh.distributed (shm)", "gloo, vLLM's path",
            "gloo/rankmesh", "target", "verdict")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for name, ranks, target in PYTHON_TARGETS:
        rm, gl = get("rankmesh-python", name, ranks), get("gloo", name, ranks)
        ratio, verdict = None, ""
        if rm and gl and rm["median"] > 0 and gl["median"] > 0:
            # gloo's time over rankmesh's: for GB/s, rankmesh's rate over gloo's
            ratio = rm["median"] / gl["median"] if rm["unit"] == "GB/s" else gl["median"] / rm["median"]
            verdict = "holds" if ratio >= target else "not yet"
            verdicts.append((f"(py) {name}, {ranks} ranks, gloo/rankmesh", ratio >= target, f"{ratio:.1f}×"))
        elif rm is None and any(k[:2] == ("rankmesh-python", name) for k in errors):
            verdict = "failed"
            verdicts.append((f"(py) {name}, {ranks} ranks", False, "failed"))
        size = (rm or gl or {}).get("size")
        lines.append(f"| (py) {name} | {ranks} | {size_text(size) if size else '—'} | "
                     f"{cell('rankmesh-python', rm, name, ranks)} | {cell('gloo', gl, name, ranks)} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}'} | ≥ {target}× | {verdict} |")
    py = get("rankmesh-python", "dict_roundtrip", 2)
    cxx = get("rankmesh-cxx", "dict_roundtrip", 2) or get("rankmesh", "dict_roundtrip", 2, "shm")
    over, verdict = None, ""
    if py and cxx and cxx["median"] > 0:
        over = py["median"] / cxx["median"]
        verdict = "holds" if over <= PYTHON_OVERHEAD_TARGET else "not yet"
        verdicts.append(("(py) Python small dict round trip / C++ (shm)", over <= PYTHON_OVERHEAD_TARGET,
                         f"{over:.2f}×"))
    lines.append(f"| (py) dict_roundtrip, Python over C++ | 2 | 1 KiB | {cell('rankmesh-python', py, 'dict_roundtrip', 2)} "
                 f"| C++: {value_text(cxx)} | {'—' if over is None else f'{over:.2f} (Python/C++)'} "
                 f"| ≤ {PYTHON_OVERHEAD_TARGET}× | {verdict} |")
    text = ("Python (bench/python_vs_gloo.py): rankmesh.distributed under `rankmesh launch` (shm) "
            "against torch.distributed over gloo called as vLLM's GroupCoordinator calls it on CPU; "
            "ratios are gloo's median time over rankmesh's (higher is better), the last row "
            "rankmesh's Python round trip over its C++ one (`rankmesh bench`, shm).\n\n"
            + "\n".join(lines) + "\n")
    return text, verdicts


# What each library writes: (name, transports, ranks).
EXPECTED = {
    "rankmesh": [(n, TRANSPORTS, 2) for n in ("dict_roundtrip", "dict_one_way", "dict_one_way_donated",
                                              "all_gather", "all_reduce", "reduce_scatter", "broadcast",
                                              "p2p_latency", "parked_wait", "parked_wait_spin0",
                                              "wait_1ms", "wait_1ms_spin0")]
    + [("p2p_donated", ["inproc"], 2)]
    + [(n, TRANSPORTS, 4) for n in ("send_allgather_auto", "send_allgather_sliced",
                                    "send_allgather_whole", "all_gather", "all_reduce",
                                    "reduce_scatter", "broadcast", "broadcast_object",
                                    "dict_roundtrip_pairs")]
    + [("dict_roundtrip_pairs", TRANSPORTS, 16)],
    "mpi": [(n, ["shm", "tcp"], 2) for n in ("dict_roundtrip", "dict_one_way", "dict_one_way_reuse",
                                             "all_gather", "all_reduce", "reduce_scatter", "broadcast",
                                             "p2p_latency", "parked_wait", "wait_1ms")]
    + [(n, ["shm", "tcp"], 4) for n in ("send_allgather_sliced", "send_allgather_whole",
                                        "all_gather", "all_reduce", "reduce_scatter", "broadcast",
                                        "broadcast_object", "dict_roundtrip_pairs")],
}
# Fields every measurement carries besides its median.
REQUIRED_FIELDS = ("p99", "cpu_us")


def missing(data, library):
    """What `library` should have written and did not (or wrote without a positive median)."""
    gaps = []
    for name, transports, ranks in EXPECTED[library]:
        for t in transports:
            found = [m for (lib, n, tt, r, _), m in data.items() if (lib, n, tt, r) == (library, name, t, ranks)]
            if not found:
                gaps.append(f"{library} {name} {t} {ranks} ranks")
            gaps += [f"{library} {name} {t} {ranks} ranks: median {m['median']}"
                     for m in found if not (m["median"] > 0 and math.isfinite(m["median"]))]
            gaps += [f"{library} {name} {t} {ranks} ranks: no {field}"
                     for m in found for field in REQUIRED_FIELDS
                     if not (field in m and m[field] >= 0 and math.isfinite(m[field]))]
    return gaps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rankmesh_json")
    parser.add_argument("mpi_json")
    parser.add_argument("--svg")
    parser.add_argument("--markdown")
    parser.add_argument("--require", action="append", choices=sorted(EXPECTED), default=[])
    parser.add_argument("--python", help="bench/python_vs_gloo.py's JSON lines")
    args = parser.parse_args()
    errors = {}
    data = load(args.rankmesh_json, errors)
    data.update(load(args.mpi_json, errors))
    data.update(load(args.python, errors))
    report = Report(data, errors)
    report.build()
    python_text, python_verdicts = python_section(data, errors)
    report.verdicts += python_verdicts
    waiting = report.waiting_table()
    passes = max((m.get("passes", 1) for m in data.values()), default=1)
    text = ((f"Each side ran in up to {passes} passes, interleaved; each row shows the side's best "
             "pass (the lowest median time, or the highest rate), but a target on rankmesh alone "
             "((c) chosen path, donated dict) divides two measurements of one pass: its row shows "
             "the pass with the best ratio, its numbers all from that pass. A failure in any pass "
             "marks its row failed.\n\n" if passes > 1 else "")
            + "Ratios are rankmesh's median over MPI's: for times lower is better, for GB/s higher. "
            "p99: the 99th percentile of the times (for GB/s, the rate of that time). CPU/iter: the "
            "CPU time (user + system) of all the world's processes per iteration (collectives: "
            "without the barriers between iterations; MPI's launcher daemon and rankmesh's "
            "supervisor not counted).\n\n"
            + report.table() + "\n\n"
            + ("What waiting costs: a rank parked in a receive for 2 s (its process's CPU, % of one "
               "core), and a receive that waits 1 ms for its message (its process's CPU per wait), "
               "under the default spin and with RANKMESH_SPIN_US=0:\n\n" + waiting + "\n\n"
               if waiting else "")
            + (python_text + "\n" if python_text else "")
            + "Latency (µs, median) against size, p2p:\n\n"
            + report.latency_table() + "\n")
    print(text)
    print(report.summary())
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n" + report.summary() + "\n")
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(svg_chart(data))
    gaps = [g for library in args.require for g in missing(data, library)]
    if gaps:
        sys.exit("report.py: missing measurements:\n  " + "\n  ".join(gaps))


if __name__ == "__main__":
    main()
