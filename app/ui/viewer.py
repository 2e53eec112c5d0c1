"""The image viewer of the Annotate and Review pages: zoom and pan on the picture itself.

st.image serves the stored file (downsized by Streamlit past 1,460 pixels; a toggle sends the full resolution),
shown at column width. A listener installed once
per tab by st.html makes every image inside a `st-key-zoom-*` container zoomable: the mouse wheel or a
trackpad pinch zooms around the pointer, dragging pans, a double click toggles between fit and actual pixels
(full resolution), and with the pointer over the picture + / - zoom, the arrow keys pan and 0 fits again.
Only a CSS transform changes: nothing is fetched again. main.py installs SCRIPT on every page (in the sidebar,
where its empty element takes no room in the page's columns).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

SCRIPT = """
<style>
/* a picture sent at full resolution still fits its column; zooming shows the extra pixels */
[class*="st-key-zoom-"] [data-testid="stImage"], [class*="st-key-zoom-"] [data-testid="stImageContainer"] {
  max-width: 100% !important; }
[class*="st-key-zoom-"] img { max-width: 100% !important; height: auto !important; }
</style>
<script>
(function () {
  if (window.__skinflowZoom) { return; }
  window.__skinflowZoom = true;
  const doc = window.document, views = new WeakMap();
  let hovered = null, drag = null;
  // st.image leaves alt empty: name each picture after its caption ("image #12, 600x450"), for screen readers
  const describe = () => doc.querySelectorAll("[class*='st-key-zoom-'] img:not([alt]), [class*='st-key-zoom-'] img[alt='']")
    .forEach((img) => {
      const box = img.closest("[class*='st-key-zoom-']");
      const caption = box && box.querySelector("[data-testid='stImageCaption'], figcaption");
      img.alt = "Skin picture" + (caption && caption.textContent.trim() ? ", " + caption.textContent.trim() : "") +
        " (zoomable)";
    });
  new MutationObserver(describe).observe(doc.body, {childList: true, subtree: true});
  const zoomable = (el) => el && el.tagName === "IMG" && el.closest("[class*='st-key-zoom-']") ? el : null;
  const view = (img) => {
    if (!views.has(img)) {
      img.parentElement.style.overflow = "hidden";
      img.style.transformOrigin = "0 0";
      img.style.cursor = "zoom-in";
      views.set(img, {scale: 1, x: 0, y: 0});
    }
    return views.get(img);
  };
  const show = (img, v) => {
    v.scale = Math.min(Math.max(v.scale, 1), 16);
    const w = img.clientWidth, h = img.clientHeight;  // keep the picture covering its frame
    v.x = Math.min(0, Math.max(w - w * v.scale, v.x));
    v.y = Math.min(0, Math.max(h - h * v.scale, v.y));
    img.style.transform = "translate(" + v.x + "px, " + v.y + "px) scale(" + v.scale + ")";
    img.dataset.zoom = v.scale.toFixed(3);
    img.style.cursor = v.scale > 1 ? "grab" : "zoom-in";
  };
  const zoomAt = (img, factor, px, py) => {
    const v = view(img), next = Math.min(Math.max(v.scale * factor, 1), 16);
    v.x = px - (px - v.x) * next / v.scale;
    v.y = py - (py - v.y) * next / v.scale;
    v.scale = next;
    show(img, v);
  };
  const local = (img, event) => {
    const frame = img.parentElement.getBoundingClientRect();
    return [event.clientX - frame.left, event.clientY - frame.top];
  };
  doc.addEventListener("wheel", (event) => {
    const img = zoomable(event.target);
    if (!img) { return; }
    event.preventDefault();
    const [px, py] = local(img, event);
    zoomAt(img, Math.exp(-event.deltaY * (event.ctrlKey ? 0.01 : 0.002)), px, py);
  }, {passive: false, capture: true});
  doc.addEventListener("mouseover", (event) => { hovered = zoomable(event.target); }, true);
  doc.addEventListener("mousedown", (event) => {
    const img = zoomable(event.target);
    if (!img || event.button !== 0) { return; }
    event.preventDefault();
    if (doc.activeElement && doc.activeElement !== doc.body) { doc.activeElement.blur(); }  // keys go to the picture
    const v = view(img);
    drag = {img: img, x: event.clientX - v.x, y: event.clientY - v.y};
  }, true);
  doc.addEventListener("mousemove", (event) => {
    if (!drag) { return; }
    const v = view(drag.img);
    v.x = event.clientX - drag.x;
    v.y = event.clientY - drag.y;
    show(drag.img, v);
  }, true);
  doc.addEventListener("mouseup", () => { drag = null; }, true);
  doc.addEventListener("dblclick", (event) => {
    const img = zoomable(event.target);
    if (!img) { return; }
    event.preventDefault();
    const v = view(img), actual = Math.max(1, img.naturalWidth / img.clientWidth);
    const [px, py] = local(img, event);
    zoomAt(img, (v.scale > 1 ? 1 : actual) / v.scale, px, py);
  }, true);
  doc.addEventListener("keydown", (event) => {
    const img = hovered && doc.contains(hovered) ? hovered : null;
    const active = doc.activeElement;
    const typing = active && (active.tagName === "TEXTAREA" || active.isContentEditable ||
      (active.tagName === "INPUT" && !["checkbox", "radio"].includes(active.type)));
    if (!img || typing || event.ctrlKey || event.metaKey || event.altKey) { return; }
    const v = view(img), w = img.clientWidth, h = img.clientHeight, step = 40;
    const moves = {"+": () => zoomAt(img, 1.25, w / 2, h / 2), "=": () => zoomAt(img, 1.25, w / 2, h / 2),
      "-": () => zoomAt(img, 0.8, w / 2, h / 2), "0": () => { v.scale = 1; v.x = 0; v.y = 0; show(img, v); },
      "ArrowLeft": () => { v.x += step; show(img, v); }, "ArrowRight": () => { v.x -= step; show(img, v); },
      "ArrowUp": () => { v.y += step; show(img, v); }, "ArrowDown": () => { v.y -= step; show(img, v); }};
    if (moves[event.key]) { moves[event.key](); event.preventDefault(); event.stopPropagation(); }
  }, true);
})();
</script>
"""

ZOOM_HINT = "Zoom: wheel or pinch on the picture · drag to pan · double-click: actual pixels · + − 0 and arrows over it"


# Streamlit sends pictures wider than this downsized (its largest column at 2x): enough for the column, not
# for a close look at a 4,000-pixel dermoscopy photo, which the "Full resolution" toggle then sends whole.
STREAMLIT_MAX_WIDTH = 1460


def zoomable_image(path: Path, key: str, caption: str | None = None, width: int | None = None) -> None:
    """The picture at column width, zoomable and pannable in place (see the module docstring). `width`: the
    stored picture's width in pixels; when it is over STREAMLIT_MAX_WIDTH a toggle sends it at full resolution."""
    full = False
    if width and width > STREAMLIT_MAX_WIDTH:
        full = st.toggle(f"Full resolution ({width} px wide)", key=f"full-{key}", help="Sent downsized until asked.")
    with st.container(key=f"zoom-{key}"):
        # an integer width is where Streamlit stops downsizing; the column still fits the picture on screen
        st.image(str(path), width=width if full else "stretch", caption=caption)
