"""Keyboard-first annotation: the Annotate and Review pages' shortcuts, and the JavaScript that binds them.

Streamlit has no key bindings, so a listener runs in the page (installed once per browser tab: main.py puts
SCRIPT on every page; it acts only where the Annotate form is). It finds its targets by the containers' stable
keys (`st-key-kbd-*` classes) and the widgets' key suffixes, and clicks them as a person would. The page shows
SHORTCUTS, the same table the listener is built from.

The rules, each one keeping the keyboard path from storing what the annotator did not mean:
- Single keys act only "at rest": focus on the page body or on a field picked with j / k (a field cursor, drawn
  as an outline). A focused radio, button or search box never turns a letter into an action: click "Correct",
  type "scabies", and the `s` goes into the search, not to Skip.
- `e` and a click on "Correct" put the focus in the diagnosis search; letters typed before it appears are
  carried into it.
- Enter in a search takes the highlighted term only: the listener moves the highlight off Streamlit's "Select
  N matches" and "Add: ..." rows when a real term matches (Enter after "yell" had added yellow and orange).
- Submit and Skip refuse, with the reason on the page, while a search holds text not turned into a choice
  (the text would be silently dropped); the server refuses a diagnosis confirmed or corrected to nothing.
- After any pointer action outside a text box (a radio, a chip's remove cross, a button, an option), the focus
  returns to the page, so the next shortcut works.

One module on purpose: most of it is the listener's JavaScript, one script the browser runs as a whole; the
shortcut table it is built from sits beside it so the two cannot disagree.
"""

from __future__ import annotations

import json

import streamlit as st

from schema.fields import FIELDS

# (keys as shown, what they do); the listener below binds exactly these
SHORTCUTS = (
    ("Ctrl+Enter", "submit"),
    ("Ctrl+S", "save draft"),
    ("s", "skip"),
    ("c", "confirm the diagnosis"),
    ("u", "uncertain"),
    ("e", "correct it (type to search the taxonomy)"),
    ("1-6", "take a suggested diagnosis"),
    ("j / k", "next / previous field"),
    ("Enter", "edit the field"),
    ("Esc", "leave it"),
)

# The fields j / k walk through, in reading order (the form's two columns read row by row): the widgets' key
# suffixes in annotate.py / widgets.py.
FIELD_ORDER = [key for field in FIELDS for key in ((field.key, "size_mm") if field.key == "size" else (field.key,))] + [
    "dx_choice",
    "dx_pick",
    "flags",
    "why",
]

