"""Label Studio round trip (label-studio-sdk 2.x, the version the server pins).

push: create the project (or update its labelling config), then upload every image with a picture
that is not in the project yet, with the LLM draft and model suggestion as predictions. Tasks carry
`skinflow_id`, which is how a second push knows what is there already (no duplicates).
Images: `local` (default) points tasks at Label Studio's local-files serving of the workbench's image
store (start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<the workbench folder, which holds images/>; push registers
images/ as the project's local storage: Label Studio refuses the document root itself); `data` embeds each
image as a data URL (no server set-up, larger tasks). With the images in a bucket (SKINFLOW_IMAGE_STORE=s3://...):
`presigned` (the default there) gives each task a presigned URL to its picture, valid PRESIGN_SECONDS (7 days, S3's
longest), and pushing again refreshes the URLs of the tasks already there; Label Studio needs no credentials.
`data` works with a bucket too; `local` does not (Label Studio cannot serve a bucket's pictures from its disk).

pull: bring completed annotations back as workbench annotations, each with its origin
(`labelstudio:<url>/projects/<p>/tasks/<t>/annotations/<a>`, unique in the database, so pulling twice
adds nothing). Label Studio users map to local accounts by email; a missing one is created as an
annotator (with a random password an admin can reset).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from curation.assist.drafts import latest_model_drafts
from curation.assist.salvage import salvage_caption
from curation.errors import ConfigError, NotFound
from curation.export.formats import LABEL_STUDIO_IMAGE_PREFIX, label_studio_config, label_studio_predictions
from curation.labelling.annotate import submit_annotation, user_chain_head
from curation.store import audit
from curation.store.auth import Actor, add_user, get_actor, require
from curation.store.db import Workbench
from curation.store.images import FolderImageStore
from curation.store.models import Annotation, Image, User
from curation.store.secrets import read_secret
from schema.errors import SkinflowError
from schema.fields import FIELDS
from schema.files import loads_bounded, row_id

IMPORT_BATCH = 500


class LabelStudioError(SkinflowError):
    """Label Studio answered with an error or could not be reached."""


def label_studio_token(environ: dict[str, str] | None = None) -> str:
    token = read_secret("LABEL_STUDIO_API_KEY", environ)
    if not token:
        raise ConfigError(
            "no Label Studio token: set LABEL_STUDIO_API_KEY, or LABEL_STUDIO_API_KEY_FILE to a file holding it "
            "(Label Studio: Account & Settings > Access Token)"
        )
    return token


def _client(url: str, token: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url.rstrip("/"), api_key=token)


def _call(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the SDK raises ApiError, httpx errors ...: one clear message either way
        status = getattr(e, "status_code", None)
        body = getattr(e, "body", None)
        detail = ""
        if isinstance(body, dict):
            detail = f": {body.get('validation_errors') or body.get('detail') or ''}"
        hint = (
            " (check LABEL_STUDIO_API_KEY; the server needs LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true for legacy tokens)"
            if status == 401
            else ""
        )
        raise LabelStudioError(f"Label Studio could not {what}: {status or e.__class__.__name__}{detail}{hint}") from None


def _project(client, title: str, config: str):
    for project in _call("list projects", client.projects.list):
        if project.title == title:
            _call("update the project's labelling config", client.projects.update, id=project.id, label_config=config)
            return project
    return _call("create the project", client.projects.create, title=title, label_config=config)


@dataclass
class PushReport:
    project_id: int
    created: int = 0
    already_there: int = 0
    refreshed: int = 0  # tasks already there whose presigned image URL was renewed


IMAGE_MODES = ("auto", "local", "data", "presigned")
PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


def _image_mode(wb: Workbench, image_mode: str) -> str:
    """`auto`: presigned URLs for a bucket store, Label Studio's local files for a folder."""
    bucket = not isinstance(wb.images, FolderImageStore)
    if image_mode == "auto":
        return "presigned" if bucket else "local"
    if image_mode not in IMAGE_MODES:
        raise SkinflowError(
            "image mode must be 'local' (Label Studio serves the image store), 'data' (embedded images), 'presigned' "
            "(presigned URLs to a bucket store) or 'auto'"
        )
    if bucket and image_mode == "local":
        raise SkinflowError(
            f"the images are in a {wb.images.describe()}: Label Studio cannot serve them from its disk; push with "
            "--images presigned (links to the bucket, renewed by each push) or --images data"
        )
    if not bucket and image_mode == "presigned":
        raise SkinflowError("presigned URLs need the images in a bucket (SKINFLOW_IMAGE_STORE); use --images local or data")
    return image_mode


def _task_image(wb: Workbench, image_mode: str, file_path: str) -> str:
    if image_mode == "local":  # relative to the document root: the workbench folder
        return LABEL_STUDIO_IMAGE_PREFIX + str((wb.store_dir / file_path).resolve().relative_to(wb.settings.home.resolve()))
    if image_mode == "presigned":
        return wb.images.presigned_url(file_path, PRESIGN_SECONDS)
    kind = "png" if file_path.endswith(".png") else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(wb.images.get(file_path)).decode()


