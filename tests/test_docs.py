"""The documentation site: ``sphinx-build -W`` (a warning is an error) builds it, and the code of the
metrics page runs and prints what the page shows."""

import contextlib
import io
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"


def test_the_documentation_builds_without_a_warning(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "html" / "metrics_api.html").is_file() and (tmp_path / "html" / "api.html").is_file()


def code_blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", (DOCS / page).read_text(encoding="utf-8"), flags=re.M | re.S)


def numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+\.\d+|-?\d+", text)]


def test_the_metrics_page_example_measures_its_own_vae_and_prints_what_the_page_shows():
    import torch

    namespace: dict = {"__name__": "docs_example"}
    printed = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(printed):
            for block in code_blocks("metrics_api.md", "python"):
                exec(compile(block, "docs/metrics_api.md", "exec"), namespace)  # the page's code, as a reader runs it
    finally:
        torch.set_num_threads(threads)
    latent_dim = namespace["mean"].shape[1]
    assert 0 <= namespace["au"] <= latent_dim and namespace["kl"].shape == (latent_dim,)
    assert namespace["nll"].value < namespace["neg_elbo"]  # K = 100 tightens the one-sample bound
    assert namespace["mi_batch"].value < namespace["mi_full"].value + 3 * namespace["mi_full"].se
    (shown,) = code_blocks("metrics_api.md", "text")
    # the page's output was measured on one CPU; another may round the 400 training steps differently
    assert numbers(printed.getvalue()) == pytest.approx(numbers(shown), rel=0.05, abs=0.02), printed.getvalue()


def test_the_bad_input_page_lists_every_case_the_bad_input_tests_run():
    from tests.test_bad_input import CASES_WITH_A_RUN, CASES_WITHOUT_A_RUN

    page = (DOCS / "bad_input.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", page, flags=re.MULTILINE)
    tested = [case.id for case in (*CASES_WITHOUT_A_RUN, *CASES_WITH_A_RUN)]
    assert listed == tested
    assert len(tested) >= 20


FIRST_COMMANDS = (  # the README's first two commands, unchanged since they were written
    "```bash\n"
    "bash scripts/quickstart.sh   # set up .venv, run the quickstart collapse ablation on the embedded corpus, "
    "print its table\n"
    "bash scripts/test.sh         # set up .venv if needed, lint, run the test suite (what CI runs)\n"
    "```"
)


def test_the_readme_is_a_landing_page_that_links_every_page_of_the_site():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# textvae\n\n" + FIRST_COMMANDS + "\n")  # the two commands: the whole set-up
    assert readme.count("\n") <= 200
    linked = set(re.findall(r"\]\(docs/([a-z_]+\.md)\)", readme))
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert linked == pages
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert {f"{p.removesuffix('.md')}" for p in pages} <= set(index.split())  # every page is in a toctree
