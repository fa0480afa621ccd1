"""The acquisition policy as a table: every source x checksum policy x pin x ELF verdict, each with its decision
and reason. One rule for every source; the commands only ask."""

import itertools

import pytest

from driver_loader.core.driver_types import DriverType
from driver_loader.core.policy import (
    CachedArtifact,
    ChecksumRecord,
    ElfVerdict,
    Evidence,
    LoadedModule,
    Observations,
    Pin,
    Source,
    StepKind,
    VerifyPolicy,
    acquisition_steps,
    artifact_decision,
    checksum_decision,
    checksum_required_before_download,
    judged_kernel,
    needs_driver_version,
    publish_decision,
)

GOOD = "a" * 64
OTHER = "b" * 64

# How each source's bytes can have been checked when they were obtained.
EVIDENCE_BY_SOURCE = {
    Source.CACHE: list(Evidence),
    Source.DOWNLOAD: [Evidence.SIDECAR, Evidence.SUMS, Evidence.PINNED, Evidence.OCI_DIGEST, Evidence.RECORDED,
                      Evidence.UNCHECKED],
    Source.BUILD: [Evidence.LOCAL_BUILD],
    Source.FILE: [Evidence.RECORDED],
}
PINS = {"no pin": None, "matching pin": Pin(GOOD, "--sha256"), "contradicting pin": Pin(OTHER, "checksums file x")}
ELF = {"elf fits": ElfVerdict(True), "elf does not fit": ElfVerdict(False, ("vermagic flags differ",), "rebuild")}
# (the key --verify-key requires, the key a signature was verified with when the artifact was obtained)
SIGNERS = {"no key required": (None, ""), "signed by the required key": ("key1", "key1"),
           "signed by another key": ("key1", "key2"), "unsigned, a key required": ("key1", "")}


def expected(policy, evidence, pin_name, elf_name, signer_name="no key required"):
    """The rule, written out independently of the implementation."""
    required, signed_by = SIGNERS[signer_name]
    if required is not None and evidence is not Evidence.LOCAL_BUILD and signed_by != required:
        return False, f"no valid signature by the required key {required}"
    if policy is VerifyPolicy.OFF:
        checksum_ok, why = True, "not checked"
    elif pin_name == "contradicting pin":
        checksum_ok, why = False, "does not match the digest pinned"
    elif pin_name == "matching pin":
        checksum_ok, why = True, "pinned"
    elif evidence in (Evidence.PINNED, Evidence.SIDECAR, Evidence.SUMS, Evidence.OCI_DIGEST, Evidence.LOCAL_BUILD):
        checksum_ok, why = True, "verified by"
    elif policy is VerifyPolicy.STRICT:
        checksum_ok, why = False, "--verify strict requires"
    else:
        checksum_ok, why = True, "no checksum is published"
    if not checksum_ok:
        return False, why
    if elf_name == "elf does not fit":
        return False, "vermagic flags differ"
    return True, why


CASES = [
    (source, policy, evidence, pin_name, elf_name, signer_name)
    for source, evidences in EVIDENCE_BY_SOURCE.items()
    for policy, evidence, pin_name, elf_name, signer_name in itertools.product(VerifyPolicy, evidences, PINS, ELF,
                                                                                 SIGNERS)
]


@pytest.mark.parametrize(("source", "policy", "evidence", "pin_name", "elf_name", "signer_name"), CASES,
                         ids=["-".join(str(part) for part in case) for case in CASES])
def test_one_rule_for_every_source(source, policy, evidence, pin_name, elf_name, signer_name):
    required, signed_by = SIGNERS[signer_name]
    decision = artifact_decision(ChecksumRecord(GOOD, evidence, signed_by=signed_by), ELF[elf_name], policy=policy,
                                 pin=PINS[pin_name], signer=required)
    usable, why = expected(policy, evidence, pin_name, elf_name, signer_name)
    assert decision.usable is usable
    assert why in decision.reason
    if not usable:
        assert decision.hint
    else:
        assert decision.evidence is not None


def test_auto_without_a_published_checksum_is_usable_with_a_warning():
    decision = checksum_decision(ChecksumRecord(GOOD, Evidence.RECORDED), policy=VerifyPolicy.AUTO, pin=None)
    assert decision.usable and "publishes no checksum" in decision.warning


@pytest.mark.parametrize(("policy", "pin", "published", "refused"), [
    (VerifyPolicy.STRICT, None, False, True),
    (VerifyPolicy.STRICT, None, True, False),
    (VerifyPolicy.STRICT, Pin(GOOD, "--sha256"), False, False),
    (VerifyPolicy.AUTO, None, False, False),
    (VerifyPolicy.OFF, None, False, False),
])
def test_a_download_that_could_never_be_used_is_not_started(policy, pin, published, refused):
    assert (checksum_required_before_download(policy, pin, published) is not None) is refused


@pytest.mark.parametrize(("requested", "running", "release", "is_running"), [
    (None, "6.1.0-13-amd64", "6.1.0-13-amd64", True),
    ("6.1.0-13-amd64", "6.1.0-13-amd64", "6.1.0-13-amd64", True),
    ("6.12.48+deb13-amd64", "6.1.0-13-amd64", "6.12.48+deb13-amd64", False),
])
def test_the_kernel_judged_is_the_named_one(requested, running, release, is_running):
    judged = judged_kernel(requested, running)
    assert (judged.release, judged.running) == (release, is_running)


