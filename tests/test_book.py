"""The spec book generator (albor/verify/book): MyST escaping, results, runs, dangling references, and one
full Sphinx build."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from albor.verify.book import build as build_module
from albor.verify.book.build import refresh_results, sphinx_html
from albor.verify.book.generate import DanglingError, generate
from albor.verify.book.layout import Layout
from albor.verify.book.myst import esc
from albor.verify.book.results import ResultSet, falsifier_result
from albor.verify.book.sphinx_ext import add_break_points

# The book needs the docs extra; without it this module is skipped, and says so.
markdown_it = pytest.importorskip("markdown_it", reason="the book needs the docs extra: pip install '.[docs]'")

REPO = Path(__file__).resolve().parents[1]
# The parent's JUnit reader maps classnames to files of this repository, so the fixture borrows the
# name of a battery file that exists here; its contract and tests are the fixture's own.
COMPONENT = "rope"
FILE = f"falsification/test_{COMPONENT}.py"
DEMO_PATCH = (
    "diff --git a/albor/ops/rope.py b/albor/ops/rope.py\n--- a/albor/ops/rope.py\n+++ b/albor/ops/rope.py\n"
    "@@ -1 +1 @@\n-x = 1\n+x = 2\n"
)
CUDA_CARD = "NVIDIA H100 80GB HBM3"


def _contract(falsifiers: list[str]) -> dict:
    return {
        "id": COMPONENT,
        "component": COMPONENT,
        "version": 1,
        "summary": "A demo contract with |pipes|, *stars* and $dollars$.",
        "implementation": "albor.ops.rope:apply_rope",
        "equations": {"norm": "\\|R x\\| = \\|x\\|"},
        "obligations": [
            {
                "id": "DEMO-001",
                "kind": "invariant",
                "statement": "||f(x)|| = ||x|| for <every> x_1",
                "tolerance": {"float32": 1e-6},
                "falsifiers": falsifiers,
            }
        ],
    }


def _gap(contract: str = COMPONENT) -> dict:
    return {
        "id": "ALB-201",
        "title": "The demo bug",
        "component": COMPONENT,
        "severity": "critical",
        "status": "verified",
        "origin": "found-here",
        "symptom": "s",
        "root_cause": "r",
        "fix": "f",
        "contract": contract,
        "falsifiers": [f"{FILE}::test_a"],
        "faults": ["demo_fault"],
    }


def _junit(path: Path, cases: dict[str, str], meta: dict) -> None:
    body = []
    for name, outcome in cases.items():
        child = {"passed": "", "failed": '<failure message="x"/>', "skipped": '<skipped message="y"/>'}[outcome]
        body.append(f'<testcase classname="falsification.test_{COMPONENT}" name="{name}">{child}</testcase>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(body)}</testsuite></testsuites>'
    )
    path.with_suffix(".json").write_text(json.dumps(meta))


def _run(root: Path) -> Path:
    run = root / "runs" / "demo"
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    (run / "checkpoints" / "step-00000010" / "model.safetensors").write_bytes(b"0" * 2048)
    (run / "checkpoints" / "latest").symlink_to("step-00000010")
    (run / "config.yaml").write_text("model: tiny\n")
    (run / "preflight.json").write_text(json.dumps({"status": "passed", "device": "cpu", "failed_claims": []}))
    recs = [{"kind": "train", "step": s, "loss": 5 - s / 10, "lr": 1e-3, "grad_norm": 1.0, "tokens": 64 * (s + 1),
             "tok_s": 100.0, "time": s} for s in range(10)]  # fmt: skip
    recs.append({"kind": "eval", "step": 9, "val_loss": 4.0, "val_ppl": 54.6})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "tra')
    return run


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small repository: one contract, one gap, a CPU and a committed CUDA result, a report and a run."""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / f"{COMPONENT}.yaml").write_text(
        yaml.safe_dump(_contract([f"{FILE}::test_a", f"{FILE}::test_b"]))
    )
    (tmp_path / "gaps").mkdir()
    (tmp_path / "gaps" / "ALB-201.yaml").write_text(yaml.safe_dump(_gap()))
    (tmp_path / "gaps" / "ALB-201").mkdir()
    (tmp_path / "gaps" / "ALB-201" / "demo_fault.patch").write_text(DEMO_PATCH)
    (tmp_path / "falsification").mkdir()
    (tmp_path / FILE).write_text("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n")
    results = tmp_path / "falsification" / "results"
    cpu = {"card": "AMD EPYC", "date": "2026-01-02", "device": "cpu", "torch": "2.13.0"}
    _junit(
        results / "local" / "junit-cpu.xml", {"test_a[1]": "passed", "test_a[2]": "passed", "test_b": "skipped"}, cpu
    )
    old = {"card": CUDA_CARD, "date": "2025-12-01", "device": "cuda", "torch": "2.13.0"}
    _junit(results / "h100-old.xml", {"test_a[1]": "failed", "test_b": "failed"}, old)
    _junit(results / "h100.xml", {"test_a[1]": "passed", "test_b": "passed"}, {**old, "date": "2026-01-03"})
    mutant = {"fault": "demo_fault", "gap": "ALB-201", "severity": "critical", "falsifiers": [f"{FILE}::test_a"],
              "killed": True, "runnable": True, "detail": "killed by test_a"}  # fmt: skip
    report = {
        "generated": "2026-01-02T10:00:00+00:00",
        "battery": {"junit": ["x/junit-cpu.xml"], "tests": 3, "passed": 2, "failed": 0, "skipped": 1, "pass_rate": 1.0},
        "obligations": [
            {
                "id": "DEMO-001",
                "component": COMPONENT,
                "kind": "invariant",
                "statement": "s",
                "falsifiers": [f"{FILE}::test_a"],
                "status": "passed",
            }
        ],
        "coverage": 1.0,
        "mutants": [mutant],
        "kill_rate": 1.0,
        "score": 1.0,
        "critical_failures": [],
        "grade": "Toyota Standard",
    }
    (results / "local" / "report.json").write_text(json.dumps(report))
    _run(tmp_path)
    shutil.copytree(REPO / "spec", tmp_path / "spec", ignore=shutil.ignore_patterns("runs"))
    (tmp_path / "docs").mkdir()
    for name in ("conf.py", "index.md"):
        shutil.copy(REPO / "docs" / name, tmp_path / "docs" / name)
    shutil.copytree(REPO / "docs" / "_static", tmp_path / "docs" / "_static")
    return tmp_path


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
def test_esc_renders_as_the_literal_text(text: str) -> None:
    rendered = markdown_it.MarkdownIt("commonmark").renderInline(esc(text))
    assert html.unescape(rendered) == " ".join(text.split())


