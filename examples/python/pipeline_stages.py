"""Pipeline stages in a script: a small torch model, tensor-parallel inside each pipeline stage,
driven through rankmesh.distributed exactly as vLLM code drives vllm.distributed.

Each layer is an MLP in vLLM's style: a column-parallel linear (each TP rank holds a slice of the
inner dimension), an activation, a row-parallel linear whose partial sums the TP group
all-reduces, and a residual stream. The layers are split into PP stages; a stage hands
{"hidden_states", "residual", "step"} to the next with isend_tensor_dict/irecv_tensor_dict and
send-allgather over TP (each TP rank sends a 1/tp slice, the receiving TP group all-gathers it),
with several microbatches in flight. The last stage compares every microbatch with the same
model computed whole on one rank. Global rank 0 prints the last line, max_abs_diff=<value>, and
every rank exits non-zero when it is above the tolerance.

  # every rank in this process, one thread per rank:
  PYTHONPATH=build/python /usr/bin/python3 examples/python/pipeline_stages.py --embedded --tp 2 --pp 2
  # one process per rank (shm on one node; RANKMESH_TRANSPORT=tcp forces tcp):
  PYTHONPATH=build/python build/tools/rankmesh/rankmesh launch --nproc-per-node 4 -- \\
      /usr/bin/python3 examples/python/pipeline_stages.py --tp 2 --pp 2
"""
import argparse
import sys

import torch
import torch.nn.functional as F

import rankmesh
import rankmesh.distributed as dist

TOLERANCE = 1e-4  # float32; the TP partial sums add up in another order than the whole matmul
IN_FLIGHT = 2     # sends a stage may have outstanding before it waits for the oldest


def parse():
    p = argparse.ArgumentParser(description="pipeline stages over rankmesh.distributed")
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--pp", type=int, default=2)
    p.add_argument("--embedded", action="store_true",
                   help="run all tp*pp ranks as threads of this process (rankmesh.Runtime)")
    p.add_argument("--microbatches", type=int, default=6)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    a.ffn = 2 * a.hidden
    if a.ffn % a.tp or (a.tokens * a.hidden) % a.tp or a.layers < a.pp:
        p.error("the inner size and a microbatch must split into tp parts, and layers fill pp stages")
    return a


def model(a):
    """The whole model's weights and inputs, from a seeded generator: identical on every rank,
    so each rank can cut its own shard and the last stage can run the reference."""
    g = torch.Generator().manual_seed(a.seed)
    layers = [(torch.randn(a.hidden, a.ffn, generator=g) / a.hidden ** 0.5,
               torch.randn(a.ffn, a.hidden, generator=g) / a.ffn ** 0.5) for _ in range(a.layers)]
    inputs = [torch.randn(a.tokens, a.hidden, generator=g) for _ in range(a.microbatches)]
    return layers, inputs


def layer(hidden, residual, w1, w2, all_reduce):
    residual = hidden + residual                  # vLLM's fused add: the residual stream
    partial = F.gelu(residual @ w1) @ w2          # column-parallel, then row-parallel
    return all_reduce(partial), residual          # row-parallel partial sums add up over TP


def reference(layers, x):
    hidden, residual = x, torch.zeros_like(x)
    for w1, w2 in layers:
        hidden, residual = layer(hidden, residual, w1, w2, lambda t: t)
    return hidden + residual


def run_rank(a):
    """What one rank does; the same code under `rankmesh launch` (one process per rank) and in a
    thread bound to a rank by rt.run (the module-level functions then act for that rank)."""
    torch.set_num_threads(1)  # tp*pp ranks share the cores: one thread of torch each
    dist.init_distributed_environment()
    dist.initialize_model_parallel(tensor_model_parallel_size=a.tp, pipeline_model_parallel_size=a.pp)
    tp, pp = dist.get_tp_group(), dist.get_pp_group()
    stage, t = pp.rank_in_group, tp.rank_in_group

    # This stage's layers, and this TP rank's slice of each: columns of w1, the same rows of w2.
    layers, inputs = model(a)
    part = a.ffn // a.tp
    mine = [(w1[:, t * part:(t + 1) * part].contiguous(), w2[t * part:(t + 1) * part].contiguous())
            for w1, w2 in layers[stage * a.layers // a.pp:(stage + 1) * a.layers // a.pp]]
    if dist.is_global_first_rank():
        print(f"pipeline_stages: {a.tp * a.pp} ranks (tp {a.tp} x pp {a.pp}), {a.layers} layers, "
              f"hidden {a.hidden}, {a.microbatches} microbatches of {a.tokens} tokens", flush=True)

    def receive():
        # Returns at once (rankmesh sends a dict as one frame); the keys are there once every
        # handle has been waited for and every postprocess run: each binds its own key.
        return pp.irecv_tensor_dict(all_gather_group=tp)

    pending = receive() if not pp.is_first_rank else None
    sends = []  # handles of our outstanding isend_tensor_dicts, oldest first
    max_diff = 0.0
    for mb in range(a.microbatches):
        if pp.is_first_rank:
            hidden, residual = inputs[mb], torch.zeros_like(inputs[mb])
        else:
            got, handles, postprocess = pending
            for h in handles:
                h.wait()
            for fn in postprocess:
                fn()
            if got["step"] != mb:
                raise RuntimeError(f"stage {stage} expected microbatch {mb}, got {got['step']}")
            hidden, residual = got["hidden_states"], got["residual"]
            # Post the next receive before computing: microbatch mb+1 arrives while we work.
            if mb + 1 < a.microbatches:
                pending = receive()

        for w1, w2 in mine:
            hidden, residual = layer(hidden, residual, w1, w2, tp.all_reduce)

        if not pp.is_last_rank:
            # Every TP rank holds the same hidden/residual after all_reduce, so each sends only a
            # 1/tp slice and the next stage's TP group all-gathers them (send-allgather). The
            # tensors are fresh each microbatch and never written again, so the send need not be
            # waited for now: the next microbatch goes on while this one travels.
            sends.append(pp.isend_tensor_dict({"hidden_states": hidden, "residual": residual,
                                               "step": mb}, all_gather_group=tp))
            while len(sends) > IN_FLIGHT:  # bound what is in flight
                for h in sends.pop(0):
                    h.wait()
        else:
            want = reference(layers, inputs[mb])
            max_diff = max(max_diff, (hidden + residual - want).abs().max().item())
    for handles in sends:
        for h in handles:
            h.wait()

    # Only the last stage compared anything: every rank learns the worst difference (an
    # all_gather, since vLLM's all_reduce only sums), so all of them agree on the exit status.
    diffs = dist.get_world_group().all_gather(torch.tensor([max_diff], dtype=torch.float64), dim=0)
    worst, first = diffs.max().item(), dist.is_global_first_rank()
    dist.destroy_model_parallel()
    dist.destroy_distributed_environment()
    return worst, first


def main():
    a = parse()
    if a.embedded:
        with rankmesh.Runtime(world_size=a.tp * a.pp) as rt:
            worst, first = rt.run(run_rank, a)[0]  # re-raises the first rank's error, if any
    else:
        worst, first = run_rank(a)
    if first:  # global rank 0 (in embedded mode, this process) prints the verdict
        print(f"tolerance={TOLERANCE:g}")
        print(f"max_abs_diff={worst:.3g}", flush=True)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
