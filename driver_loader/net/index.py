"""Which driver versions a repository publishes, for the best-compatible-version fallback.

Sources, in order: the drivers website JSON (`<repo>/site/index.json`, an array of versions, with
`<repo>/site/<version>.json` listing the artifacts of one version), then an HTML directory listing of `<repo>/`
(nginx/Apache autoindex, `python -m http.server`, and `file://` directories, which the session renders the same
way). Parsing is pure; documents come from a getter (the run's session fetches each at most once).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from driver_loader.core.errors import HttpFailure
from driver_loader.core.naming import quote_segment
from driver_loader.core.redaction import redact_url
from driver_loader.output.log import get_logger

log = get_logger(__name__)

SITE_INDEX = "site/index.json"


def parse_site_index(text: str) -> Optional[List[str]]:
    """The versions in `site/index.json`, or None when it is not a JSON array of strings."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        return None
    return [item.strip() for item in data if item.strip()]


def parse_site_version(text: str) -> Optional[FrozenSet[Tuple[str, str]]]:
    """(arch, file name) of every artifact in `site/<version>.json`, or None when the document is malformed."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    drivers = data.get("drivers") if isinstance(data, dict) else None
    if not isinstance(drivers, list):
        return None
    return frozenset(
        (str(entry.get("arch", "")), str(entry.get("name", "")))
        for entry in drivers
        if isinstance(entry, dict) and entry.get("name")
    )


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: List[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag.lower() == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def parse_directory_listing(text: str) -> List[str]:
    """Names of the subdirectories linked from an HTML directory listing, decoded (`8.1.0%2Bdriver/` ->
    `8.1.0+driver`). Parent links, sort links and links to other hosts are skipped."""
    collector = _LinkCollector()
    collector.feed(text)
    collector.close()
    names: List[str] = []
    for href in collector.hrefs:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or parts.query or not parts.path.endswith("/"):
            continue
        name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
        if name and name not in (".", "..") and name not in names:
            names.append(name)
    return names


class VersionIndex:
    """Per-repository version lists, each looked up at most once per run."""

    def __init__(self, get_document: Callable[[str], Optional[str]]) -> None:
        """`get_document(url)`: the text at `url`, None when it is not published, HttpFailure otherwise."""
        self.get_document = get_document
        self._versions: Dict[str, Optional[Tuple[str, ...]]] = {}
        self._from_site: Dict[str, bool] = {}

    def versions(self, repo: str) -> Optional[Tuple[str, ...]]:
        """The versions `repo` publishes, or None when it offers no index we can read."""
        if repo not in self._versions:
            self._versions[repo] = self._lookup_versions(repo)
        return self._versions[repo]

    def artifacts(self, repo: str, version: str) -> Optional[FrozenSet[Tuple[str, str]]]:
        """(arch, file name) pairs the drivers website lists for `version` in `repo`; None when unknown."""
        if not self._from_site.get(repo):
            return None
        url = f"{_base(repo)}/site/{quote_segment(version)}.json"
        text = self._document(url)
        return parse_site_version(text) if text is not None else None

    def _lookup_versions(self, repo: str) -> Optional[Tuple[str, ...]]:
        base = _base(repo)
        text = self._document(f"{base}/{SITE_INDEX}")
        if text is not None:
            versions = parse_site_index(text)
            if versions is not None:
                self._from_site[repo] = True
                log.debug("versions from the drivers website index", repo=redact_url(repo), count=len(versions))
                return tuple(versions)
            log.debug("site/index.json is not a JSON array of versions", repo=redact_url(repo))
        text = self._document(f"{base}/")
        if text is not None:
            versions = parse_directory_listing(text)
            if versions:
                log.debug("versions from the directory listing", repo=redact_url(repo), count=len(versions))
                return tuple(versions)
        log.info("repository offers no version index", repo=redact_url(repo))
        return None

    def _document(self, url: str) -> Optional[str]:
        try:
            return self.get_document(url)
        except HttpFailure as failure:
            log.warning("cannot read the version index", url=failure.url, error=failure.message)
            return None


def _base(repo: str) -> str:
    return repo.rstrip("/")
