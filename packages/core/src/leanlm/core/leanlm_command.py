"""The ``leanlm`` command: ``leanlm models``, ``leanlm datasets``, ``leanlm demo [METHOD]``."""

from __future__ import annotations

from pathlib import Path

from leanlm.core.console import entry
from leanlm.core.errors import UserError


def parse_options(options: str | dict | tuple | None) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE]`` (fire may hand a comma list over as a tuple) or a dict -> a dict."""
    if options is None or options == "":
        return {}
    if isinstance(options, dict):
        return {str(k): v for k, v in options.items()}
    parts = [str(p) for p in options] if isinstance(options, (tuple, list)) else str(options).split(",")
    out = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--backend_options: expected KEY=VALUE[,KEY=VALUE], got {part!r}")
        out[key.strip()] = value.strip()
    return out


class LeanLM:
    """leanlm: one toolkit for five methods that make LLMs cheaper (BiTA, BitDistiller, D-LLM, SwitchBack, Lion)."""

    def models(self, name: str | None = None) -> str:
        """List the model aliases, where each would load from, and whether it is available here.

        With NAME (an alias, a path or a hub id): where that one model would load from.
        """
        from leanlm.core.models import ALIAS_SYNONYMS, ALIASES, model_location, resolve_model

        if name is not None:
            r = resolve_model(str(name))
            if r.kind == "missing":
                model_location(str(name))  # raises the one-line reason
            return f"{name}: {r.kind}, available {r.status}, {r.location}"
        rows = ["alias                 source      available  location"]
        for alias in ALIASES:
            r = resolve_model(alias)
            rows.append(f"{alias:<21} {r.kind:<11} {r.status:<10} {r.location}")
        rows.append("")
        rows.append("synonyms: " + ", ".join(f"{k} -> {v}" for k, v in ALIAS_SYNONYMS.items()))
        rows.append("put weights for any alias in ./checkpoints/<alias> (or $LEANLM_CHECKPOINTS/<alias>)")
        return "\n".join(rows)

    def datasets(self, counts: bool = False) -> str:
        """List the offline datasets with their record family; --counts loads each to count records."""
        from leanlm.core.datasets import datasets_table

        return datasets_table(bool(counts))

    def serve(
        self,
        model: str = "default",
        host: str = "127.0.0.1",
        port: int = 8000,
        served_name: str | None = None,
        api_key: str | None = None,
        max_batch: int = 8,
        max_queue: int = 256,
        max_prompt_tokens: int = 4096,
        max_tokens: int = 1024,
        dtype: str | None = None,
        device: str | None = None,
        backend: str = "hf",
        backend_options: str | dict | None = None,
    ) -> None:
        """Serve MODEL (any folder load_model opens: HF, packed low-bit, a fine-tune) with the OpenAI API.

        /v1/chat/completions, /v1/completions (both with "stream": true), /v1/models on HOST:PORT.
        Requests waiting together are decoded as one batch (up to --max_batch); --api_key makes clients
        send "Authorization: Bearer KEY"; prompts over --max_prompt_tokens and max_tokens over
        --max_tokens get a 400. --served_name is the model name clients send (default: MODEL).
        --backend NAME serves a method's decoding registered under leanlm.backends instead of plain
        batched decoding (one request at a time; the answer arrives in one piece when streamed), e.g.
        `leanlm serve --backend bita --model ADAPTER_DIR --backend_options tree=1-1` (BiTA, lossless) or
        `--backend dllm --model DLLM_DIR` (D-LLM layer skipping). --backend_options: KEY=VALUE[,KEY=VALUE].
        """
        import os

        from leanlm.core.serving import serve

        if not 0 < int(port) < 65536:
            raise UserError(f"--port must be in 1..65535, got {port}")
        options = parse_options(backend_options)
        key = api_key or os.environ.get("LEANLM_API_KEY")
        serve(
            model,
            host,
            int(port),
            served_name,
            api_key=key,
            max_batch=max_batch,
            max_queue=max_queue,
            max_prompt_tokens=max_prompt_tokens,
            max_tokens=max_tokens,
            dtype=dtype,
            device=device,
            backend=backend,
            backend_options=options,
        )

    def recipe(self, path: str, run_dir: str | None = None, evaluate: bool = True) -> str:
        """Run the method steps of the recipe file PATH (YAML/TOML), each step's output feeding the next.

        Resumable: a finished, unchanged step is skipped; a changed step and all after it run again.
        Writes RUN_DIR/report.md and report.json (default RUN_DIR: runs/<recipe name>) comparing the
        model after every step (perplexity, one task's accuracy, decode tokens/s, size); --noevaluate
        skips the measurements.
        """
        from leanlm.core.recipe import run_recipe

        return run_recipe(path, run_dir, bool(evaluate)).read_text()

    def demo(self, *methods: str, output_dir: str = "leanlm-demo", model: str = "default") -> str:
        """Run each installed method end to end on the embedded model (offline, CPU); writes a report.

        `leanlm demo compose` runs the packaged distill -> quantize -> accelerate recipe instead (Lion ->
        BitDistiller -> BiTA through their folders; not part of the default set: it takes longer).
        """
        from leanlm.core.demo import COMPOSE, installed_methods, run_demos, write_report

        available = [*installed_methods(), COMPOSE]
        unknown = [m for m in methods if m not in available]
        if unknown:
            raise UserError(
                f"no installed method named {', '.join(unknown)}; installed: {', '.join(available) or 'none'}"
            )
        out = Path(output_dir)
        results = run_demos(out, list(methods) or None, model=model)
        report = write_report(out, results)
        failed = [r.method for r in results if not r.ok]
        status = f"report: {report}"
        if not results:
            status = "no method packages are installed yet; " + status
        if failed:
            raise UserError(f"demo failed for {', '.join(failed)}; see {report}")
        return report.read_text() + "\n" + status


main = entry(LeanLM(), "leanlm")


if __name__ == "__main__":
    main()
