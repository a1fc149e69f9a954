"""`talkface --help` and `import talkface` must stay light: no torch, transformers or pyrender."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "pyrender", "OpenGL", "imageio", "matplotlib", "numba")


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_help_imports_no_heavy_module():
    loaded = _loaded_after(
        "import sys\nfrom talkface.cli import app\n"
        "sys.argv=['talkface','--help']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
    )
    assert "talkface.cli" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_subcommand_help_imports_no_heavy_module():
    for cmd in ("train", "animate", "stream", "render", "evaluate", "demo", "prepare"):
        loaded = _loaded_after(
            f"import sys\nfrom talkface.cli import app\nsys.argv=['talkface','{cmd}','--help']\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
        )
        assert not [m for m in HEAVY if m in loaded], cmd


def test_import_talkface_is_light():
    loaded = _loaded_after("import talkface")
    assert not [m for m in HEAVY if m in loaded]


def test_python_dash_m_version():
    out = subprocess.run([sys.executable, "-m", "talkface", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("talkface ")
