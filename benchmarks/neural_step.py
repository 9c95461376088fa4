"""Time one EchoMimic V1 denoising step over a 12-frame window at the full official size.

One step = one denoising-UNet call on a context window (batch [unconditional, conditional] under
guidance), which is what a sampler step costs per window. Weights come from the golden rule (the
timing does not depend on the values). The reference UNet runs first for the bank and is freed.

    python benchmarks/neural_step.py                      # CPU, fp32, 32x32 latent (256x256 output)
    python benchmarks/neural_step.py --latent 64 --device cuda --dtype fp16 --repeat 5

Prints JSON: seconds per step (best and mean of --repeat), peak RSS (and peak GPU memory).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, default=32, help="latent side (output side / 8)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--no-cfg", action="store_true", help="batch 1 (the accelerated weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    import torch

    from echomimic.render.neural.config import UNetConfig
    from echomimic.render.neural.rule import fill_by_rule
    from echomimic.render.neural.unet2d import ReferenceUNet2D
    from echomimic.render.neural.unet3d import DenoisingUNet3D

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    dev = torch.device(args.device)
    s, f = args.latent, args.frames
    cfg = not args.no_cfg
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.device("meta"):
        ref = ReferenceUNet2D(UNetConfig())
    fill_by_rule(ref).to(dev, dtype).eval()
    with torch.no_grad():
        _, banks = ref(torch.randn(1, 4, s, s, generator=g).to(dev, dtype), 0)
    del ref
    gc.collect()
    with torch.device("meta"):
        den = DenoisingUNet3D(UNetConfig(cross_attention_dim=384))
    fill_by_rule(den).to(dev, dtype).eval()
    build = time.perf_counter() - t0
    unet = torch.compile(den) if args.compile else den
    b = 2 if cfg else 1
    x = torch.randn(b, 4, f, s, s, generator=g).to(dev, dtype)
    audio = torch.randn(b, f, 50, 384, generator=g).to(dev, dtype)
    face = torch.randn(b, 320, 1, s, s, generator=g).to(dev, dtype)
    t = torch.tensor([500], device=dev)
    times = []
    with torch.no_grad():
        for _ in range(args.repeat + (1 if args.compile else 0)):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            unet(x, t, audio, face, banks, cfg=cfg)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t1)
    if args.compile:
        times = times[1:]
    out = {
        "device": str(dev), "dtype": args.dtype, "threads": torch.get_num_threads(),
        "latent": [s, s], "output_px": [8 * s, 8 * s], "frames": f, "batch": b,
        "step_s_best": round(min(times), 3), "step_s_mean": round(sum(times) / len(times), 3),
        "build_s": round(build, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    if dev.type == "cuda":
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
