"""The README's PyTorch example is python/examples/quickstart.py, verbatim, and it runs."""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "python" / "examples" / "quickstart.py"


def test_readme_shows_the_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in readme, (
        "README.md does not show python/examples/quickstart.py verbatim in a ```python block")


def test_the_example_runs(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert capsys.readouterr().out.startswith("gradient norm: ")
