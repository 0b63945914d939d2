"""The CUDA path in one command (at most about 8 minutes on a current GPU): its tests, one step, the default recipe.

    python tools/gpu_check.py [--out benchmarks/results/gpu.json] [--steps 3500] [--draw 0]

1. runs the CUDA tests of the suite (``pytest -k cuda``: the steps that never wait for the device, the
   non-finite loss skipped on the device, mixed precision);
2. times one training step of the default recipe on the GPU, in float32 and with bfloat16 autocast (median of 50,
   after 10 to warm up);
3. trains the default recipe on one labelled draw on the GPU and prints steps/s, minutes and test accuracy
   (checkpoint chosen on validation, and the final step).

It appends one record (GPU name, versions, the numbers) to ``--out``; ``python benchmarks/benchmark.py results``
puts it in benchmarks/RESULTS.md. Without a CUDA GPU it says so and exits 2. CI never runs it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import vatlib  # noqa: E402
from vatlib.records import append, machine_info  # noqa: E402


def step_ms(data: vatlib.ImageData, amp: bool, repeats: int = 50, warmup: int = 10) -> float:
    """Median milliseconds of one default-recipe step on the GPU (the device synchronised around each)."""
    cfg = vatlib.preset_config("default", out="", progress=False, device="cuda", amp=amp)
    split = vatlib.split_train(data.train_labels, cfg.per_class, cfg.n_validation, cfg.data_seed)
    run = vatlib.Run(cfg, data, split, torch.device("cuda"))
    run.model.train()
    times = []
    for i in range(warmup + repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run.train_step()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu.json"))
    parser.add_argument("--steps", type=int, default=3500, help="steps of the default run (the recipe's: 3,500)")
    parser.add_argument("--draw", type=int, default=0, help="labelled draw of the default run")
    parser.add_argument("--data-root", default=str(REPO / "data"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu} | torch {torch.__version__} (CUDA {torch.version.cuda}) | vatlib {vatlib.__version__}", flush=True)

    t0 = time.perf_counter()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                            str(REPO / "tests")], cwd=REPO, capture_output=True, text=True)
    summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"1. CUDA tests: {summary} ({time.perf_counter() - t0:.0f} s)", flush=True)

    data = vatlib.load_dataset("MNIST", args.data_root)
    fp32, bf16 = step_ms(data, amp=False), step_ms(data, amp=True)
    print(f"2. one default step: {fp32:.1f} ms float32, {bf16:.1f} ms bfloat16 autocast", flush=True)

    cfg = vatlib.draw_config(vatlib.preset_config("default", device="cuda", progress=False, steps=args.steps),
                             args.draw)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out = tmp
        t0 = time.perf_counter()
        result = vatlib.train(cfg, data=data)
        wall = time.perf_counter() - t0
    train_s = result.history[-1]["time_s"]
    print(f"3. the default recipe, draw {args.draw}, {cfg.steps} steps on the GPU: {cfg.steps / train_s:.1f} steps/s, "
          f"{wall / 60:.1f} min; test accuracy {result.best['test_acc']:.2%} (checkpoint chosen on validation at step "
          f"{result.best['step']}), {result.final['test_acc']:.2%} at the final step", flush=True)

    record = {"gpu": gpu, "tests": summary, "tests_ok": tests.returncode == 0,
              "step_ms": {"float32": round(fp32, 2), "bfloat16": round(bf16, 2)},
              "default_run": {"draw": args.draw, "steps": cfg.steps, "steps_per_s": round(cfg.steps / train_s, 2),
                              "wall_s": round(wall, 1), "best": result.best, "final": result.final},
              "machine": machine_info()}
    append(args.out, record)
    print(f"recorded in {args.out}")
    return 0 if tests.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
