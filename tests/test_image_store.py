"""The image store in an S3-compatible bucket: the settings that name one, the keys it takes, and (marked `s3`, against a
real SeaweedFS started by .ci/seaweedfs: `make test-s3`) imports, reads, exports and a second server on one bucket,
an object deleted behind the workbench's back, and wrong credentials or an unreachable endpoint."""

import hashlib
import os
import socket
import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select

from curation.errors import ConfigError
from curation.export.canonical import verify_export
from curation.export.dataset import export_dataset
from curation.ingest.folder import import_folder
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.labelling.views import image_detail
from curation.store.auth import add_user, get_actor
from curation.store.db import open_workbench
from curation.store.images import BucketImageStore, FolderImageStore, ImageMissing, parse_store_url
from curation.store.models import Image
from curation.store.settings import Settings
from schema.bucket import StoreUnavailable
from tests.helpers import jpeg_bytes, photo, write

SECRET = "do-not-print-this-secret-0123456789"


def test_a_bucket_url_names_a_bucket_and_a_prefix():
    assert parse_store_url("s3://derm-images/workbench/v1/") == ("derm-images", "workbench/v1")
    assert parse_store_url("s3://derm.images") == ("derm.images", "")


@pytest.mark.parametrize(
    "url",
    ["http://derm-images", "s3://Derm_Images", "s3://ab", "s3://derm-images/../other", "s3://derm-images/a b",
     "s3://derm..images", "s3://derm-images/x/%2e%2e", "s3://-derm", "s3://" + "a" * 64],
)  # fmt: skip
def test_a_hostile_or_malformed_store_url_is_refused_before_anything_is_written(url, tmp_path):
    with pytest.raises(ConfigError, match=r"s3://bucket/prefix"):
        parse_store_url(url)
    with pytest.raises(ConfigError, match=r"SKINFLOW_IMAGE_STORE"):
        Settings.load(environ={"SKINFLOW_HOME": str(tmp_path), "SKINFLOW_IMAGE_STORE": url})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["../skinflow.db", "/etc/passwd", "aa/../../x.jpg", "aa/./x.jpg", "aa//x.jpg", "a b.jpg"])
def test_a_key_that_could_leave_the_store_is_refused(tmp_path, key):
    store = FolderImageStore(tmp_path / "images")
    for call in (store.get, store.size, store.delete, store.local_path, lambda k: store.put(k, b"x")):
        with pytest.raises(ValueError, match="not an image store key"):
            call(key)


def test_the_folder_store_lists_only_pictures_it_wrote(tmp_path):
    store = FolderImageStore(tmp_path)
    key = f"ab/{'ab' * 32}.jpg"
    store.put(key, b"picture")
    write(tmp_path / "ab" / ".tmp-host-1-x", b"half")  # a killed writer's leftover is not a picture
    write(tmp_path / "notes.txt", b"x")
    assert [(o.key, o.size) for o in store.objects()] == [(key, 7)]
    assert store.get(key) == b"picture" and store.exists(key)
    store.delete(key)
    with pytest.raises(ImageMissing, match=key):
        store.get(key)


