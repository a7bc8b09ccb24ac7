"""The web page in a real browser: Playwright drives Debian's chromium against a live server whose LLM
is the scripted research model, slowed a little so the live view can be watched growing.

No browser is ever downloaded: the test uses /usr/bin/chromium and is skipped when it is missing.
Screenshots of the live view and of the report, at laptop and phone sizes, land in
tests/output/screenshots/ (git-ignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import QUESTION, LiveServer, make_app, scenario_llm, upload_kb

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "output" / "screenshots"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A name under an attacker's control that resolves to this machine: DNS rebinding, without DNS.
    "--host-resolver-rules=MAP attacker.example 127.0.0.1",
]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")


@pytest.fixture
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def no_horizontal_scroll(page: sync_api.Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_the_page_shows_a_run_growing_and_its_report_with_working_citations(
    browser: sync_api.Browser, corpus_dir: Path
) -> None:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    app = make_app(lambda _: scenario_llm(delay_s=0.3, expansions=1))
    with LiveServer(app) as live:
        with live.client() as client:
            upload_kb(client, "speeches", corpus_dir)

        laptop = browser.new_page(viewport=LAPTOP)
        laptop.set_default_timeout(30_000)
        laptop.goto(live.url)
        laptop.get_by_label("Question").fill(QUESTION)
        laptop.get_by_label("Knowledge base").select_option("speeches")
        laptop.get_by_label("Depth").select_option("standard")
        laptop.get_by_role("button", name="Start research").click()
        laptop.wait_for_url("**/?view=run&id=*")
        status = laptop.locator("#run-status")

        # The outline appears while the run is live, then grows: an expansion adds subsections,
        # shown highlighted as new.
        laptop.locator('.outline li[data-position="section-1"]').wait_for()
        assert status.inner_text() == "running"
        top_level = laptop.locator('.outline li[data-level="1"]').count()
        assert top_level == 3
        subsection = laptop.locator('.outline li[data-level="2"].is-new').first
        subsection.wait_for()
        assert status.inner_text() == "running", "the subsections must appear while the run is live"
        assert laptop.locator('.outline li[data-level="1"].is-new').count() == 0  # only the new ones
        laptop.locator(".draft section").first.wait_for()  # section text as it is written
        assert laptop.locator(".sources li").first.inner_text() != "None yet"
        laptop.screenshot(path=str(SCREENSHOTS / "live-1280x800.png"), full_page=True)
        assert no_horizontal_scroll(laptop)

        # A phone opens the same run while it is still live: the replay brings it up to date.
        run_url = laptop.url
        phone = browser.new_page(viewport=PHONE)
        phone.set_default_timeout(30_000)
        phone.goto(run_url)
        phone.locator('.outline li[data-level="2"]').first.wait_for()
        phone.screenshot(path=str(SCREENSHOTS / "live-390x844.png"), full_page=True)
        assert no_horizontal_scroll(phone)

        # The finished report: clicking a citation lands on its entry in the References.
        laptop.get_by_role("link", name="Read the report").click()
        laptop.locator("article.report h1").wait_for()
        laptop.screenshot(path=str(SCREENSHOTS / "report-1280x800.png"), full_page=True)
        assert no_horizontal_scroll(laptop)
        citation = laptop.locator("article.report a.cite").first
        target = citation.get_attribute("href")
        assert target is not None and target.startswith("#ref-")
        citation.click()
        laptop.wait_for_function(f"location.hash === '{target}'")
        reference = laptop.locator(target)
        assert reference.inner_text().startswith(f"[{target.removeprefix('#ref-')}]")
        in_view = laptop.evaluate(
            "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
            " return r.top >= 0 && r.bottom <= window.innerHeight; }",
            target.removeprefix("#"),
        )
        assert in_view, "the reference must be scrolled into view"

        phone.get_by_role("link", name="Read the report").click()
        phone.locator("article.report h1").wait_for()
        phone.screenshot(path=str(SCREENSHOTS / "report-390x844.png"), full_page=True)
        assert no_horizontal_scroll(phone)

        # Past runs are listed.
        laptop.get_by_role("link", name="Runs", exact=True).click()
        laptop.locator(".runs li").first.wait_for()
        assert QUESTION in laptop.locator(".runs li").first.inner_text()
    assert sorted(p.name for p in SCREENSHOTS.iterdir()) == [
        "live-1280x800.png",
        "live-390x844.png",
        "report-1280x800.png",
        "report-390x844.png",
    ]


CLIPPED_OPTIONS = """(id) => {
  const select = document.getElementById(id);
  const style = getComputedStyle(select);
  const pen = document.createElement("canvas").getContext("2d");
  pen.font = style.font;
  // The room for the chosen option's text: the box less its padding and the drop-down arrow.
  const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 24;
  return [...select.options].filter((option) => pen.measureText(option.text).width > room)
    .map((option) => option.text);
}"""
FULLY_VISIBLE = """(element) => {
  const box = element.getBoundingClientRect();
  return box.left >= 0 && box.right <= window.innerWidth && element.scrollWidth <= element.clientWidth;
}"""


def test_the_form_fits_a_phone_without_cutting_off_a_label_or_a_choice(
    browser: sync_api.Browser, corpus_dir: Path
) -> None:
    # At 390 px the knowledge-base choice used to show "Default (the default KB, else the d".
    with LiveServer(make_app()) as live:
        with live.client() as client:
            upload_kb(client, "speeches", corpus_dir)
        phone = browser.new_page(viewport=PHONE)
        phone.set_default_timeout(30_000)
        phone.goto(live.url)
        phone.locator("#kb option[value='speeches']").wait_for(state="attached")
        for name, select in (("Knowledge base", "kb"), ("Depth", "depth")):
            label = phone.locator(f"label[for='{select}']")
            assert label.inner_text() == name
            assert label.evaluate(FULLY_VISIBLE), f"the label {name!r} is cut off"
            assert phone.evaluate(CLIPPED_OPTIONS, select) == [], f"choices of {name!r} are cut off"
        hint = phone.locator("#kb-hint")
        assert "demo corpus" in hint.inner_text() and hint.evaluate(FULLY_VISIBLE)
        phone.get_by_label("Knowledge base").select_option("speeches")
        assert hint.inner_text() == "Knowledge base “speeches”: 5 documents."
        phone.get_by_label("Depth").select_option("deep")
        assert phone.locator("#depth-hint").inner_text() == "More sections, more evidence."
        assert no_horizontal_scroll(phone)


def test_a_page_from_elsewhere_can_neither_plant_documents_nor_read_the_api(
    browser: sync_api.Browser, corpus_dir: Path
) -> None:
    with LiveServer(make_app()) as live:
        with live.client() as client:
            upload_kb(client, "default", corpus_dir)
        port = live.server.config.port
        page = browser.new_page()
        page.set_default_timeout(30_000)
        # A hostile page (the browser believes it comes from http://evil.example) with a plain form:
        # browsers send its multipart POST to any site without asking that site first.
        form = (
            f'<form id="plant" method="post" enctype="multipart/form-data" '
            f'action="{live.url}/api/kbs/default/documents"><input type="file" name="files"></form>'
        )
        page.route("http://evil.example/", lambda route: route.fulfill(content_type="text/html", body=form))
        page.goto("http://evil.example/")
        page.set_input_files(
            "input[name=files]",
            files=[{"name": "planted.txt", "mimeType": "text/plain", "buffer": b"The tariff was abolished."}],
        )
        with page.expect_navigation() as navigation:
            page.eval_on_selector("#plant", "form => form.submit()")
        answer = navigation.value
        assert answer is not None and answer.status == 403, answer and answer.text()
        assert "cross-site" in answer.json()["detail"]

        # The same page rebinding its own name to 127.0.0.1 reads nothing: the name is not this server's.
        rebound = page.goto(f"http://attacker.example:{port}/api/kbs/default/search?q=tariff")
        assert rebound is not None and rebound.status == 400
        assert "tariff" not in rebound.text()
        with live.client() as client:
            assert client.get("/api/kbs").json()[0]["documents"] == len(list(corpus_dir.iterdir()))
            assert client.get("/api/kbs/default/search", params={"q": "abolished"}).json() == []


def test_the_report_view_switches_versions_and_shows_what_changed(
    browser: sync_api.Browser, live: LiveServer
) -> None:
    from tests.server.test_versions_api import RUN, finished_with_two_versions

    finished_with_two_versions()  # version 2 rewrote section 3
    page = browser.new_page(viewport=PHONE)
    page.set_default_timeout(30_000)
    page.goto(f"{live.url}/?view=report&id={RUN}")
    page.locator("article.report h1").wait_for()
    picker = page.get_by_label("Version")
    assert picker.input_value() == "2"
    assert [text.split(" — ")[0] for text in picker.locator("option").all_inner_texts()] == ["1", "2"]
    assert "A new opening sentence." in page.locator("article.report").inner_text()

    page.get_by_role("button", name="What changed").click()
    changes = page.locator("section.changes")
    changes.get_by_text("Version 1 → 2: 1 section rewritten").wait_for()
    shown = changes.inner_text()
    assert "3 Part late" in shown and "+A new opening sentence." in shown and "null" not in shown
    assert no_horizontal_scroll(page)

    picker.select_option("1")
    page.wait_for_url("**version=1")
    # The view is drawn again for version 1 (wait for that state, not for time).
    sync_api.expect(page.locator("article.report")).not_to_contain_text("A new opening sentence.")
    assert page.get_by_label("Version").input_value() == "1"
    assert page.get_by_role("button", name="What changed").is_disabled()  # nothing before version 1


def test_a_section_is_deepened_from_the_report_live_and_its_version_appears(
    browser: sync_api.Browser, corpus_dir: Path
) -> None:
    from deepdraft.run import runner
    from tests.server.conftest import server_settings

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run_id = runner.start(QUESTION, server_settings(), kb=str(corpus_dir), llm=scenario_llm()).run_id
    # The command's model is slowed a little, so the outline can be seen growing while it runs.
    with LiveServer(make_app(lambda _: scenario_llm(delay_s=0.3))) as live:
        page = browser.new_page(viewport=LAPTOP)
        page.set_default_timeout(30_000)
        page.goto(f"{live.url}/?view=report&id={run_id}")
        page.locator("article.report h1").wait_for()
        assert page.get_by_label("Version").input_value() == "1"

        # Clicking a section's heading offers its tools; its evidence names the References' numbers.
        page.get_by_role("button", name="2 Part middle").click()
        tools = page.get_by_role("group", name="Section 2")
        tools.get_by_role("button", name="Show evidence").click()
        tools.get_by_text("Evidence of 2 Part middle").wait_for()
        cited = tools.locator(".passages li", has=page.locator(".tag.cited"))
        assert cited.count() == 2
        assert cited.first.locator("a.cite").inner_text().startswith("[")

        tools.get_by_label("Instructions for deepen or rewrite (optional)").fill("the farm states")
        tools.get_by_role("button", name="Deepen").click()
        status = page.locator("#command-status")
        # The new subsections appear under the clicked section, highlighted, while the command runs.
        under = page.locator('.command-live .outline li[data-position="section-2"] li.is-new')
        under.first.wait_for()
        assert status.inner_text() == "continuing", "the subsections must appear while the command is live"
        assert page.locator(".command-live .outline li.is-new").count() == under.count() >= 2
        page.screenshot(path=str(SCREENSHOTS / "deepen-live-1280x800.png"), full_page=True)

        # Finished: the report again, its new version current in the switcher, and what it changed.
        sync_api.expect(page.get_by_label("Version")).to_have_value("2")
        options = page.get_by_label("Version").locator("option").all_inner_texts()
        assert [text.split(" — ")[0] for text in options] == ["1", "2"] and "deepen (current)" in options[1]
        assert "2.1 Facet 1 of section-2" in page.locator("article.report").inner_text()
        page.get_by_role("button", name="What changed").click()
        changes = page.locator("section.changes")
        changes.get_by_text("Version 1 → 2:").wait_for()
        assert "2.1 Facet 1 of section-2 (added)" in changes.inner_text()
        assert no_horizontal_scroll(page)