def test_modern_ebpf_needs_no_version_artifact_or_network():
    assert not needs_driver_version(DriverType.MODERN_EBPF)
    assert needs_driver_version(DriverType.KMOD) and needs_driver_version(DriverType.EBPF)
    plan = acquisition_steps(DriverType.MODERN_EBPF, Observations(), policy=VerifyPolicy.STRICT,
                             download=True, compile=True, version_fallback=True)
    assert plan.kinds() == (StepKind.USE_BUILTIN,)


def cached(evidence, pin=None, path="/c/8.0.0+driver/x86_64/falco.ko"):
    return CachedArtifact(path, ChecksumRecord(GOOD, evidence), pin)


@pytest.mark.parametrize(("observed", "flags", "policy", "kinds"), [
    # A compatible loaded module ends it; an incompatible one is replaced first.
    (Observations(loaded=LoadedModule("falco", "8.1.0+driver", True)), (True, True, True), VerifyPolicy.AUTO,
     (StepKind.KEEP_LOADED,)),
    (Observations(loaded=LoadedModule("falco", "7.0.0+driver", False)), (True, True, True), VerifyPolicy.AUTO,
     (StepKind.REPLACE_LOADED, StepKind.DOWNLOAD, StepKind.OTHER_VERSIONS, StepKind.BUILD)),
    # The cache comes first, when its record satisfies the policy.
    (Observations(cached=(cached(Evidence.SIDECAR),)), (True, True, True), VerifyPolicy.STRICT,
     (StepKind.USE_CACHE, StepKind.DOWNLOAD, StepKind.OTHER_VERSIONS, StepKind.BUILD)),
    (Observations(cached=(cached(Evidence.RECORDED),)), (True, True, False), VerifyPolicy.STRICT,
     (StepKind.DOWNLOAD, StepKind.BUILD)),
    (Observations(cached=(cached(Evidence.RECORDED),)), (False, False, False), VerifyPolicy.AUTO,
     (StepKind.USE_CACHE,)),
    # --no-download --no-compile with only an unacceptable entry: nothing to do but fail, saying why.
    (Observations(cached=(cached(Evidence.RECORDED),)), (False, False, False), VerifyPolicy.STRICT,
     (StepKind.FAIL,)),
    (Observations(cached=(cached(Evidence.SIDECAR, Pin(OTHER, "checksums file x")),)), (False, True, False),
     VerifyPolicy.AUTO, (StepKind.BUILD,)),
    (Observations(), (False, False, True), VerifyPolicy.AUTO, (StepKind.FAIL,)),
])
def test_steps(observed, flags, policy, kinds):
    download, compile_, fallback = flags
    plan = acquisition_steps(DriverType.KMOD, observed, policy=policy, download=download, compile=compile_,
                             version_fallback=fallback)
    assert plan.kinds() == kinds


def test_a_refused_cache_entry_says_why():
    plan = acquisition_steps(DriverType.KMOD, Observations(cached=(cached(Evidence.RECORDED),)),
                             policy=VerifyPolicy.STRICT, download=False, compile=False, version_fallback=False)
    assert "--verify strict" in plan.steps[0].detail
    (judgement,) = plan.cache
    assert not judgement.decision.usable and judgement.decision.hint


@pytest.mark.parametrize(("signed_by", "kinds"), [
    ("key1", (StepKind.USE_CACHE,)),
    ("", (StepKind.FAIL,)),
    ("key2", (StepKind.FAIL,)),
])
def test_a_required_key_decides_whether_the_cache_is_used(signed_by, kinds):
    entry = CachedArtifact("/c/x.ko", ChecksumRecord(GOOD, Evidence.OCI_DIGEST, signed_by=signed_by))
    plan = acquisition_steps(DriverType.KMOD, Observations(cached=(entry,)), policy=VerifyPolicy.AUTO,
                             download=False, compile=False, version_fallback=False, signer="key1")
    assert plan.kinds() == kinds
    if kinds == (StepKind.FAIL,):
        assert "required key key1" in plan.steps[0].detail


@pytest.mark.parametrize("evidence", list(Evidence))
@pytest.mark.parametrize("pin_name", list(PINS))
def test_only_checked_bytes_may_be_published(evidence, pin_name):
    """A registry's layer digest is every reader's checksum: publishing follows the strict rule, whatever --verify
    said when the artifact was fetched."""
    decision = publish_decision(ChecksumRecord(GOOD, evidence), pin=PINS[pin_name])
    usable, _ = expected(VerifyPolicy.STRICT, evidence, pin_name, "elf fits")
    assert decision.usable is usable
    if evidence in (Evidence.RECORDED, Evidence.UNCHECKED) and pin_name == "no pin":
        assert not decision.usable and "publishing requires" in decision.reason and "--sha256" in decision.hint


def test_a_signature_by_the_required_key_vouches_for_publishing():
    record = ChecksumRecord(GOOD, Evidence.RECORDED, signed_by="key1")
    assert publish_decision(record, pin=None, signer="key1").usable
    assert not publish_decision(record, pin=None, signer="key2").usable
    assert not publish_decision(record, pin=None).usable
