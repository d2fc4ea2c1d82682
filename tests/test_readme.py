"""The README's catalogue of bad inputs names exactly the cases ``tests/test_bad_input.py`` runs."""

import re

from tests.conftest import REPO
from tests.test_bad_input import CASES_WITH_A_RUN, CASES_WITHOUT_A_RUN


def test_readme_lists_every_bad_input_case():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Bad input") :]
    section = section[: section.index("\n## ", 1)]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    tested = [case.id for case in (*CASES_WITHOUT_A_RUN, *CASES_WITH_A_RUN)]
    assert listed == tested
    assert len(tested) >= 20
