import pytest
from download_helpers import Sleeps, sha256

from driver_loader.core.errors import UsageError, VerificationError
from driver_loader.core.settings import HttpOptions, VerifyOptions
from driver_loader.net.checksums import (
    VERIFIED_PINNED,
    VERIFIED_SIDECAR,
    VERIFIED_SUMS,
    ChecksumResolver,
    match_checksum,
    parse_checksum_lines,
    parse_sidecar,
    sidecar_url,
    sums_url,
)
from driver_loader.net.http import build_session

pytest_plugins = ["download_fixtures"]

A, B, C = "a" * 64, "b" * 64, "c" * 64
NAME = "falco_ubuntu-generic_6.8.0-79-generic_79.ko"


def test_parse_checksum_lines_accepts_gnu_binary_and_bsd_forms():
    text = "\n".join([
        f"{A}  {NAME}",
        f"{B.upper()} *falco_debian_6.1.55-1-amd64_1.ko",
        f"SHA256 (falco_x.o) = {C}",
        "# a comment",
        "",
        "d41d8cd98f00b204e9800998ecf8427e  md5-is-ignored",
        f"{A}",  # no file name: not an entry
    ])
    assert parse_checksum_lines(text) == [
        (A, NAME), (B, "falco_debian_6.1.55-1-amd64_1.ko"), (C, "falco_x.o")]


@pytest.mark.parametrize("text, expected", [
    (f"{A}\n", (A, None)),
    (f"\n  {A.upper()}  {NAME}\n", (A, NAME)),
    (f"{A} *./{NAME}", (A, f"./{NAME}")),
    ("not a digest", None),
    ("", None),
    ("abc123  file", None),
])
def test_parse_sidecar(text, expected):
    assert parse_sidecar(text) == expected


@pytest.mark.parametrize("entries, location, expected", [
    ([(A, NAME)], f"/driver/8.0.0+driver/x86_64/{NAME}", A),
    ([(A, f"./{NAME}")], f"/driver/8.0.0+driver/x86_64/{NAME}", A),
    ([(A, f"x{NAME}")], f"/driver/8.0.0+driver/x86_64/{NAME}", None),
    ([(A, f"8.1.0+driver/x86_64/{NAME}"), (B, f"8.0.0+driver/x86_64/{NAME}")],
     f"/driver/8.0.0+driver/x86_64/{NAME}", B),
    ([(A, NAME), (B, f"x86_64/{NAME}")], f"/d/8.0.0+driver/x86_64/{NAME}", B),
    ([(A, "other.ko")], f"/d/{NAME}", None),
])
def test_match_checksum(entries, location, expected):
    assert match_checksum(entries, location) == expected


def test_match_checksum_refuses_ambiguous_lists():
    with pytest.raises(VerificationError, match="different digests"):
        match_checksum([(A, NAME), (B, NAME)], f"/d/{NAME}")


def test_sidecar_and_sums_urls_keep_the_encoded_path():
    url = f"https://mirror.example/driver/8.0.0%2Bdriver/x86_64/{NAME}"
    assert sidecar_url(url) == url + ".sha256"
    assert sums_url(url) == "https://mirror.example/driver/8.0.0%2Bdriver/x86_64/SHA256SUMS"


def resolver(policy="auto", sha=None, checksums_file=None):
    session = build_session(HttpOptions(timeout=5, retries=0), sleep=Sleeps())
    return ChecksumResolver(VerifyOptions(policy=policy, sha256=sha, checksums_file=checksums_file),
                            session.get_document)


ARTIFACT = f"/driver/8.0.0+driver/x86_64/{NAME}"


def test_sidecar_wins_over_sha256sums(server):
    server.expect_request(ARTIFACT + ".sha256").respond_with_data(f"{A}  {NAME}\n")
    server.expect_request("/driver/8.0.0+driver/x86_64/SHA256SUMS").respond_with_data(f"{B}  {NAME}\n")
    expectation = resolver().expectation_for(server.url_for(ARTIFACT))
    assert expectation.sha256 == A and expectation.verified_by == VERIFIED_SIDECAR
    assert "sidecar" in expectation.source and ".sha256" in expectation.source


