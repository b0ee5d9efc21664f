"""``plm-index verify [--repair]``: check every committed file against its record, and retire the damaged.

What is checked (see ``index.integrity`` for where each record lives):

- every live commit: its bytes against the data checksum in its footer, its header, and that it
  holds the video its path names (a commit copied in under another video's name is caught);
- every generation manifest: that it parses;
- every file a manifest lists: size and CRC32C/MD5 against the manifest, then (local files, and
  remote ones without a stored checksum) that it parses as Parquet with the columns its table needs.
  On ``gs://`` (and ``s3://``) the store's own checksum of the object is compared with the record,
  from one metadata request, so a healthy file is not downloaded. Files written before checksums
  ("unverified") are read and parsed instead.
- every run record: that it parses.

``repair`` retires what is damaged, each change one atomic object write, healthy files untouched:
a damaged videos, errors or segments file is dropped from its generation's manifest, whose
``retired_keys`` then name the videos it held (readers and the build's done-check stop counting
them); a generation whose commits table or manifest is damaged gets a manifest that lists no file
(its videos are then not done); a damaged live commit or run record is moved to
``quarantine/<repair>/``. The next ``build`` redoes exactly the retired videos.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from core import storage
from index.commit import check_commit_bytes, parse_header
from index.integrity import (
    CHECKSUM_KEY,
    REQUIRED_COLUMNS,
    Damage,
    DamagedFileError,
    HeldVideo,
    check_against_record,
    check_parquet,
    repair_command,
)
from index.layout import GENERATION_FILE, RUNS, IndexLayout, check_format
from index.read import (
    LIVE,
    Generation,
    generation_commits,
    key_of_path,
    list_live_commits,
    read_generation_file,
    scan_generations,
    videos_held,
)

QUARANTINE = "quarantine"
TABLES = ("commits", "videos", "errors", "segments")


@dataclass(frozen=True)
class RepairReport:
    """What a repair retired: files dropped from manifests or moved to quarantine, and the videos to redo."""

    retired: list[str]
    quarantined: list[str]
    videos_to_redo: int
    videos_known: bool

    def line(self) -> str:
        """One line for a person."""
        redo = f"{self.videos_to_redo} video(s)" if self.videos_known else "their videos"
        return (f"repaired: retired {len(self.retired)} damaged file(s) from what readers see"
                f"{f' ({len(self.quarantined)} moved to quarantine/)' if self.quarantined else ''}; "
                f"rerun the build to redo {redo}")


@dataclass
class VerifyReport:
    """The outcome of checking every committed file of an index."""

    location: str
    files_checked: int = 0
    by_stored_checksum: int = 0
    unverified: int = 0
    damage: list[Damage] = field(default_factory=list)
    repaired: RepairReport | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing is damaged."""
        return not self.damage

    def videos(self) -> list[HeldVideo]:
        """Every video whose rows a damaged file held, once."""
        seen: dict[tuple[str, str], HeldVideo] = {}
        for damage in self.damage:
            for video in damage.videos:
                seen.setdefault((video.settings_hash, video.key), video)
        return list(seen.values())

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {"location": self.location, "ok": self.ok, "files_checked": self.files_checked,
                "by_stored_checksum": self.by_stored_checksum, "unverified": self.unverified,
                "damaged": [d.to_json() for d in self.damage],
                "videos": [v.__dict__ for v in self.videos()],
                "repair": None if self.ok else repair_command(self.location),
                "repaired": None if self.repaired is None else self.repaired.__dict__}

    def text(self, max_videos: int = 10) -> str:
        """The human form."""
        lines = [f"index {self.location}: {self.files_checked} file(s) checked"
                 + (f" ({self.by_stored_checksum} by the store's checksum, not downloaded)"
                    if self.by_stored_checksum else "")
                 + (f", {self.unverified} without a recorded checksum (written before checksums; read and parsed)"
                    if self.unverified else "")]
        if self.ok:
            lines.append("  no damage found")
            return "\n".join(lines)
        lines.append(f"  {len(self.damage)} damaged file(s):")
        for damage in self.damage:
            lines.append(f"  DAMAGED {damage.line()}")
            names = [v.name() for v in damage.videos]
            if names:
                more = f" and {len(names) - max_videos} more" if len(names) > max_videos else ""
                lines.append(f"    videos: {', '.join(names[:max_videos])}{more}")
        if self.repaired is not None:
            lines.append(f"  {self.repaired.line()}")
        else:
            lines.append(f"  to retire them (healthy files are kept) and let the next build redo their videos: "
                         f"{repair_command(self.location)}")
        return "\n".join(lines)


