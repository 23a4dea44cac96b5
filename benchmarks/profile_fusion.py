"""Where the time of one fusion forward goes, by part of the network, on the machine it runs on.

    python benchmarks/profile_fusion.py [--size 256] [--batch 1] [--repeat 5] [--device cpu]

Runs ``torch.profiler`` over ``--repeat`` forward passes of the tiny preset (after a warm-up) with a label around
each part: the selective scan itself, the efficient scan's gather/merge of the four sub-grid sequences, the rest of
the efficient-scan block (projections, LayerNorm), the LDC (learnable difference) convolutions, ECA / BiAttn channel
attention, MLPs, and patch embedding / merging / expanding. Prints a Markdown table of milliseconds per forward and
share of the whole, then the ten most expensive PyTorch operators.
"""

from __future__ import annotations

import argparse
import functools

import torch

from fusionmamba_med.networks import blocks, build_fusionmamba

PARTS = {  # label -> module classes whose forward it covers (inclusive of what runs inside)
    "LDC convolutions": (blocks.LDC,),
    "ECA + BiAttn attention": (blocks.ECA, blocks.BiAttn),
    "patch embed / merge / expand": (blocks.PatchEmbed, blocks.PatchMerging, blocks.PatchExpand),
    "efficient scan block (all)": (blocks.EfficientScan2D,),
}


def _label_module(module: torch.nn.Module, name: str) -> None:
    stack: list = []

    def pre(_m, _a):
        stack.append(torch.profiler.record_function(name))
        stack[-1].__enter__()

    def post(_m, _a, _o):
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def _label_function(owner, attr: str, name: str) -> None:
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)

    setattr(owner, attr, staticmethod(wrapped) if isinstance(owner, type) else wrapped)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    _label_function(blocks, "selective_scan", "selective scan")
    _label_function(blocks.EfficientScan2D, "scan_sequences", "gather / merge sequences")
    _label_function(blocks.EfficientScan2D, "merge_sequences", "gather / merge sequences")
    net = build_fusionmamba("tiny").to(args.device).eval()
    for module in net.modules():
        for label, classes in PARTS.items():
            if type(module) in classes:
                _label_module(module, label)
    for module in net.modules():
        if isinstance(module, torch.nn.Sequential) and any(isinstance(m, torch.nn.GELU) for m in module):
            _label_module(module, "MLP")
    x = torch.rand(args.batch, 2, args.size, args.size, device=args.device)
    with torch.inference_mode():
        net(x)
        with torch.profiler.profile() as prof:
            with torch.profiler.record_function("forward"):
                for _ in range(args.repeat):
                    net(x)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
    events = {e.key: e for e in prof.key_averages()}
    total = events["forward"].cpu_time_total / args.repeat / 1e3
    print(f"tiny preset, {args.batch} x {args.size} x {args.size}, {args.device}, {torch.get_num_threads()} threads: "
          f"{total:.1f} ms per forward (profiled)\n")
    print("| part | ms per forward | share |")
    print("|---|---|---|")
    labels = ["selective scan", "gather / merge sequences", "efficient scan block (all)", *list(PARTS)[:3], "MLP"]
    for label in labels:
        if label in events:
            ms = events[label].cpu_time_total / args.repeat / 1e3
            print(f"| {label} | {ms:.1f} | {ms / total:.0%} |")
    print("\n(the efficient scan block includes the scan and the gather/merge; the rest is LayerNorm, linear layers,")
    print("depthwise convolutions and element-wise gates)\n")
    ops = sorted((e for e in prof.key_averages() if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    print("| operator | self ms per forward | calls per forward |")
    print("|---|---|---|")
    for e in ops[:10]:
        print(f"| {e.key} | {e.self_cpu_time_total / args.repeat / 1e3:.1f} | {e.count // args.repeat} |")


if __name__ == "__main__":
    main()
