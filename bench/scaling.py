#!/usr/bin/env python3
"""The scaling benchmark: worlds of 2 to 64 ranks on this node under `rankmesh launch`.

For each world size: start-up (first main() of a rank to the last rank's runtime standing), the
resident memory of all ranks together (VmRSS summed: shared segments count in every process that
touched them), and rank 0's round trips of a small dict to every other rank: the first on a pair
that never talked, then the median of the steady ones. Writes JSON lines, an SVG chart and a
markdown table.
usage: bench/scaling.py [--build-dir build] [--worlds 2,4,...] [--json F] [--svg F] [--markdown F]
"""
import argparse, json, statistics, subprocess, sys, time


def run_world(build, world, trips):
    command = [f"{build}/tools/rankmesh/rankmesh", "launch", "--nproc-per-node", str(world),
               "--timeout-s", "300", "--", f"{build}/bench/rankmesh-scaling", str(trips)]
    begin = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - begin
    rows = [json.loads(line.split("SCALING ", 1)[1]) for line in done.stdout.splitlines() if "SCALING " in line]
    if done.returncode != 0 or len(rows) != world:
        raise RuntimeError(f"world {world} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    zero = next(r for r in rows if r["rank"] == 0)
    first = statistics.median(zero["first_rtt_us"])
    steady = statistics.median(zero["steady_rtt_us"])
    return {
        "world": world,
        "startup_s": (max(r["ready_us"] for r in rows) - min(r["started_us"] for r in rows)) / 1e6,
        "launch_wall_s": wall,
        "rss_mib": sum(r["rss_ready_kib"] for r in rows) / 1024,
        "rss_end_mib": sum(r["rss_end_kib"] for r in rows) / 1024,
        "first_rtt_us": first,
        "first_rtt_max_us": max(zero["first_rtt_us"]),
        "steady_rtt_us": steady,
        "first_extra_us": first - steady,
    }


def svg(rows, path):
    width, height, pad = 760, 300, 50
    panels = [("start-up (s)", "startup_s"), ("resident, all ranks (MiB)", "rss_mib"),
              ("first - steady round trip (µs)", "first_extra_us")]
    pw = (width - pad) / len(panels)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    worlds = [r["world"] for r in rows]
    for i, (title, key) in enumerate(panels):
        x0 = pad + i * pw
        top = max(max(r[key] for r in rows), 1e-9) * 1.1
        out.append(f'<text x="{x0 + pw / 2 - 60:.0f}" y="18">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{height - pad}" x2="{x0 + pw - 20}" y2="{height - pad}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="30" x2="{x0}" y2="{height - pad}" stroke="black"/>')
        # The scale's top, inside the panel (the left margin belongs to the panel before).
        out.append(f'<text x="{x0 + 4}" y="40">{top:,.0f}</text>' if top >= 100 else
                   f'<text x="{x0 + 4}" y="40">{top:.3g}</text>')
        bar = (pw - 30) / len(rows)
        for j, r in enumerate(rows):
            h = (height - pad - 30) * r[key] / top
            x = x0 + 5 + j * bar
            out.append(f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bar * 0.7:.1f}" height="{h:.1f}" fill="#4878a8"/>')
            out.append(f'<text x="{x:.1f}" y="{height - pad + 14}">{worlds[j]}</text>')
        out.append(f'<text x="{x0 + pw / 2 - 30:.0f}" y="{height - pad + 30}">world size</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def markdown(rows):
    lines = ["| world | start-up (s) | launch wall (s) | resident, all ranks (MiB) | first round trip (µs) | steady (µs) | first − steady (µs) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['world']} | {r['startup_s']:.2f} | {r['launch_wall_s']:.2f} | {r['rss_mib']:.0f} | "
                     f"{r['first_rtt_us']:.0f} | {r['steady_rtt_us']:.0f} | {r['first_extra_us']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--worlds", default="2,4,8,16,32,64")
    parser.add_argument("--trips", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="worlds 2 and 8, 10 round trips")
    parser.add_argument("--json")
    parser.add_argument("--svg")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    worlds = [2, 8] if args.quick else [int(w) for w in args.worlds.split(",")]
    trips = 10 if args.quick else args.trips
    rows = []
    for world in worlds:
        row = run_world(args.build_dir, world, trips)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    if args.svg:
        svg(rows, args.svg)
    table = markdown(rows)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
