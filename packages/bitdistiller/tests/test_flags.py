"""Every leanlm-bitdistiller console script refuses a misspelled flag before doing any work."""

from __future__ import annotations

from leanlm.core.testing.cli_checks import assert_scripts_reject_bogus_flag, console_scripts
from leanlm.core.testing.fake_servers import FakeServer


def test_every_script_rejects_a_bogus_flag(tmp_path, capsys) -> None:
    with FakeServer(responder=lambda body: "hi") as server:
        tried = assert_scripts_reject_bogus_flag("leanlm-bitdistiller", tmp_path, capsys, server)
    assert tried >= len(console_scripts("leanlm-bitdistiller")) > 0


def test_group_size_is_fitted_or_refused_before_loading(tiny_dir, monkeypatch) -> None:
    import pytest

    from leanlm.bitdistiller.group_size import fit_group_size
    from leanlm.core import models
    from leanlm.core.errors import UserError

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the group size was checked")

    monkeypatch.setattr(models, "load_model", no_weights)
    # tiny_llama: inputs of 64 (hidden) and 128 (intermediate): 128 does not divide 64, 64 does
    assert fit_group_size(str(tiny_dir), None) == 64
    assert fit_group_size(str(tiny_dir), 32) == 32
    with pytest.raises(UserError, match="group size 128 does not divide the input size 64.*fit: 32, 64"):
        fit_group_size(str(tiny_dir), 128)
