"""Tar shards: what listing a shard reads, and decoding a member against decoding the same file.

A shard of ``SHARD_VIDEOS`` copies of one real 10 s h264 video (640x360, about 0.5 MB), each with a
small ``k.json``, is written with ``tarfile``. Figures, each against a same-run baseline:

- listing a local shard (``core.storage.list_shard``: headers and ``.json`` members only) against
  reading the whole shard once in tarfile's streaming mode (``r|``), the "read it once" baseline;
- bytes fetched to list the same shard on object storage (fsspec's ``memory://`` store behind
  ``storage.RetryingReader``, counted at the store) against the shard's size;
- decoding every frame of a member through its ranged view against decoding the same bytes as a
  file of their own (PyAV by path).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

from bench.common import Context, Figure, Stat, ffmpeg_encode, paired

SHARD_VIDEOS = 40
SOURCE = "testsrc2=size=640x360:rate=30"


def make_shard(ctx: Context, videos: int) -> tuple[str, str]:
    """The cached test video and a shard of ``videos`` copies of it (``k000.mp4`` + ``k000.json``)."""
    video = os.path.join(ctx.cache_dir, "tar-shards", "video.mp4")
    ffmpeg_encode(video, SOURCE, 10, "libx264", ["-g", "60"])
    shard = os.path.join(ctx.cache_dir, "tar-shards", f"shard-{videos}.tar")
    if not os.path.exists(shard):
        data = open(video, "rb").read()
        with tarfile.open(shard + ".part", "w") as archive:
            for n in range(videos):
                for name, content in ((f"k{n:03d}.mp4", data), (f"k{n:03d}.json", json.dumps({"n": n}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    archive.addfile(info, io.BytesIO(content))
        os.replace(shard + ".part", shard)
    return video, shard


def _stream_whole(shard: str) -> float:
    start = time.perf_counter()
    with open(shard, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as archive:
        for info in archive:
            if info.isreg():
                archive.extractfile(info).read()  # type: ignore[union-attr]
    return time.perf_counter() - start


def _list(shard: str) -> float:
    from core import storage

    start = time.perf_counter()
    listing = storage.list_shard(shard, read_suffixes=(".json",))
    assert len(listing.members) == 2 * SHARD_VIDEOS or len(listing.members) % 2 == 0
    return time.perf_counter() - start


def _decode_seconds(uri: str) -> float:
    from core.media import open_container

    start = time.perf_counter()
    with open_container(uri) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 300, frames
    return time.perf_counter() - start


def _remote_listing_bytes(shard: str) -> tuple[int, int, int]:
    """(bytes fetched from the store, ranged reads, shard size) to list a shard on ``memory://``."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from core import storage, tar

    fs = fsspec.filesystem("memory")
    remote = "memory://bench/tar-shards/shard.tar"
    fs.pipe_file(remote, open(shard, "rb").read())
    fetched = [0, 0]
    original = MemoryFileSystem.cat_file

    def counting(self, path, start=None, end=None, **kwargs):  # a measuring tap on the store, nothing faked
        data = original(self, path, start=start, end=end, **kwargs)
        fetched[0] += len(data)
        fetched[1] += 1
        return data

    MemoryFileSystem.cat_file = counting  # type: ignore[method-assign]
    try:
        tar.forget_shards()
        listing = storage.list_shard(remote, read_suffixes=(".json",))
    finally:
        MemoryFileSystem.cat_file = original  # type: ignore[method-assign]
        fs.rm_file(remote)
    return fetched[0], fetched[1], listing.size


def run(ctx: Context) -> list[Figure]:
    """List a shard, count the bytes listing fetches remotely, and decode a member against its file."""
    from core import storage, tar

    videos = SHARD_VIDEOS // 4 if ctx.quick else SHARD_VIDEOS
    video, shard = make_shard(ctx, videos)
    size = os.path.getsize(shard)
    listed, streamed, ratios = paired(lambda: _list(shard), lambda: _stream_whole(shard), ctx.repeats)
    local = storage.list_shard(shard, read_suffixes=(".json",))
    fetched, reads, _ = _remote_listing_bytes(shard)
    member = tar.member_uri(shard, "k001.mp4")
    decode_member, decode_file, decode_ratios = paired(lambda: _decode_seconds(member),
                                                       lambda: _decode_seconds(video), ctx.repeats)
    mb = size / 1e6
    return [
        Figure(benchmark="tar_shards", name=f"list a local shard of {videos} videos + json ({mb:.1f} MB)", unit="s",
               value=Stat.of(listed), baseline_name="reading the whole shard once (tarfile r|)",
               baseline=Stat.of(streamed), ratio=Stat.of(ratios),
               note=f"listing read {local.bytes_read:,} of {size:,} bytes ({local.bytes_read / size:.2%})"),
        Figure(benchmark="tar_shards", name="bytes fetched to list the same shard on object storage", unit="MB",
               value=Stat.of([fetched / 1e6]), baseline_name="the shard's size", baseline=Stat.of([mb]),
               ratio=Stat.of([fetched / size]),
               note=f"{reads} ranged reads of up to {tar.LIST_BLOCK_SIZE // 1024} KiB (memory:// store)"),
        Figure(benchmark="tar_shards", name="decode every frame of a member (10 s, 640x360 h264, PyAV)", unit="s",
               value=Stat.of(decode_member), baseline_name="the same video as a file of its own",
               baseline=Stat.of(decode_file), ratio=Stat.of(decode_ratios), target="<= 1.05x",
               met=Stat.of(decode_ratios).median <= 1.05),
    ]
