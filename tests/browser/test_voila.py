"""The Voila teaching app (``workbench teach``) in headless Chromium: notebook 02 rendered by
Voila, a click on the MRI slice places a landmark in the kernel and in the case bundle, and the
page talks to nothing but the local server."""

from __future__ import annotations

import re

import pytest

from ._pages import open_in_voila, wait_for_class
from .test_lab import check_click, check_not_blank

pytestmark = pytest.mark.browser


def test_teaching_app_places_a_landmark_where_the_slice_is_clicked(teach, teach_case, page_and_log, results_dir):
    page, log = page_and_log
    open_in_voila(page, teach, "02_landmarks_targets.ipynb")
    wait_for_class(page, "wb-landmark-editor")
    check_click(page, teach_case, results_dir, "voila")
    check_not_blank(page.locator(".wb-slice-view").first, results_dir, "voila-slice-view")
    page.screenshot(path=str(results_dir / "voila-page.png"), full_page=True)
    shown = page.locator("body").inner_text()
    for hidden in (str(teach_case), "WORKBENCH_CASE", "CaseSession", "case folder:"):  # lab-only cells
        assert hidden not in shown, f"a trainee sees developer text: {hidden!r}"
    assert not log.foreign(), f"the Voila page requested non-local URLs: {log.foreign()}"


def test_teaching_app_home_page_says_what_to_do_and_links_the_three_steps(teach, teach_case, page_and_log, results_dir):
    page, log = page_and_log
    page.goto(teach.url("/"), wait_until="domcontentloaded")
    page.wait_for_selector("#wb-landing")
    page.screenshot(path=str(results_dir / "voila-home.png"), full_page=True)
    text = page.locator("body").inner_text()
    assert "What to do" in text and teach_case.name in text, text
    for step in ("1 · Landmarks and targets", "2 · Register to ultrasound", "3 · Plan the needle path"):
        assert step in text, text
    # a trainee sees no file names, paths or other notebooks
    for hidden in ("01_load_case", "05_scene_3d", ".ipynb", str(teach_case.parent), ".cache", "/tmp/"):
        assert hidden not in text, (hidden, text)
    hrefs = page.eval_on_selector_all("table.wb-cases a", "links => links.map(a => a.getAttribute('href'))")
    assert [h.split("/")[-1] for h in hrefs] == ["02_landmarks_targets.ipynb", "03_register_sweep.ipynb", "04_plan_export.ipynb"]
    assert not log.foreign(), f"the Voila home page requested non-local URLs: {log.foreign()}"


def test_teaching_app_shows_the_fused_view_of_the_registration_app(teach, teach_case, page_and_log, results_dir):
    page, log = page_and_log
    open_in_voila(page, teach, "03_register_sweep.ipynb")
    check_not_blank(wait_for_class(page, "wb-fused-view"), results_dir, "voila-fused-view")
    assert str(teach_case) not in page.locator("body").inner_text(), "a trainee sees the case folder's path"
    assert not log.foreign(), f"the Voila page of notebook 03 requested non-local URLs: {log.foreign()}"


def _expected_panel_depth_mm(case_dir) -> float:
    """Depth (mm) notebook 04 shows once opened in Voila: the first target with its entry as placed
    (the demo: the expert's). A Voila page takes no suggestion and exports nothing by itself."""
    from workbench.widgets.plan import EXPERT_PREFIX, PlanModel
    from workbench.widgets.session import CaseSession

    model = PlanModel(CaseSession(case_dir), reference_to_mri=None)
    target = model.targets()[0]
    return float(model.trajectory(target, EXPERT_PREFIX + target).insertion_depth_mm)


def test_teaching_app_shows_a_live_plan_with_depth_and_safety(teach, teach_case, page_and_log, results_dir):
    page, log = page_and_log
    open_in_voila(page, teach, "04_plan_export.ipynb")
    panel = wait_for_class(page, "wb-plan-panel")  # not in the DOM contract: notebook 04's plan panel
    page.wait_for_function(
        "() => /depth\\s*[0-9.]+\\s*mm/.test(document.querySelector('.wb-plan-panel').innerText)", timeout=60_000
    )
    text = panel.inner_text()
    panel.screenshot(path=str(results_dir / "voila-plan-panel.png"))
    depth_mm = float(re.search(r"depth\s*([0-9.]+)\s*mm", text).group(1))
    assert depth_mm == pytest.approx(_expected_panel_depth_mm(teach_case), abs=0.05 + 1e-9), text  # shown to 0.1 mm
    assert re.search(r"safety\s*\S+", text), text
    assert not log.foreign(), f"the Voila page of notebook 04 requested non-local URLs: {log.foreign()}"


def test_teaching_plan_page_writes_nothing_on_opening_and_its_report_link_works(teach, page_and_log, results_dir):
    """Opening a page has no side effect (the export waits for the button); the report link answers 200."""
    page, log = page_and_log
    open_in_voila(page, teach, "04_plan_export.ipynb")
    panel = wait_for_class(page, "wb-plan-panel")
    page.wait_for_function(
        "() => /depth\\s*[0-9.]+\\s*mm/.test(document.querySelector('.wb-plan-panel').innerText)", timeout=60_000
    )
    assert page.locator(".wb-plan-panel a[href$='report.html']").count() == 0, "the page exported on opening"
    panel.get_by_role("button", name=re.compile("export", re.IGNORECASE)).first.click()
    link = page.locator(".wb-plan-panel a[href$='report.html']").first
    link.wait_for(state="attached", timeout=60_000)
    href = link.get_attribute("href")
    response = page.request.get(page.evaluate("(h) => new URL(h, document.baseURI).href", href))
    assert response.status == 200, (href, response.status)
    assert "<html" in response.text().lower()[:500]
    panel.screenshot(path=str(results_dir / "voila-plan-exported.png"))
    assert not log.foreign(), f"the Voila page of notebook 04 requested non-local URLs: {log.foreign()}"
