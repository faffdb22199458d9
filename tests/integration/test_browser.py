"""The search page in real headless Chromium (Debian's `chromium`), driven by Playwright.

Chromium comes from Debian's package (installed by the `chromium` fixture when missing);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_stack_process import DemoProcess, free_port
from playwright.sync_api import Page, Route, expect, sync_playwright

from lookalike_local.catalogue import query_photo
from lookalike_local.public_catalogues import CatalogueUnavailableError, DemoCatalogue, public_catalogue

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed with apt-get the first time (the test machines run as root)."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.fail("Chromium is missing and apt-get is not available: install Debian's `chromium`")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            check=True,
            timeout=900,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    process = DemoProcess(tmp_path_factory.mktemp("browser"), free_port())
    try:
        process.wait_until_ingested(timeout_s=300)
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(chromium: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def _loaded_images(page: Page, selector: str) -> int:
    """How many <img> matched by selector have finished loading a real picture."""
    return int(
        page.evaluate(
            "(selector) => [...document.querySelectorAll(selector)]"
            ".filter((img) => img.complete && img.naturalWidth > 0).length",
            selector,
        )
    )


def test_search_with_a_photo_shows_similar_products(
    demo: DemoProcess, page: Page, tmp_path: Path, test_output: Path
) -> None:
    photo, expected = query_photo()
    query_file = tmp_path / "my-cat.jpg"
    query_file.write_bytes(photo)

    page.goto(demo.url)
    expect(page.locator("#stack-status")).to_contain_text("photos searchable")
    expect(page.locator("#catalogue .item").first).to_be_visible()
    page.set_input_files("#photo-input", str(query_file))

    cards = page.locator("#results .card")
    expect(cards.first).to_be_visible(timeout=30_000)
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#results .card img')];"
        " return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0); }",
        timeout=30_000,
    )
    assert _loaded_images(page, "#results .card img") == cards.count()
    assert cards.first.locator(".product").inner_text() == expected
    values = cards.locator(".similarity .value").all_inner_texts()
    assert values
    assert all(re.fullmatch(r"\d{1,3}\.\d%", value) for value in values), values
    percentages = [float(value.rstrip("%")) for value in values]
    assert percentages == sorted(percentages, reverse=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(test_output / "browser-search.png"), full_page=True)


MATCH_WORDS = {"Same photo", "Very similar", "Similar", "Weak match"}
# The screenshots of docs/img/ (docs/BENCHMARKS.md, "Match levels"): a search at desktop and phone
# width, on the sample and the fashion catalogue. They are written there only when asked
# (`make screenshots` sets LOOKALIKE_SCREENSHOT_DIR=docs/img), so that a test run leaves the tree
# as it found it; otherwise into the test's own folder.
SCREENSHOT_DIR_VARIABLE = "LOOKALIKE_SCREENSHOT_DIR"


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    return Path(chosen).resolve() if chosen else tmp_path


VIEWPORTS = {"desktop": {"width": 1280, "height": 1000}, "phone": {"width": 390, "height": 844}}


def search_with(page: Page, url: str, photo: Path) -> None:
    page.goto(url)
    expect(page.locator("#stack-status")).to_contain_text("photos searchable")
    page.set_input_files("#photo-input", str(photo))
    expect(page.locator("#results-title")).to_have_text(f"Products that look like {photo.name}")
    expect(page.locator("#results .card").first).to_be_attached(timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .card img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )


def screenshot_search(chromium: Path, url: str, photo: Path, out: Path, prefix: str) -> dict[str, Path]:
    """A search for `photo` at each width of VIEWPORTS, saved as <out>/<prefix>_<width>.png, and
    at desktop width with the weak matches unfolded (<prefix>_desktop_unfolded.png)."""
    saved = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            for name, viewport in VIEWPORTS.items():
                page = browser.new_page(viewport=viewport, device_scale_factor=1)  # type: ignore[arg-type]
                search_with(page, url, photo)
                page.evaluate("window.scrollTo(0, 0)")
                saved[name] = out / f"{prefix}_{name}.png"
                page.screenshot(path=str(saved[name]), full_page=True)
                if name == "desktop" and page.locator("#show-weak").is_visible():
                    page.click("#show-weak")
                    saved["unfolded"] = out / f"{prefix}_desktop_unfolded.png"
                    page.screenshot(path=str(saved["unfolded"]), full_page=True)
                page.close()
        finally:
            browser.close()
    return saved


def test_results_show_match_levels_and_fold_weak_ones(demo: DemoProcess, page: Page, tmp_path: Path) -> None:
    photo, expected = query_photo()
    query_file = tmp_path / "my-cat.jpg"
    query_file.write_bytes(photo)
    search_with(page, demo.url, query_file)
    cards = page.locator("#results .card")
    labels = cards.locator(".match").all_text_contents()
    assert len(labels) == cards.count() > 0
    assert set(labels) <= MATCH_WORDS, labels
    assert labels[0] != "Weak match", "the cat's own photo is more than a weak match"
    assert cards.first.locator(".product").inner_text() == expected
    # The category the shop would file the photo under: the cat's own, voted by its neighbours.
    expect(page.locator("#suggestion")).to_have_text(re.compile(r"^Looks like: animals \(\d+ % "))
    weak = page.locator("#results .card.weak")
    weak_count = weak.count()
    assert weak_count == labels.count("Weak match") > 0, labels
    # Folded: only the closer matches show, and the button says how many wait behind it.
    for index in range(weak_count):
        expect(weak.nth(index)).to_be_hidden()
    more = page.locator("#show-weak")
    expect(more).to_have_text(f"Show {weak_count} weak match" + ("es" if weak_count > 1 else ""))
    more.click()
    for index in range(weak_count):
        expect(weak.nth(index)).to_be_visible()
    expect(more).to_have_attribute("aria-expanded", "true")
    more.click()
    expect(weak.first).to_be_hidden()
    assert "close" in page.locator("#results-meta").inner_text()


def test_screenshots_of_a_search_at_desktop_and_phone_width(
    demo: DemoProcess, chromium: Path, tmp_path: Path
) -> None:
    photo, _ = query_photo()
    query_file = tmp_path / "my-cat.jpg"
    query_file.write_bytes(photo)
    saved = screenshot_search(chromium, demo.url, query_file, screenshot_dir(tmp_path), "search")
    assert set(saved) == {"desktop", "phone", "unfolded"}
    for path in saved.values():
        assert path.stat().st_size > 10_000


@pytest.fixture(scope="module")
def fashion_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoProcess, DemoCatalogue]]:
    try:
        catalogue = public_catalogue("fashion")  # fetches the Debian package once, as the demo does
    except CatalogueUnavailableError as error:
        pytest.skip(str(error))
    process = DemoProcess(tmp_path_factory.mktemp("fashion"), free_port(), "--catalogue", "fashion")
    try:
        process.wait_until_ingested(timeout_s=600)
        yield process, catalogue
    finally:
        process.stop()


def test_screenshots_of_a_search_on_the_fashion_catalogue(
    fashion_demo: tuple[DemoProcess, DemoCatalogue], chromium: Path, tmp_path: Path
) -> None:
    """The catalogue a shop would recognise: a packshot of one of its garments, shot again."""
    demo, catalogue = fashion_demo
    answer = demo.post_json("/search", catalogue.query_photo, "image/jpeg")
    assert answer["results"][0]["product_id"] == catalogue.query_product
    assert answer["results"][0]["match"] in {"duplicate", "very_similar"}
    category = catalogue.query_product.removeprefix("fashion-").rsplit("-", 1)[0]  # fashion-<class>-<index>
    assert answer["suggested_categories"][0]["category"] == category
    photo = tmp_path / "garment.jpg"
    photo.write_bytes(catalogue.query_photo)
    saved = screenshot_search(chromium, demo.url, photo, screenshot_dir(tmp_path), "search_fashion")
    assert {"desktop", "phone"} <= set(saved)
    for path in saved.values():
        assert path.stat().st_size > 10_000


def test_catalogue_click_and_upload_make_a_new_product_searchable(
    demo: DemoProcess, page: Page, tmp_path: Path, test_output: Path
) -> None:
    page.goto(demo.url)
    item = page.locator("#catalogue .item[data-product='espresso-cup']")
    item.click()
    expect(page.locator("#results-title")).to_have_text("Similar to espresso-cup")
    expect(page.locator("#results .card").first).to_be_attached()
    assert "espresso-cup" not in page.locator("#results .card .product").all_inner_texts()
    # "Similar to X" shows X itself.
    preview = page.locator("#query-preview")
    expect(preview).to_be_visible()
    expect(preview).to_have_attribute("src", re.compile(r"/thumbnails/products/.*espresso-cup/"))

    photo, _ = query_photo()
    new_image = tmp_path / "new-cat.jpg"
    new_image.write_bytes(photo)
    page.set_input_files("#upload-file", str(new_image))
    page.fill("#upload-product", "browser-cat-01")
    page.fill("#upload-category", "animals")
    page.click("#upload-form button")
    expect(page.locator("#upload-status")).to_contain_text("is searchable", timeout=120_000)
    # The page then shows the products similar to the new one: the catalogue's cat comes first.
    expect(page.locator("#results-title")).to_have_text("Similar to browser-cat-01")
    expect(page.locator("#results .card .product").first).to_have_text("tabby-cat")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(test_output / "browser-upload.png"), full_page=True)


def test_a_newer_search_wins_over_a_slower_older_one(demo: DemoProcess, page: Page, tmp_path: Path) -> None:
    """The photo search is answered slowly (held back here); meanwhile the user clicks a product.
    The older answer arrives last and must be dropped: the page keeps the newer results."""
    photo, _ = query_photo()
    query_file = tmp_path / "slow-cat.jpg"
    query_file.write_bytes(photo)
    held: list[Route] = []

    def hold_the_photo_search(route: Route) -> None:
        held.append(route)

    page.goto(demo.url)
    expect(page.locator("#catalogue .item").first).to_be_visible()
    page.route("**/search?*", hold_the_photo_search)
    page.set_input_files("#photo-input", str(query_file))
    page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Searching')")
    page.locator("#catalogue .item[data-product='red-motorcycle']").click()
    expect(page.locator("#results-title")).to_have_text("Similar to red-motorcycle")
    newer = page.locator("#results .card .product").all_inner_texts()
    assert held, "the photo search was not sent"
    held[0].continue_()  # the older answer arrives now, after the newer one
    page.wait_for_timeout(3000)
    expect(page.locator("#results-title")).to_have_text("Similar to red-motorcycle")
    assert page.locator("#results .card .product").all_inner_texts() == newer
    assert "failed" not in page.locator("#message").inner_text().lower()


def test_phone_width_has_no_sideways_scrolling(
    demo: DemoProcess, chromium: Path, tmp_path: Path, test_output: Path
) -> None:
    photo, _ = query_photo()
    query_file = tmp_path / "phone-cat.jpg"
    query_file.write_bytes(photo)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(demo.url)
            expect(phone.locator("#stack-status")).to_contain_text("photos searchable")
            phone.set_input_files("#photo-input", str(query_file))
            expect(phone.locator("#results-title")).to_have_text("Products that look like phone-cat.jpg")
            expect(phone.locator("#results .card").first).to_be_visible(timeout=30_000)
            width = phone.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width} px wide on a 390 px screen"
            phone.screenshot(path=str(test_output / "browser-phone.png"), full_page=False)
        finally:
            browser.close()