def push(
    wb: Workbench,
    actor: Actor,
    url: str,
    token: str,
    *,
    project: str = "SkinFlow",
    image_mode: str = "auto",
    statuses: tuple[str, ...] = ("pending", "annotated", "verified"),
) -> PushReport:
    require(actor, "admin", "push to Label Studio")
    image_mode = _image_mode(wb, image_mode)
    client = _client(url, token)
    taxonomy = wb.taxonomy
    ls_project = _project(client, project, label_studio_config(taxonomy))
    present = {(t.data or {}).get("skinflow_id"): t for t in _call("list tasks", client.tasks.list, project=ls_project.id)}
    if image_mode == "local":
        storages = _call("list local storages", client.import_storage.local.list, project=ls_project.id)
        if not any(getattr(s, "path", None) == str(wb.store_dir.resolve()) for s in storages):
            _call(
                "register the image store as local storage",
                client.import_storage.local.create,
                project=ls_project.id,
                path=str(wb.store_dir.resolve()),
                title="SkinFlow image store",
                use_blob_urls=False,
            )
    with wb.session() as s:
        images = s.execute(
            select(Image.id, Image.file_path, Image.sha256, Image.diagnosis_key)
            .where(Image.status.in_(statuses), Image.file_path.is_not(None))
            .order_by(Image.id)
        ).all()
        drafts = latest_model_drafts(s, [i.id for i in images])
    report = PushReport(ls_project.id)
    tasks = []
    for image_id, file_path, sha, source_key in images:
        if image_id in present:
            report.already_there += 1
            if image_mode == "presigned":  # a link lives 7 days: each push renews the ones already there
                task = present[image_id]
                data = {**(task.data or {}), "image": _task_image(wb, image_mode, file_path)}
                _call("renew a task's image link", client.tasks.update, id=task.id, data=data)
                report.refreshed += 1
            continue
        image = _task_image(wb, image_mode, file_path)
        tasks.append(
            {
                "data": {"image": image, "skinflow_id": image_id, "sha256": sha, "source_label": source_key},
                "predictions": label_studio_predictions(drafts.get(image_id, []), taxonomy),
            }
        )
    for start in range(0, len(tasks), IMPORT_BATCH):
        _call(
            "import tasks",
            client.projects.import_tasks,
            id=ls_project.id,
            request=tasks[start : start + IMPORT_BATCH],
            return_task_ids=True,
        )
        report.created += len(tasks[start : start + IMPORT_BATCH])
    with wb.session() as s:
        audit.record(
            s,
            actor,
            "labelstudio.push",
            "image",
            None,
            url=url,
            project=ls_project.id,
            created=report.created,
            refreshed=report.refreshed,
            images=image_mode,
        )
    return report


def caption_from_result(result: Any) -> tuple[dict[str, Any], str | None]:
    """(raw caption, diagnosis key) from Label Studio result items. A partner's export is outside input: items of
    the wrong shape are left out (salvage then reports the fields), never a crash."""
    caption: dict[str, Any] = {}
    diagnosis = None
    kinds = {f.key: f.kind for f in FIELDS}
    for item in result if isinstance(result, list) else []:
        if not isinstance(item, dict):
            continue
        name, value = item.get("from_name"), item.get("value")
        value = value if isinstance(value, dict) else {}
        if name == "diagnosis":
            path = value.get("taxonomy")
            first = path[0] if isinstance(path, list) and path else None
            leaf = first[-1] if isinstance(first, list) and first else None
            diagnosis = leaf if isinstance(leaf, str) else diagnosis
        elif name in kinds and kinds[name] == "free":
            texts = value.get("text")
            caption[name] = " ".join(t for t in texts if isinstance(t, str)) if isinstance(texts, list) else texts
        elif name in kinds:
            choices = value.get("choices")
            choices = choices if isinstance(choices, list) else []
            caption[name] = choices if kinds[name] == "multi" else (choices[0] if choices else None)
    return caption, diagnosis


def _local_user(
    wb: Workbench, admin: Actor, person: dict[str, Any] | int | None, emails: dict[int, str], report: PullReport
) -> Actor:
    email = person.get("email") if isinstance(person, dict) else emails.get(person) if isinstance(person, int) else None
    if not isinstance(email, str) or not email or len(email) > 320:
        raise SkinflowError("a Label Studio annotation names no annotator the token may look up; use an admin token")
    base = re.sub(r"[^a-z0-9._-]", "-", email.split("@")[0].lower()).strip("-.")[:50] or "labelstudio-user"
    with wb.session() as s:
        user = s.scalar(select(User).where(User.display_name == email))  # the account is the email's, by display name
        taken = set(s.scalars(select(User.username)))
    if user is not None:
        return get_actor(wb, user.username)
    name = base if len(base) >= 2 else f"ls-{base}"
    suffix = 1
    while name in taken:  # an existing local account of that name is somebody else: never merge by name
        suffix += 1
        name = f"{base}-ls{suffix}"
    actor, _password = add_user(wb, admin, name, "annotator", display_name=email)
    report.users_created.append(email)
    return actor