def test_node_ids_may_wrap_at_separators_and_copy_unchanged() -> None:
    page = '<code><span class="pre">falsification/test_x.py::test_a_b</span></code> a_b'
    out = add_break_points(page)
    assert out.count("<wbr>") == 5 and out.endswith("</code> a_b")
    assert out.replace("<wbr>", "") == page


def test_falsifier_result_counts_parametrized_cases() -> None:
    outcomes = {f"{FILE}::test_a[1]": "passed", f"{FILE}::test_a[2]": "skipped", f"{FILE}::test_ab": "failed"}
    rs = ResultSet(Path("x.xml"), "cpu", "c", "d", "", False, outcomes)  # type: ignore[arg-type]
    r = falsifier_result(f"{FILE}::test_a", rs)
    assert (r.status, r.passed, r.ran, r.skipped, r.text) == ("passed", 1, 1, 1, "passed, 1 skipped")
    assert falsifier_result(f"{FILE}::test_ab", rs).status == "failed"
    assert falsifier_result(f"{FILE}::test_c", rs).status == "not-run"


def test_generated_pages(tree: Path) -> None:
    book = generate(Layout(tree))
    out = Layout(tree).generated
    contract = (out / "contracts" / f"{COMPONENT}.md").read_text()
    assert "```{math}" in contract and "\\|R x\\| = \\|x\\|" in contract
    assert "passed 2\\/2" in contract, "two parametrized cases of test_a passed on the CPU"
    assert esc("CUDA H100 80GB HBM3") in contract and esc("2026-01-03") in contract, "the newest CUDA run is shown"
    assert esc("2025-12-01") not in contract
    assert "\\|\\|f\\(x\\)\\|\\| \\= \\|\\|x\\|\\| for \\<every\\> x\\_1" in contract
    gap = (out / "gaps" / "ALB-201.md").read_text()
    assert "{ref}`rope <contract-rope>`" in gap and "[killed]{.status-passed}" in gap
    assert "{ref}`DEMO-001 <obl-demo-001>`" in gap
    assert "```diff\n" + DEMO_PATCH in gap, "the gap page shows the bug itself, as its patch"
    assert "ALB-201" in (out / "gaps" / "index.md").read_text()
    report = (out / "report.md").read_text()
    assert "Grade: Toyota Standard" in report and esc("2026-01-02 10:00 UTC") in report
    assert "predates" not in report
    assert "demo_fault" in (out / "traceability.md").read_text()
    run = (out / "runs" / "demo.md").read_text()
    assert "![" in run and (out / "runs" / "demo.png").read_bytes().startswith(b"\x89PNG")
    assert "640" in run, "tokens seen come from the last complete train record"
    assert "step-00000010" in run and "latest" in run
    assert (out / "spec" / "objectives.md").is_file() and "`tiny`" in (out / "snippets" / "presets.md").read_text()
    assert book.problems == []


