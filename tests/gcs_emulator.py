"""A local Google Cloud Storage emulator for bucket-path tests (127.0.0.1 only).

`gcp-storage-emulator` serves the GCS JSON/XML API from memory in a thread of
the test process; the code under test runs in a child process whose
environment (`emulator_env`) points every GCS client at it. The variables
must be set before fsspec/gcsfs/etils.epath/orbax/tensorstore are imported,
which is why the code under test runs in a subprocess rather than in pytest.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

BUCKET = "testbucket"


def emulator_env(url: str) -> dict[str, str]:
    """Environment that sends gcsfs, tensorstore, array_record and google-cloud-storage to `url`."""
    return {
        "STORAGE_EMULATOR_HOST": url,                 # gcsfs, google-cloud-storage (tensorboardX)
        "FSSPEC_GCS_TOKEN": "anon",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else every gcsfs call waits 60 s on a gRPC probe
        "TENSORSTORE_GCS_HTTP_URL": url,              # Orbax array writes/reads
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,       # array_record reads
        "GCE_METADATA_ROOT": "127.0.0.1:9",           # no metadata-server probes
        "NO_GCE_CHECK": "true",
        "GOOGLE_CLOUD_PROJECT": "test-project",
    }


def _serve_like_gcs() -> None:
    """Teaches the emulator's object download `Range: bytes=-N` (the last N bytes) and generation headers.

    Real GCS serves suffix ranges; the emulator matches only `bytes=a-b` and
    answers a suffix request with the whole object, which array_record's
    reader (it reads a file's tail first) takes as the tail: every file over
    one 64 KiB block then reads as corrupt. The handler table is patched in
    place, since the routes hold the function objects.
    """
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.handlers import objects

    if getattr(objects.download, "serves_suffix_ranges", False):
        return
    plain_download = objects.download

    def download(request, response, storage, *args, **kwargs):
        headers = request._request_handler.headers
        wanted = (headers.get("range") or "").strip()
        if wanted.startswith("bytes=-"):
            try:
                size = len(storage.get_file(request.params["bucket_name"], request.params["object_id"]))
            except Exception:  # noqa: BLE001 - let the emulator answer a missing object as it does
                size = None
            if size is not None:
                del headers["range"]
                headers["range"] = f"bytes={max(size - int(wanted[len('bytes=-'):]), 0)}-"
        result = plain_download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001 - missing object: the emulator already answered 404
            return result
        # GCS sends the object's generation with every read; tensorstore (Orbax's OCDBT manifest reads)
        # rejects a read without it as a "Malformed StorageGeneration".
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj["metageneration"])
        return result

    download.serves_suffix_ranges = True
    for route in emulator_server.HANDLERS:
        methods = route[1]
        for method, handler in list(methods.items()):
            if handler is plain_download:
                methods[method] = download
    objects.download = download


@contextlib.contextmanager
def gcs_emulator(bucket: str = BUCKET) -> Iterator[str]:
    """Runs the emulator with one empty bucket; yields its URL (http://127.0.0.1:<port>)."""
    from gcp_storage_emulator.server import create_server

    _serve_like_gcs()
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    server.start()
    # Clients that hang up early (range reads) make the stdlib server print tracebacks; they are not errors.
    server._api._httpd.handle_error = lambda request, client_address: None
    try:
        port = server._api._httpd.server_address[1]  # port 0 = any free port; the emulator has no getter
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def child_env(url: str) -> dict[str, str]:
    """os.environ plus the emulator settings, for subprocesses."""
    return {**os.environ, **emulator_env(url)}
