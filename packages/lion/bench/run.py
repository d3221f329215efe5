"""Lion benchmarks: API pacing of one full iteration, and an offline iteration's referee scores.

Part ``network``: one iteration of ``LionRun`` on a pool of ``--pool`` instructions against the
loopback OpenAI-compatible server (``leanlm.core.testing.fake_servers``) answering as a scripted teacher,
referee, generator and student with ``--latency`` seconds per request. Imitation training is local
GPU work, not API traffic, so it is left out here (``train=False``; the student answers through the
same server, as a vLLM server would). Reported: wall time per stage against the ideal at
``--concurrency`` (ceil(requests / concurrency) * latency per stage), and the original scripts'
pacing for the same work, computed: one submission every 20 s per referee/teacher script (ray
tasks, REQ_TIME_GAP = 20), the teacher asked separately for the train and the cache pool, and the
generator called one request at a time.

Part ``offline``: the embedded model as teacher/referee/generator (hf backend) and a random
tiny_llama student; referee marks of the student's answers before and after imitation training.

    uv run python packages/lion/bench/run.py --part network --pool 500
    uv run python packages/lion/bench/run.py --part offline --offline_pool 12

Writes results.json and results.md to bench/results/<label>/ (``--label``, default ``cpu``; other parts' keys kept).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORIGINAL_GAP_S = 20.0


def _pool(n: int) -> list[dict]:
    from leanlm.core.datasets import load_records

    rows = load_records("instructions", seed=1)
    out = [{"id": r["id"], "instruction": r["instruction"], "input": r.get("input", "")} for r in rows[:n]]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} offline instructions available")
    return out


def network(args: argparse.Namespace) -> dict:
    from leanlm.core.records import write_jsonl
    from leanlm.core.testing.fake_servers import FakeServer
    from leanlm.core.testing.scripted_teacher import ScriptedTeacher
    from leanlm.lion.iterate import IterateConfig, LionRun
    from leanlm.lion.roles import RoleConfig

    work = Path(tempfile.mkdtemp(prefix="lion-bench-"))
    try:
        write_jsonl(work / "pool.jsonl", _pool(args.pool))
        with FakeServer(ScriptedTeacher(), latency=args.latency) as server:
            role = RoleConfig(
                backend="openai",
                model="teacher",
                base_url=server.openai_url,
                api_key="k",
                concurrency=args.concurrency,
                timeout=30.0,
            )
            student = RoleConfig(
                backend="openai",
                model="student",
                base_url=server.openai_url,
                api_key="k",
                concurrency=args.concurrency,
            )
            cfg = IterateConfig(
                train_pool=str(work / "pool.jsonl"),
                teacher=role,
                student_role=student,
                train=False,
                num_hard=args.new,
                num_easy=args.new,
            )
            t0 = time.perf_counter()
            report = LionRun(work / "run", cfg).run()[0]
            wall = time.perf_counter() - t0
            posts = len(server.posts())
            floor = _backend_floor(server, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stages = report["stages"]
    rows, ideal_total = [], 0.0
    for name in ("teacher", "infer", "referee", "generate_hard", "generate_easy"):
        n = int(stages[name]["requests"])
        ideal = math.ceil(n / args.concurrency) * args.latency
        ideal_total += ideal
        rows.append(
            {
                "stage": name,
                "requests": n,
                "seconds": round(stages[name]["seconds"], 2),
                "ideal_seconds": round(ideal, 2),
                "ratio": round(stages[name]["seconds"] / ideal, 3) if ideal else None,
            }
        )
    gen_requests = int(stages["generate_hard"]["requests"]) + int(stages["generate_easy"]["requests"])
    # the original: teacher run on the train pool AND on the cache pool (same 500 at iteration 1),
    # referee run twice (both orders), each paced at one submission per 20 s; the generator sequential.
    original_teacher = 2 * args.pool
    original_referee = 2 * args.pool
    original_s = (original_teacher + original_referee) * ORIGINAL_GAP_S + gen_requests * args.latency
    return {
        "pool": args.pool,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "new_per_kind": args.new,
        "requests": posts,
        "wall_s": round(wall, 2),
        "api_stage_s": round(sum(r["seconds"] for r in rows), 2),
        "ideal_s": round(ideal_total, 2),
        "ratio_to_ideal": round(sum(r["seconds"] for r in rows) / ideal_total, 3),
        "stages": rows,
        "backend_floor_1000_requests": floor,
        "hard": report["hard"],
        "easy": report["easy"],
        "new_hard": report["new_hard"],
        "new_easy": report["new_easy"],
        "rejected": report["rejected"],
        "original": {
            "teacher_requests": original_teacher,
            "referee_requests": original_referee,
            "generator_requests": gen_requests,
            "paced_s": round(original_s, 1),
            "paced_h": round(original_s / 3600, 2),
            "speedup_vs_original": round(original_s / wall, 1),
        },
    }


def _backend_floor(server, args: argparse.Namespace, work: Path) -> dict:
    """The same server and backend without Lion: 1000 plain requests through ``generate`` (warm client),
    with a resumable output file (fsync per answer, as the stages) and without one."""
    from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend

    backend = get_backend(
        "openai", model="m", base_url=server.openai_url, api_key="k", concurrency=args.concurrency
    )
    out = {}
    for name, output in (("with_cache_file", work / "floor.jsonl"), ("no_file", None)):
        reqs = [
            GenerationRequest(id=f"{name}-{i}", messages=[{"role": "user", "content": f"floor {name} {i}"}])
            for i in range(1000)
        ]
        t0 = time.perf_counter()
        generate(reqs, backend, SamplingParams(max_new_tokens=16), output=output, progress=False)
        wall = time.perf_counter() - t0
        ideal = math.ceil(1000 / args.concurrency) * args.latency
        out[name] = {"wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "ratio": round(wall / ideal, 3)}
    return out


def offline(args: argparse.Namespace) -> dict:
    from leanlm.core.records import write_jsonl
    from leanlm.lion import stages as st
    from leanlm.lion.demo import limit_threads, tiny_student, toy_config
    from leanlm.lion.discriminate import discriminate
    from leanlm.lion.iterate import LionRun
    from leanlm.lion.roles import LazyBackend, RoleConfig

    limit_threads()
    work = Path(tempfile.mkdtemp(prefix="lion-offline-"))
    try:
        from leanlm.lion.demo import toy_pool

        write_jsonl(work / "pool.jsonl", toy_pool(args.offline_pool, seed=3))
        cfg = toy_config(work, args.model, pool_size=args.offline_pool, new_per_kind=args.offline_new)
        cfg.train_options["num_train_epochs"] = args.offline_epochs
        t0 = time.perf_counter()
        run = LionRun(work / "run", cfg)
        report = run.run()[0]
        # before imitation: the untrained student's answers on the same cache pool, same referee
        pool = [r for r in _read(work / "run" / "pools" / "cache_1.jsonl")]
        teacher = {a["id"]: a for a in _read_answers(work / "run", pool)}
        base = LazyBackend(
            RoleConfig(backend="hf", model=str(tiny_student(work / "student_base")), batch_size=8)
        )
        params = st.SamplingParams(max_new_tokens=cfg.student_max_tokens, temperature=0.7, seed=cfg.seed)
        base_answers, _ = st.student_answers(pool, base, work / "base_student.jsonl", params)
        base.close()
        items = [
            {**r, "teacher_output": teacher[r["id"]]["output"], "student_output": b["output"]}
            for r, b in zip(pool, base_answers)
            if r["id"] in teacher
        ]
        referee = LazyBackend(cfg.roles()["referee"])
        ref_params = st.SamplingParams(max_new_tokens=cfg.referee_max_tokens, temperature=0.2, seed=cfg.seed)
        scores, _, ref_report = st.referee_scores(
            items,
            referee,
            work / "base_referee.jsonl",
            ref_params,
            attempts=cfg.review_attempts,
            render=st.referee_renderer("auto", cfg.roles()["referee"]),
        )
        referee.close()
        before = discriminate(items, scores).summary()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "model": args.model,
        "pool": args.offline_pool,
        "epochs": args.offline_epochs,
        "wall_s": round(wall, 1),
        "train_loss": report["train_loss"],
        "before": {
            k: before[k] for k in ("mean_teacher_score", "mean_student_score", "hard", "easy", "unscored")
        },
        "after": {
            "mean_teacher_score": report["mean_teacher_score"],
            "mean_student_score": report["mean_student_score"],
            "hard": report["hard"],
            "easy": report["easy"],
            "unscored": report["unscored"],
        },
        "new_hard": report["new_hard"],
        "new_easy": report["new_easy"],
        "stage_seconds": report["seconds"],
    }


def _read(path: Path) -> list[dict]:
    from leanlm.core.records import read_jsonl

    return read_jsonl(path)


def _read_answers(run_dir: Path, pool: list[dict]) -> list[dict]:
    """The teacher answers of ``pool`` from the run's cache (no new request: all were asked)."""
    from leanlm.core.generation import GenerationResult
    from leanlm.lion.pools import messages_id
    from leanlm.lion.prompts import teacher_messages

    cache = {r["id"]: GenerationResult.from_record(r) for r in _read(run_dir / "teacher.jsonl")}
    out = []
    for rec in pool:
        r = cache.get(messages_id(teacher_messages(rec["instruction"], rec.get("input"))))
        if r is not None and r.ok:
            out.append({**rec, "output": r.text.strip()})
    return out


