"""The falco-driver-loader image, built with buildah and run the way the Helm chart runs its init container.

Used by tests/test_image.py (marker `image`) and, for the QEMU scenario, by tests/e2e/e2e_harness.py. Root only.

Building: `buildah bud --isolation chroot --layers` of packaging/docker/Dockerfile. The base image,
`debian:bookworm-slim`, is pulled where a registry is reachable; where none is, it is made here: `mmdebstrap
--variant=minbase bookworm` from the Debian archives this machine's apt uses (read with `apt-get indextargets`, never
a hard-coded host), trimmed like Debian's slim images, imported with buildah (`FROM scratch` + `ADD rootfs.tar /`) and
tagged `debian:bookworm-slim`. Both images are cached in buildah's storage: the base is remade only when the recipe
or the apt sources change (its label holds their digest), the loader image only when the Dockerfile, the build
context or the base change (its tag holds their digest); --layers keeps the Debian-packages layer across source edits.

Running: not `buildah run` and not podman. A fresh working container of the image is mounted (`buildah from` +
`buildah mount`), and the image's entrypoint is run in it with `chroot`, in a private mount namespace (`unshare
--mount`) holding exactly the chart's bind mounts (/host/proc, /host/boot, /host/lib/modules, /host/usr, /host/etc,
/root/.falco, /etc/falco/config.d) plus the /proc, /sys and /dev a privileged pod gets, with the image's own
environment (its `Env`) and entrypoint, read from the image's config. Why: the same chroot recipe runs the same image
root inside the QEMU guest, where there is no container storage and no buildah; the mounts are the chart's and
nothing else (`buildah run` adds its own /etc/hosts, /etc/resolv.conf, /run/.containerenv and a capability set, and
podman cannot run here: the sandbox forbids raising rlimits and mixes cgroup v1 and v2); and every mount vanishes
with the namespace, so nothing outlives a run even when it is killed.

Environment: IMAGE_WORK (default ~/.cache/falco-driver-loader-image) holds the base image's rootfs tarball and build
logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

CHECKOUT = Path(__file__).resolve().parent.parent
DOCKERFILE = CHECKOUT / "packaging" / "docker" / "Dockerfile"
IGNORE_FILE = CHECKOUT / ".dockerignore"
# What the Dockerfile copies from the context: a change in any of these rebuilds the image.
CONTEXT = ("pyproject.toml", "README.md", "driver_loader")

BASE = "debian:bookworm-slim"
BASE_LOCAL = "localhost/debian:bookworm-slim"
SUITE = "bookworm"
IMAGE_REPO = "localhost/falco-driver-loader"
KEY_LABEL = "io.github.falco-driver-loader.suite-key"
PULL_TIMEOUT = 120
# Trimmed like Debian's official slim images (debuerreotype's slimify): no manuals, docs (except copyrights),
# translations or lintian overrides. The rules stay in the image's /etc/dpkg/dpkg.cfg.d, so the loader image's own
# packages are trimmed too.
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
BASE_CONTAINERFILE = """\
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["bash"]
"""

# The chart's init container mounts (charts/falco/templates/pod-template.tpl): container path -> read-only.
CHART_MOUNTS = {
    "/root/.falco": False,
    "/host/proc": True,
    "/host/boot": True,
    "/host/lib/modules": False,
    "/host/usr": True,
    "/host/etc": True,
    "/etc/falco/config.d": False,
}

# Mount the given binds into root $1, then run the rest with chroot. Arguments after the root: N, then N triples
# (source, target inside the root, ro|rw), then `--`, then the command. A privileged pod gets the node's /dev and
# /sys and its own /proc; the bind mounts follow, in order.
_CHROOT_SCRIPT = r"""
R=$1; N=$2; shift 2
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
i=0
while [ "$i" -lt "$N" ]; do
    src=$1; dst=$2; mode=$3; shift 3
    if [ -d "$src" ]; then mkdir -p "$R$dst"; else mkdir -p "$(dirname "$R$dst")"; touch "$R$dst"; fi
    mount --rbind "$src" "$R$dst"
    if [ "$mode" = ro ]; then mount -o remount,bind,ro "$R$dst"; fi
    i=$((i + 1))
