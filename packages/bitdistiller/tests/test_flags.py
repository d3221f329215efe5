"""Every leanlm-bitdistiller console script refuses a misspelled flag before doing any work."""

from __future__ import annotations

from leanlm.core.fake_servers import FakeServer
from leanlm.core.testing import assert_scripts_reject_bogus_flag, console_scripts


def test_every_script_rejects_a_bogus_flag(tmp_path, capsys) -> None:
    with FakeServer(responder=lambda body: "hi") as server:
        tried = assert_scripts_reject_bogus_flag("leanlm-bitdistiller", tmp_path, capsys, server)
    assert tried >= len(console_scripts("leanlm-bitdistiller")) > 0