def write_results(results: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Lion benchmark results", ""]
    net = results.get("network")
    if net:
        o = net["original"]
        lines += [
            f"## One API iteration, pool {net['pool']}, {net['latency_s'] * 1000:.0f} ms latency, concurrency "
            f"{net['concurrency']} (loopback server, scripted roles; training excluded)",
            "",
            "| stage | requests | wall s | ideal s | ratio |",
            "|---|---|---|---|---|",
        ]
        for r in net["stages"]:
            lines.append(
                f"| {r['stage']} | {r['requests']} | {r['seconds']} | {r['ideal_seconds']} | {r['ratio']} |"
            )
        lines += [
            f"| **API stages** | {net['requests']} | {net['api_stage_s']} | {net['ideal_s']} | "
            f"**{net['ratio_to_ideal']}** |",
            "",
            f"Same server, plain `generate()` of 1000 requests with the core `openai` backend, no Lion: ratio "
            f"{net['backend_floor_1000_requests']['with_cache_file']['ratio']} with a resumable output file, "
            f"{net['backend_floor_1000_requests']['no_file']['ratio']} without (the floor on this machine).",
            "",
            f"Whole iteration wall time (with pools, ROUGE filter, bookkeeping): {net['wall_s']} s. "
            f"Hard/easy {net['hard']}/{net['easy']}, new {net['new_hard']} + {net['new_easy']}.",
            "",
            f"The original's pacing for the same iteration (computed, not slept): {o['teacher_requests']} teacher + "
            f"{o['referee_requests']} referee requests at one per {ORIGINAL_GAP_S:.0f} s, plus "
            f"{o['generator_requests']} sequential generator calls = {o['paced_s']} s ({o['paced_h']} h): "
            f"{o['speedup_vs_original']}x the wall time here.",
            "",
        ]
    off = results.get("offline")
    if off:
        b, a = off["before"], off["after"]
        lines += [
            f"## Offline iteration: `{off['model']}` as teacher/referee/generator, tiny_llama student, "
            f"pool {off['pool']}, {off['epochs']} epochs",
            "",
            "| student | mean teacher mark | mean student mark | hard | easy | unscored |",
            "|---|---|---|---|---|---|",
            f"| before imitation | {b['mean_teacher_score']} | {b['mean_student_score']} | {b['hard']} | {b['easy']} | "
            f"{b['unscored']} |",
            f"| after imitation | {a['mean_teacher_score']} | {a['mean_student_score']} | {a['hard']} | {a['easy']} | "
            f"{a['unscored']} |",
            "",
            f"Train loss {off['train_loss']}; new instructions {off['new_hard']} hard + {off['new_easy']} easy; "
            f"wall {off['wall_s']} s.",
            "",
        ]
    (folder / "results.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["network", "offline", "all"], default="all")
    p.add_argument("--pool", type=int, default=500)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--new", type=int, default=100, help="new instructions per kind (hard, easy)")
    p.add_argument("--model", default="default")
    p.add_argument("--offline_pool", type=int, default=12)
    p.add_argument("--offline_new", type=int, default=2)
    p.add_argument("--offline_epochs", type=float, default=5)
    p.add_argument("--label", default="cpu", help="results go to bench/results/<label>/")
    args = p.parse_args(argv)
    folder = HERE / "results" / args.label
    path = folder / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.part in ("network", "all"):
        results["network"] = network(args)
        print(json.dumps(results["network"], indent=2))
    if args.part in ("offline", "all"):
        results["offline"] = offline(args)
        print(json.dumps(results["offline"], indent=2))
    write_results(results, folder)


if __name__ == "__main__":
    sys.exit(main())
