"""Issue 17: the Voila teaching app shuts a page's kernel down when the page is left.

Each visit of a Voila page starts a kernel (260-520 MB); before the fix every "leave the page"
beacon was refused (403, no ``_xsrf`` cookie) and 8 visits left 8 kernels running. The test
opens and leaves notebook 02 ten times, as trainees moving between pages would, and counts the
kernel processes that serve this app's case.
"""

from __future__ import annotations

import time

import pytest

from ._pages import open_in_voila, wait_for_class

pytestmark = pytest.mark.browser

VISITS = 10
MAX_KERNELS_LEFT = 2


def _kernels_of(case_dir) -> list:
    """Kernel processes started for the teaching app of ``case_dir`` (they inherit ``WORKBENCH_CASE``)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel" in " ".join(process.info["cmdline"] or ()) and process.environ().get("WORKBENCH_CASE") == str(case_dir):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _wait_for_at_most(case_dir, count: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while len(_kernels_of(case_dir)) > count and time.monotonic() < deadline:
        time.sleep(0.5)
    return len(_kernels_of(case_dir))


def test_leaving_ten_voila_pages_leaves_at_most_two_kernels(teach, teach_case, page_and_log):
    page, _ = page_and_log
    before = len(_kernels_of(teach_case))
    peak = 0
    for _ in range(VISITS):
        open_in_voila(page, teach, "02_landmarks_targets.ipynb")
        wait_for_class(page, "wb-landmark-editor")
        peak = max(peak, len(_kernels_of(teach_case)))
        page.goto("about:blank")  # leave the page: its beforeunload beacon asks Voila to shut the kernel down
        _wait_for_at_most(teach_case, before + 1, timeout_s=15)
    assert peak >= 1, "no kernel was ever seen for the app's case: the count below would prove nothing"
    # kernels of earlier tests' pages (closed by Playwright without their beforeunload: Voila culls
    # those after CULL_IDLE_TIMEOUT_S) are not this test's: count what the ten visits left
    left = _wait_for_at_most(teach_case, before, timeout_s=15) - before
    assert left <= MAX_KERNELS_LEFT, f"{left} kernels still running after {VISITS} visits were left (besides {before} before)"
