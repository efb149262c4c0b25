"""Where video bytes come from: local paths, or URLs read through fsspec (``s3://``, ``memory://``, ``gs://``, ...).

fsspec and the package of a protocol (s3fs for ``s3://``: ``pip install 'videomask[s3]'``) are imported when a
URL is first used, with a one-line error naming what to install. ``file://`` URLs are local paths.
Options for a protocol's filesystem (an ``endpoint_url``, ``anon``, keys) are registered per URL root
(``s3://bucket``) with :func:`set_storage_options` (a :class:`~videomask.data.VideoDataset` registers its
``storage_options`` in every process that reads it); without them fsspec's defaults apply, for S3 the usual AWS
environment variables and files. See docs/data.md.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import threading
from collections.abc import Iterable, Mapping
from typing import IO, Any

from videomask.errors import VideoDecodeError, VideomaskError

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$")
_LOCAL_PROTOCOLS = ("file", "local")
# an object up to this size is fetched whole into memory (one request): the frame index reads it all anyway,
# and decoding then seeks in memory; a larger one is read in cached blocks
WHOLE_OBJECT_BYTES = 256 * 1024 * 1024
BLOCK_BYTES = 8 * 1024 * 1024

_options: dict[str, dict[str, Any]] = {}  # URL root (``s3://bucket``) -> fsspec filesystem options
_options_lock = threading.Lock()


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL with a protocol (``s3://...``, ``file://...``)."""
    return isinstance(path, str) and _URL.match(path) is not None


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL read through fsspec (any protocol but ``file://``)."""
    match = _URL.match(path) if isinstance(path, str) else None
    return match is not None and match.group(1).lower() not in _LOCAL_PROTOCOLS


def local_path(path: str | os.PathLike) -> str:
    """``path`` as a local path: a ``file://`` URL loses its protocol, anything else is kept."""
    text = os.fspath(path)
    match = _URL.match(text)
    if match is not None and match.group(1).lower() in _LOCAL_PROTOCOLS:
        return match.group(2)
    return text


def url_root(url: str) -> str:
    """``protocol://first-part`` of a URL (the bucket of ``s3://bucket/key``): the key of its options."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(f"not a URL: {url}")
    return f"{match.group(1).lower()}://{match.group(2).split('/', 1)[0]}"


def join_url(base: str, relative: str) -> str:
    """``relative`` (a posix path) resolved against the folder URL ``base``; a URL is kept as it is."""
    if is_url(relative):
        return relative
    match = _URL.match(base)
    assert match is not None
    return f"{match.group(1)}://{posixpath.normpath(posixpath.join(match.group(2), relative))}"


def url_parent(url: str) -> str:
    """The folder URL of ``url`` (``s3://bucket/a/list.csv`` -> ``s3://bucket/a``)."""
    match = _URL.match(url)
    assert match is not None
    return f"{match.group(1)}://{posixpath.dirname(match.group(2).rstrip('/'))}"


def set_storage_options(urls: Iterable[str], options: Mapping[str, Any] | None) -> None:
    """Use ``options`` (fsspec filesystem keywords, e.g. ``endpoint_url``, ``anon``, ``key``, ``secret``) for
    every URL under the roots of ``urls`` in this process; empty options register nothing."""
    if not options:
        return
    roots = {url_root(u) for u in urls if is_remote(u)}
    with _options_lock:
        for root in roots:
            _options[root] = dict(options)


def storage_options(url: str) -> dict[str, Any]:
    """The options registered for ``url``'s root (an empty dict: fsspec's defaults)."""
    with _options_lock:
        return dict(_options.get(url_root(url), {}))


def _install_hint(protocol: str) -> str:
    return "pip install 'videomask[s3]'" if protocol in ("s3", "s3a") else f"install fsspec's package for {protocol}://"


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem of ``url`` (``options``, else those registered for its root)."""
    protocol = _URL.match(url).group(1).lower()  # type: ignore[union-attr]
    try:
        # optional dependency: only URLs need it
        import fsspec
    except ImportError:
        raise VideomaskError(f"reading {url} needs fsspec: {_install_hint(protocol)}") from None
    kwargs = dict(storage_options(url) if options is None else options)
    try:
        return fsspec.filesystem(protocol, **kwargs)
    except ImportError as err:
        raise VideomaskError(f"reading {protocol}:// URLs needs {_missing(err)}: {_install_hint(protocol)}") from None
    except ValueError as err:
        if "protocol not known" in str(err).lower():
            raise VideomaskError(f"unknown storage protocol {protocol}:// in {url}") from None
        raise VideomaskError(f"storage options for {url_root(url)}: {one_line_text(err)}") from None
    except TypeError as err:
        raise VideomaskError(f"storage options for {url_root(url)}: {one_line_text(err)}") from None


def _missing(err: ImportError) -> str:
    name = getattr(err, "name", None)
    return name or (re.findall(r"[Ii]nstall (\w+)", str(err)) or ["a package"])[0]


def one_line_text(err: BaseException) -> str:
    """An exception's message on one line (its type when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def object_info(url: str) -> dict[str, Any]:
    """fsspec's ``info`` of ``url`` (``size``, ``type``, and the store's ETag / modification time);
    raises ``FileNotFoundError`` for a missing object."""
    fs = filesystem(url)
    return fs.info(url)


def object_key(url: str, info: Mapping[str, Any] | None = None) -> tuple | None:
    """An identity of the object's content for per-file caches: the URL, its size and its ETag (else its
    modification time); None when the object cannot be looked up."""
    if info is None:
        try:
            info = object_info(url)
        except Exception:  # noqa: BLE001 - a cache key is optional: no key, no cache entry
            return None
    version = next(
        (info[k] for k in ("ETag", "etag", "md5Hash", "generation", "LastModified", "mtime", "created") if info.get(k)),
        None,
    )
    return (url, int(info.get("size") or 0), str(version))


def open_object(url: str, info: Mapping[str, Any] | None = None) -> IO[bytes]:
    """A seekable binary file object of ``url``: the whole object in memory up to :data:`WHOLE_OBJECT_BYTES`
    (one request), else fsspec's block-cached file."""
    fs = filesystem(url)
    size = int((info or fs.info(url)).get("size") or 0)
    if size <= WHOLE_OBJECT_BYTES:
        return io.BytesIO(fs.cat_file(url))
    return fs.open(url, "rb", block_size=BLOCK_BYTES, cache_type="blockcache")


def read_text(url: str) -> str:
    """The object at ``url`` as UTF-8 text (a BOM dropped); ``FileNotFoundError`` when it is missing."""
    return filesystem(url).cat_file(url).decode("utf-8-sig")


def path_kind(url: str) -> str | None:
    """``"file"``, ``"directory"`` (a folder or a key prefix with objects under it) or None (nothing there)."""
    fs = filesystem(url)
    try:
        info = fs.info(url.rstrip("/"))
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - the store's own errors (credentials, network): one line
        raise VideomaskError(f"cannot look up {url}: {one_line_text(err)}") from None
    kind = info.get("type")
    return "directory" if kind == "directory" else "file" if kind == "file" else None


def exists(path: str) -> bool:
    """Whether a local path or a URL names something that exists (a failed look-up counts as missing)."""
    if not is_remote(path):
        return os.path.exists(local_path(path))
    try:
        return bool(filesystem(path).exists(path))
    except VideomaskError:
        raise
    except Exception:  # noqa: BLE001 - unreachable counts as missing; reading it names the reason
        return False


def list_objects(url: str, recursive: bool = True) -> list[tuple[str, str]]:
    """``(URL, path relative to url)`` of every object under the folder URL ``url`` (posix, unsorted)."""
    fs = filesystem(url)
    base = url.rstrip("/")
    try:
        if recursive:
            found = fs.find(base, detail=True, withdirs=False)
            entries = list(found.values()) if isinstance(found, dict) else list(found)
        else:
            entries = [e for e in fs.ls(base, detail=True) if e.get("type") == "file"]
    except FileNotFoundError:
        return []
    except Exception as err:  # noqa: BLE001 - the store's own errors (credentials, network): one line
        raise VideomaskError(f"cannot list {url}: {one_line_text(err)}") from None
    stripped = fs._strip_protocol(base).rstrip("/")
    out = []
    for entry in entries:
        name = entry["name"] if isinstance(entry, dict) else str(entry)
        name = fs._strip_protocol(name)
        if not name.startswith(stripped + "/"):
            continue
        rel = name[len(stripped) + 1 :]
        out.append((f"{base}/{rel}", rel))
    return out


def open_error(url: str, err: BaseException) -> VideoDecodeError:
    """The one-line error of an object that cannot be read (missing, refused, the network)."""
    if isinstance(err, FileNotFoundError):
        return VideoDecodeError(f"{url}: no such object")
    if isinstance(err, VideomaskError):
        return VideoDecodeError(str(err))
    return VideoDecodeError(f"{url}: cannot read object: {one_line_text(err)}")
