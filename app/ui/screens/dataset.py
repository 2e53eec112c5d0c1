"""Dataset: the task list. A filterable, sortable table with thumbnails; one image's full history, or open it in
Annotate past the queue's order."""

from __future__ import annotations

import base64

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.screens import annotate
from app.ui.screens.annotate import OPEN_IMAGE
from app.ui.widgets import plain
from curation.labelling.annotate import QUALITY_FLAGS
from curation.labelling.browse import SORTS, image_history, list_images, thumbnail
from curation.ops.status import workbench_status
from curation.store.models import IMAGE_STATUSES
from schema.errors import SkinflowError

PAGE_SIZE = 50
THUMB_ROW_PX = 72


def render() -> None:
    actor = state.require_role("reviewer", "The dataset page")
    wb = state.workbench()
    st.title("Dataset")
    taxonomy = wb.taxonomy
    known = workbench_status(wb)
    with st.expander("Filters", expanded=True):
        c1, c2, c3, c4 = st.columns(4)
        status = c1.multiselect("Status", IMAGE_STATUSES)
        source = c1.multiselect("Source", list(known["by_source"]))
        label = c2.multiselect("Label", sorted(taxonomy.labels), format_func=lambda k: taxonomy.labels[k].display)
        group9 = c2.multiselect("Group (9)", taxonomy.groups9())
        group3 = c3.multiselect("Group (3)", taxonomy.groups3())
        fitzpatrick = c3.multiselect("Fitzpatrick type", [1, 2, 3, 4, 5, 6])
        annotator = c4.multiselect("Annotator", sorted(known["annotators"]))
        flag = c4.multiselect("Flags", QUALITY_FLAGS)
        disagreement = c4.toggle("Annotators disagree", help="Images whose annotators' current annotations differ")
        s1, s2, s3 = st.columns(3)
        sort = s1.selectbox("Sort by", list(SORTS))
        descending = s2.toggle("Descending")
    filters = dict(
        status=status,
        label=label,
        group9=group9,
        group3=group3,
        fitzpatrick=fitzpatrick,
        annotator=annotator,
        flag=flag,
        source=source,
        disagreement=disagreement,
        sort=sort,
        descending=descending,
    )
    rows, total = list_images(wb, actor, **filters, limit=PAGE_SIZE, offset=0)
    pages = max(1, -(-total // PAGE_SIZE))
    page = s3.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1)
    if page > 1:
        rows, total = list_images(wb, actor, **filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    st.caption(f"{total} images match")
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame.insert(
            1,
            "thumbnail",
            [
                "data:image/jpeg;base64," + base64.b64encode(data).decode() if (data := thumbnail(wb, r["id"], 96)) else None
                for r in rows
            ],
        )
        frame["annotators"] = frame["annotators"].map(", ".join)
        frame["flags"] = frame["flags"].map(", ".join)
    st.dataframe(  # rows tall enough to see the lesion (at the default row height a thumbnail was 24 px)
        frame,
        hide_index=True,
        width="stretch",
        row_height=THUMB_ROW_PX,
        column_config={"thumbnail": st.column_config.ImageColumn("image", width="small")},
    )
    st.subheader("One image")
    image_id = int(st.number_input("Image id", min_value=1, step=1, value=rows[0]["id"] if rows else 1))
    if st.button(f"Open image #{image_id} in Annotate", help="Past the queue's order: you see and can annotate it"):
        st.session_state[OPEN_IMAGE] = image_id
        st.switch_page(st.Page(annotate.render, title="Annotate", url_path="annotate"))
    try:
        history = image_history(wb, actor, image_id)
    except SkinflowError as e:  # NotFound: say so
        st.info(plain(str(e)))
    else:
        st.dataframe(pd.DataFrame(history), hide_index=True, width="stretch")
