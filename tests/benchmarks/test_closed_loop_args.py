"""The closed loop's command line refuses settings it cannot run before any work starts."""

from __future__ import annotations

import pytest

from benchmarks import closed_loop


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0"], "--workers 0: give 1 or more processes"),
    (["--sam2-steps", "150"], "--sam2-steps 150: give more than 200"),
])
def test_settings_it_cannot_run_are_refused_in_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(closed_loop, "run", lambda *a, **k: pytest.fail("the loop started"))
    with pytest.raises(SystemExit) as stop:
        closed_loop.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)
