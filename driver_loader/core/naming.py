"""Artifact file names, URLs and cache paths. Pure functions; nothing here touches the network or disk."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Callable, Optional, Sequence, Tuple
from urllib.parse import quote

# A value that reaches a URL or a file path must be one plain path segment made of the characters real kernel
# releases, kernel versions, distro ids and driver versions use.
_SAFE = re.compile(r"[A-Za-z0-9._+~,:=@-]+", re.ASCII)

# How kernel module files end: plain, or compressed by kmod's xz, gzip or zstd (the content decides, not the name).
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One artifact to look for: its file name, where it lives in the cache, and one URL per repository."""

    filename: str
    cache_path: str
    urls: Tuple[str, ...]


def unsafe_reason(label: str, value: str) -> Optional[str]:
    """Why `value` may not be used in a file name or URL, or None when it is safe."""
    if value == "":
        return f"{label} is empty"
    if ".." in value or value == ".":
        return f"{label} {value!r} contains a relative path segment"
    if not _SAFE.fullmatch(value):
        return f"{label} {value!r} contains '/', whitespace, a control or another unsafe character"
    if len(value) > 200:
        return f"{label} is longer than 200 characters"
    return None


def artifact_filename(name: str, target: str, release: str, version: str, extension: str) -> str:
    return f"{name}_{target}_{release}_{version}{extension}"


def quote_segment(segment: str) -> str:
    """Percent-encode one path segment; `+` becomes %2B, `~` stays literal."""
    return quote(segment, safe="-._~")


def repo_url(repo: str, *segments: str) -> str:
    """`repo` with already-quoted path `segments` appended, keeping its query string (a signed URL's or a token's)
    on the result: `https://h/d?t=x` + `a`, `b.ko` -> `https://h/d/a/b.ko?t=x`. A last segment of "" gives the
    directory itself (`https://h/d/?t=x`)."""
    base, sep, query = repo.partition("?")
    return "/".join([base.rstrip("/"), *segments]) + (f"?{query}" if sep and query else "")


def repo_prefix(repo: str) -> str:
    """What every URL built from `repo` starts with: its base, query left out, ending in '/'."""
    return repo.partition("?")[0].rstrip("/") + "/"


def artifact_url(repo: str, driver_version: str, arch: str, filename: str) -> str:
    return repo_url(repo, quote_segment(driver_version), quote_segment(arch), quote_segment(filename))


def cache_path(cache_dir: str, driver_version: str, arch: str, filename: str) -> str:
    path = posixpath.join(cache_dir, driver_version, arch, filename)
    if posixpath.commonpath([posixpath.normpath(path), posixpath.normpath(cache_dir)]) != posixpath.normpath(cache_dir):
        raise ValueError(f"cache path {path!r} escapes {cache_dir!r}")
    return path


def cache_location(path: str) -> str:
    """`<version>/<arch>/<file>` of a cache path (the cache layout), which is what pins are matched against."""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-3:]) if len(parts) >= 3 else path


def build_candidates(
    filenames: Sequence[str], cache_dir: str, driver_version: str, arch: str, repos: Sequence[str],
    url: Callable[[str, str, str, str], str] = artifact_url,
) -> Tuple[Candidate, ...]:
    """Candidates in try order: one per file name, each with one URL per repo in repo order. `url(repo, version,
    arch, file name)` names the artifact in one repository (see plan.artifact_location)."""
    if unsafe_reason("driver version", driver_version) or unsafe_reason("arch", arch):
        return ()
    return tuple(
        Candidate(
            filename=fn,
            cache_path=cache_path(cache_dir, driver_version, arch, fn),
            urls=tuple(url(repo, driver_version, arch, fn) for repo in repos),
        )
        for fn in filenames
    )