_SCRIPT = """
<style>
.st-key-kbd-fields [data-testid='stElementContainer']:focus { outline: 2px solid #1c83e1; outline-offset: 3px;
  border-radius: 4px; }
#skinflow-key-notice { position: fixed; left: 50%; bottom: 24px; transform: translateX(-50%); z-index: 100000;
  max-width: 640px; padding: 10px 16px; border-radius: 6px; background: #fff4e5; color: #3d2a00;
  border: 1px solid #f0b400; box-shadow: 0 2px 8px rgba(0,0,0,.2); font: 15px/1.4 sans-serif; }
</style>
<script>
(function () {
  if (window.__skinflowKeys) { return; }
  window.__skinflowKeys = true;
  const doc = window.document;
  const ORDER = __FIELD_ORDER__;
  const SPECIAL = ["__select_matches__", "__creatable__"];  // Streamlit's "Select N matches" and "Add: ..." rows
  // what the listener did, last 100 steps: a failed browser test prints it (tests/test_keyboard_path.py)
  const trace = (...what) => {
    const log = window.__skinflowKeyTrace = window.__skinflowKeyTrace || [];
    log.push([Math.round(performance.now())].concat(what));
    if (log.length > 100) { log.shift(); }
  };
  const onForm = () => !!doc.querySelector(".st-key-kbd-submit");
  const isText = (el) => !!el && (el.tagName === "TEXTAREA" || el.isContentEditable ||
    (el.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(el.type)));
  const isCombo = (el) => !!el && el.tagName === "INPUT" && el.getAttribute("role") === "combobox";
  const keyOf = (el) => {
    const cls = Array.from(el.classList).find((c) => c.startsWith("st-key-"));
    return cls ? ORDER.find((k) => cls.endsWith("-" + k)) : undefined;
  };
  // the field wrappers (one per widget) in ORDER; each can hold the field cursor
  const fields = () => {
    const found = {};
    doc.querySelectorAll(".st-key-kbd-fields [data-testid='stElementContainer']").forEach((el) => {
      const key = keyOf(el);
      if (key && !found[key]) { found[key] = el; }
    });
    return ORDER.filter((k) => found[k]).map((k) => found[k]);
  };
  // a field's own class names its image too (st-key-a-IMAGEID-...): the cursor and the last field are kept by it, so
  // the next image starts from its first field (by key alone, `j` on the next image went to the field after the
  // one left on the last)
  const classOf = (el) => Array.from(el.classList).find((c) => c.startsWith("st-key-"));
  const isCursor = (el) => !!el && el.getAttribute && el.getAttribute("data-skinflow-field") === "1";
  const wrapperOf = (el) => fields().find((w) => w === el || w.contains(el));
  const atRest = (el) => !el || el === doc.body || el === doc.documentElement || isCursor(el);
  // a rerun in flight marks the page stale and may draw elements again: act on what is there once it is done
  const settled = () => !doc.querySelector("[data-stale='true']");
  const whenSettled = (action, until = Date.now() + 3000) => {
    if (settled() || Date.now() > until) { action(); } else { setTimeout(() => whenSettled(action, until), 30); }
  };
  let cursorKey = null;
  let lastField = null;  // the field last typed in: Esc puts the cursor there even after a rerun lost the focus
  doc.addEventListener("focusin", (event) => {
    const wrapper = isText(event.target) && wrapperOf(event.target);
    if (wrapper) { lastField = classOf(wrapper); }
  }, true);  // the field the cursor is on: put back if a rerun takes the focus away
  const toCursor = (wrapper) => {
    wrapper.setAttribute("data-skinflow-field", "1");
    wrapper.tabIndex = -1;
    wrapper.focus({preventScroll: true});
    wrapper.scrollIntoView({block: "nearest"});
    const key = cursorKey = classOf(wrapper);
    [150, 500, 1200].forEach((ms) => setTimeout(() => whenSettled(() => {
      const again = fields().find((w) => classOf(w) === key);
      const active = doc.activeElement;
      if (cursorKey === key && again && (!active || active === doc.body) && again !== active) {
        again.setAttribute("data-skinflow-field", "1");
        again.tabIndex = -1;
        again.focus({preventScroll: true});
      }
    }), ms));
  };
  const leave = (el) => {
    const wrapper = wrapperOf(el);
    if (el && el.blur) { el.blur(); }
    if (wrapper) { toCursor(wrapper); }
  };
  const move = (step) => {
    const all = fields();
    if (!all.length) { return false; }
    let at = all.indexOf(wrapperOf(doc.activeElement));
    if (at < 0 && cursorKey) { at = all.findIndex((w) => classOf(w) === cursorKey); }
    toCursor(all[at < 0 ? (step > 0 ? 0 : all.length - 1) : (at + step + all.length) % all.length]);
    return true;
  };
  const edit = (wrapper) => {
    cursorKey = null;
    const target = wrapper.querySelector("input[role='combobox'], textarea, input[type='number'], " +
      "input[type='radio']:checked, input[type='radio'], input");
    if (target) { target.focus(); }
    return true;
  };
  const notify = (text) => {
    let box = doc.getElementById("skinflow-key-notice");
    if (!box) {
      box = doc.createElement("div");
      box.id = "skinflow-key-notice";
      box.setAttribute("role", "alert");
      doc.body.appendChild(box);
    }
    box.textContent = text;
    box.hidden = false;
    clearTimeout(box.hideTimer);
    box.hideTimer = setTimeout(() => { box.hidden = true; }, 8000);
  };
  const button = (key) => () => doc.querySelector(".st-key-kbd-" + key + " button");
  const choice = (label) => {
    const group = doc.querySelector("[class*='dx_choice']");
    if (!group) { return null; }
    const options = Array.from(group.querySelectorAll("[data-testid='stRadioOption']"));
    return options.find((option) => option.textContent.trim() === label) || null;
  };
  const choose = (label) => () => choice(label);
  const chosen = (label) => {
    const option = choice(label);
    const input = option && option.querySelector("input");
    return !!input && input.checked;
  };
  // the diagnosis search: `e` or a click on "Correct" asks for it; letters typed before it is there are kept
  let wanted = null;  // {until, buffer}
  // as if typed: the browser's own text insertion fires the events the search box listens to (a value set from
  // a script showed the text but opened no list)
  let scripted = false;  // true while our own execCommand types: its input events are not a person's letters
  const typeInto = (input, text) => {
    input.focus();
    scripted = true;
    try { doc.execCommand("insertText", false, text); } finally { scripted = false; }
  };
  // a search holding typed text with its list closed (a late rerun or a scroll closed it): retype the last letter,
  // which filters the list open again, as a keystroke would
  const reopen = (input) => {
    const typed = input.value;
    if (doc.activeElement !== input || !typed.trim() || typed !== input.dataset.typed ||
        input.getAttribute("aria-expanded") === "true") { return false; }
    trace("reopen", typed);
    input.setSelectionRange(typed.length, typed.length);
    scripted = true;
    try {
      doc.execCommand("delete");
      doc.execCommand("insertText", false, typed.slice(-1));
    } finally { scripted = false; }
    return true;
  };
  // a rerun that lands after the buffered letters were typed may draw the search again, empty (a new element, or
  // the same one with its text reset: a loaded CI box lost "psoria" so) or with its list closed. What was typed is
  // put back, unless the person has done more than type letters since (Enter, Backspace, Esc, a click: theirs)
  let actedAt = 0;
  let searchTyped = "";  // the search's text as last typed (kept here: a box drawn again has lost it)
  doc.addEventListener("pointerdown", (event) => { if (event.isTrusted) { actedAt = performance.now(); } }, true);
  const keepTyped = (since) => {
    const input = doc.querySelector("[class*='dx_pick'] input");
    if (actedAt > since || !searchTyped.trim() || !input || input.disabled) { return; }
    if (input.value === "") { trace("retype", searchTyped); typeInto(input, searchTyped); } else { reopen(input); }
  };
  // `clickCorrect`: the request came from `e`, which clicks "Correct" once the choice is on the page (pressed while
  // the form was still drawing, `e` found no choice and the "s" of "scab" then skipped the image)
  const wantSearch = (clickCorrect = false) => {
    trace("want search", !!wanted, clickCorrect);
    if (wanted) { wanted.until = Date.now() + 5000; wanted.clickCorrect ||= clickCorrect; return; }  // one buffer
    wanted = {until: Date.now() + 5000, buffer: "", clickCorrect: clickCorrect, clicked: false};
    const poll = () => {
      if (!wanted) { return; }
      if (wanted.clickCorrect && !wanted.clicked && settled() && choice("Correct") && !chosen("Correct")) {
        wanted.clicked = press(choose("Correct"));  // chosen already: a click would only take the focus
      }
      const input = doc.querySelector("[class*='dx_pick'] input");
      // not while the rerun the click started is drawing (it drew the search box again under the text)
      if (input && !input.disabled && chosen("Correct") && settled()) {
        trace("search found", wanted.buffer);
        input.focus();
        if (wanted.buffer) {
          const since = performance.now();
          typeInto(input, wanted.buffer);
          [250, 600, 1200, 2500].forEach((ms) => setTimeout(() => whenSettled(() => keepTyped(since)), ms));
        }
        wanted = null;
      } else if (Date.now() > wanted.until) {
        trace("search not found", !!input, chosen("Correct"), settled());
        if (wanted.buffer) { notify(`"${wanted.buffer}" was typed for the diagnosis search, which did not open.`); }
        wanted = null;
      } else {
        setTimeout(poll, 40);
      }
    };
    setTimeout(poll, 0);
  };
  // a search's text not (yet) turned into a choice: Submit or Skip would silently drop it
  const pending = () => {
    if (wanted && wanted.buffer) { return {label: "the diagnosis search", text: wanted.buffer}; }
    for (const input of doc.querySelectorAll(".st-key-kbd-fields input[role='combobox']")) {
      // a multiselect's box is empty once a term is taken; a selectbox shows its choice, so its text is pending
      // only while it is what the person typed (a pick replaces it with the option's label)
      const typing = input.closest("[data-testid='stMultiSelect']") ||
        (input === doc.activeElement && input.value === input.dataset.typed);
      if (typing && input.value.trim()) {
        return {label: input.getAttribute("aria-label") || "a search box", text: input.value.trim()};
      }
    }
    return null;
  };
  const refuse = (action) => {
    const typed = pending();
    if (!typed) { return false; }
    trace("refused", action, typed.text);
    notify(`Not ${action}: "${typed.text}" is typed in ${typed.label} but not picked. Press Enter to take the ` +
      "highlighted term, or Esc to drop the text.");
    return true;
  };
  // Enter in a search picks a term, and the page shows it a moment later: Submit, Save and Skip pressed right after
  // wait for that moment (blurring the box first would drop the pick; checking first would see unpicked text)
  let commitUntil = 0;
  const afterCommit = (action) => setTimeout(action, Math.max(0, commitUntil - Date.now()));
  // an action: `find` names its target, found again once the page has settled (a rerun may have drawn it anew)
  let ours = null;  // the last element our own press clicked: a focus left on it is ours to give back
  const press = (find) => {
    if (!find()) { return false; }
    const box = doc.getElementById("skinflow-key-notice");
    if (box) { box.hidden = true; }  // an action went through: an old refusal no longer applies
    whenSettled(() => {
      const el = find();
      trace("press", el ? el.textContent.trim().slice(0, 20) : null);
      if (doc.activeElement && doc.activeElement !== doc.body) { doc.activeElement.blur(); }  // commit typed text
      setTimeout(() => {
        const target = find();
        if (!target) { return; }
        target.click();
        // a clicked radio keeps the focus, and a focused radio takes no letters: `u` then `c` did nothing. Given
        // back at once and again after the click's handlers; a key that comes between the two (a loaded machine)
        // finds the focus still marked as ours and is taken as at rest (keydown below)
        ours = target;
        const giveBack = () => { const now = doc.activeElement; if (now && now !== doc.body && !isText(now)) { now.blur(); } };
        giveBack();
        setTimeout(giveBack, 0);
      }, 120);
    });
    return true;
  };
  // Review: `v` verifies the one version on screen as it is; with several, which one is the reviewer's choice
  const verify = () => {
    const buttons = doc.querySelectorAll("[class*='st-key-kbd-verify-'] button");
    if (buttons.length === 1) { return press(() => doc.querySelector("[class*='st-key-kbd-verify-'] button")); }
    if (buttons.length > 1) {
      notify(`Not verified: ${buttons.length} versions can be verified. Click the one to verify as it is, or ` +
        "adjudicate (Ctrl+Enter) to write the final record.");
      return true;
    }
    return false;
  };
  // the highlighted row of a search: moved off "Select N matches" / "Add: ..." when a real term matches
  const highlighted = (input) => {
    const list = doc.getElementById(input.getAttribute("aria-controls") || "");
    if (!list) { return [null, null]; }
    const options = Array.from(list.querySelectorAll("[role='option']"));
    const focused = options.find((o) => o.getAttribute("data-focused") === "true") || null;
    const real = options.find((o) => !SPECIAL.includes(o.getAttribute("data-key"))) || null;
    return [focused, real];
  };
  const arrow = (input, key) => input.dispatchEvent(new KeyboardEvent("keydown", {key, code: key, bubbles: true,
    cancelable: true}));  // drawn on the next render: only for the highlight people see, never to pick
  const settle = (input) => {
    const [focused, real] = highlighted(input);
    if (focused && real && SPECIAL.includes(focused.getAttribute("data-key"))) {
      trace("settle", focused.getAttribute("data-key"), real.textContent.slice(0, 20));
      arrow(input, "ArrowDown");
    }
  };
  doc.addEventListener("input", (event) => {
    if (!isCombo(event.target)) { return; }
    event.target.dataset.typed = event.target.value;
    if (event.target.closest("[class*='dx_pick']")) {
      // typed by a person too (a click into the box, then letters): a late rerun of the click on "Correct" closed
      // the list under the typed text in a CI run, and the option never came back
      searchTyped = event.target.value;
      if (!scripted) {
        const since = performance.now();
        [250, 600, 1200, 2500].forEach((ms) => setTimeout(() => whenSettled(() => keepTyped(since)), ms));
      }
    }
    setTimeout(() => settle(event.target), 30);
  }, true);

  doc.addEventListener("keydown", (event) => {
    if (!onForm() || !event.isTrusted) { return; }
    let active = doc.activeElement;
    if (ours && active && active !== doc.body && !isText(active) && ours.contains(active)) {
      active.blur();
      active = doc.activeElement || doc.body;
    }
    const ctrl = event.ctrlKey || event.metaKey;
    const key = event.key;
    if (ctrl || event.altKey || key.length !== 1) { actedAt = performance.now(); }
    let done = false;
    trace("key", key, active.tagName, (active.getAttribute("aria-label") || active.className || "").slice(0, 30));
    if (ctrl && key === "Enter") { afterCommit(() => refuse("submitted") || press(button("submit"))); done = true; }
    else if (ctrl && (key === "s" || key === "S")) { afterCommit(() => press(button("save"))); done = true; }
    else if (key === "Enter" && isCombo(active)) {
      // the highlighted term, or the best real one when the highlight is on "Select N matches" / "Add: ...";
      // picked by a click on it, which takes effect at once (a highlight moved by key events is drawn later, and a
      // fast Enter landed before it). Only "Add: ..." left: a new term, as Enter always did.
      commitUntil = Date.now() + 300;
      const pickNow = () => {
        const [focused, real] = highlighted(active);
        const special = !focused || SPECIAL.includes(focused.getAttribute("data-key"));
        const pick = special ? real : focused;
        if (!pick) { return false; }
        trace("pick", pick.textContent.slice(0, 30));
        pick.click();
        active.dataset.typed = "";
        return true;
      };
      if (pickNow()) { done = true; }
      else if (reopen(active)) {
        commitUntil = Date.now() + 800;
        const until = Date.now() + 600;
        const retry = () => { if (!pickNow() && Date.now() < until) { setTimeout(retry, 30); } };
        setTimeout(retry, 30);
        done = true;
      }
    }
    else if (key === "Escape" && !atRest(active)) { leave(active); done = true; }
    else if (key === "Escape" && lastField && !isCursor(active)) {  // the rerun after a pick took the focus
      const wrapper = fields().find((w) => classOf(w) === lastField);
      if (wrapper) { toCursor(wrapper); done = true; }
    }
    else if (ctrl || event.altKey) { done = false; }
    else if (wanted && key.length === 1 && !isText(active)) { wanted.buffer += key; done = true; }
    else if (key === "Enter" && isCursor(active)) { done = edit(active); }
    else if (atRest(active)) {
      if (key === "s") { afterCommit(() => refuse("skipped") || press(button("skip"))); done = true; }
      else if (key === "c") { done = press(choose("Confirm")); }
      else if (key === "u") { done = press(choose("Uncertain")); }
      else if (key === "e") { wantSearch(true); done = true; }
      else if (key >= "1" && key <= "6") {
        done = press(() => doc.querySelectorAll("[class*='dx_pill'] button")[Number(key) - 1]);
      }
      else if (key === "j") { done = move(1); }
      else if (key === "k") { done = move(-1); }
      else if (key === "v") { done = verify(); }
    }
    if (done) { event.preventDefault(); event.stopPropagation(); }
  }, true);

  // Submit / Skip with the mouse while a search holds unpicked text: refused before the click blurs (and drops) it,
  let swallow = false;
  // on pointerdown: the search list closes on it, and cancelling it keeps the mousedown from taking the focus
  window.addEventListener("pointerdown", (event) => {  // window: before the search list's own outside-press
    if (!onForm() || !event.target.closest(".st-key-kbd-submit, .st-key-kbd-skip")) { return; }
    if (refuse(event.target.closest(".st-key-kbd-submit") ? "submitted" : "skipped")) {
      swallow = true;
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
  window.addEventListener("click", (event) => {
    if (swallow) { swallow = false; event.preventDefault(); event.stopPropagation(); return; }
    if (!onForm() || !event.isTrusted) { return; }  // our own pick of a term keeps the focus in its search
    cursorKey = lastField = null;
    ours = null;  // a person's click: where the focus goes is theirs
    const target = event.target;
    const option = target.closest && target.closest("[data-testid='stRadioOption']");
    const correct = !!option && !!option.closest("[class*='dx_choice']") && option.textContent.trim() === "Correct";
    if (correct) { wantSearch(); }  // now, not after the click: letters typed right after it go to the search
    setTimeout(() => {
      const active = doc.activeElement;
      if (correct) {
        if (active && active.blur && !isText(active)) { active.blur(); }
        return;
      }
      if (atRest(active)) { return; }
      // a click into a text box (or its search field's frame) is there to type: keep the focus; anything else
      // (a radio, a button, a chip's remove cross, an option of a list) gives the keys back to the page
      const box = isText(active) && (active.closest("[role='group']") || active);
      const intoBox = box && (box === target || box.contains(target)) && !target.closest("button");
      if (!intoBox) { active.blur(); }
    }, 0);
  }, true);
  window.addEventListener("beforeunload", (event) => {
    if (onForm() && pending()) { event.preventDefault(); event.returnValue = ""; }
  });
})();
</script>
"""
SCRIPT = _SCRIPT.replace("__FIELD_ORDER__", json.dumps(FIELD_ORDER))


# Review reuses the listener: its adjudication form is a form as Annotate's is (the same container keys), and
# `s` presses its "Next item" button (the item stays in the list); `v` presses "Verify ... as it is".
REVIEW_SHORTCUTS = (
    ("v", "verify the version on screen as it is"),
    ("Ctrl+Enter", "adjudicate and verify"),
    ("s", "next item"),
    ("c / u / e", "confirm / uncertain / correct the diagnosis"),
    ("j / k", "next / previous field"),
    ("Enter", "edit the field"),
    ("Esc", "leave it"),
)


def show_shortcuts(shortcuts: tuple[tuple[str, str], ...] = SHORTCUTS) -> None:
    st.caption("Keys: " + " · ".join(f"**{keys}** {what}" for keys, what in shortcuts))
