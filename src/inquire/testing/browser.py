"""Helpers for the browser tests: the system's headless Chromium and layout checks.

Nothing here downloads a browser: Playwright drives Debian's ``chromium`` (or the binary named
by ``INQUIRE_CHROMIUM``). :func:`layout_problems` runs in the page and reports what makes a
page hard to use on a screen of that size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("INQUIRE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
# (name, width, height) in CSS pixels: a phone held upright and a laptop screen.
VIEWPORTS = [("phone", 390, 844), ("desktop", 1280, 800)]
MIN_TAP_PX = 40

_LAYOUT_JS = """
(minTap) => {
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return null;
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || st.display === "none") return null;
    return r;
  };
  const small = [];
  const targets = "a[href], button, input:not([type=hidden]), select, summary, "
    + "[tabindex]:not([tabindex='-1'])";
  for (const el of document.querySelectorAll(targets)) {
    let r = visible(el);
    if (!r) continue;
    // a check box is tapped through its label
    const label = el.type === "checkbox" ? el.closest("label") : null;
    if (label) r = label.getBoundingClientRect();
    if (r.width < minTap - 0.5 || r.height < minTap - 0.5)
      small.push(`${el.outerHTML.slice(0, 90)} is ${r.width.toFixed(0)}x${r.height.toFixed(0)} px`);
  }
  // elements with their own text, and every image: an image may not cover any of that text
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim() || !node.parentElement) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) if (r.width > 0 && r.height > 0) texts.push([node, r]);
  }
  const overlaps = [];
  for (const img of document.querySelectorAll("img, svg")) {
    const a = visible(img);
    if (!a) continue;
    for (const [node, b] of texts) {
      if (img.contains(node.parentElement)) continue;  // text inside an inline SVG
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) {
        const what = node.textContent.trim().slice(0, 30);
        overlaps.push(`${img.outerHTML.slice(0, 60)} covers "${what}"`);
        break;
      }
    }
  }
  return {
    scroll_width: document.documentElement.scrollWidth,
    inner_width: window.innerWidth,
    small_targets: small,
    image_over_text: overlaps,
  };
}
"""


def layout_problems(page: Any, min_tap: int = MIN_TAP_PX) -> dict[str, Any]:
    """Measure the page now shown in a Playwright ``page``.

    Returns ``scroll_width`` and ``inner_width`` (CSS px; the page overflows sideways when the
    first is larger), ``small_targets`` (links, buttons, inputs, selects narrower or lower than
    ``min_tap`` px, each described) and ``image_over_text`` (images whose box covers a text).
    """
    result: dict[str, Any] = page.evaluate(_LAYOUT_JS, min_tap)
    return result


def layout_findings(page: Any, phone: bool, min_tap: int = MIN_TAP_PX) -> list[str]:
    """What is wrong with the layout now shown, in words (empty when nothing is): sideways
    overflow, images over text, and on a phone (``phone``) tap targets under ``min_tap`` px."""
    m = layout_problems(page, min_tap)
    found = []
    if m["scroll_width"] > m["inner_width"]:
        found.append(f"overflows sideways: {m['scroll_width']} > {m['inner_width']} px")
    if phone and m["small_targets"]:
        found.append(f"small tap targets: {m['small_targets'][:5]}")
    if m["image_over_text"]:
        found.append(f"images over text: {m['image_over_text'][:3]}")
    return found