def test_no_results_and_no_runs_are_said_on_the_pages(tree: Path) -> None:
    shutil.rmtree(tree / "falsification" / "results")
    shutil.rmtree(tree / "runs")
    generate(Layout(tree))
    out = Layout(tree).generated
    assert "No battery results yet" in (out / "contracts" / f"{COMPONENT}.md").read_text()
    assert "No report yet" in (out / "report.md").read_text()
    assert "No training runs yet" in (out / "runs" / "index.md").read_text()
    assert "not run" in (out / "gaps" / "ALB-201.md").read_text()


def test_a_report_older_than_the_contracts_says_so(tree: Path) -> None:
    report = tree / "falsification" / "results" / "local" / "report.json"
    data = json.loads(report.read_text())
    report.write_text(json.dumps({**data, "obligations": [], "mutants": []}))
    generate(Layout(tree))
    out = Layout(tree).generated
    note = "This report predates 1 of the 1 obligations and 1 of the 1 gap faults"
    assert note in (out / "report.md").read_text() and note in (out / "snippets" / "status.md").read_text()


def test_stale_pages_are_removed(tree: Path) -> None:
    generate(Layout(tree))
    stale = Layout(tree).generated / "contracts" / "gone.md"
    stale.write_text("# gone\n")
    generate(Layout(tree))
    assert not stale.exists()


def test_missing_falsifier_fails_naming_it(tree: Path) -> None:
    (tree / "contracts" / f"{COMPONENT}.yaml").write_text(yaml.safe_dump(_contract([f"{FILE}::test_missing"])))
    with pytest.raises(DanglingError) as e:
        generate(Layout(tree))
    assert f"contracts/{COMPONENT}.yaml: DEMO-001 names falsifier {FILE}::test_missing" in str(e.value)
    assert "has no test function test_missing" in str(e.value)
    assert "test_missing" in (Layout(tree).generated / "traceability.md").read_text(), "shown on the page too"


def test_gap_naming_a_missing_contract_fails_naming_it(tree: Path) -> None:
    (tree / "gaps" / "ALB-201.yaml").write_text(yaml.safe_dump(_gap(contract="nope")))
    with pytest.raises(DanglingError, match=r"gaps/ALB-201\.yaml: contract 'nope' does not exist"):
        generate(Layout(tree))


def test_an_obligation_id_used_twice_fails(tree: Path) -> None:
    other = {**_contract([f"{FILE}::test_a"]), "id": "other", "component": "other"}
    (tree / "contracts" / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(DanglingError, match=r"contracts/rope\.yaml: obligation id DEMO-001 is also used by other"):
        generate(Layout(tree))


def test_a_missing_or_stray_patch_fails(tree: Path) -> None:
    (tree / "gaps" / "ALB-201" / "demo_fault.patch").rename(tree / "gaps" / "ALB-201" / "other_fault.patch")
    with pytest.raises(DanglingError) as e:
        generate(Layout(tree))
    msg = str(e.value)
    assert "gaps/ALB-201.yaml: fault 'demo_fault' has no patch gaps/ALB-201/demo_fault.patch" in msg
    assert "gaps/ALB-201/other_fault.patch: no gap names this fault" in msg


def test_build_refreshes_battery_mutants_and_report_first(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(cmd[3:])
        return subprocess.CompletedProcess(cmd, 1 if cmd[3] == "battery" else 0)

    monkeypatch.setattr(build_module.subprocess, "run", fake_run)
    refresh_results(Layout(tree))
    junit = str(Layout(tree).local_results / "junit-cpu.xml")
    assert calls == [["battery"], ["mutants"], ["report", "--junit", junit]], "a failing battery still gets a report"


def test_sphinx_builds_the_book_without_warnings(tree: Path) -> None:
    layout = Layout(tree)
    generate(layout)
    assert sphinx_html(layout) == 0
    page = (layout.html / "generated" / "contracts" / f"{COMPONENT}.html").read_text()
    assert 'class="math' in page and "mathjax/tex-chtml.js" in page, "equations go to the bundled MathJax"
    assert (layout.html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert re.search(r'<img[^>]+src="[^"]*demo\.png"', (layout.html / "generated" / "runs" / "demo.html").read_text())
    for rel in ("index.html", "generated/gaps/ALB-201.html", "generated/report.html", "generated/traceability.html"):
        assert "{ref}" not in (layout.html / rel).read_text(), f"raw MyST left in {rel}"