def _read(path: str) -> bytes:
    if storage.is_remote(path):
        return storage.read_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def _check_live(layout: IndexLayout, path: str, report: VerifyReport) -> None:
    named = key_of_path(layout, path)
    try:
        data = _read(path)
    except FileNotFoundError:
        return  # compacted away since it was listed
    report.files_checked += 1
    try:
        parquet = check_commit_bytes(path, data)
        if CHECKSUM_KEY not in (parquet.metadata.metadata or {}):
            report.unverified += 1
        commit = parse_header(path, parquet)
        if (commit.settings_hash, commit.key) != (named.settings_hash, named.key):
            raise DamagedFileError(path, "corrupt", f"holds the commit of {commit.settings_hash}/{commit.key} "
                                   f"({commit.uri}), not of the video its name says (swapped in from elsewhere)")
        rows = parquet.metadata.num_rows
        if commit.status == "indexed" and rows != commit.num_segments:
            raise DamagedFileError(path, "corrupt", f"{rows} segment rows, its header says {commit.num_segments}")
        missing = REQUIRED_COLUMNS["segments"] - set(parquet.schema_arrow.names) if rows else set()
        if missing:
            raise DamagedFileError(path, "schema-mismatch", f"segment rows without the columns {sorted(missing)}")
    except DamagedFileError as exc:
        report.damage.append(Damage(path, exc.problem, exc.detail, LIVE, "commit", (named,)))


def _check_generation_file(generation: Generation, path: str, table: str, report: VerifyReport) -> None:
    """Check one file a manifest lists; raises ``DamagedFileError``."""
    record = generation.record(path)
    report.files_checked += 1
    if record is None:
        report.unverified += 1
    elif storage.is_remote(path):
        try:
            stored = storage.stored_object(path)
        except FileNotFoundError:
            raise DamagedFileError(path, "missing", "listed in its generation's manifest but not found") from None
        try:
            check_against_record(path, stored.size, record, stored.crc32c, stored.md5)
        except DamagedFileError:
            pass  # read it below, to say how it is damaged
        else:
            if stored.crc32c or stored.md5:
                report.by_stored_checksum += 1
                return  # the store vouches for every byte: nothing to download
    read_generation_file(generation, path, table)


def _rows_of(folder: str, name: str, table: str) -> pa.Table | None:
    path = storage.join(folder, name)
    try:
        return check_parquet(path, _read(path), table, None)
    except (DamagedFileError, FileNotFoundError):
        return None


def _videos_of_unreadable_generation(folder: str, manifest: dict[str, Any] | None) -> \
        tuple[tuple[HeldVideo, ...], bool]:
    """The videos of a generation whose commits table or manifest is damaged, and whether that list is whole.

    From its commits table where that still parses, else from its videos and errors tables.
    """
    files = (manifest or {}).get("files") or {"commits": ["commits.parquet"], "videos": ["videos.parquet"],
                                               "errors": ["errors.parquet"]}
    videos: dict[tuple[str, str], HeldVideo] = {}
    for name in files.get("commits", []):
        rows = _rows_of(folder, name, "commits")
        if rows is None:
            break
        for row in rows.select(["settings_hash", "key", "uri"]).to_pylist():
            videos.setdefault((row["settings_hash"], row["key"]), HeldVideo(**row))
    else:
        if videos:
            return tuple(videos.values()), True
    known = True
    for table, key_column in (("videos", "video_id"), ("errors", "key")):
        for name in files.get(table, []):
            rows = _rows_of(folder, name, table)
            if rows is None:
                known = False
                continue
            for row in rows.select(["settings_hash", key_column, "uri"]).to_pylist():
                videos.setdefault((row["settings_hash"], row[key_column]),
                                  HeldVideo(row["settings_hash"], row[key_column], row["uri"]))
    return tuple(videos.values()), known


def _check_generation(generation: Generation, report: VerifyReport) -> None:
    damaged: list[tuple[str, str, DamagedFileError]] = []
    for table in TABLES:
        for path in generation.files_of(table):
            try:
                _check_generation_file(generation, path, table, report)
            except DamagedFileError as exc:
                damaged.append((path, table, exc))
    if not damaged:
        return
    commits_damaged = any(table == "commits" for _, table, _ in damaged)
    if commits_damaged:
        videos, known = _videos_of_unreadable_generation(generation.folder, generation.manifest)
        for path, table, exc in damaged:
            held = videos if table == "commits" else ()
            report.damage.append(Damage(path, exc.problem, exc.detail, generation.name, table, held,
                                        videos_known=known and table == "commits"))
        return
    commits = pa.concat_tables([generation_commits(generation, p) for p in generation.files_of("commits")])
    for path, table, exc in damaged:
        report.damage.append(Damage(path, exc.problem, exc.detail, generation.name, table,
                                    videos_held(generation, table, path, commits)))


