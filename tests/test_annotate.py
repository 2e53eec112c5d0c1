import threading

import pytest
from sqlalchemy import select

from curation.assist.drafts import add_draft
from curation.errors import ConflictError, NotFound
from curation.labelling.annotate import IncompleteAnnotation, review_annotation, submit_annotation
from curation.store.auth import Actor
from curation.store.models import Annotation, AuditEvent, Image
from schema import Caption, CaptionError

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.fixture
def image_id(wb):
    with wb.session() as s:
        image = Image(source="test", status="pending", sha256="a" * 64, file_path="aa/x.jpg")
        s.add(image)
        s.flush()
        return image.id


def _status(wb, image_id):
    with wb.session() as s:
        image = s.get(Image, image_id)
        return image.status, image.verified_annotation_id


def test_annotations_are_append_only_versions(wb, annotator, image_id):
    first = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis="BCC", diagnosis_status="confirmed")
    second = submit_annotation(
        wb, annotator, image_id, {"color": "brown"}, diagnosis="psoriasis", diagnosis_status="corrected", supersedes_id=first
    )
    with wb.session() as s:
        rows = s.scalars(select(Annotation).order_by(Annotation.id)).all()
        assert [(r.id, r.version, r.supersedes_id) for r in rows] == [(first, 1, None), (second, 2, first)]
        assert rows[0].caption["color"] == ["erythematous"] and rows[0].diagnosis_key == "basal cell carcinoma"
    assert _status(wb, image_id) == ("annotated", None)


def test_free_text_diagnosis_is_kept(wb, annotator, image_id):
    aid = submit_annotation(wb, annotator, image_id, {}, diagnosis="odd violaceous thing", diagnosis_status="uncertain")
    with wb.session() as s:
        row = s.get(Annotation, aid)
        assert (row.diagnosis_key, row.diagnosis_text) == (None, "odd violaceous thing")


def test_two_edits_of_the_same_version_cannot_both_win(wb, annotator, reviewer, image_id):
    first = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="uncertain")
    submit_annotation(
        wb, annotator, image_id, {"color": "black"}, diagnosis=None, diagnosis_status="uncertain", supersedes_id=first
    )
    with pytest.raises(ConflictError, match="edited by someone else meanwhile"):
        submit_annotation(
            wb, reviewer, image_id, {"color": "blue"}, diagnosis=None, diagnosis_status="uncertain", supersedes_id=first
        )


def test_concurrent_edits_from_threads_leave_exactly_one_winner(wb, annotator, reviewer, admin, image_id):
    first = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="uncertain")
    outcomes = []

    def edit(actor, colour):
        try:
            submit_annotation(
                wb, actor, image_id, {"color": colour}, diagnosis=None, diagnosis_status="uncertain", supersedes_id=first
            )
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")

    threads = [
        threading.Thread(target=edit, args=(actor, colour))
        for actor, colour in ((reviewer, "blue"), (admin, "black"), (annotator, "brown"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "ok"]


def test_second_chain_by_the_same_user_is_refused(wb, annotator, image_id):
    submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="uncertain")
    with pytest.raises(ConflictError, match="edit your latest version"):
        submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="uncertain")


def test_verify_requires_another_person_and_the_latest_version(wb, annotator, reviewer, image_id):
    first = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis="psoriasis", diagnosis_status="confirmed")
    with pytest.raises(ConflictError, match="own annotation"):
        review_annotation(wb, Actor(annotator.id, annotator.username, "reviewer"), first, "verified")  # promoted author
    second = submit_annotation(
        wb, annotator, image_id, {"color": "brown"}, diagnosis="psoriasis", diagnosis_status="confirmed", supersedes_id=first
    )
    with pytest.raises(ConflictError, match="newer version"):
        review_annotation(wb, reviewer, first, "verified")
    review_annotation(wb, reviewer, second, "verified")
    assert _status(wb, image_id) == ("verified", second)
    third = submit_annotation(
        wb, reviewer, image_id, {"color": "black"}, diagnosis="melanoma", diagnosis_status="corrected", supersedes_id=second
    )
    assert _status(wb, image_id) == ("annotated", None)  # the verified version changed: back to review
    with wb.session() as s:
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.entity == "annotation")).all()
    assert actions.count("annotation.submit") == 3 and actions.count("annotation.verified") == 1
    assert third > second


