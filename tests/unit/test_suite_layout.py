"""The test folders have no __init__.py, so pytest imports each test module by its file name alone:
two modules with one name in different folders stop the whole run at collection ("import file
mismatch"). This keeps every test module's name unique across tests/."""

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique_across_the_test_folders():
    where = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        where[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not clashes, f"rename one of each pair (pytest collects them by file name): {clashes}"
