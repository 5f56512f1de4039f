"""The samplers' CPU time against another commit, in one run: both trees timed in turn, in fresh processes, the
same inputs and one thread, the median of ROUNDS rounds per tree.

    python benchmarks/samplers_against.py 85eb099

Checks the commit out into a temporary git worktree (removed afterwards) and prints a Markdown table of ms per
call and the ratio (this tree / that commit)."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROUNDS = 5
TIMING = r'''
import sys, time, json, torch
sys.path.insert(0, sys.argv[1])
from spatialssl.samplers import ViewSampler, PatchSampler
torch.set_num_threads(1)
out = {}
for size, batch in ((32, 128), (224, 32)):
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for name, sampler in (("ViewSampler K=4", ViewSampler(4, (0.5,) * 3, (0.25,) * 3)),
                          ("PatchSampler N=2", PatchSampler(2, size * 3 // 8, (0.5,) * 3, (0.25,) * 3))):
        generator = torch.Generator().manual_seed(0)
        sampler(x, generator)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            sampler(x, generator)
            times.append(time.perf_counter() - started)
        out[f"{name}, {batch} images of {size} px"] = min(times) * 1e3
print(json.dumps(out))
'''


def timed(tree: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", TIMING, str(tree)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    ref = sys.argv[1] if len(sys.argv) > 1 else "HEAD~1"
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as scratch:
        other = Path(scratch) / "other"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "-q", "--detach", str(other), ref], check=True)
        try:
            rounds = [(timed(other), timed(here)) for _ in range(ROUNDS)]
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(other)], check=True)
    print(f"| sampler call (1 thread) | {ref} ms | this tree ms | ratio |\n|---|---|---|---|")
    for key in rounds[0][0]:
        theirs, ours = median(r[0][key] for r in rounds), median(r[1][key] for r in rounds)
        print(f"| {key} | {theirs:.1f} | {ours:.1f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
