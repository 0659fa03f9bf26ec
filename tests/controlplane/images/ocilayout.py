"""Image layers and OCI image layout archives, written and read with the standard library.

A layer is an uncompressed tar (so its digest is also its diff_id) whose entries are sorted,
owned by numeric ids only and stamped with one fixed mtime, so the same tree gives the same
bytes. An archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) packed in a
tar, as `ctr images import` and `skopeo copy oci-archive:` read it.

Why not umoci: it unpacks and repacks whole trees through its own bundle format and cannot
write a layer from a "before/after" pair of a tree we changed in place, which is how the shared
layers here are cut (see `snapshot` and `diff`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from typing import Iterable

# Every entry of every layer and archive carries this mtime (2026-01-01T00:00:00Z).
EPOCH = 1767225600
CREATED = "2026-01-01T00:00:00Z"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"

# Directories whose contents never go into a layer: the runtime mounts its own there.
EMPTY_DIRS = ("dev", "proc", "sys", "tmp")


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, path: str):
        self._f = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self._f.write(b)

    def close(self) -> None:
        if not self.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        super().close()


@dataclass(frozen=True)
class Blob:
    path: str
    digest: str  # "sha256:..."
    size: int


class LayerWriter:
    """Writes one layer tar. Entries must be added parents first, in sorted order."""

    def __init__(self, path: str):
        self.path = path
        self._out = _HashingFile(path)
        self._tar = tarfile.open(fileobj=self._out, mode="w|", format=tarfile.PAX_FORMAT)
        self._links: dict[tuple[int, int], str] = {}

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode & 0o7777
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = EPOCH
        return ti

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def add_file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self._tar.addfile(ti, io.BytesIO(data))

    def add_symlink(self, name: str, target: str, uid: int = 0, gid: int = 0) -> None:
        ti = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid)
        ti.linkname = target
        self._tar.addfile(ti)

    def add_file_from(self, name: str, path: str, mode: int = 0o644) -> None:
        ti = self._info(name, tarfile.REGTYPE, mode, 0, 0)
        ti.size = os.path.getsize(path)
        with open(path, "rb") as f:
            self._tar.addfile(ti, f)

    def add_whiteout(self, name: str) -> None:
        parent, base = os.path.split(name)
        self.add_file(os.path.join(parent, ".wh." + base), b"", 0o600)

    def add_from_fs(self, root: str, rel: str) -> None:
        """Adds ROOT/REL as entry REL, keeping its type, mode and owner."""
        full = os.path.join(root, rel)
        st = os.lstat(full)
        m = st.st_mode
        if stat.S_ISDIR(m):
            self.add_dir(rel, m, st.st_uid, st.st_gid)
        elif stat.S_ISLNK(m):
            self.add_symlink(rel, os.readlink(full), st.st_uid, st.st_gid)
        elif stat.S_ISREG(m):
            if st.st_nlink > 1:
                first = self._links.get((st.st_dev, st.st_ino))
                if first is not None:
                    ti = self._info(rel, tarfile.LNKTYPE, m, st.st_uid, st.st_gid)
                    ti.linkname = first
                    self._tar.addfile(ti)
                    return
                self._links[(st.st_dev, st.st_ino)] = rel
            ti = self._info(rel, tarfile.REGTYPE, m, st.st_uid, st.st_gid)
            ti.size = st.st_size
            with open(full, "rb") as f:
                self._tar.addfile(ti, f)
        elif stat.S_ISFIFO(m):
            self._tar.addfile(self._info(rel, tarfile.FIFOTYPE, m, st.st_uid, st.st_gid))
        # Sockets and device nodes never belong in an image.

    def close(self) -> Blob:
        self._tar.close()
        self._out.close()
        return Blob(self.path, "sha256:" + self._out.sha.hexdigest(), self._out.size)


def walk(root: str, rel: str = "") -> Iterable[str]:
    """Every path under ROOT (relative, parents first, names sorted), skipping the contents
    of EMPTY_DIRS."""
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        path = os.path.join(rel, e.name) if rel else e.name
        yield path
        if e.is_dir(follow_symlinks=False) and path not in EMPTY_DIRS:
            yield from walk(root, path)


def write_tree(writer: LayerWriter, root: str) -> None:
    for rel in walk(root):
        writer.add_from_fs(root, rel)


# What identifies a path's state: ctime moves on every write, chmod, chown and rename, so
# anything a build step touched shows up, whatever mtime the step left behind.
def _state(st: os.stat_result, full: str) -> tuple:
    link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, link)


def snapshot(root: str) -> dict[str, tuple]:
    return {rel: _state(os.lstat(os.path.join(root, rel)), os.path.join(root, rel)) for rel in walk(root)}


def diff(root: str, before: dict[str, tuple]) -> tuple[list[str], list[str]]:
    """(changed or new paths, deleted paths) of ROOT since BEFORE; a deleted directory is
    listed alone, not with its contents."""
    after = snapshot(root)
    # EMPTY_DIRS come with the base layer; a step touching them (build steps get device nodes
    # in /dev) changes nothing an image carries.
    changed = [p for p, s in after.items() if before.get(p) != s and p not in EMPTY_DIRS]
    gone = sorted(p for p in before if p not in after)
    deleted = [p for p in gone if os.path.dirname(p) in after or "/" not in p]
    return changed, deleted


def write_diff(writer: LayerWriter, root: str, changed: list[str], deleted: list[str]) -> None:
    """A layer with the whiteouts of DELETED and the entries of CHANGED, in tree order."""
    entries = [(p, True) for p in deleted] + [(p, False) for p in changed]
    entries.sort(key=lambda e: e[0].split("/"))
    for path, is_whiteout in entries:
        if is_whiteout:
            writer.add_whiteout(path)
        else:
            writer.add_from_fs(root, path)


# --- archives -------------------------------------------------------------------------------


def image_config(layers: list[Blob], config: dict, history: list[str]) -> bytes:
    return canonical_json(
        {
            "created": CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
            "history": [{"created": CREATED, "created_by": h} for h in history],
        }
    )


def write_archive(path: str, ref: str, layers: list[Blob], config: bytes, annotations: dict) -> str:
    """Writes the OCI layout archive to PATH (atomically) and returns the manifest digest."""
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": b.digest, "size": b.size} for b in layers],
            "annotations": annotations,
        }
    )
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    # The full reference in both: containerd names the image after
                    # io.containerd.image.name, OCI tools after ref.name.
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
            ],
        }
    )
    blobs: dict[str, bytes | Blob] = {config_digest: config, manifest_digest: manifest}
    for b in layers:
        blobs[b.digest] = b
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        w = LayerWriter(tmp)
        w.add_dir("blobs")
        w.add_dir("blobs/sha256")
        for digest in sorted(blobs):
            name = "blobs/sha256/" + digest.split(":", 1)[1]
            blob = blobs[digest]
            if isinstance(blob, bytes):
                w.add_file(name, blob)
            else:
                w.add_file_from(name, blob.path)
        w.add_file("index.json", index)
        w.add_file("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        w.close()
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest_digest


@dataclass
class Image:
    ref: str
    manifest_digest: str
    config: dict  # the image config's "config" object
    layers: list[tuple[str, int]]  # (digest, size) in order


def read_archive(path: str) -> Image:
    with tarfile.open(path) as t:

        def blob(digest: str) -> bytes:
            return t.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()

        index = json.loads(t.extractfile("index.json").read())
        (desc,) = index["manifests"]
        manifest = json.loads(blob(desc["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        return Image(
            ref=desc["annotations"]["org.opencontainers.image.ref.name"],
            manifest_digest=desc["digest"],
            config=config.get("config", {}),
            layers=[(layer["digest"], layer["size"]) for layer in manifest["layers"]],
        )


def unpack(path: str, dest: str) -> Image:
    """Extracts the image in archive PATH into DEST (as root: owners kept), applying each
    layer's whiteouts to the layers below it."""
    image = read_archive(path)
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(path) as t:
        for digest, _ in image.layers:
            member = "blobs/sha256/" + digest.split(":", 1)[1]
            with tarfile.open(fileobj=t.extractfile(member)) as layer:
                whiteouts = [m.name for m in layer if os.path.basename(m.name).startswith(".wh.")]
            for w in whiteouts:
                parent, base = os.path.split(w)
                target = os.path.join(dest, parent, base[len(".wh."):])
                if os.path.isdir(target) and not os.path.islink(target):
                    subprocess.run(["rm", "-rf", "--one-file-system", target], check=True)
                elif os.path.lexists(target):
                    os.unlink(target)
            extract_layer(t.extractfile(member), dest)
    return image


def extract_layer(stream, dest: str) -> None:
    """GNU tar does the extraction: it is several times faster than tarfile on large trees."""
    proc = subprocess.Popen(
        ["tar", "-x", "-C", dest, "--numeric-owner", "--same-permissions", "--same-owner",
         "--exclude=.wh.*", "--exclude=*/.wh.*", "-f", "-"],
        stdin=subprocess.PIPE,
    )
    while chunk := stream.read(1 << 20):
        proc.stdin.write(chunk)
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"tar failed extracting into {dest}")
