"""Local (hf backend) roles: the forced-format referee on a small model, and the student's prompt format."""

from __future__ import annotations

from leanlm.core.generation import SamplingParams, get_backend
from leanlm.lion import stages
from leanlm.lion.pools import normalize_pool
from leanlm.lion.prompts import student_prompt


def test_forced_referee_on_a_local_model(tmp_path, tiny_model, tokenizer):
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=4)
    render = lambda msgs: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # noqa: E731
    items = [
        {**r, "teacher_output": "Paris.", "student_output": "London."}
        for r in normalize_pool([{"instruction": "Capital of France?"}, {"instruction": "Capital of Peru?"}])
    ]
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    scores, reviews, report = stages.referee_scores(
        items, backend, tmp_path / "r.jsonl", params, attempts=2, render=render
    )
    # the random model writes no marks: every review is retried once, then reported, none averaged
    assert report.extra["unparsable_count"] == 4 and report.ok == 0
    assert all(s == {"ts": None, "st": None} for s in scores.values())
    assert len(reviews) == 8 and all(r["review"].startswith(stages.FORCED_PREFIX) for r in reviews)
    assert backend.stats.requests == 8
    # the prompt the model continued ends with the pre-written score line
    cached = (tmp_path / "r.jsonl").read_text()
    assert ":f" in cached  # forced requests have their own ids (a free review is never confused with one)


def test_student_answers_are_cut_at_a_new_instruction(tmp_path, tiny_model, tokenizer):
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=4)
    pool = normalize_pool([{"instruction": "Say hi", "input": "politely"}])
    answers, report = stages.student_answers(
        pool, backend, tmp_path / "s.jsonl", SamplingParams(max_new_tokens=6, temperature=0.0)
    )
    assert (
        report.ok == 1
        and answers[0]["input"] == "politely"
        and "### Instruction:" not in answers[0]["output"]
    )
    ids = tokenizer(student_prompt("Say hi", "politely"))["input_ids"]
    import torch

    want = tiny_model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids) :]
    text = tokenizer.decode(want, skip_special_tokens=True).split("### Instruction:")[0].strip()
    assert answers[0]["output"] == text  # the student prompt is exactly student_prompt(), greedy as asked
