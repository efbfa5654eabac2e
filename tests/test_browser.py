"""The evaluation report in a real browser: headless Chromium (Debian's package) driven by Playwright.

A tiny real evaluation (the expert and a do-nothing policy, one episode per task and suite) writes
``report.html``; the page must load every image and GIF, show its tables and log no console
error, both as written and as the self-contained copy the KFP UI gets (images as data URIs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TASKS = ["push", "drawer-open"]
K = 8

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high")


def _zeros(frames, states, task_index):
    return np.zeros((len(frames), K, 4), np.float32)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A report written by the evaluation code from real simulator episodes, with a world-model GIF section."""
    from vla_rft.evaluation.configuration import EvaluateConfig
    from vla_rft.evaluation.metrics import compute_metrics
    from vla_rft.evaluation.report import ReportSection, write_gif, write_report
    from vla_rft.evaluation.runner import evaluate_expert, evaluate_policy
    from vla_rft.sim.vector import BatchedSimulator

    out = tmp_path_factory.mktemp("report")
    cfg = EvaluateConfig(episodes_per_task=1, num_workers=0, batch_size=4, suites=["nominal", "object-5cm"],
                         gifs_per_task=1, gif_suites=["nominal"], max_episode_steps=150)
    sim = BatchedSimulator(num_workers=0, max_episode_steps=150)
    try:
        zeros = evaluate_policy(_zeros, TASKS, None, cfg, sim, name="zeros", progress=False)
        expert = evaluate_expert(TASKS, None, cfg, sim, chunk_len=K, progress=False)
    finally:
        sim.close()
    metrics = compute_metrics([zeros, expert], comparisons=[("expert", "zeros")])
    frames = np.stack([np.full((16, 16, 3), 40 * i, np.uint8) for i in range(6)])
    gif = write_gif(out.parent / "wm.gif", frames, fps=4)
    section = ReportSection("World-model fidelity", "<figure><img src='wm/real_vs_imagined.gif'>"
                            "<figcaption>ground truth (top) vs imagined</figcaption></figure>",
                            {"wm/real_vs_imagined.gif": gif})
    write_report(out, metrics, [zeros, expert], sections=[section])
    return out


def _open(page_path: Path, screenshot: Path) -> dict:
    """Load ``page_path`` in headless Chromium; what its images, tables and console say."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: scripts/setup.sh installs Debian's chromium package")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]} {r.failure}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src').slice(0, 60), "
                       "loaded: e.complete && e.naturalWidth > 0, width: e.naturalWidth}))")
            tables = page.eval_on_selector_all("table", "els => els.map(t => t.rows.length)")
            text = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"images": images, "tables": tables, "text": text, "errors": errors}


def _check(seen: dict) -> None:
    assert seen["errors"] == []
    assert len(seen["images"]) >= 4, seen["images"]  # the suites plot, the world-model GIF, episode GIFs
    broken = [i["src"] for i in seen["images"] if not i["loaded"]]
    assert broken == [], f"images that did not load: {broken}"
    assert len(seen["tables"]) >= 3 and all(rows >= 2 for rows in seen["tables"]), seen["tables"]
    for word in ("zeros", "expert", "nominal", "object-5cm", "World-model fidelity"):
        assert word in seen["text"], word


def test_report_loads_every_image_and_table_in_chromium(report_dir, tmp_path):
    seen = _open(report_dir / "report.html", tmp_path / "report.png")
    _check(seen)
    assert any(i["src"].endswith(".gif") for i in seen["images"])
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_kfp_ui_copy_of_the_report_stands_alone(report_dir, tmp_path):
    """The copy the evaluate component gives the KFP UI: every image inside the page, nothing next to it."""
    from vla_rft.components.outputs import inline_images

    alone = tmp_path / "alone" / "report.html"
    alone.parent.mkdir()
    alone.write_text(inline_images((report_dir / "report.html").read_text(), str(report_dir)))
    seen = _open(alone, tmp_path / "alone.png")
    _check(seen)
    assert all(i["src"].startswith("data:image/") for i in seen["images"]), seen["images"]
