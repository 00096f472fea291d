"""The READMEs point at things that exist, and the English and Chinese ones stay in step.

README.md's curriculum map sends a learner from a formula to `path/to/file.py:name`, a tutorial,
a test file and an exercise. Each of those is checked here against the tree:

- every `file.py:name` (also `file.py:Class.method`) names a file that defines `name` (def/class);
- every cited `tests/...py` file and every linked file exists;
- every tutorial on disk is linked from the README, and one marked planned (`08*`) does not exist
  yet (once it does, the README must link it);
- every exercise named is in tutorials/exercises.py's REGISTRY, every REGISTRY exercise is in
  the map, and the ladder table is LEVELS.

README.zh-CN.md is the same document in Chinese: both link to each other at the top and have the
same headings, the same commands in their ``` blocks, and tables with the same code spans and
links, row by row. (`make exercises` copies both READMEs into the student copy; should one be
missing there, those checks are skipped.)
"""
import ast
import re
from pathlib import Path

import pytest

from tutorials.exercises import LEVELS, REGISTRY, STUDENT_MARK, TEACHER_FILES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"
MAP_HEADING = "## Curriculum map"

CODE_SPAN = re.compile(r"`([^`\n]+)`")
FILE_REF = re.compile(r"^([\w./-]+\.py):([A-Za-z_][\w.]*)$")  # common/nn/masks.py:padding_mask
TEST_FILE = re.compile(r"^tests/[\w/]+\.py$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PLANNED = re.compile(r"(?<![\w/])(\d\d)\*")  # "08*": a tutorial that is being written
CELL_SPLIT = re.compile(r"(?<!\\)\|")  # `x \| y` inside a formula is not a column


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def fenced_blocks(source: str) -> list[list[str]]:
    blocks, current = [], None
    for line in source.splitlines():
        if line.strip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, "a ``` block is never closed"
    return blocks


def without_fences(source: str) -> str:
    """The text outside ``` blocks (a `# comment` in a code block is not a heading)."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def tables(source: str) -> list[list[list[str]]]:
    """Every markdown table outside code blocks: [table][row][cell], the |---| line dropped."""
    found, current = [], None
    for line in without_fences(source).splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in CELL_SPLIT.split(line.strip())[1:-1]]
            if current is None:
                current = []
                found.append(current)
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return found


def section(source: str, heading_prefix: str) -> str:
    """The text from the `## ` heading that starts with `heading_prefix` to the next `## `."""
    lines = without_fences(source).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading_prefix)), None)
    assert start is not None, f"README.md has no section starting with {heading_prefix!r}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end])


def code_refs(source: str) -> list[tuple[str, str]]:
    return [m.groups() for span in CODE_SPAN.findall(source) for m in [FILE_REF.match(span)] if m]


def defined_names(path: Path) -> set[str]:
    """Dotted names of every def and class in a module: {"Trainer", "Trainer._optimizer_step"}."""
    names: set[str] = set()

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + child.name)
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(text(path), filename=str(path)), "")
    return names


def map_rows() -> list[dict[str, str]]:
    found = tables(section(text(README), MAP_HEADING))
    assert len(found) == 1, f"the curriculum map section should hold one table, found {len(found)}"
    header, *rows = found[0]
    assert header == ["formula", "code", "tutorial", "test", "exercise"], (
        f"curriculum map columns are {header}, expected formula | code | tutorial | test | exercise")
    return [dict(zip(header, row)) for row in rows]


def tutorial_files() -> dict[str, Path]:
    return {p.name[:2]: p for p in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))}


# ---------------------------------------------------------------------------------- README.md


def test_every_file_and_name_in_the_readme_exists():
    refs = code_refs(text(README))
    assert len(refs) >= 25, f"found only {len(refs)} `file.py:name` references in README.md"
    missing = []
    for file, name in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"`{file}:{name}`: no file {file}")
        elif name not in defined_names(path):
            missing.append(f"`{file}:{name}`: {file} defines no def/class {name}")
    assert not missing, "README.md cites code that does not exist:\n" + "\n".join(missing)


def test_every_cited_test_file_and_linked_file_exists():
    source = text(README)
    tests = {s for s in CODE_SPAN.findall(source) if TEST_FILE.match(s)}
    links = {link.split("#")[0] for link in LINK.findall(source)
             if "://" not in link and not link.startswith("#")}
    links.discard(README_ZH.name)  # checked by the in-step tests (absent from a student copy)
    if (ROOT / STUDENT_MARK).is_file():  # a student copy: the teachers' material stayed behind
        links -= set(TEACHER_FILES)
        tests -= set(TEACHER_FILES)
    missing = sorted(p for p in tests | links if not (ROOT / p).exists())
    assert tests and links, "README.md cites no test file or links to nothing"
    assert not missing, f"README.md cites files that do not exist: {missing}"


def test_every_map_row_names_code_a_test_and_a_tutorial():
    rows = map_rows()
    assert len(rows) >= 20, f"the curriculum map has {len(rows)} rows"
    for row in rows:
        where = f"map row {row['formula'][:60]!r}"
        assert code_refs(row["code"]), f"{where}: no `file.py:name` in the code column"
        assert any(TEST_FILE.match(s) for s in CODE_SPAN.findall(row["test"])), (
            f"{where}: no `tests/...py` in the test column")
        assert (LINK.search(row["tutorial"]) or PLANNED.search(row["tutorial"])
                or row["tutorial"] == "—"), (
            f"{where}: the tutorial column needs a link, a planned NN*, or — (no tutorial)")


def test_tutorials_are_linked_when_they_exist_and_planned_only_while_they_do_not():
    on_disk = tutorial_files()
    source = text(README)
    problems = []
    for link in LINK.findall(source):
        m = re.match(r"^tutorials/(\d\d)_[\w]+\.py$", link)
        if m and on_disk.get(m.group(1), Path()).name != Path(link).name:
            problems.append(f"link {link} is not an existing tutorial")
    for row in map_rows():
        for m in re.finditer(r"\[(\d\d)\]\((tutorials/[^)]+)\)", row["tutorial"]):
            if not m.group(2).startswith(f"tutorials/{m.group(1)}_"):
                problems.append(f"map: [{m.group(1)}] links to {m.group(2)}")
    for number in sorted(set(PLANNED.findall(source))):
        if number in on_disk:
            problems.append(f"tutorial {number} is marked planned ({number}*) but "
                            f"{on_disk[number].relative_to(ROOT)} exists: link it instead")
    course = section(source, "## The course")
    for number, path in on_disk.items():
        rel = path.relative_to(ROOT).as_posix()
        if f"]({rel})" not in course:
            problems.append(f"{rel} exists but '## The course' does not link it")
    assert not problems, "README.md and tutorials/ are out of step:\n" + "\n".join(problems)


def test_map_exercises_are_the_registry_and_the_ladder_is_levels():
    named = set()
    for row in map_rows():
        named |= set(CODE_SPAN.findall(row["exercise"]))
    unknown = sorted(named - set(REGISTRY))
    absent = sorted(set(REGISTRY) - named)
    assert not unknown, f"the map names exercises that are not in REGISTRY: {unknown}"
    assert not absent, f"REGISTRY exercises missing from the map's exercise column: {absent}"

    ladder = [t for t in tables(section(text(README), "## The course")) if t[0][0] == "level"]
    assert len(ladder) == 1, "'## The course' needs one table with a 'level' column (the ladder)"
    readme_levels = [(row[0], tuple(CODE_SPAN.findall(row[1]))) for row in ladder[0][1:]]
    assert readme_levels == [(level, tuple(members)) for level, members in LEVELS], (
        f"the README's ladder {readme_levels} is not tutorials/exercises.py's LEVELS {LEVELS}")


# --------------------------------------------------------------------- README.zh-CN.md in step


@pytest.fixture(scope="module")
def readmes() -> tuple[str, str]:
    if not README_ZH.is_file():
        pytest.skip("README.zh-CN.md is absent (a student copy from `make exercises` has none)")
    return text(README), text(README_ZH)


def test_each_readme_links_the_other_at_the_top(readmes):
    en, zh = readmes
    assert "](README.zh-CN.md)" in "\n".join(en.splitlines()[:5]), (
        "README.md should link README.zh-CN.md in its first 5 lines")
    assert "](README.md)" in "\n".join(zh.splitlines()[:5]), (
        "README.zh-CN.md should link README.md in its first 5 lines")


def headings(source: str) -> list[str]:
    return [line.split(" ", 1)[0] for line in without_fences(source).splitlines()
            if re.match(r"^#{1,6} ", line)]


def test_both_readmes_have_the_same_sections(readmes):
    en, zh = readmes
    count = [sum(h == "##" for h in headings(s)) for s in (en, zh)]
    assert count[0] == count[1], f"'## ' sections: README.md {count[0]}, README.zh-CN.md {count[1]}"
    assert headings(en) == headings(zh), (
        f"heading levels differ:\n  en {headings(en)}\n  zh {headings(zh)}")


def commands(source: str) -> set[str]:
    """Every line of every ``` block without its `# comment` (comments may be translated)."""
    found = set()
    for block in fenced_blocks(source):
        for line in block:
            code = re.sub(r"(^|\s)#.*$", "", line).strip()
            if code:
                found.add(code)
    return found


def test_both_readmes_show_the_same_commands(readmes):
    en, zh = (commands(s) for s in readmes)
    assert en, "README.md has no commands in ``` blocks"
    assert en == zh, (f"commands only in README.md: {sorted(en - zh)}; "
                      f"only in README.zh-CN.md: {sorted(zh - en)}")


def row_key(row: list[str]) -> list[tuple[list[str], ...]]:
    """Per cell: its code spans, links and planned markers, sorted (word order may change)."""
    return [(sorted(CODE_SPAN.findall(c)), sorted(LINK.findall(c)), sorted(PLANNED.findall(c)))
            for c in row]


def test_both_readmes_cite_the_same_code_and_tables(readmes):
    en, zh = readmes
    assert sorted(code_refs(en)) == sorted(code_refs(zh)), (
        f"`file:name` only in README.md: {sorted(set(code_refs(en)) - set(code_refs(zh)))}; "
        f"only in README.zh-CN.md: {sorted(set(code_refs(zh)) - set(code_refs(en)))}")
    t_en, t_zh = tables(en), tables(zh)
    assert len(t_en) == len(t_zh), f"tables: README.md {len(t_en)}, README.zh-CN.md {len(t_zh)}"
    for i, (a, b) in enumerate(zip(t_en, t_zh)):
        assert len(a) == len(b), f"table {i + 1}: {len(a)} rows in README.md, {len(b)} in zh-CN"
        for row_a, row_b in zip(a[1:], b[1:]):
            key_a, key_b = row_key(row_a), row_key(row_b)
            assert key_a == key_b, (f"table {i + 1}, row {row_a[0][:50]!r}: code spans/links differ"
                                    f"\n  en {key_a}\n  zh {key_b}")
