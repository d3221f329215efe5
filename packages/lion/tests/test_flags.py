"""Every leanlm-lion console script refuses a misspelled flag before doing any work."""

from __future__ import annotations

from leanlm.core.testing.cli_checks import assert_scripts_reject_bogus_flag, console_scripts
from leanlm.core.testing.fake_servers import FakeServer


def test_every_script_rejects_a_bogus_flag(tmp_path, capsys) -> None:
    with FakeServer(responder=lambda body: "hi") as server:
        tried = assert_scripts_reject_bogus_flag("leanlm-lion", tmp_path, capsys, server)
    assert tried >= len(console_scripts("leanlm-lion")) > 0