def test_sha256sums_is_fetched_once_per_directory(server):
    server.expect_request("/driver/8.0.0+driver/x86_64/SHA256SUMS").respond_with_data(
        f"{A}  {NAME}\n{B}  falco_other.ko\n")
    checks = resolver()
    first = checks.expectation_for(server.url_for(ARTIFACT))
    second = checks.expectation_for(server.url_for("/driver/8.0.0+driver/x86_64/falco_other.ko"))
    assert (first.sha256, first.verified_by) == (A, VERIFIED_SUMS)
    assert second.sha256 == B
    sums_requests = [r for r, _ in server.log if r.path.endswith("SHA256SUMS")]
    assert len(sums_requests) == 1


def test_nothing_published_means_no_expectation(server):
    assert resolver().expectation_for(server.url_for(ARTIFACT)) is None
    assert len(server.log) == 2  # the sidecar and SHA256SUMS, both 404


def test_a_sidecar_for_another_file_is_a_verification_failure(server):
    server.expect_request(ARTIFACT + ".sha256").respond_with_data(f"{A}  falco_someone-else.ko\n")
    with pytest.raises(VerificationError, match="describes"):
        resolver().expectation_for(server.url_for(ARTIFACT))


def test_an_unreadable_sidecar_is_a_verification_failure(server):
    server.expect_request(ARTIFACT + ".sha256").respond_with_data("<html>oops</html>")
    with pytest.raises(VerificationError, match="does not hold a SHA-256"):
        resolver().expectation_for(server.url_for(ARTIFACT))


def test_pinned_digest_needs_no_network(server):
    expectation = resolver(sha=C).expectation_for(server.url_for(ARTIFACT))
    assert (expectation.sha256, expectation.verified_by, expectation.source) == (C, VERIFIED_PINNED, "--sha256")
    assert server.log == []


def test_pinned_checksums_file_matches_by_name(server, tmp_path):
    sums = tmp_path / "pinned.sums"
    sums.write_text(f"{B}  {NAME}\n")
    expectation = resolver(checksums_file=str(sums)).expectation_for(server.url_for(ARTIFACT))
    assert (expectation.sha256, expectation.verified_by) == (B, VERIFIED_PINNED)
    assert str(sums) in expectation.source
    assert server.log == []


def test_checksums_file_without_this_artifact_falls_through_to_the_repository(server, tmp_path):
    sums = tmp_path / "pinned.sums"
    sums.write_text(f"{B}  falco_other.ko\n")
    server.expect_request(ARTIFACT + ".sha256").respond_with_data(A)
    assert resolver(checksums_file=str(sums)).expectation_for(server.url_for(ARTIFACT)).sha256 == A


@pytest.mark.parametrize("content", [None, "no digests here\n"])
def test_unusable_checksums_file_is_a_usage_error(server, tmp_path, content):
    sums = tmp_path / "pinned.sums"
    if content is not None:
        sums.write_text(content)
    with pytest.raises(UsageError):
        resolver(checksums_file=str(sums)).expectation_for(server.url_for(ARTIFACT))


def test_policy_off_checks_nothing(server):
    server.expect_request(ARTIFACT + ".sha256").respond_with_data(A)
    assert resolver(policy="off", sha=C).expectation_for(server.url_for(ARTIFACT)) is None
    assert server.log == []


def test_checksum_documents_work_over_file_urls(tmp_path):
    directory = tmp_path / "driver" / "8.0.0+driver" / "x86_64"
    directory.mkdir(parents=True)
    (directory / "SHA256SUMS").write_text(f"{sha256(b'x')}  {NAME}\n")
    url = f"file://{tmp_path}/driver/8.0.0%2Bdriver/x86_64/{NAME}"
    assert resolver().expectation_for(url).sha256 == sha256(b"x")
