"""The results page of ``rvsl-search query``: its HTML and files without a browser, then the
page opened from disk in headless Chromium (images loaded, frames coloured, links resolving).

How the browser test knows the images loaded: the product page has no script. The test writes
a copy of it beside it (same folder, so the same relative URLs) with a test-only ``<script>``
that, on ``load``, records on ``<body>`` how many images there are and how many failed
(``naturalWidth == 0``), each image's natural size and each tile's computed frame colour; the
DOM Chromium dumps is then parsed. The browser, not the page, is the judge.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

import browser
from rvsl.search import page as page_module
from rvsl.search.page import NO_MATCH, THUMB_NAME, Match, QueryRow, write_results_page

GREEN, RED, GREY = "rgb(26, 156, 26)", "rgb(214, 32, 32)", "rgb(187, 187, 187)"
FRAME_COLOURS = {"correct": GREEN, "wrong": RED, "neutral": GREY}


class _Elements(HTMLParser):
    """Every start tag (name, attributes) and the text of an HTML document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag and (cls is None or cls in a.get("class", "").split())
        ]


def _image(path: Path, size: tuple[int, int], seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def world(tmp_path: Path) -> dict:
    """Source images with awkward names, one corrupt, one missing; three query rows using them
    (one gallery image matched twice, one query that is also a match, one row with no match)."""
    src = tmp_path / "crops dir #1"
    src.mkdir()
    query = _image(src / "query one #1 & 'q' 100%.jpg", (40, 80), 0)
    gallery = _image(src / "gällery ünï.png", (60, 30), 1)
    second = _image(src / 'g2 "quoted".jpg', (90, 60), 2)
    third = _image(src / "g3 <tag>.jpg", (30, 90), 3)
    corrupt = src / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = str(src / "nowhere.jpg")
    dehazed = Image.fromarray(np.full((64, 32, 3), 200, np.uint8))
    rows = [
        QueryRow(
            query,
            "c001",
            dehazed,
            (
                Match(gallery, 1, 0.123456, "c002", 1_700_000_000.0, True),
                Match(second, 2, 0.5, "c003", 12.5, False),
                Match(str(corrupt), 3, 0.9, None, None, None),
            ),
            haze=0.4217,
            branch="hazy",
        ),
        QueryRow(second, None, None, ()),
        QueryRow(
            third,
            "c&4",
            None,
            (
                Match(gallery, 1, 1.0, "c002", None, True),
                Match(missing, 2, 2.0, "c005", None, False),
                Match(third, 3, 3.0, None, None, None),
            ),
        ),
    ]
    return {
        "rows": rows,
        "out": tmp_path / "out",
        "sources": {query, gallery, second, third},  # readable: one thumbnail each
        "unreadable": ["corrupt.jpg", "nowhere.jpg"],
        "frames": [["correct", "wrong", "neutral"], [], ["correct", "wrong", "neutral"]],
        "images": 3 + 1 + 4,  # three queries, one dehazed view, four readable matches
    }


def _local_urls(out: Path, parsed: _Elements) -> list[Path]:
    """Every src/href of the page as a file; each must be relative (no scheme, no host, no
    leading slash) so the folder works wherever it is moved."""
    urls = [a[k] for _, a in parsed.tags for k in ("src", "href") if a.get(k)]
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
    return [out / unquote(urlsplit(url).path) for url in urls]


# --- the page without a browser -----------------------------------------------------------


def test_page_rows_matches_frames_and_captions(world: dict) -> None:
    page = write_results_page(world["out"], world["rows"], notes=["gallery: 5 images"])
    assert page == world["out"] / "index.html"
    text = page.read_text("utf-8")
    parsed = _Elements(text)
    rows = text.split('<tr class="query-row">')[1:]
    assert len(rows) == len(world["rows"])
    for row_html, frames in zip(rows, world["frames"], strict=True):
        row = _Elements(row_html)
        got = [
            next(f for f in FRAME_COLOURS if f in a["class"].split())
            for a in row.having("figure", "match")
        ]
        assert got == frames
        assert [a["data-rank"] for a in row.having("figure", "match")] == [
            str(i + 1) for i in range(len(frames))
        ]
        assert (NO_MATCH in "".join(row.text)) == (not frames)
    assert text.count(NO_MATCH) == 1
    words = " ".join(parsed.text)
    assert "d 0.123" in words and "haze 0.422 · branch hazy" in words and "camera c&4" in words
    assert "2023-11-14 22:13:20 UTC" in words and "t 12.5 s" in words
    assert "gallery: 5 images" in words
    missing = parsed.having("div", "missing")
    assert len(missing) == 2 and "cannot read corrupt.jpg" in words
    assert "cannot read nowhere.jpg" in words
    assert len(parsed.having("img")) == world["images"]
    assert len(parsed.having("td", "empty")) == 2  # rows without a dehazed view
    # self-contained: no script, no external resource, every URL a local file
    assert "<script" not in text and "http:" not in text and "https:" not in text
    files = _local_urls(world["out"], parsed)
    assert files and all(f.is_file() for f in files)


def test_every_text_is_escaped(world: dict) -> None:
    title = "<script>alert('x')</script> & \"co\""
    text = write_results_page(world["out"], world["rows"], title=title, notes=["<b>n</b>"])
    text = text.read_text("utf-8")
    assert "<script" not in text and "<b>" not in text and "<tag>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;co&quot;" in text
    assert "g3 &lt;tag&gt;.jpg" in text and "g2 &quot;quoted&quot;.jpg" in text
    parsed = _Elements(text)
    assert parsed.having("title") and "".join(parsed.text).count(title) == 2  # title and h1
    names = {a["alt"] for a in parsed.having("img")}
    assert {"gällery ünï.png", "query one #1 & 'q' 100%.jpg", 'g2 "quoted".jpg'} <= names


def test_thumbnails_are_safe_unique_and_made_once(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = page_module.load_image
    monkeypatch.setattr(page_module, "load_image", lambda p: reads.append(p) or real(p))
    write_results_page(world["out"], world["rows"], thumb_height=64)
    assert sorted(reads) == sorted(set(reads))  # each source read once
    assert len(reads) == len(world["sources"]) + len(world["unreadable"])
    thumbs = sorted((world["out"] / "images").iterdir())
    assert len(thumbs) == len(world["sources"]) + 1  # and the dehazed view
    assert all(THUMB_NAME.match(t.name) for t in thumbs), [t.name for t in thumbs]
    for thumb in thumbs:
        with Image.open(thumb) as img:
            assert img.height == 64 and img.format == ("PNG" if "dehazed" in thumb.name else "JPEG")
    with Image.open(next(t for t in thumbs if "g_llery" in t.name)) as img:
        assert img.size == (128, 64)  # 60x30 kept its aspect


def test_rewrite_replaces_page_atomically_and_prunes_old_thumbnails(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real = page_module.atomic_write
    monkeypatch.setattr(
        page_module, "atomic_write", lambda p, w: written.append(Path(p).name) or real(p, w)
    )
    page = write_results_page(world["out"], world["rows"])
    assert written[-1] == "index.html" and len(written) == len(world["sources"]) + 2
    images = world["out"] / "images"
    (images / "keep me.txt").write_text("not ours")
    before = {p.name for p in images.iterdir()}
    assert write_results_page(world["out"], world["rows"][1:2], title="second") == page
    text = page.read_text("utf-8")
    assert "<h1>second</h1>" in text and text.count('<tr class="query-row">') == 1
    after = {p.name for p in images.iterdir()}
    assert after < before and "keep me.txt" in after and len(after) == 2  # g2 + the stranger
    leftovers = [p for p in world["out"].rglob(".*") if ".tmp-" in p.name]
    assert not leftovers


def test_empty_page_and_bad_thumb_height(tmp_path: Path) -> None:
    text = write_results_page(tmp_path, []).read_text("utf-8")
    assert "0 queries" in text and "<tbody>" in text
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="thumb_height"):
            write_results_page(tmp_path / "x", [], thumb_height=bad)


def test_time_text() -> None:
    assert page_module.time_text(None) is None
    assert page_module.time_text(0.0) == "t 0 s"
    assert page_module.time_text(1234.5678) == "t 1234.5678 s"
    assert page_module.time_text(946_684_800.0) == "2000-01-01 00:00:00 UTC"
    assert page_module.time_text(float("nan")) == "t nan s"


def test_a_missing_browser_fails_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RVSL_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(browser.BrowserMissingError, match="apt-get install -y chromium"):
        browser.find_chromium()
    monkeypatch.setenv("RVSL_CHROMIUM", str(tmp_path / "no-such-chrome"))
    with pytest.raises(browser.BrowserMissingError, match=r"RVSL_CHROMIUM=.*apt-get install"):
        browser.find_chromium()


# --- the page in headless Chromium --------------------------------------------------------

CHECK_SCRIPT = """<script>
addEventListener("load", () => {
  const images = [...document.images];
  for (const i of images) i.dataset.natural = i.naturalWidth + "x" + i.naturalHeight;
  for (const f of document.querySelectorAll("figure")) {
    f.dataset.frame = getComputedStyle(f).borderTopColor;
  }
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.dataset.checked = "yes";
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser; its absence fails (never skips) with the command that installs it."""
    try:
        return browser.find_chromium()
    except browser.BrowserMissingError as err:
        missing = str(err)
    pytest.fail(missing, pytrace=False)


def test_page_loads_in_chromium_with_every_image(world: dict, chromium: str) -> None:
    page = write_results_page(world["out"], world["rows"])
    text = page.read_text("utf-8")
    assert text.count("</head>") == 1
    check = page.with_name(".browser-check.html")  # beside it: the same relative URLs
    check.write_text(text.replace("</head>", CHECK_SCRIPT + "</head>"), "utf-8")

    dom = _Elements(browser.dump_dom(check))
    body = dom.having("body")[0]
    assert body.get("data-checked") == "yes", "the page did not finish loading in Chromium"
    assert body["data-images"] == str(world["images"])
    broken = [a["alt"] for a in dom.having("img") if a.get("data-natural", "0x0") == "0x0"]
    assert body["data-broken"] == "0" and not broken, f"broken images: {broken}"
    assert {a["data-natural"].split("x")[1] for a in dom.having("img")} == {"128"}
    assert all(f.is_file() for f in _local_urls(world["out"], dom))

    assert len(dom.having("tr", "query-row")) == len(world["rows"])
    matches = dom.having("figure", "match")
    assert len(matches) == sum(len(r.matches) for r in world["rows"])
    expected = [FRAME_COLOURS[f] for frames in world["frames"] for f in frames]
    assert [m["data-frame"] for m in matches] == expected
    words = " ".join(dom.text)
    assert words.count(NO_MATCH) == 1
    assert "cannot read corrupt.jpg" in words and "cannot read nowhere.jpg" in words
    assert "gällery ünï.png" in words and "query one #1 & 'q' 100%.jpg" in words


def test_page_screenshot_shows_the_frames(world: dict, chromium: str, tmp_path: Path) -> None:
    page = write_results_page(world["out"], world["rows"])
    png = browser.screenshot(page, tmp_path / "page.png", size=(1400, 900))
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert img.size == (1400, 900)
    for name, colour in (("green", (26, 156, 26)), ("red", (214, 32, 32))):
        assert (pixels == colour).all(axis=1).any(), f"no {name} frame in the screenshot {png}"
