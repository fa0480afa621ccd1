"""The least a Python process can do to download a file and check its SHA-256: the standard library only, one GET,
no retries, no TLS, no cache, no locks, no logging. The download row times it beside the loader and curl, so that
the table shows how much of the loader's time is the interpreter itself.

    python bench/stdlib_download.py URL OUTPUT SHA256
"""

import hashlib
import http.client
import sys
from urllib.parse import urlsplit


def main(url: str, output: str, expected: str) -> int:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request("GET", parts.path)
    response = connection.getresponse()
    if response.status != 200:
        print(f"HTTP {response.status}", file=sys.stderr)
        return 1
    digest = hashlib.sha256()
    with open(output, "wb") as handle:
        for block in iter(lambda: response.read(1024 * 1024), b""):
            digest.update(block)
            handle.write(block)
    if digest.hexdigest() != expected:
        print("checksum mismatch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
