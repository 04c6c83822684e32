"""Backend discovery and selection, with fake installed distributions."""

from __future__ import annotations

import pytest

from fiber_core import hookspecs, plugins
from fiber_core.plugins import BackendError, Registry


def test_installed_local_backend_is_found_and_is_the_fallback() -> None:
    registry = Registry()
    assert registry.backends["local"].distribution == "fiber-local"
    assert registry.select().name == "local"
    assert registry.select("local").priority == 0


def test_good_plugin_is_selected_by_priority(install, good_backend) -> None:
    install("fiber-fake", {"fake": "fake_good"}, {"fake_good": good_backend(priority=1000)})
    registry = Registry()
    names = [b.name for b in registry.ordered()]
    assert names[0] == "fake" and names[-1] == "local"
    assert registry.select().name == "fake"
    assert registry.backends["fake"].version == "1.0"
    assert "flavour" in [key.name for key in registry.config_keys()]


def test_plugin_that_does_not_apply_is_skipped(install, good_backend) -> None:
    install("fiber-fake", {"fake": "fake_idle"},
            {"fake_idle": good_backend(priority=10, applies=False)})
    assert Registry().select().name == "local"
    assert Registry().select("fake").name == "fake"  # still usable when chosen


def test_unknown_backend_names_installed_ones_and_distribution() -> None:
    only_local = [found for found in plugins._entry_points() if found[0].name == "local"]
    with pytest.raises(BackendError) as error:
        Registry(only_local).select("kubernetes")
    assert str(error.value) == ("no backend 'kubernetes' installed (installed: local); "
                                "pip install fiber-k8s")
    with pytest.raises(BackendError, match="pip install fiber-slurm"):
        Registry().select("slurm")


def test_broken_plugin_is_reported_and_does_not_break_others(install, good_backend) -> None:
    install("fiber-broken", {"broken": "fake_broken"},
            {"fake_broken": "import no_such_module_here\n"})
    registry = Registry()
    assert registry.select().name == "local"
    assert "ModuleNotFoundError" in (registry.backends["broken"].error or "")
    with pytest.raises(BackendError, match="fiber-broken.*cannot be used.*no_such_module_here"):
        registry.select("broken")


def test_incomplete_plugin_is_reported(install, good_backend) -> None:
    install("fiber-half", {"half": "fake_half"}, {"fake_half": """
        from fiber_core.hookspecs import BackendInfo, hookimpl

        @hookimpl
        def backend_info():
            return BackendInfo(priority=1)
    """})
    with pytest.raises(BackendError, match="does not implement.*master_address, spawn, poll"):
        Registry().select("half")


def test_misspelt_hook_is_reported(install, good_backend) -> None:
    install("fiber-typo", {"typo": "fake_typo"},
            {"fake_typo": good_backend() + "\n@hookimpl\ndef spwan(spec, config):\n    pass\n"})
    with pytest.raises(BackendError, match="spwan"):
        Registry().select("typo")


def test_duplicate_names_fail_naming_both_distributions(install, good_backend) -> None:
    install("fiber-twin-a", {"twin": "fake_twin_a"}, {"fake_twin_a": good_backend()})
    install("fiber-twin-b", {"twin": "fake_twin_b"}, {"fake_twin_b": good_backend()})
    registry = Registry()
    with pytest.raises(BackendError, match="fiber-twin-a, fiber-twin-b"):
        registry.select("twin")
    assert registry.select().name == "local"  # an ambiguous backend never applies


def test_plugin_failing_in_detect_counts_as_not_applying(install, good_backend) -> None:
    source = good_backend(priority=10).replace(
        "return True", "raise RuntimeError('cannot tell')")
    install("fiber-shy", {"shy": "fake_shy"}, {"fake_shy": source})
    assert Registry().select().name == "local"


def test_hookspecs_are_documented() -> None:
    """Every hook of the contract has a docstring and a section in the plugin guide."""
    from pathlib import Path

    guide = Path(__file__).parent.parent / "docs" / "writing-a-backend.md"
    text = guide.read_text()
    for name in ("backend_info", "detect_environment", "master_address", "spawn",
                 "poll", "terminate", "job_output", "shutdown"):
        hook = getattr(hookspecs, name)
        assert hook.__doc__, name
        assert f"`{name}" in text, f"hook {name} is missing from {guide.name}"
