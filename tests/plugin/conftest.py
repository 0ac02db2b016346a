import pytest


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scratch sessions run as on a developer's machine unless a test says otherwise: CI
    (which .ci/run may set) switches strict mode on."""
    monkeypatch.delenv("CI", raising=False)