@dataclass
class PullReport:
    imported: int = 0
    already_imported: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (task id, why)
    users_created: list[str] = field(default_factory=list)
    salvaged: list[tuple[int, str]] = field(default_factory=list)  # (task id, a field changed or dropped, and why)


def pull(wb: Workbench, actor: Actor, url: str, token: str, *, project: str = "SkinFlow") -> PullReport:
    require(actor, "admin", "pull from Label Studio")
    client = _client(url, token)
    match = [p for p in _call("list projects", client.projects.list) if p.title == project]
    if not match:
        raise NotFound(f"no Label Studio project titled {project!r}; push first")
    project_id = match[0].id
    raw = b"".join(_call("export the project", client.projects.exports.download_sync, project_id, export_type="JSON"))
    # the JSON export names annotators by id: map ids to emails once
    emails = {u.id: u.email for u in _call("list users", client.users.list) if getattr(u, "email", None)}
    report = import_export(wb, actor, raw, source=f"{url.rstrip('/')}/projects/{project_id}", emails=emails)
    with wb.session() as s:
        audit.record(s, actor, "labelstudio.pull", "annotation", None, url=url, project=project_id, imported=report.imported)
    return report


def import_export(wb: Workbench, actor: Actor, raw: bytes, *, source: str, emails: dict[int, str]) -> PullReport:
    """The annotations of a Label Studio JSON export (`source`: the project's address, recorded in each one's
    origin). The export is outside input: a task of the wrong shape is skipped with its reason, the rest import."""
    require(actor, "admin", "import Label Studio annotations")
    try:
        tasks = loads_bounded(raw.decode("utf-8") if raw else "[]")
    except (ValueError, UnicodeDecodeError) as e:
        raise LabelStudioError(f"the Label Studio export is not readable JSON ({e}); nothing was imported") from None
    if not isinstance(tasks, list):
        raise LabelStudioError("the Label Studio export is not a list of tasks; nothing was imported")
    report = PullReport()
    with wb.session() as s:
        known = set(s.scalars(select(Annotation.origin).where(Annotation.origin.is_not(None))))
    for task in tasks:
        task_id = task.get("id") if isinstance(task, dict) else None
        task_id = task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else None
        data = task.get("data") if isinstance(task, dict) else None
        image_id = data.get("skinflow_id") if isinstance(data, dict) else None
        image_id = row_id(image_id)
        annotations = task.get("annotations") if isinstance(task, dict) else None
        if not isinstance(annotations, list):
            report.skipped.append((task_id, "not a task of a Label Studio export (no annotations list)"))
            continue
        for annotation in annotations:
            if not isinstance(annotation, dict):
                report.skipped.append((task_id, "an annotation that is not an object"))
                continue
            origin = f"labelstudio:{source}/tasks/{task_id}/annotations/{annotation.get('id')}"[:1000]
            if origin in known:
                report.already_imported += 1
                continue
            if annotation.get("was_cancelled") or not image_id:
                report.skipped.append((task_id, "skipped in Label Studio" if image_id else "not a SkinFlow task"))
                continue
            try:
                _import_annotation(wb, actor, image_id, annotation, origin, emails, report, task_id)
            except SkinflowError as e:
                report.skipped.append((task_id, str(e)))
                continue
            known.add(origin)
            report.imported += 1
    return report


def _import_annotation(
    wb: Workbench,
    actor: Actor,
    image_id: int,
    annotation: dict[str, Any],
    origin: str,
    emails: dict[int, str],
    report: PullReport,
    task_id: int | None,
) -> None:
    annotator = _local_user(wb, actor, annotation.get("completed_by"), emails, report)
    raw_caption, diagnosis = caption_from_result(annotation.get("result"))
    caption, notes = salvage_caption(raw_caption)  # a field Label Studio let through wrong is dropped alone
    report.salvaged += [(task_id, f"{n.field} {n.action}: {n.reason}") for n in notes]
    with wb.session() as s:
        image = s.get(Image, image_id)
        if image is None:
            raise NotFound(f"no image #{image_id} in this workbench: an export of another workbench's project?")
        source_key = image.diagnosis_key
        head = user_chain_head(s, image_id, annotator.id)
    status = "uncertain" if diagnosis is None else ("confirmed" if diagnosis == source_key else "corrected")
    submit_annotation(
        wb,
        annotator,
        image_id,
        caption,
        diagnosis=diagnosis,
        diagnosis_status=status,
        supersedes_id=head.id if head else None,
        origin=origin,
    )
