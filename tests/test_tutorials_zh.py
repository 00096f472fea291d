"""The Chinese tutorials (tutorials/zh/NN_name.py) are the English ones with the prose translated:
the same cells in the same order, the code cells identical character for character. So the quick
run of each English tutorial (test_tutorials.py) covers its Chinese version too; one Chinese
tutorial is also run here (slow), from its own folder, to check that `import _setup` works there.

An English tutorial without a Chinese version is reported as a visible skip (pytest -ra lists it),
not a failure: translating it is work still to do (`python -m tutorials.notebooks status`).
The slow test builds one executed notebook in both languages the way `make notebooks` does.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tutorials import notebooks as nbs

ROOT = Path(__file__).resolve().parents[1]
ENGLISH = nbs.english_tutorials()
CHINESE = sorted(nbs.ZH.glob("[0-9][0-9]_*.py"))
CJK = re.compile(r"[\u4e00-\u9fff]")
# The write-up's terms; the variants on the left are what a translation must not drift into.
TERMS = {"预先训练": "预训练", "精调": "微调", "遮蔽语言模型": "掩码语言模型",
         "掩蔽语言模型": "掩码语言模型", "屏蔽语言模型": "掩码语言模型", "下句预测": "下一句预测",
         "自动回归": "自回归", "自动编码": "自编码",
         # docs/notation.md's glossary (中文部分：术语表)
         "片段破坏": "片段遮盖", "整理器": "组批器", "被破坏的": "加噪后的", "集束搜索": "束搜索"}


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.stem)
def test_chinese_version_has_the_same_cells_and_identical_code(english):
    chinese = nbs.chinese_version(english)
    if not chinese.is_file():
        pytest.skip(f"no Chinese version yet: translate the prose of tutorials/{english.name} "
                    f"into tutorials/zh/{english.name}, keeping every code cell as it is")
    problem = nbs.code_difference(english, chinese)
    assert problem is None, (
        f"tutorials/zh/{english.name} is out of step with tutorials/{english.name}: {problem}. "
        f"If only code changed: python -m tutorials.notebooks sync-zh {english.stem}")


def test_every_chinese_tutorial_has_an_english_original():
    orphans = [p.name for p in CHINESE if not (nbs.TUTORIALS / p.name).is_file()]
    assert not orphans, f"tutorials/zh/ files without an English tutorial of that name: {orphans}"


@pytest.mark.parametrize("chinese", CHINESE, ids=lambda p: p.stem)
def test_chinese_prose_is_chinese_and_uses_the_course_terms(chinese):
    source = chinese.read_text(encoding="utf-8")
    assert source.splitlines()[0] == "# %% [markdown]", f"{chinese.name}: line 1 must be '# %% [markdown]'"
    prose = [c for c in nbs.split_cells(source) if c.kind == "markdown"]
    for i, cell in enumerate(prose):
        code = [line for line in cell.body.splitlines() if line.strip() and not line.startswith("#")]
        assert not code, f"{chinese.name}: prose cell {i + 1} has non-comment lines {code[:2]}"
    untranslated = [c.body.splitlines()[0] for c in prose
                    if len(c.body) > 80 and not CJK.search(c.body)]
    assert not untranslated, f"{chinese.name}: prose cells still in English, starting {untranslated}"
    drift = {bad: good for bad, good in TERMS.items() if bad in source}
    assert not drift, f"{chinese.name}: use the write-up's terms: {drift}"


@pytest.mark.slow
@pytest.mark.skipif(not CHINESE, reason="no Chinese tutorial yet in tutorials/zh/")
def test_a_chinese_tutorial_runs_from_its_own_folder_in_quick_mode(tmp_path):
    quick_one = nbs.ZH / "02_masks.py"  # a few seconds in quick mode, no training
    chinese = quick_one if quick_one.is_file() else min(CHINESE, key=lambda p: p.stat().st_size)
    env = {**os.environ, "TUTORIAL_QUICK": "1", "TUTORIAL_OUT": str(tmp_path), "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, str(chinese.relative_to(ROOT))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (f"TUTORIAL_QUICK=1 python {chinese.relative_to(ROOT)} exited "
                                 f"{run.returncode}:\n{run.stderr[-3000:]}")
    assert run.stdout.strip(), f"{chinese.name} printed nothing"


def test_sync_copies_english_code_into_the_chinese_prose(tmp_path, monkeypatch):
    monkeypatch.setattr(nbs, "ZH", tmp_path / "zh")
    (tmp_path / "zh").mkdir()
    english = tmp_path / "01_x.py"
    english.write_text("# %% [markdown]\n# Title\n\n# %%\nimport _setup\nx = 2\n\n# %% [markdown]\n"
                       "# More\n\n# %%\nprint(x)\n", encoding="utf-8")
    chinese = tmp_path / "zh" / "01_x.py"
    chinese.write_text("# %% [markdown]\n# 标题\n\n# %%\nimport _setup\nx = 1\n\n# %% [markdown]\n"
                       "# 更多\n\n# %%\nprint(x)\n", encoding="utf-8")
    assert "line 3: 'x = 2'" in nbs.code_difference(english, chinese)
    assert nbs.sync_chinese(english)
    assert nbs.code_difference(english, chinese) is None
    text = chinese.read_text(encoding="utf-8")
    assert "# 标题" in text and "# 更多" in text and "x = 2" in text, text
    chinese.write_text("# %% [markdown]\n# 标题\n\n# %%\nimport _setup\n", encoding="utf-8")
    with pytest.raises(nbs.NotebookError, match=r"its cells \(2\) no longer follow .*01_x.py \(4\)"):
        nbs.sync_chinese(english)


NOTEBOOK_TOOLS = all(importlib.util.find_spec(m) for m in ("jupytext", "nbclient", "ipykernel"))


@pytest.mark.slow
@pytest.mark.skipif(not NOTEBOOK_TOOLS,
                    reason="jupytext, nbclient or ipykernel missing: make notebooks installs them")
def test_make_notebooks_writes_executed_notebooks_in_both_languages(tmp_path):
    pairs = [p for p in ENGLISH if nbs.chinese_version(p).is_file()]
    quick_one = nbs.TUTORIALS / "02_masks.py"  # a few seconds in quick mode, no training
    english = quick_one if quick_one in (pairs or ENGLISH) else min(pairs or ENGLISH,
                                                                     key=lambda p: p.stat().st_size)
    env = {**os.environ, "TUTORIAL_OUT": str(tmp_path / "plots")}
    run = subprocess.run([sys.executable, "-m", "tutorials.notebooks", "build", "--quick", "--out",
                          str(tmp_path / "nb"), "--only", english.stem, "--timeout", "600"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"build failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    langs = ["en", "zh"] if pairs else ["en"]
    books = {lang: json.loads((tmp_path / "nb" / lang / f"{english.stem}.ipynb").read_text())
             for lang in langs}
    code = {lang: [c for c in nb["cells"] if c["cell_type"] == "code"] for lang, nb in books.items()}
    with_output = sum(bool(c["outputs"]) for c in code["en"])
    assert with_output >= 2, f"only {with_output} code cells have outputs: the notebook was not executed"
    errors = [o for c in code["en"] for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"executing {english.name} raised: {errors[0]['ename']}: {errors[0]['evalue']}"
    if "zh" in books:
        assert [c["outputs"] for c in code["zh"]] == [c["outputs"] for c in code["en"]]
        prose = "".join("".join(c["source"]) for c in books["zh"]["cells"] if c["cell_type"] == "markdown")
        assert CJK.search(prose), "the Chinese notebook's prose is not Chinese"


def glossary() -> dict[str, str]:
    """docs/notation.md's Chinese glossary: {a variant not to use: the course's term}."""
    text = (ROOT / "docs" / "notation.md").read_text(encoding="utf-8")
    part = text[text.index("## 中文部分：术语表"):]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| English") and "---" not in line]
    return {bad: row[1] for row in rows if len(row) >= 3 for bad in row[2].split("、") if bad}


def test_the_chinese_write_up_uses_the_glossary_of_docs_notation():
    terms = glossary()
    assert {"破坏", "片段破坏", "整理器"} <= set(terms), (
        f"docs/notation.md's glossary lost its entries for corruption and collator: {terms}")
    places = CHINESE + [ROOT / "README.zh-CN.md"]
    drift = [f"{p.name}: {bad} -> {good}" for p in places for bad, good in terms.items()
             if bad in p.read_text(encoding="utf-8")]
    assert not drift, "use docs/notation.md's Chinese terms:\n" + "\n".join(drift)


@pytest.mark.parametrize("chinese", CHINESE, ids=lambda p: p.stem)
def test_chinese_tutorial_asks_and_names_its_exercise_too(chinese):
    source = chinese.read_text(encoding="utf-8")
    assert "先预测，再运行" in source, f"{chinese.name}: no '先预测，再运行' question (the English one has it)"
    assert re.search(r"^# ## 轮到你了", source, re.M), f"{chinese.name}: no '## 轮到你了' section"
