"""What subscribers see, in headless Chromium: no sideways scrolling at phone and desktop
widths, readable contrast in light and dark mode, and a readable email with images off.

Needs Debian's chromium (apt-get install chromium). Without it these tests are skipped on a
developer machine and fail in CI (CI=true), so a missing browser never hides a regression.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE_ISSUE, LiveServer, load_sample_data

from newsletter.build import build_issue
from newsletter.config import load_settings

CONTRAST_JS = """
(scheme) => {
  // Any CSS colour (rgb(), oklch(), color-mix() ...) as sRGB, through a 1x1 canvas.
  const pixel = document.createElement('canvas').getContext('2d', {willReadFrequently: true});
  const parse = (c) => { pixel.clearRect(0, 0, 1, 1); pixel.fillStyle = c; pixel.fillRect(0, 0, 1, 1);
    const d = pixel.getImageData(0, 0, 1, 1).data; return {r: d[0], g: d[1], b: d[2], a: d[3] / 255}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const canvas = scheme === 'dark' ? {r: 18, g: 18, b: 18, a: 1} : {r: 255, g: 255, b: 255, a: 1};
  const background = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c.a > 0) return c; } return canvas; };
  const failures = [];
  let checked = 0;
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].filter((n) => n.nodeType === 3 && n.textContent.trim()).map((n) => n.textContent.trim()).join(' ');
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.opacity === '0' || parseFloat(style.fontSize) < 2) continue;
    const fg = parse(style.color), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    checked++;
    if (ratio < needed) failures.push(`${el.tagName}.${el.className} "${own.slice(0, 40)}" ${style.color} on rgb(${bg.r},${bg.g},${bg.b}) = ${ratio.toFixed(2)}`);
  }
  return {checked, failures};
}
"""


@pytest.fixture
def built(project) -> Path:
    load_sample_data(project)
    return build_issue(load_settings()).out_dir


def _open(browser, out: Path, width: int, scheme: str = "light", images: bool = True):
    """preview.html: the built email with its images from the build folder."""
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)

    def route(request_route):
        url = request_route.request.url
        if url.startswith("file://") and (images or "/images/" not in url):
            return request_route.continue_()
        return request_route.abort()  # nothing leaves this machine

    page.route("**/*", route)
    page.goto((out / "preview.html").as_uri())
    return page


@pytest.mark.parametrize("width", [375, 600, 1024])
def test_no_horizontal_scrolling(browser, built, tmp_path, width):
    page = _open(browser, built, width)
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    page.screenshot(path=str(tmp_path / f"email-{width}.png"), full_page=True)
    assert scroll_width <= inner_width, f"page is {scroll_width}px wide in a {inner_width}px window"
    # The images really loaded, and scale down with the column.
    widths = page.evaluate("[...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().right])")
    assert widths and all(natural > 0 and right <= width for natural, right in widths), widths
    # The logo is the wordmark alone: its tagline, about 6 px high at the logo's 210 px, is gone
    # (the header's own text names the newsletter and the month).
    logo = page.evaluate(
        "(() => { const r = document.querySelector('.nl-logo img').getBoundingClientRect(); return [r.width, r.height]; })()"
    )
    assert logo[0] == 210 and logo[1] <= 26, logo
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 600])
def test_text_contrast_meets_wcag_aa(browser, built, scheme, width):
    page = _open(browser, built, width, scheme)
    result = page.evaluate(CONTRAST_JS, scheme)
    page.close()
    assert result["checked"] > 50
    assert result["failures"] == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_emission_chart_bars_show_against_their_background(browser, built, scheme):
    """The chart is table cells: each bar must differ from the card behind it, in both modes."""
    page = _open(browser, built, 375, scheme)
    bars = page.evaluate(
        """[...document.querySelectorAll('td.bar-fall, td.bar-rise')].map(td => [
             getComputedStyle(td).backgroundColor,
             getComputedStyle(td.closest('div.nl-card')).backgroundColor,
             td.getBoundingClientRect().width])"""
    )
    page.close()
    assert len(bars) == 9
    assert all(bar != card and width >= 2 for bar, card, width in bars), bars


def test_readable_with_images_off(browser, built, tmp_path):
    page = _open(browser, built, 375, images=False)
    page.screenshot(path=str(tmp_path / "email-no-images.png"), full_page=True)
    # Every image says what it shows, and the header still names the newsletter in text.
    alts = page.evaluate("[...document.images].map(i => i.alt)")
    assert alts and all(alt.strip() for alt in alts)
    header = page.locator(".nl-header-text").inner_text()
    assert "Nyhetsbrev fra Osloregionen" in header
    assert page.evaluate("[...document.images].every(i => i.naturalWidth === 0)")  # really off
    assert page.evaluate("document.documentElement.lang") == "nb"
    # The logo's alt text stands on the navy header: it must be readable there, not dark on dark.
    logo = page.evaluate(
        """(() => { const img = document.querySelector('.nl-logo img'); const s = getComputedStyle(img);
             let e = img; while (e && getComputedStyle(e).backgroundColor === 'rgba(0, 0, 0, 0)') e = e.parentElement;
             return [img.alt, s.color, getComputedStyle(e).backgroundColor, parseFloat(s.fontSize)]; })()"""
    )
    alt, color, background, size = logo
    assert alt == "Osloregionen" and size >= 18, logo
    assert _contrast(color, background) >= 4.5, logo
    page.close()


def _contrast(first: str, second: str) -> float:
    """WCAG contrast of two CSS rgb() colours."""
    import re

    def luminance(css: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


WORDS_IN_ONE_PIECE = r"""
(selector) => {
  const broken = [];
  let words = 0;
  for (const cell of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const match of node.textContent.matchAll(/\S+/g)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        words++;
        if (tops.size > 1) broken.push(match[0]);
      }
    }
  }
  return {words, broken};
}
"""


def test_tables_never_break_a_word_on_a_phone(browser, project, issue_dir, tmp_path):
    """A three-column table at 375 px: words stay whole ('Komm|une' was the bug); the table
    scrolls sideways in its own box instead, and the page itself does not."""
    load_sample_data(project)
    (issue_dir / "09-tabell.md").write_text(
        "---\ntitle: Tabell\ncategory: klima\n---\n"
        "| Kommune | Klimagassutslipp (tonn) | Utslippsendring fra 2019 |\n| --- | --- | --- |\n"
        "| Lillestrøm | 310 532 | Veitrafikkutslippene gikk ned |\n"
        "| Nordre Follo | 228 051 | Anleggsmaskinutslippene økte |\n",
        encoding="utf-8",
    )
    out = build_issue(load_settings()).out_dir
    page = _open(browser, out, 375)
    page.screenshot(path=str(tmp_path / "table-375.png"), full_page=True)
    result = page.evaluate(WORDS_IN_ONE_PIECE, "td, th")
    assert result["words"] > 30 and result["broken"] == [], result
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_public_pages_on_a_phone(browser, project, monkeypatch, tmp_path, scheme):
    """Signup and unsubscribe pages at 375 px: no sideways scrolling, readable contrast, labelled fields."""
    from test_web import KEY

    from newsletter.store import database
    from newsletter.subscribers import add, make_token
    from newsletter.web import create_app

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    settings = load_settings()
    with database(settings.database) as conn:
        _, person = add(conn, settings, (), "kari@example.no", confirmed=True)
    token = make_token(settings, person.id, "unsubscribe")
    with LiveServer(create_app(settings)) as live:
        for path, name in (("/signup", "signup"), (f"/unsubscribe/{token}", "unsubscribe")):
            page = browser.new_page(viewport={"width": 375, "height": 800}, color_scheme=scheme)
            page.goto(live.url + path)
            page.screenshot(path=str(tmp_path / f"{name}-375-{scheme}.png"), full_page=True)
            width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], (name, width)
            result = page.evaluate(CONTRAST_JS, scheme)
            assert result["failures"] == [], (name, result["failures"])
            unlabelled = page.evaluate(
                """[...document.querySelectorAll('input:not([type=hidden]), select')]
                   .filter(e => !(e.labels && e.labels.length)).map(e => e.name)"""
            )
            assert unlabelled == [], (name, unlabelled)
            page.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _fits_and_reads(page, name: str, width: int, tmp_path: Path, scheme: str = "light") -> None:
    """No sideways scrolling, readable contrast, and a full-page screenshot of the right width."""
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width, f"{name}: {scroll_width}px wide in a {inner_width}px window"
    result = page.evaluate(CONTRAST_JS, scheme)
    assert result["checked"] > 3 and result["failures"] == [], (name, result)
    shot = tmp_path / f"{name}-{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    shot_width, shot_height = _png_size(shot)
    assert shot_width == width and shot_height >= 600, (name, shot_width, shot_height)


@pytest.mark.parametrize("width", [375, 1280])
def test_the_live_preview_in_a_browser(browser, project, tmp_path, width):
    """Both frames show the email; choosing a municipality re-renders its block; the page fits."""

    from newsletter.preview import Preview, create_preview_app

    load_sample_data(project)
    live = Preview(lambda: load_settings(project), None)
    with LiveServer(create_preview_app(live)) as server:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_load_state("load")
        frames = [f for f in page.frames if f != page.main_frame]
        assert len(frames) == 2
        for frame in frames:
            assert "Oppdatert ordførererklæring for klima og miljø" in frame.locator("body").inner_text()
            assert frame.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        boxes = [page.locator("iframe").nth(i).bounding_box() for i in range(2)]
        if width == 1280:  # side by side: desktop at 700 px, mobile at 375 px
            assert round(boxes[0]["width"]) == 700 and round(boxes[1]["width"]) == 375
            assert abs(boxes[0]["y"] - boxes[1]["y"]) < 1 and boxes[1]["x"] > boxes[0]["x"] + 700
        _fits_and_reads(page, "preview", width, tmp_path)
        with page.expect_navigation():
            page.select_option("select[name=municipality]", "0301")  # the form submits on change
        page.wait_for_load_state("load")
        mobile = [f for f in page.frames if f != page.main_frame][1]
        assert "Oslo: " in mobile.locator("body").inner_text()
        page.close()


@pytest.mark.parametrize("width", [375, 1280])
def test_the_archive_in_a_browser(browser, run, project, monkeypatch, tmp_path, width):
    """The archive's index and an issue page, served by 'serve': they fit, read well, and link up."""
    from test_web import KEY

    from newsletter.store import database
    from newsletter.subscribers import add
    from newsletter.web import create_app

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    settings = load_settings()
    with database(settings.database) as conn:
        add(conn, settings, (), "kari@example.no", name="Kari", confirmed=True)
    assert run("send", "--yes").exit_code == 0
    with LiveServer(create_app(load_settings())) as live:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(live.url + "/archive/")
        assert page.evaluate("document.documentElement.lang") == "nb"
        _fits_and_reads(page, "archive-index", width, tmp_path)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.tagName") == "A"  # reachable by keyboard
        page.click("ol.issues a")
        page.wait_for_load_state("load")
        assert page.url.endswith(f"/archive/{SAMPLE_ISSUE}/")
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert "Kari" not in page.locator("body").inner_text()
        _fits_and_reads(page, "archive-issue", width, tmp_path)
        page.click("nav a[href='../']")
        page.wait_for_load_state("load")
        assert page.url.endswith("/archive/")
        page.close()
