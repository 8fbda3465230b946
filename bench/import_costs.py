"""Import cost of each heavy dependency: the evidence for which imports semid defers.

Each module is imported in a fresh interpreter (nothing cached in the process; the OS file cache is
warm after the first run), best of --repeats runs, so a row is what one `import X` adds to a
command's start-up. Also times `semid --help` end to end. Prints one table; writes nothing.

    python bench/import_costs.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

MODULES = [
    "numpy", "yaml", "tqdm.auto", "pandas", "pyarrow", "pyarrow.parquet", "sklearn", "faiss",
    "torch", "transformers", "tokenizers", "sentence_transformers", "vector_quantize_pytorch",
    "bm25s", "mlflow", "dvc.api", "dvc.repo", "matplotlib.pyplot", "openai", "google.genai",
    "huggingface_hub", "semid.config", "semid.cli", "semid.generator", "semid.evaluate",
]
TIMER = "import time; t = time.perf_counter(); import {0}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    result = subprocess.run([sys.executable, "-c", TIMER.format(module)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"import {module} failed: {result.stderr.strip().splitlines()[-1]}")
    return float(result.stdout.strip().splitlines()[-1])


def command_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("modules", nargs="*", default=MODULES)
    args = parser.parse_args()
    print(f"{'module':<26} {'best s':>7}  (of {args.repeats}, fresh interpreter each)")
    for module in args.modules:
        try:
            best = min(import_seconds(module) for _ in range(args.repeats))
        except RuntimeError as error:
            print(f"{module:<26} {'-':>7}  {error}")
            continue
        print(f"{module:<26} {best:>7.3f}")
    semid = shutil.which("semid")
    if semid:
        best = min(command_seconds([semid, "--help"]) for _ in range(args.repeats))
        print(f"{'`semid --help` (whole)':<26} {best:>7.3f}")


if __name__ == "__main__":
    main()