def test_bad_input_is_refused_and_nothing_changes(wb, annotator, admin, image_id):
    with pytest.raises(CaptionError):
        submit_annotation(wb, annotator, image_id, {"number": "zillions"}, diagnosis=None, diagnosis_status="confirmed")
    with pytest.raises(Exception, match="diagnosis status"):
        submit_annotation(wb, annotator, image_id, {}, diagnosis=None, diagnosis_status="probably")
    with pytest.raises(Exception, match="unknown quality flags"):
        submit_annotation(wb, annotator, image_id, {}, diagnosis=None, diagnosis_status="confirmed", quality_flags=["ugly"])
    # what the keyboard path used to store: a diagnosis "corrected" or "confirmed" to nothing, an empty form
    with pytest.raises(IncompleteAnnotation, match="no diagnosis was picked"):
        submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis="  ", diagnosis_status="corrected")
    with pytest.raises(IncompleteAnnotation, match="no source label to confirm"):
        submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="confirmed")
    with pytest.raises(IncompleteAnnotation, match="the form is empty"):
        submit_annotation(wb, annotator, image_id, {}, diagnosis=None, diagnosis_status="uncertain")
    with pytest.raises(NotFound):
        submit_annotation(wb, annotator, 999, {}, diagnosis="psoriasis", diagnosis_status="confirmed")
    with pytest.raises(Exception, match="unknown draft kind"):
        add_draft(wb, admin, image_id, kind="guess", producer="x", version="1", caption=None)
    with wb.session() as s:
        assert s.scalars(select(Annotation)).all() == []
    assert _status(wb, image_id) == ("pending", None)


def test_image_without_a_picture_cannot_be_annotated(wb, annotator):
    with wb.session() as s:
        image = Image(source="csv", status="image_missing", url="https://example.org/x.jpg")
        s.add(image)
        s.flush()
        missing_id = image.id
    with pytest.raises(ConflictError, match="fetch-images"):
        submit_annotation(wb, annotator, missing_id, Caption(color=["red"]), diagnosis=None, diagnosis_status="uncertain")


def test_an_annotator_may_continue_their_own_chain_after_a_reviewer_edit(wb, annotator, reviewer, admin, image_id):
    from curation.store.auth import add_user

    first = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="uncertain")
    second = submit_annotation(
        wb, reviewer, image_id, {"color": "blue"}, diagnosis=None, diagnosis_status="uncertain", supersedes_id=first
    )
    third = submit_annotation(
        wb, annotator, image_id, {"color": "black"}, diagnosis=None, diagnosis_status="uncertain", supersedes_id=second
    )
    assert third > second
    stranger = add_user(wb, admin, "stranger", "annotator")[0]
    from curation.errors import PermissionDenied

    with pytest.raises(PermissionDenied, match="another person's annotation"):
        submit_annotation(
            wb, stranger, image_id, {"color": "red"}, diagnosis=None, diagnosis_status="uncertain", supersedes_id=third
        )


def test_a_reviewer_cannot_adjudicate_an_image_only_they_annotated(wb, admin, reviewer, annotator, image_id):
    from curation.labelling.annotate import adjudicate

    submit_annotation(wb, reviewer, image_id, {"color": ["brown"]}, diagnosis="melanoma", diagnosis_status="confirmed")
    with pytest.raises(ConflictError, match="verify your own label"):
        adjudicate(wb, reviewer, image_id, {"color": ["brown"]}, diagnosis="melanoma")
    assert _status(wb, image_id) == ("annotated", None)  # nothing verified
    submit_annotation(wb, annotator, image_id, {"color": ["black"]}, diagnosis="nevocytic nevus", diagnosis_status="confirmed")
    adjudicate(wb, reviewer, image_id, {"color": ["brown", "black"]}, diagnosis="melanoma")  # now it settles a disagreement
    assert _status(wb, image_id)[0] == "verified"
