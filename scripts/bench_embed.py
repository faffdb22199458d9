"""Embedding speed, side by side in one run: ONNX Runtime fp32 and int8 against PyTorch eager.

    .venv/bin/python scripts/bench_embed.py [--rounds 7] [--out docs/bench/embed.json]

What it measures, on the same preprocessed arrays (8 real photos through `Embedder.preprocess`):
1. Inference: ORT fp32, ORT int8 (`lookalike.embedder.Embedder`, explicit thread counts) and
   PyTorch eager fp32 on the same weights, batch 1 and batch 8, 1 and 2 threads. The configurations
   take turns round by round (interleaved), so that load from other processes on a shared machine
   lands on all of them alike; medians are quoted. PyTorch lives only in the export environment:
   when this interpreter has no torch, the script runs a PyTorch worker under
   `.venv-export/bin/python` (this same file, `--torch-worker`), hands it the arrays as a .npy file
   and drives it turn by turn, one process computing at a time. It also checks that the PyTorch
   and ORT fp32 embeddings agree (cosine), i.e. that the same weights are compared.
2. Cold start: a fresh process per try (imports, model card, session creation, decode +
   preprocess + first inference of one JPEG), timed with perf_counter inside it, fp32 and int8
   alternating.
3. Decode + preprocess of 1, 2 and 3 MP JPEGs with a full decode and with draft mode
   (`decode_image(..., draft_size=None | 256)` then `Embedder.preprocess`), alternating.
4. The fraction of the CPU's fp32 FLOP peak reached: 385 M MACs = 0.77 GFLOP per image against a
   numpy float32 matmul on one thread (the practical peak of this core).

Prints a line per measurement and, last, one JSON line (batch 1, one thread unless a key says
otherwise): {"ort_fp32_ms", "ort_int8_ms", "torch_ms", "ort_over_torch", "cold_start_ms",
"decode_ms", ...}. With --out it also writes everything, raw samples included, to that file
(docs/BENCHMARKS.md and its plots are made from it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"
EXPORT_PYTHON = REPO_ROOT / ".venv-export" / "bin" / "python"
GFLOP_PER_IMAGE = 0.77  # 385 M multiply-accumulates (EfficientNet-Lite0 at 224x224), 2 FLOP each
BATCHES = (1, 8)
THREADS = (1, 2)
# Calls per configuration per round: enough to smooth timer noise, few enough that the rounds
# interleave finely (a burst of load from another process hits every configuration).
CALLS_PER_ROUND = {1: 20, 8: 4}

FloatArray = npt.NDArray[np.float32]


# --- PyTorch (in this process when torch imports, else in a worker process) -----------------


class TorchModel:
    """EfficientNet-Lite0 in PyTorch eager mode, loaded exactly as the export script does."""

    def __init__(self) -> None:
        import importlib.util

        import torch  # type: ignore[import-not-found, unused-ignore]

        spec = importlib.util.spec_from_file_location(
            "export_model", REPO_ROOT / "scripts" / "export_model.py"
        )
        assert spec is not None
        assert spec.loader is not None
        export = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = export
        spec.loader.exec_module(export)
        self._torch = torch
        self.version = str(torch.__version__)
        self.model = export.EmbeddingAndLogits(export.load_network(export.weights_file())).eval()

    def run(self, batch: FloatArray, threads: int) -> FloatArray:
        torch = self._torch
        torch.set_num_threads(threads)
        with torch.inference_mode():
            embedding, _ = self.model(torch.from_numpy(batch))
        return np.asarray(embedding.numpy(), dtype=np.float32)


def torch_worker(inputs: Path) -> None:
    """`--torch-worker`: answer timing requests on stdin, one JSON line each, until EOF."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the loader's prints must not mix with replies
        model = TorchModel()
        batch = np.load(inputs)
        embeddings = model.run(batch, 1)
    np.save(inputs.with_suffix(".torch.npy"), embeddings)
    print(json.dumps({"ready": True, "torch": model.version}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        images = batch[: request["batch"]]
        times = []
        for _ in range(request["calls"]):
            started = time.perf_counter()
            model.run(images, request["threads"])
            times.append((time.perf_counter() - started) * 1000)
        print(json.dumps({"times_ms": times}), flush=True)


class TorchRunner(Protocol):
    version: str

    def time_calls(self, batch: int, threads: int, calls: int) -> list[float]: ...

    def embeddings(self) -> FloatArray: ...

    def close(self) -> None: ...


class InProcessTorch:
    def __init__(self, batch: FloatArray) -> None:
        self._model = TorchModel()
        self.version = self._model.version
        self._batch = batch

    def time_calls(self, batch: int, threads: int, calls: int) -> list[float]:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            self._model.run(self._batch[:batch], threads)
            times.append((time.perf_counter() - started) * 1000)
        return times

    def embeddings(self) -> FloatArray:
        return self._model.run(self._batch, 1)

    def close(self) -> None:
        pass


class WorkerTorch:
    """The PyTorch half of the comparison in the export environment, driven turn by turn."""

    def __init__(self, python: Path, inputs: Path) -> None:
        self._inputs = inputs
        self._process = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--torch-worker", str(inputs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        hello = json.loads(self._readline())
        self.version = str(hello["torch"])

    def _readline(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch worker exited ({self._process.wait()})")
        return line

    def time_calls(self, batch: int, threads: int, calls: int) -> list[float]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"batch": batch, "threads": threads, "calls": calls}) + "\n")
        self._process.stdin.flush()
        return [float(value) for value in json.loads(self._readline())["times_ms"]]

    def embeddings(self) -> FloatArray:
        return np.asarray(np.load(self._inputs.with_suffix(".torch.npy")), dtype=np.float32)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