done
[ "$1" = -- ] && shift
exec chroot "$R" "$@"
"""


class ImageUnavailable(Exception):
    """This machine cannot build or run the image (not root, no buildah, no base image to be had)."""


class ImageSetupError(Exception):
    """Building the image failed on a machine that should be able to."""


@dataclasses.dataclass(frozen=True)
class Image:
    ref: str
    id: str
    size: int  # bytes, as buildah reports it
    env: Tuple[str, ...]  # the image's Env, KEY=value
    entrypoint: Tuple[str, ...]
    built: bool  # False when the cached image was reused
    seconds: float  # time spent getting it (base and image)
    base: str  # "pulled", "cached" or "mmdebstrap"


@dataclasses.dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


def say(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def work_dir() -> Path:
    path = Path(os.environ.get("IMAGE_WORK") or Path.home() / ".cache" / "falco-driver-loader-image")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(argv: Sequence[str], *, what: str, timeout: float = 1800, cwd: Optional[Path] = None,
         log: Optional[Path] = None, env: Optional[dict] = None) -> str:
    try:
        if log is None:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
            output = proc.stdout + proc.stderr
        else:
            with open(log, "w") as stream:
                proc = subprocess.run(list(argv), stdout=stream, stderr=subprocess.STDOUT, text=True,
                                      timeout=timeout, cwd=cwd, env=env)
            output = log.read_text(errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise ImageSetupError(f"{what} did not finish within {timeout:.0f} s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        where = f" (log: {log})" if log else ""
        raise ImageSetupError(f"{what} failed (exit {proc.returncode}){where}: {' '.join(argv)}\n{tail}")
    return proc.stdout if log is None else output


def require_host() -> None:
    if os.geteuid() != 0:
        raise ImageUnavailable("building and running the image needs root (buildah, mount, chroot)")
    for tool, package in (("buildah", "buildah"), ("unshare", "util-linux"), ("chroot", "coreutils")):
        if shutil.which(tool) is None:
            raise ImageUnavailable(f"`{tool}` is not installed (Debian package {package})")


def inspect_image(ref: str) -> Optional[dict]:
    proc = subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def _labels(info: dict) -> Dict[str, str]:
    return (info.get("OCIv1", {}).get("config", {}) or {}).get("Labels") or {}


# ---------------------------------------------------------------------------------------------- the base image
def debian_sources(suite: str = SUITE) -> List[str]:
    """`deb URI SUITE COMPONENTS` lines for the Debian archives this machine's apt uses for `suite` (the suite
    itself, -updates and -security), read with `apt-get indextargets`, so proxies and local mirrors carry over."""
    out = _run(["apt-get", "indextargets", "--format", "$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT) $(ORIGIN)"],
               what="reading apt's index targets")
    components: Dict[Tuple[str, str], List[str]] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) < 4 or words[0] != "deb":
            continue
        uri, release, component = words[1], words[2], words[3]
        origin = words[4] if len(words) > 4 else ""
        if release.split("-")[0] != suite or origin not in ("Debian", "$(ORIGIN)", ""):
            continue
        found = components.setdefault((uri.rstrip("/"), release), [])
        if component not in found:
            found.append(component)
    if not any(release == suite for _, release in components):
        raise ImageUnavailable(f"apt on this machine has no Debian {suite} archive configured (apt-get indextargets), "
                               f"so the base image cannot be made with mmdebstrap")
    return [f"deb {uri} {release} {' '.join(comps)}" for (uri, release), comps in sorted(components.items())]


def base_key(sources: Sequence[str]) -> str:
    recipe = [SUITE, "minbase", list(SLIM_DPKG_OPTIONS), BASE_CONTAINERFILE, list(sources)]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def make_base(work: Path, sources: Sequence[str], key: str) -> None:
    """mmdebstrap a bookworm minbase from `sources` and import it as debian:bookworm-slim."""
    if shutil.which("mmdebstrap") is None:
        raise ImageUnavailable(f"no registry is reachable to pull {BASE}, and mmdebstrap (Debian package mmdebstrap) "
                               f"is not installed to make it")
    context = work / "base"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir()
    (context / "sources.list").write_text("".join(line + "\n" for line in sources))
    (context / "Containerfile").write_text(BASE_CONTAINERFILE)
    argv = ["mmdebstrap", "--variant=minbase", "--format=tar", "--quiet"]
    argv += [f"--dpkgopt={option}" for option in SLIM_DPKG_OPTIONS]
    argv += [SUITE, str(context / "rootfs.tar"), str(context / "sources.list")]
    say(f"no registry reachable: making {BASE} with mmdebstrap from {', '.join(s.split()[1] for s in sources)}")
    _run(["nice", *argv], what=f"mmdebstrap of {BASE}", timeout=1800, log=work / "mmdebstrap.log",
         env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    _run(["buildah", "bud", "--isolation", "chroot", "--label", f"{KEY_LABEL}={key}", "-t", BASE_LOCAL,
          "-f", "Containerfile", "."], what=f"importing {BASE}", cwd=context, log=work / "base-import.log")
    (context / "rootfs.tar").unlink()


def ensure_base(work: Path) -> str:
    """A debian:bookworm-slim in buildah's storage: kept if present and current, else pulled, else made."""
    existing = inspect_image(BASE)
    if existing is not None:
        made_here = _labels(existing).get(KEY_LABEL)
        if made_here is None:
            return "cached"  # pulled earlier: the registry's image, kept as is
        if made_here == base_key(debian_sources()):
            return "cached"
    if existing is None:
        proc = subprocess.run(["buildah", "pull", "--quiet", f"docker.io/library/{BASE}"], capture_output=True,
                              text=True, timeout=PULL_TIMEOUT)
        if proc.returncode == 0:
            return "pulled"
        say(f"cannot pull {BASE}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    sources = debian_sources()
    make_base(work, sources, base_key(sources))
    if inspect_image(BASE) is None:
        raise ImageSetupError(f"{BASE_LOCAL} was made, but `{BASE}` does not resolve to it")
    return "mmdebstrap"


# ---------------------------------------------------------------------------------------------- the loader image
def context_digest(base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    files = [DOCKERFILE, IGNORE_FILE]
    for name in CONTEXT:
        path = CHECKOUT / name
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        else:
            files.append(path)
    for path in files:
        digest.update(str(path.relative_to(CHECKOUT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _image_of(ref: str, info: dict, *, built: bool, seconds: float, base: str) -> Image:
    config = info.get("OCIv1", {}).get("config", {}) or {}
    size = subprocess.run(["buildah", "images", "--format", "{{.Size}}", "--noheading", ref], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    return Image(ref=ref, id=info["FromImageID"], size=_bytes(size), env=tuple(config.get("Env") or ()),
                 entrypoint=tuple(config.get("Entrypoint") or ()), built=built, seconds=seconds, base=base)


def _bytes(human: str) -> int:
    """buildah's `512 MB` (decimal units) as bytes; 0 when unreadable."""
    units = {"B": 1, "KB": 10**3, "kB": 10**3, "MB": 10**6, "GB": 10**9}
    number, _, unit = human.partition(" ")
    try:
        return int(float(number) * units.get(unit, 0))
    except ValueError:
        return 0


def ensure_image(work: Optional[Path] = None) -> Image:
    """The loader image for this checkout: reused while its inputs are unchanged, else built (layers cached).
    One build at a time on a machine: concurrent test runs wait for each other here."""
    require_host()
    work = work or work_dir()
    with open(work / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_image(work)


def _ensure_image(work: Path) -> Image:
    started = time.monotonic()
    base = ensure_base(work)
    base_info = inspect_image(BASE)
    if base_info is None:
        raise ImageSetupError(f"{BASE} vanished after it was made")
    ref = f"{IMAGE_REPO}:suite-{context_digest(base_info['FromImageID'])}"
    info = inspect_image(ref)
    if info is not None:
        return _image_of(ref, info, built=False, seconds=time.monotonic() - started, base=base)
    say(f"building {ref} with buildah (log: {work / 'build.log'})")
    _run(["nice", "buildah", "bud", "--isolation", "chroot", "--layers", "--force-rm", "--pull-never", "-f", str(DOCKERFILE),
          "-t", ref, str(CHECKOUT)], what="buildah bud of packaging/docker/Dockerfile", cwd=CHECKOUT,
         log=work / "build.log", timeout=3600)
    for old in _suite_images():
        if old != ref:  # one suite image is enough; the layer cache keeps the Debian packages
            subprocess.run(["buildah", "rmi", old], capture_output=True, timeout=120)
    info = inspect_image(ref)
    if info is None:
        raise ImageSetupError(f"buildah bud succeeded but {ref} is not in the storage")
    image = _image_of(ref, info, built=True, seconds=time.monotonic() - started, base=base)
    say(f"built {ref} in {image.seconds:.0f} s, {image.size / 1e6:.0f} MB")
    return image


def _suite_images() -> List[str]:
    out = subprocess.run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}", "--noheading"],
                         capture_output=True, text=True, timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith(f"{IMAGE_REPO}:suite-")]


def installed_packages(image: Image) -> List[str]:
    """`name version` of every Debian package in the image."""
    with container_root(image) as root:
        out = _run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Version}\\n"],
                   what="listing the image's packages")
    return sorted(out.splitlines())


# ---------------------------------------------------------------------------------------------- running it
@contextlib.contextmanager
def container_root(image: Image) -> Iterator[Path]:
    """A fresh working container of the image, mounted; removed afterwards with everything written to it."""
    name = f"fdl-suite-{uuid.uuid4().hex[:12]}"
    _run(["buildah", "from", "--pull-never", "--name", name, image.ref], what=f"buildah from {image.ref}")
    try:
        root = Path(_run(["buildah", "mount", name], what=f"buildah mount {name}").strip())
        yield root
    finally:
        subprocess.run(["buildah", "umount", name], capture_output=True, timeout=120)
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)


def export_root(image: Image, base: Path) -> Path:
    """The image's root file system as a plain directory under `base`, made once per image (for the QEMU guest,
    which sees the host's files but not buildah's storage mounts)."""
    base.mkdir(parents=True, exist_ok=True)
    dest = base / f"root-{image.id[:16]}"
    marker = base / f"root-{image.id[:16]}.complete"
    if marker.exists() and dest.is_dir():
        return dest
    for old in base.glob("root-*"):  # one exported root is enough: the image id says which
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    partial = base / f"root-{image.id[:16]}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with container_root(image) as root:
        _run(["cp", "-a", f"{root}/.", str(partial)], what=f"copying the root of {image.ref}", timeout=900)
    partial.rename(dest)
    marker.write_text(image.id + "\n")
    return dest


def chroot_argv(root: Path, mounts: Sequence[Mount], command: Sequence[str]) -> List[str]:
    """unshare + sh + chroot: `command` in `root` with `mounts`, in a mount namespace of its own."""
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-euc", _CHROOT_SCRIPT, "chroot-run",
            str(root), str(len(mounts))]
    for mount in mounts:
        argv += [mount.source, mount.target, "ro" if mount.read_only else "rw"]
    return [*argv, "--", *command]


def chart_mounts(host_root: Path, cache: Path, config_d: Path, *, proc: str = "/proc",
                 omit: Sequence[str] = ()) -> List[Mount]:
    """The chart's mounts for a host whose / is `host_root` (its /proc is `proc`: a container shares the node's
    kernel, so a fake host root still gets the real /proc); `omit` drops mounts by container path."""
    sources = {"/root/.falco": str(cache), "/host/proc": proc, "/etc/falco/config.d": str(config_d)}
    mounts = []
    for target, read_only in CHART_MOUNTS.items():
        if target in omit:
            continue
        source = sources.get(target) or str(host_root / target[len("/host/"):])
        mounts.append(Mount(source, target, read_only))
    return mounts


def run_image(image: Image, root: Path, args: Sequence[str], mounts: Sequence[Mount], *,
              env: Optional[Dict[str, str]] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The image's entrypoint with `args` (as the chart passes them), its Env plus `env`, in `root`."""
    environment = dict(item.split("=", 1) for item in image.env)
    environment.update(env or {})
    command = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in environment.items()), *image.entrypoint, *args]
    return subprocess.run(chroot_argv(root, mounts, command), capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    # Build (or reuse) the image and print what it is: `python3 tests/image_harness.py`.
    built = ensure_image()
    print(json.dumps({**dataclasses.asdict(built), "size_mb": round(built.size / 1e6)}, indent=2))
