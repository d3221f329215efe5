"""BackendSpec: one mapping from backend flags to a built backend."""

from __future__ import annotations

import pytest

from leanlm.core.errors import UserError
from leanlm.core.generation import BackendSpec, GenerationRequest, SamplingParams, generate
from leanlm.core.generation.hf import HFBackend
from leanlm.core.generation.openai_backend import OpenAIBackend
from leanlm.core.generation.tgi import TGIBackend


def test_from_flags_keeps_defaults_for_none_and_refuses_unknown_names():
    spec = BackendSpec.from_flags(backend="OpenAI", model=None, concurrency=3, timeout=None)
    assert (spec.backend, spec.model, spec.concurrency, spec.timeout) == ("openai", None, 3, 120.0)
    with pytest.raises(UserError, match="unknown backend option.*bogus"):
        BackendSpec.from_flags(backend="hf", bogus=1)


@pytest.mark.parametrize(
    "flags, match",
    [
        ({"concurrency": 0}, "concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"batch_size": 0}, "batch_size"),
        ({"backend": "tgi"}, "base_url"),
    ],
)
def test_out_of_range_values_are_refused(flags, match):
    with pytest.raises(UserError, match=match):
        BackendSpec.from_flags(**flags)


def test_server_specs_pass_the_remote_knobs():
    spec = BackendSpec(
        backend="openai",
        model="m",
        base_url="127.0.0.1:9",
        api_key="k",
        concurrency=5,
        max_retries=2,
        timeout=7.0,
        backoff_base=0.5,
    )
    b = spec.build()
    assert isinstance(b, OpenAIBackend)
    assert (b.model, b.base_url, b.concurrency, b.max_retries, b.timeout, b.backoff_base) == (
        "m",
        "http://127.0.0.1:9/v1",
        5,
        2,
        7.0,
        0.5,
    )
    t = BackendSpec(backend="tgi", base_url="127.0.0.1:9", concurrency=4, max_retries=1).build()
    assert isinstance(t, TGIBackend) and (t.concurrency, t.max_retries) == (4, 1)


def test_hf_spec_builds_a_batched_local_backend(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    b = BackendSpec(backend="hf", model=str(tmp_path), batch_size=3).build()
    assert isinstance(b, HFBackend) and b.batch_size == 3
    out = generate(
        [GenerationRequest(id="a", prompt="one two")], b, SamplingParams(max_new_tokens=4), progress=False
    )
    assert out[0].ok and 1 <= out[0].completion_tokens <= 4


def test_key_ignores_the_secret_and_public_hides_it():
    a = BackendSpec(backend="openai", model="m", api_key="secret-1")
    b = BackendSpec(backend="openai", model="m", api_key="secret-2")
    assert a.key() == b.key() and a.public()["api_key"] == "***"
    assert "secret-1" not in str(a.public())


@pytest.mark.parametrize("name", ["openai", "tgi", "hf"])
def test_an_option_a_backend_does_not_take_is_one_line(name):
    from leanlm.core.generation import get_backend

    with pytest.raises(UserError, match=f"backend '{name}' takes no option.*bogus"):
        get_backend(name, base_url="127.0.0.1:9", api_key="k", bogus=1) if name != "hf" else get_backend(
            name, bogus=1
        )