def test_an_unreachable_endpoint_is_one_message_naming_it_and_never_the_secret(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = BucketImageStore("derm-images", "wb", tmp_path / "cache")
    with pytest.raises(StoreUnavailable) as refused:
        store.put(f"ab/{'ab' * 32}.jpg", b"x")
    message = str(refused.value)
    assert f"127.0.0.1:{port}" in message and "AWS_ENDPOINT_URL" in message and SECRET not in message


# -- against a real S3-compatible server ---------------------------------------------------------------------------
@pytest.fixture
def bucket_url():
    url = os.environ.get("SKINFLOW_TEST_S3")
    if not url:
        pytest.skip("needs an S3-compatible server: make test-s3 (.ci/seaweedfs starts SeaweedFS)")
    return f"{url.rstrip('/')}/{uuid.uuid4().hex[:12]}"  # a prefix of its own: tests share the bucket


def _bucket_workbench(home, url, database_url=None):
    wb = open_workbench(Settings.load(environ={}, home=home, image_store=url, database_url=database_url))
    if database_url is None:
        add_user(wb, None, "admin", "admin", "admin-password")
    return wb


def _pictures(folder, n):
    for i in range(n):
        write(folder / f"{i}.jpg", jpeg_bytes(photo(200 + i, (160, 120)), quality=90))
    return folder


@pytest.mark.s3
def test_imports_reads_and_exports_go_through_the_bucket(tmp_path, bucket_url):
    wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    admin = get_actor(wb, "admin")
    report = import_folder(wb, admin, _pictures(tmp_path / "in", 4))
    assert report.imported == 4
    assert not any((tmp_path / "wb" / "images").rglob("*.jpg"))  # nothing under the home: the bucket holds them
    with wb.session() as s:
        stored = {i.id: (i.sha256, i.file_path) for i in s.scalars(select(Image))}
    listed = {o.key for o in wb.images.objects()}
    assert listed == {path for _, path in stored.values()}
    assert (
        wb.images.describe().startswith(f"bucket {bucket_url}")
        and os.environ["AWS_SECRET_ACCESS_KEY"] not in wb.images.describe()
    )

    image_id, (sha, key) = next(iter(stored.items()))
    detail = image_detail(wb, admin, image_id)  # what the Annotate page opens: a cached local copy
    assert hashlib.sha256(detail.path.read_bytes()).hexdigest() == sha and (tmp_path / "wb" / "cache") in detail.path.parents

    reviewer = add_user(wb, admin, "rev", "reviewer", "reviewer-pw-1")[0]
    annotator = add_user(wb, admin, "ann", "annotator", "annotator-pw-1")[0]
    for image_id in stored:
        aid = submit_annotation(wb, annotator, image_id, {"color": "red"}, diagnosis="psoriasis", diagnosis_status="confirmed")
        review_annotation(wb, reviewer, aid, "verified")
    result = export_dataset(wb, admin, tmp_path / "export")
    assert result.n_records == 4 and verify_export(tmp_path / "export") == []

    again = import_folder(wb, admin, tmp_path / "in")  # the same pictures: found by sha256, nothing written twice
    assert again.imported == 0 and len({o.key for o in wb.images.objects()}) == 4


@pytest.mark.s3
def test_a_second_server_on_the_same_database_and_bucket_sees_every_picture(tmp_path, bucket_url):
    first = _bucket_workbench(tmp_path / "one", bucket_url)
    import_folder(first, get_actor(first, "admin"), _pictures(tmp_path / "in", 3))
    second = _bucket_workbench(tmp_path / "two", bucket_url, database_url=first.settings.db_url)  # another home
    with second.session() as s:
        rows = s.execute(select(Image.sha256, Image.file_path)).all()
    assert len(rows) == 3
    for sha, key in rows:
        assert hashlib.sha256(second.images.local_path(key).read_bytes()).hexdigest() == sha


@pytest.mark.s3
def test_an_object_deleted_behind_the_workbench_is_missing_with_its_key(tmp_path, bucket_url):
    wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    import_folder(wb, get_actor(wb, "admin"), _pictures(tmp_path / "in", 2))
    with wb.session() as s:
        key = s.scalar(select(Image.file_path).order_by(Image.id))
    wb.images.delete(key)
    fresh = _bucket_workbench(tmp_path / "other", bucket_url, database_url=wb.settings.db_url)  # nothing cached there
    with pytest.raises(ImageMissing, match=key.replace(".", r"\.")):
        fresh.images.local_path(key)
    assert fresh.images.size(key) is None
    from curation.labelling.browse import thumbnail

    admin = get_actor(fresh, "admin")
    with fresh.session() as s:
        image_id = s.scalar(select(Image.id).where(Image.file_path == key))
    detail = image_detail(fresh, admin, image_id)  # what the pages open: missing, with its id, no traceback
    assert detail.missing and detail.path is None and detail.id == image_id
    assert thumbnail(fresh, image_id) is None  # the Dataset table shows no picture for it


@pytest.mark.s3
def test_wrong_credentials_import_nothing_and_the_message_says_what_to_check(tmp_path, bucket_url, monkeypatch):
    wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    admin = get_actor(wb, "admin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # the server does not know it
    refused = _bucket_workbench(tmp_path / "wb", bucket_url, database_url=wb.settings.db_url)
    with pytest.raises(StoreUnavailable) as caught:
        import_folder(refused, admin, _pictures(tmp_path / "in", 2))
    message = str(caught.value)
    assert "credentials" in message and os.environ["AWS_ENDPOINT_URL"] in message and SECRET not in message
    with wb.session() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 0  # no half-imported rows


def test_images_verify_reports_missing_and_corrupt_pictures_by_image(tmp_path, wb, admin):
    from curation.ops.images import verify_images

    import_folder(wb, admin, _pictures(tmp_path / "in", 3))
    with wb.session() as s:
        first, second, third = s.execute(select(Image.id, Image.file_path).order_by(Image.id)).all()
    assert verify_images(wb, admin).problems == []
    wb.images.delete(first.file_path)
    (wb.store_dir / second.file_path).write_bytes(b"not the picture that was stored")
    report = verify_images(wb, admin)
    assert report.checked == 3 and report.store == f"folder {wb.store_dir}"
    assert [(p.image_id, p.problem) for p in report.missing] == [(first.id, "missing")]
    assert [p.image_id for p in report.corrupt] == [second.id] and report.corrupt[0].problem.startswith("corrupt: sha256 ")


@pytest.mark.s3
def test_images_verify_reads_the_bucket(tmp_path, bucket_url):
    from curation.ops.images import verify_images

    wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    admin = get_actor(wb, "admin")
    import_folder(wb, admin, _pictures(tmp_path / "in", 3))
    with wb.session() as s:
        key = s.scalar(select(Image.file_path).order_by(Image.id))
    wb.images.delete(key)
    report = verify_images(wb, admin)
    assert report.checked == 3 and [p.key for p in report.missing] == [key] and report.corrupt == []
    from curation.ops.maintenance import doctor

    found = doctor(wb, admin)  # from the bucket's listing, not the (empty) folder under the home
    assert found.missing_files == [key] and found.orphan_files == [] and found.images_checked == 3


@pytest.mark.parametrize("url", ["s3://Bad_Bucket/x", "s3://ab/", "s3://bucket/a\x00b", "s3://b..x/y"])
def test_an_import_address_that_is_not_a_bucket_folder_is_refused_whole(wb, admin, url):
    from curation.errors import IngestError
    from curation.ingest import import_path

    with pytest.raises(IngestError, match="nothing was imported"):
        import_path(wb, admin, url)


@pytest.mark.s3
def test_a_folder_in_a_bucket_imports_with_folder_labels_once_and_its_objects_are_untouched(tmp_path, bucket_url):
    import boto3

    from curation.ingest import import_path

    bucket, prefix = bucket_url.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3")
    sources = {
        f"{prefix}/in/psoriasis/a.jpg": jpeg_bytes(photo(301, (160, 120)), quality=90),
        f"{prefix}/in/psoriasis/b.jpg": jpeg_bytes(photo(302, (160, 120)), quality=90, gps=True),
        f"{prefix}/in/melanoma/c.jpg": jpeg_bytes(photo(303, (160, 120)), quality=90),
        f"{prefix}/in/melanoma/copy-of-c.jpg": jpeg_bytes(photo(303, (160, 120)), quality=90),
        f"{prefix}/in/notes/readme.txt": b"not a picture",
        f"{prefix}/in/.hidden.jpg": b"skipped",
    }
    for key, body in sources.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    big = f"{prefix}/in/melanoma/huge.jpg"
    client.put_object(Bucket=bucket, Key=big, Body=b"\xff\xd8" + b"0" * 2_100_000)
    wb = open_workbench(Settings.load(environ={}, home=tmp_path / "wb", max_image_mb=2.0))  # 2.1 MB: refused unread
    admin = add_user(wb, None, "admin", "admin", "admin-password")[0]

    report = import_path(wb, admin, f"s3://{bucket}/{prefix}/in/", label_from_folder=True)
    assert report.imported == 3 and len(report.duplicates) == 1
    failed = dict(report.failed)
    assert "over the 2 MB limit" in failed[f"s3://{bucket}/{big}"] and f"s3://{bucket}/{prefix}/in/notes/readme.txt" in failed
    with wb.session() as s:
        rows = {i.meta["filename"]: (i.source_label, i.diagnosis_key, i.source) for i in s.scalars(select(Image))}
    assert rows == {
        "a.jpg": ("psoriasis", "psoriasis", "bucket"),
        "b.jpg": ("psoriasis", "psoriasis", "bucket"),
        "c.jpg": ("melanoma", "melanoma", "bucket"),
    }
    again = import_path(wb, admin, f"s3://{bucket}/{prefix}/in/", label_from_folder=True)
    assert again.imported == 0 and again.already_present == 3  # by address: nothing downloaded again
    for key, body in sources.items():  # the source objects are only read
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body


@pytest.mark.s3
def test_a_csv_naming_objects_in_a_bucket_imports_them_once_with_every_guard(tmp_path, bucket_url):
    import boto3

    from curation.ingest import import_path

    bucket, prefix = bucket_url.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3")
    odd_key = f"{prefix}/src/a folder/éclair #1 & 'quote'.jpg"  # a key with hostile characters is read as it is
    objects = {
        f"{prefix}/src/a.jpg": jpeg_bytes(photo(401, (160, 120)), quality=90, gps=True),
        odd_key: jpeg_bytes(photo(402, (160, 120)), quality=90),
        f"{prefix}/src/big.jpg": b"\xff\xd8" + b"0" * 2_100_000,
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    write(
        tmp_path / "rows.csv",
        "path,url,label\n"
        f"s3://{bucket}/{prefix}/src/a.jpg,,psoriasis\n"
        f",s3://{bucket}/{odd_key},melanoma\n"  # the url column may name the object too
        f"s3://{bucket}/{prefix}/src/big.jpg,,psoriasis\n"
        f"s3://{bucket}/{prefix}/src/gone.jpg,,psoriasis\n"
        f"s3://Not_A_Bucket/x.jpg,,psoriasis\n"
        f"s3://{bucket}/{prefix}/src/,,psoriasis\n".encode(),
    )
    wb = open_workbench(Settings.load(environ={}, home=tmp_path / "wb", max_image_mb=2.0))
    admin = add_user(wb, None, "admin", "admin", "admin-password")[0]

    report = import_path(wb, admin, tmp_path / "rows.csv")
    assert report.imported == 2
    failed = dict(report.failed)
    assert "over the 2 MB limit" in failed["rows.csv line 4"] and "no such object" in failed["rows.csv line 5"]
    assert "is not an s3://bucket/key address" in failed["rows.csv line 6"] and "line 7" in " ".join(failed)
    with wb.session() as s:
        rows = {i.source_ref: (i.diagnosis_key, i.file_path, i.sha256) for i in s.scalars(select(Image))}
    assert set(rows) == {f"s3://{bucket}/{prefix}/src/a.jpg", f"s3://{bucket}/{odd_key}"}
    for diagnosis, key, sha in rows.values():
        stored = wb.images.get(key)
        assert hashlib.sha256(stored).hexdigest() == sha and b"GPS" not in stored and diagnosis in {"psoriasis", "melanoma"}

    for key in objects:  # gone from the source: a rerun must not need them
        client.delete_object(Bucket=bucket, Key=key)
    again = import_path(wb, admin, tmp_path / "rows.csv")
    assert again.imported == 0 and again.already_present == 2 and len(again.failed) == 4


@pytest.mark.s3
def test_the_store_going_away_mid_import_keeps_whole_batches_and_the_rerun_completes(tmp_path, bucket_url, monkeypatch):
    import boto3

    from curation.ingest import bucket as bucket_import
    from curation.ingest import import_path
    from tests.helpers import TcpRelay

    bucket, prefix = bucket_url.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3")
    for i in range(12):
        client.put_object(Bucket=bucket, Key=f"{prefix}/in/{i}.jpg", Body=jpeg_bytes(photo(500 + i, (96, 64))))
    relay = TcpRelay(int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))  # the S3 server as the workbench sees it
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
    monkeypatch.setattr(bucket_import, "BUCKET_BATCH", 5)
    wb = _bucket_workbench(tmp_path / "wb", f"{bucket_url}/store")  # the store is behind the relay too
    admin = get_actor(wb, "admin")

    def cut_after_first_batch(done, total):
        if done == 5:
            relay.cut()

    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{relay.port}"):
        import_path(wb, admin, f"s3://{bucket}/{prefix}/in/", progress=cut_after_first_batch)
    with wb.session() as s:
        stored = s.execute(select(Image.file_path, Image.status)).all()
    assert len(stored) == 5 and {status for _, status in stored} == {"pending"}  # the first batch, whole; no other row

    relay.start()  # the server is back: the same command completes, downloading only what is missing
    again = import_path(wb, admin, f"s3://{bucket}/{prefix}/in/")
    assert again.imported == 7 and again.already_present == 5 and again.failed == []
    with wb.session() as s:
        keys = s.scalars(select(Image.file_path)).all()
    assert len(keys) == 12 and all(wb.images.exists(key) for key in keys)


@pytest.mark.s3
def test_an_export_goes_to_a_bucket_and_the_trainer_reads_it_back_checked(tmp_path, bucket_url, monkeypatch):
    import boto3

    from curation.errors import ExportError
    from curation.ops.demo import build_demo
    from trainer.data import load_export
    from trainer.errors import TrainerError

    wb = _bucket_workbench(tmp_path / "wb", f"{bucket_url}/store")
    admin = get_actor(wb, "admin")
    build_demo(wb, admin, n=12, seed=0, verified_fraction=1.0, annotated_fraction=0.0)
    target = f"{bucket_url}/exports/v1"
    result = export_dataset(wb, admin, target, formats=("grpo",))
    assert result.path == target and not any((tmp_path / "wb" / "cache").glob("export-*"))  # the local copy is gone
    with pytest.raises(StoreUnavailable, match="holds .* objects already"):
        export_dataset(wb, admin, target)

    monkeypatch.setenv("SKINFLOW_CACHE", str(tmp_path / "trainer-cache"))
    data = load_export(target)  # what `skinflow train --export s3://...` reads
    assert len(data.stage1) + len(data.stage2) > 0 and (tmp_path / "trainer-cache") in data.folder.parents
    assert verify_export(data.folder) == []

    bucket, prefix = target.removeprefix("s3://").split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/grpo/stage1.jsonl", Body=b"{}\n")  # changed behind us
    with pytest.raises(TrainerError, match="differ from the manifest"):
        load_export(target)

    with wb.session() as s:
        first_id, key = s.execute(select(Image.id, Image.file_path).order_by(Image.id)).first()
    wb.images.delete(key)
    for cached in (tmp_path / "wb" / "cache").rglob(key.split("/")[-1]):
        cached.unlink()  # this server's copy too: the picture is gone everywhere
    with pytest.raises(ExportError, match=rf"#{first_id} \({key}\).*Nothing was exported"):
        export_dataset(wb, admin, tmp_path / "local-export")
    assert not (tmp_path / "local-export").exists()


def test_garbage_collection_takes_only_old_pictures_no_image_names(tmp_path, wb, admin):
    from curation.ops.images import collect_garbage

    import_folder(wb, admin, _pictures(tmp_path / "in", 2))
    with wb.session() as s:
        used = s.scalars(select(Image.file_path)).all()
    old, young, again = (f"{c * 2}/{c * 64}.jpg" for c in "abc")
    for key in (old, young, again):
        wb.images.put(key, b"a picture an interrupted import left")
    two_days_ago = datetime.now().timestamp() - 48 * 3600
    for key in (old, again, *used):  # old pictures that images use are never taken
        os.utime(wb.store_dir / key, (two_days_ago, two_days_ago))
    wb.images.put(again, b"a picture an interrupted import left")  # an import met it: its grace starts over

    dry = collect_garbage(wb, admin, dry_run=True)
    assert (dry.listed, dry.unreferenced, dry.young, dry.removed) == (5, 3, 2, [old]) and wb.images.exists(old)
    report = collect_garbage(wb, admin, grace_hours=24)
    assert report.removed == [old] and not wb.images.exists(old)
    assert all(wb.images.exists(key) for key in (young, again, *used))
    with pytest.raises(ValueError, match="at least 1"):
        collect_garbage(wb, admin, grace_hours=0)


@pytest.mark.s3
def test_pictures_migrate_into_a_bucket_and_back_resumably_and_checked(tmp_path, bucket_url):
    from curation.ops.images import collect_garbage, migrate_images, verify_images

    local = open_workbench(Settings.load(environ={}, home=tmp_path / "local"))
    admin = add_user(local, None, "admin", "admin", "admin-password")[0]
    import_folder(local, admin, _pictures(tmp_path / "in", 5))
    with local.session() as s:
        keys = s.scalars(select(Image.file_path).order_by(Image.id)).all()

    report = migrate_images(local, admin, bucket_url)
    assert (report.copied, report.already_there, report.problems) == (5, 0, [])
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in report.target
    in_bucket = _bucket_workbench(tmp_path / "server", bucket_url, database_url=local.settings.db_url)
    for key in keys[:3]:
        in_bucket.images.delete(key)  # as if the first run had been cut off
    (local.store_dir / keys[2]).write_bytes(b"rotted on disk")
    resumed = migrate_images(local, admin, bucket_url)
    assert (resumed.copied, resumed.already_there) == (2, 2) and [p.key for p in resumed.problems] == [keys[2]]
    assert not in_bucket.images.exists(keys[2])  # a rotten picture is not carried over
    assert [(p.key, p.problem) for p in verify_images(in_bucket, admin).problems] == [(keys[2], "missing")]
    assert collect_garbage(in_bucket, admin).unreferenced == 0  # nothing but referenced pictures went in

    returned = migrate_images(in_bucket, admin, "folder")  # and back: into the folder under that server's home
    assert (returned.copied, returned.already_there, len(returned.problems)) == (4, 0, 1)
    folder_again = _bucket_workbench(tmp_path / "server", None, database_url=local.settings.db_url)
    assert folder_again.images.describe().startswith("folder ")
    assert [p.key for p in verify_images(folder_again, admin).problems] == [keys[2]]


@pytest.mark.s3
def test_the_next_pictures_in_the_queue_are_fetched_ahead_into_the_cache(tmp_path, bucket_url):
    import time

    from curation.labelling.queue import next_item, prefetch_next

    wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    admin = get_actor(wb, "admin")
    import_folder(wb, admin, _pictures(tmp_path / "in", 4))
    annotator = add_user(wb, admin, "ann", "annotator", "annotator-pw-1")[0]
    current = next_item(wb, annotator).image_id
    with wb.session() as s:
        later = s.scalars(select(Image.file_path).where(Image.id > current).order_by(Image.id)).all()
    cache = tmp_path / "wb" / "cache" / "images"
    assert not any((cache / key).exists() for key in later)
    prefetch_next(wb, annotator, current)
    deadline = time.monotonic() + 20
    while not all((cache / key).is_file() for key in later[:2]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(cache / key).is_file() for key in later] == [True, True, False]  # two ahead, no more


@pytest.mark.s3
def test_a_presigned_link_reads_the_picture_without_credentials_and_modes_fit_the_store(tmp_path, bucket_url, wb):
    import urllib.request

    from curation.export.labelstudio import PRESIGN_SECONDS, _image_mode, _task_image
    from schema.errors import SkinflowError

    bucket_wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    import_folder(bucket_wb, get_actor(bucket_wb, "admin"), _pictures(tmp_path / "in", 1))
    with bucket_wb.session() as s:
        key, sha = s.execute(select(Image.file_path, Image.sha256)).one()
    assert _image_mode(bucket_wb, "auto") == "presigned" and _image_mode(wb, "auto") == "local"
    link = _task_image(bucket_wb, "presigned", key)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in link and f"X-Amz-Expires={PRESIGN_SECONDS}" in link
    with urllib.request.urlopen(link) as reply:  # what a Label Studio user's browser does: no credentials
        assert hashlib.sha256(reply.read()).hexdigest() == sha
    with pytest.raises(SkinflowError, match="cannot serve them from its disk"):
        _image_mode(bucket_wb, "local")
    with pytest.raises(SkinflowError, match="need the images in a bucket"):
        _image_mode(wb, "presigned")


@pytest.mark.s3
def test_a_restore_checks_the_pictures_of_the_backup_in_the_bucket(tmp_path, bucket_url):
    from curation.ops.maintenance import backup, restore

    wb = _bucket_workbench(tmp_path / "wb", bucket_url)
    admin = get_actor(wb, "admin")
    import_folder(wb, admin, _pictures(tmp_path / "in", 2))
    saved = backup(wb, admin, tmp_path / "backup.db")
    with wb.session() as s:
        key = s.scalar(select(Image.file_path).order_by(Image.id))
    wb.images.delete(key)
    settings = wb.settings
    wb.close()
    report = restore(settings, saved, admin)
    assert report.images == 2 and report.missing_images == [key]  # read from the bucket, not the empty folder


def test_importing_the_source_again_puts_back_a_picture_gone_from_the_store(tmp_path, wb, admin):
    """What doctor and verify advise for a missing picture: import its source again. The file is known (its sha256),
    so it adds no row; its picture, cleaned to the same bytes, is written back under the same key."""
    from curation.ops.images import verify_images
    from curation.ops.maintenance import doctor

    import_folder(wb, admin, _pictures(tmp_path / "in", 3))
    with wb.session() as s:
        key = s.scalar(select(Image.file_path).order_by(Image.id))
    wb.images.delete(key)
    assert doctor(wb, admin).missing_files == [key]
    again = import_folder(wb, admin, tmp_path / "in")
    assert again.imported == 0 and len(again.duplicates) == 3
    assert sum("written back to the store" in reason for _, reason in again.duplicates) == 1
    assert verify_images(wb, admin).problems == [] and doctor(wb, admin).missing_files == []
    with wb.session() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 3  # nothing added