def _check_runs(layout: IndexLayout, report: VerifyReport) -> None:
    for path in storage.glob(layout.path(RUNS, "*.json")):
        report.files_checked += 1
        try:
            json.loads(storage.read_bytes(path))["run_id"]
        except FileNotFoundError:
            continue
        except (ValueError, KeyError, TypeError) as exc:
            report.damage.append(Damage(path, "corrupt", f"unreadable run record: {str(exc)[:200]}", RUNS, "run"))


def verify(location: str) -> VerifyReport:
    """Check every committed file of ``location`` against its record; names each damaged file and its videos."""
    check_format(location)
    if not storage.exists(location):
        raise FileNotFoundError(f"no index at {location}: check the path")
    layout = IndexLayout(location)
    report = VerifyReport(location)
    for path in list_live_commits(layout):
        _check_live(layout, path, report)
    generations, bad_manifests = scan_generations(layout)
    for damage in bad_manifests:
        report.files_checked += 1
        folder = damage.path[: -len(GENERATION_FILE) - 1]
        videos, known = _videos_of_unreadable_generation(folder, None)
        report.damage.append(Damage(damage.path, damage.problem, damage.detail, damage.source, "manifest",
                                    videos, known))
    for generation in generations:
        report.files_checked += 1  # its manifest, read by scan_generations
        _check_generation(generation, report)
    _check_runs(layout, report)
    return report


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _quarantine(layout: IndexLayout, repair_id: str, path: str) -> str | None:
    """Move ``path`` under ``quarantine/<repair_id>/`` (copy, then delete); returns where it went."""
    relative = path[len(layout.location):].lstrip("/")
    target = layout.path(QUARANTINE, repair_id, *relative.split("/"))
    try:
        storage.write_bytes(target, _read(path))
    except FileNotFoundError:
        return None
    storage.remove(path)
    return target


def _retire_in_manifest(layout: IndexLayout, name: str, folder: str, manifest: dict[str, Any] | None,
                        damage: list[Damage]) -> None:
    """Rewrite one generation's manifest (one atomic write) without its damaged files and their videos."""
    retired_files = dict((manifest or {}).get("retired_files") or {})
    at = dt.datetime.now(dt.UTC).isoformat()
    whole = manifest is None or any(d.table in ("commits", "manifest") for d in damage)
    if whole:
        # The generation's record of what it holds is gone: it lists no file from now on.
        files = (manifest or {}).get("files") or {}
        for table_files in files.values():
            for file_name in table_files:
                retired_files.setdefault(file_name, {"problem": "retired with its generation", "at": at})
        if manifest is None:  # unreadable: every file of its folder is retired with it
            files = {"unknown": [p.rsplit("/", 1)[-1] for p in storage.list_files(folder)
                                 if not p.endswith(GENERATION_FILE)]}
            for file_name in files["unknown"]:
                retired_files.setdefault(file_name, {"problem": "retired with its generation", "at": at})
        new = {**(manifest or {"generation": name, "supersedes": []}), "files": {t: [] for t in TABLES}}
    else:
        dropped = {d.path.rsplit("/", 1)[-1] for d in damage}
        new = {**manifest, "files": {t: [f for f in names if f not in dropped]
                                     for t, names in manifest["files"].items()}}
        keys = set(new.get("retired_keys") or ())
        for found in damage:
            keys.update(f"{v.settings_hash}\x1f{v.key}" for v in found.videos)
        new["retired_keys"] = sorted(keys)
    for found in damage:
        retired_files[found.path.rsplit("/", 1)[-1]] = {"problem": found.problem, "detail": found.detail, "at": at,
                                                        "videos": len(found.videos)}
    new["retired_files"] = retired_files
    storage.write_bytes(storage.join(folder, GENERATION_FILE), json.dumps(new, indent=1).encode())


def repair(location: str, report: VerifyReport) -> VerifyReport:
    """Retire every damaged file ``report`` found from what readers see (see the module docstring)."""
    layout = IndexLayout(location)
    repair_id = _now()
    retired: list[str] = []
    quarantined: list[str] = []
    by_generation: dict[str, list[Damage]] = {}
    for damage in report.damage:
        if damage.source in (LIVE, RUNS):
            moved = _quarantine(layout, repair_id, damage.path)
            if moved:
                quarantined.append(moved)
            retired.append(damage.path)
        else:
            by_generation.setdefault(damage.source, []).append(damage)
    manifests = {g.name: g for g in scan_generations(layout)[0]}
    for name, damage in by_generation.items():
        generation = manifests.get(name)
        folder = generation.folder if generation else layout.generation_folder(name)
        _retire_in_manifest(layout, name, folder, generation.manifest if generation else None, damage)
        retired.extend(d.path for d in damage)
    videos = report.videos()
    known = all(d.videos_known for d in report.damage)
    report.repaired = RepairReport(retired=retired, quarantined=quarantined, videos_to_redo=len(videos),
                                   videos_known=known)
    return report


__all__ = ["RepairReport", "VerifyReport", "repair", "verify"]
