"""Keyboard-first annotation: the Annotate page's shortcuts, and the few lines of JavaScript that bind them.

Streamlit has no key bindings, so a listener runs in the page (installed once per browser tab: main.py puts
SCRIPT on every page; it acts only where the Annotate form is). It finds its targets by the containers' stable
keys (`st-key-kbd-*` classes) and the widgets' key suffixes, and clicks them as a person would. Single keys act
only while no text field has the focus (Esc leaves one); Ctrl+Enter and Ctrl+S work everywhere. The page shows
SHORTCUTS, the same table the listener is built from.
"""

from __future__ import annotations

import streamlit as st

# (keys as shown, what they do); the listener below binds exactly these
SHORTCUTS = (
    ("Ctrl+Enter", "submit"),
    ("Ctrl+S", "save draft"),
    ("s", "skip"),
    ("c", "confirm the diagnosis"),
    ("u", "uncertain"),
    ("e", "correct it (search the taxonomy)"),
    ("1-6", "take a suggested diagnosis"),
    ("j / k", "next / previous field"),
    ("Esc", "leave a field (then the single keys work)"),
)

# The targets: containers keyed in annotate.py, and widgets by the end of their key (their prefix varies).
SCRIPT = """
<script>
(function () {
  if (window.__skinflowKeys) { return; }
  window.__skinflowKeys = true;
  const doc = window.document;
  const inField = (el) => el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "radio" &&
    el.type !== "checkbox") || el.isContentEditable);
  const button = (key) => doc.querySelector(".st-key-kbd-" + key + " button");
  const press = (el) => {
    if (!el) { return false; }
    if (doc.activeElement && doc.activeElement !== doc.body) { doc.activeElement.blur(); }  // commit typed text
    setTimeout(() => el.click(), 120);
    return true;
  };
  const choice = (label) => {
    const group = doc.querySelector("[class*='dx_choice']");
    if (!group) { return null; }
    const options = Array.from(group.querySelectorAll("[data-testid='stRadioOption']"));
    return options.find((option) => option.textContent.trim() === label) || null;
  };
  // the caption fields and the diagnosis, in page order (not "Prefill from")
  const fields = () => Array.from(doc.querySelectorAll(".st-key-kbd-fields")).flatMap((form) => Array.from(
    form.querySelectorAll("[data-testid='stMultiSelect'] input, [data-testid='stRadio'] input:checked, " +
      "[data-testid='stNumberInput'] input, [data-testid='stTextArea'] textarea, [data-testid='stSelectbox'] input")));
  const move = (step) => {
    const all = fields();
    if (!all.length) { return false; }
    const at = all.indexOf(doc.activeElement);
    const next = all[(at + step + all.length) % all.length];
    next.focus();
    next.scrollIntoView({block: "center"});
    return true;
  };
  doc.addEventListener("keydown", (event) => {
    if (!doc.querySelector(".st-key-kbd-submit")) { return; }  // not on the Annotate form
    const ctrl = event.ctrlKey || event.metaKey;
    let done = false;
    if (ctrl && event.key === "Enter") { done = press(button("submit")); }
    else if (ctrl && (event.key === "s" || event.key === "S")) { done = press(button("save")); }
    else if (event.key === "Escape" && inField(doc.activeElement)) { doc.activeElement.blur(); done = true; }
    else if (!ctrl && !event.altKey && !inField(doc.activeElement)) {
      const key = event.key;
      if (key === "s") { done = press(button("skip")); }
      else if (key === "c") { done = press(choice("Confirm")); }
      else if (key === "u") { done = press(choice("Uncertain")); }
      else if (key === "e") { done = press(choice("Correct")); }
      else if (key >= "1" && key <= "6") {
        const pills = doc.querySelectorAll("[class*='dx_pill'] button");
        done = press(pills[Number(key) - 1]);
      }
      else if (key === "j") { done = move(1); }
      else if (key === "k") { done = move(-1); }
    }
    if (done) { event.preventDefault(); event.stopPropagation(); }
  }, true);
})();
</script>
"""


def show_shortcuts() -> None:
    st.caption("Keys: " + " · ".join(f"**{keys}** {what}" for keys, what in SHORTCUTS))