def start_torch(batch: FloatArray, scratch: Path) -> tuple[TorchRunner | None, str]:
    """PyTorch here if it imports, else in the export environment, else None with the reason."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        return InProcessTorch(batch), f"in this process ({sys.executable})"
    if not EXPORT_PYTHON.exists():
        return None, (
            f"torch is not installed in {sys.executable} and {EXPORT_PYTHON} does not exist "
            "(make export-model creates it): ONNX Runtime only"
        )
    inputs = scratch / "inputs.npy"
    np.save(inputs, batch)  # the worker times exactly these arrays
    print(f"torch is not installed here: measuring it in a worker under {EXPORT_PYTHON}", flush=True)
    try:
        return WorkerTorch(EXPORT_PYTHON, inputs), f"worker process ({EXPORT_PYTHON})"
    except (OSError, RuntimeError, ValueError) as error:
        return None, f"the PyTorch worker under {EXPORT_PYTHON} failed to start ({error}): ONNX Runtime only"


# --- inputs ----------------------------------------------------------------------------------


def jpeg_of(image: Any, megapixels: float, quality: int = 90) -> bytes:
    """A real photo rescaled to about `megapixels` and JPEG-encoded as a camera or shop would."""
    from PIL import Image

    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    resized = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
    )
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def summarise(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    return {
        "median": round(statistics.median(ordered), 3),
        "p10": round(ordered[len(ordered) // 10], 3),
        "p90": round(ordered[(len(ordered) * 9) // 10], 3),
        "n": len(ordered),
    }


# --- measurements ------------------------------------------------------------------------------


def measure_inference(batch: FloatArray, rounds: int, torch: TorchRunner | None) -> dict[str, list[float]]:
    from lookalike.model.card import load_model_card
    from lookalike.model.embedder import Embedder

    card = load_model_card(MODEL_DIR)
    runners: dict[str, Callable[[int], list[float]]] = {}
    for variant in ("fp32", "int8"):
        for threads in THREADS:
            embedder = Embedder(card, variant=variant, threads=threads)
            embedder.warm_up()
            for size in BATCHES:

                def ort_calls(calls: int, embedder: Embedder = embedder, size: int = size) -> list[float]:
                    times = []
                    for _ in range(calls):
                        started = time.perf_counter()
                        embedder.infer(batch[:size])
                        times.append((time.perf_counter() - started) * 1000)
                    return times

                runners[f"ort_{variant}_b{size}_t{threads}"] = ort_calls
    if torch is not None:
        for threads in THREADS:
            for size in BATCHES:

                def torch_calls(calls: int, size: int = size, threads: int = threads) -> list[float]:
                    return torch.time_calls(size, threads, calls)

                runners[f"torch_b{size}_t{threads}"] = torch_calls
    for run in runners.values():  # warm-up: first calls allocate arenas and fill caches
        run(2)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    peaks: list[float] = []
    for round_index in range(rounds):
        # Alternate the order too, so that no configuration always follows the same neighbour.
        names = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in names:
            size = int(name.split("_b")[1].split("_")[0])
            samples[name] += runners[name](CALLS_PER_ROUND[size])
        peaks.append(matmul_peak_gflops(repeats=3))  # in the rounds too: the best one is the peak
        print(f"inference round {round_index + 1}/{rounds} done", flush=True)
    samples["matmul_gflops"] = peaks
    return samples


COLD_START_CODE = r"""
import json, sys, time
started = time.perf_counter()
import numpy, onnxruntime, PIL.Image
imported_runtime = time.perf_counter()
from pathlib import Path
from lookalike.model.embedder import Embedder
from lookalike.images import decode_image
from lookalike.model.card import load_model_card
imported = time.perf_counter()
embedder = Embedder(load_model_card(Path(sys.argv[1])), variant=sys.argv[2], threads=1)
embedder.session
session_ready = time.perf_counter()
data = Path(sys.argv[3]).read_bytes()
embedder.embed([decode_image(data, max_bytes=50_000_000, max_pixels=50_000_000).image])
done = time.perf_counter()
print(json.dumps({
    "imports_ms": (imported - started) * 1000,
    "imports_numpy_ort_pil_ms": (imported_runtime - started) * 1000,
    "session_ms": (session_ready - imported) * 1000,
    "first_image_ms": (done - session_ready) * 1000,
    "total_ms": (done - started) * 1000,
}))
"""


def measure_cold_start(jpeg: Path, tries: int) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {"fp32": [], "int8": []}
    for _ in range(tries):
        for variant in results:
            started = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, "-c", COLD_START_CODE, str(MODEL_DIR), variant, str(jpeg)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            measured = json.loads(completed.stdout.strip().splitlines()[-1])
            measured["process_wall_ms"] = (time.perf_counter() - started) * 1000  # + interpreter start
            results[variant].append(measured)
    return results


def measure_decode(photos: list[Any], rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    from lookalike.images import decode_image
    from lookalike.model.card import load_model_card
    from lookalike.model.embedder import Embedder

    embedder = Embedder(load_model_card(MODEL_DIR), threads=1)
    jpegs = {mp: [jpeg_of(photo, mp) for photo in photos] for mp in (1.0, 2.0, 3.0)}
    samples: dict[str, list[float]] = {}
    cosines: dict[str, float] = {}
    for mp, files in jpegs.items():
        full = embedder.embed(
            [
                decode_image(f, max_bytes=50_000_000, max_pixels=50_000_000, draft_size=None).image
                for f in files
            ]
        ).vectors
        draft = embedder.embed(
            [
                decode_image(f, max_bytes=50_000_000, max_pixels=50_000_000, draft_size=256).image
                for f in files
            ]
        ).vectors
        cosines[f"{mp:g}mp"] = round(float(np.min(np.sum(full * draft, axis=1))), 4)
    for round_index in range(rounds):
        for mp, files in jpegs.items():
            for draft_size in (None, 256) if round_index % 2 == 0 else (256, None):
                name = f"{mp:g}mp_{'draft' if draft_size else 'full'}"
                for data in files:
                    started = time.perf_counter()
                    decoded = decode_image(
                        data, max_bytes=50_000_000, max_pixels=50_000_000, draft_size=draft_size
                    )
                    embedder.preprocess([decoded.image])
                    samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    return samples, cosines


def matmul_peak_gflops(size: int = 2048, repeats: int = 7) -> float:
    """Best float32 matmul throughput on one thread: the practical FLOP peak of one core."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped, unused-ignore]

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    best = float("inf")
    with threadpool_limits(limits=1):
        a @ b  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of inference timing")
    parser.add_argument("--cold-starts", type=int, default=7, help="fresh processes per variant")
    parser.add_argument("--decode-rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write all results (raw samples too) to this JSON file")
    parser.add_argument("--torch-worker", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.torch_worker is not None:
        torch_worker(arguments.torch_worker)
        return

    from lookalike.model.card import load_model_card
    from lookalike.model.embedder import Embedder
    from lookalike_local.samples import sample_photos

    started_at = datetime.now(UTC)
    photos = [photo.open_rgb() for photo in sample_photos()]
    card = load_model_card(MODEL_DIR)
    batch = Embedder(card).preprocess(photos[:8])  # the default resize mode, as ingest does
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as scratch_name:
        scratch = Path(scratch_name)
        torch, torch_where = start_torch(batch, scratch)
        print(f"PyTorch: {torch_where}", flush=True)
        parity: float | None = None
        if torch is not None:
            ort_embeddings = Embedder(card, variant="fp32").infer(batch).vectors
            torch_embeddings = torch.embeddings()
            torch_embeddings /= np.linalg.norm(torch_embeddings, axis=1, keepdims=True)
            parity = float(np.min(np.sum(ort_embeddings * torch_embeddings, axis=1)))
            print(f"PyTorch vs ORT fp32 embeddings on the same arrays: min cosine {parity:.6f}", flush=True)
        try:
            inference = measure_inference(batch, arguments.rounds, torch)
        finally:
            if torch is not None:
                torch.close()

        jpeg = scratch / "photo.jpg"
        jpeg.write_bytes(jpeg_of(photos[0], 1.0))
        cold = measure_cold_start(jpeg, arguments.cold_starts)
    decode, decode_cosines = measure_decode(photos[:6], arguments.decode_rounds)
    peaks = [*inference.pop("matmul_gflops"), matmul_peak_gflops()]
    peak = max(peaks)
    load_after = os.getloadavg()

    summary = {name: summarise(times) for name, times in inference.items()}
    for name, stats in summary.items():
        size = int(name.split("_b")[1].split("_")[0])
        images_per_s = 1000 * size / stats["median"]
        stats["images_per_s"] = round(images_per_s, 1)
        stats["ms_per_image"] = round(stats["median"] / size, 3)
        threads = int(name.rsplit("_t", 1)[1])
        # Only fp32 runs float multiply-adds; int8 runs integer (VNNI) ones, whose peak differs.
        # p10: the least disturbed calls on a shared machine, closest to what the code can do.
        if "int8" in name:
            fraction = fraction_p10 = None
        else:
            fraction = round(images_per_s * GFLOP_PER_IMAGE / (peak * threads), 3)
            fraction_p10 = round(1000 * size / stats["p10"] * GFLOP_PER_IMAGE / (peak * threads), 3)
        stats["fraction_of_fp32_peak"] = fraction
        stats["fraction_of_fp32_peak_at_p10"] = fraction_p10
        print(
            f"{name:18} median {stats['median']:8.2f} ms/call  {stats['ms_per_image']:7.2f} ms/image  "
            f"{images_per_s:7.1f} img/s  p10 {stats['p10']:.2f}  p90 {stats['p90']:.2f}  "
            + (
                f"{fraction:.0%} (p10: {fraction_p10:.0%}) of the fp32 peak of {threads} core(s)"
                if fraction is not None and fraction_p10 is not None
                else ""
            ),
            flush=True,
        )
    ratios: dict[str, float] = {}
    for size in BATCHES:
        for threads in THREADS:
            key = f"b{size}_t{threads}"
            fp32, int8 = summary[f"ort_fp32_{key}"]["median"], summary[f"ort_int8_{key}"]["median"]
            ratios[f"fp32_over_int8_{key}"] = round(fp32 / int8, 2)
            if f"torch_{key}" in summary:
                torch_ms = summary[f"torch_{key}"]["median"]
                ratios[f"torch_over_ort_fp32_{key}"] = round(torch_ms / fp32, 2)
                ratios[f"torch_over_ort_int8_{key}"] = round(torch_ms / int8, 2)
    for name, value in ratios.items():
        print(f"ratio {name}: {value}", flush=True)

    cold_summary = {
        variant: {
            part: round(statistics.median(run[part] for run in runs), 1)
            for part in ("imports_ms", "imports_numpy_ort_pil_ms", "session_ms", "first_image_ms", "total_ms")
        }
        | {"process_wall_ms": round(statistics.median(run["process_wall_ms"] for run in runs), 1)}
        for variant, runs in cold.items()
    }
    for variant, parts in cold_summary.items():
        print(f"cold start {variant}: " + ", ".join(f"{k} {v}" for k, v in parts.items()), flush=True)
    decode_summary = {name: summarise(times) for name, times in decode.items()}
    for name, stats in decode_summary.items():
        print(f"decode+preprocess {name:12} median {stats['median']:.2f} ms", flush=True)
    print(f"draft vs full decode, min embedding cosine: {decode_cosines}", flush=True)
    print(
        f"numpy float32 matmul, 1 thread: best {peak:.1f} GFLOP/s (practical peak), "
        f"median {statistics.median(peaks):.1f} over {len(peaks)} tries",
        flush=True,
    )

    default = card.default_variant
    torch_b1 = summary.get("torch_b1_t1", {}).get("median")
    result: dict[str, Any] = {
        "ort_fp32_ms": summary["ort_fp32_b1_t1"]["median"],
        "ort_int8_ms": summary["ort_int8_b1_t1"]["median"],
        "torch_ms": torch_b1,
        "ort_over_torch": round(torch_b1 / summary["ort_fp32_b1_t1"]["median"], 2) if torch_b1 else None,
        "cold_start_ms": cold_summary[default]["total_ms"],
        "decode_ms": decode_summary["2mp_draft"]["median"],
        "decode_full_ms": decode_summary["2mp_full"]["median"],
        "ort_fp32_b8_t1_img_s": summary["ort_fp32_b8_t1"]["images_per_s"],
        "ort_int8_b8_t1_img_s": summary["ort_int8_b8_t1"]["images_per_s"],
        "peak_gflops_1thread": round(peak, 1),
        "ort_fp32_b1_t1_fraction_of_peak": summary["ort_fp32_b1_t1"]["fraction_of_fp32_peak"],
        "ort_fp32_p10_ms": summary["ort_fp32_b1_t1"]["p10"],
        "ort_int8_p10_ms": summary["ort_int8_b1_t1"]["p10"],
        "torch_p10_ms": summary["torch_b1_t1"]["p10"] if "torch_b1_t1" in summary else None,
        "units": "batch 1, 1 thread, medians in ms; ort_over_torch = torch_ms / ort_fp32_ms; "
        f"cold_start_ms = {default} (default variant): imports + session + first 1 MP JPEG, fresh process; "
        "decode_ms = 2 MP JPEG decode (draft 256) + preprocess",
    }
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        full = {
            "date": started_at.isoformat(timespec="seconds"),
            "command": "scripts/bench_embed.py " + " ".join(sys.argv[1:]),
            "machine": {
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "python": platform.python_version(),
            },
            "torch": {
                "where": torch_where,
                "version": torch.version if torch else None,
                "min_cosine": parity,
            },
            "inference": summary,
            "ratios": ratios,
            "matmul_gflops_1thread": [round(value, 1) for value in peaks],
            "cold_start": cold_summary,
            "decode": decode_summary,
            "decode_draft_vs_full_min_cosine": decode_cosines,
            "samples_ms": {name: [round(t, 3) for t in times] for name, times in inference.items()},
            "result": result,
        }
        arguments.out.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
