""".pt2 archives whose zip structure is ambiguous: what mobilize vets must be exactly what torch loads.

Each hostile archive is checked twice: a control shows that ``torch.export.load`` really runs its payload (so the
refusal is meaningful), then ``load_source`` must refuse it with a one-line SourceError without running anything.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
import torch

from fixtures import make_fixtures as mk
from mobilize.errors import SourceError
from mobilize.source import load_source

# (entry, evil copy first, evil copy spelled in capitals): the layouts in which torch's reader picks the payload
LIVE = [
    pytest.param("weights/weight_0", True, False, id="weight-evil-first"),
    pytest.param("weights/weight_0", True, True, id="weight-evil-first-other-case"),
    pytest.param("sample_inputs/model.pt", False, True, id="sample-inputs-other-case"),
]


@pytest.fixture(autouse=True)
def _quiet_torch_serde():
    """torch logs a malformed warning when its weights_only fallback kicks in (in the controls)."""
    log = logging.getLogger("torch._export.serde.serialize")
    old = log.disabled
    log.disabled = True
    yield
    log.disabled = old


@pytest.mark.parametrize(("entry", "evil_first", "upper"), LIVE)
def test_duplicate_entry_payload_is_live(tiny_pt2: Path, tmp_path: Path, entry: str, evil_first: bool,
                                        upper: bool) -> None:
    """Control: torch.export.load of these archives runs the payload."""
    marker = tmp_path / "MARKER"
    evil = mk.duplicate_entry_pt2(tiny_pt2, tmp_path / "dup.pt2", marker, entry=entry, evil_first=evil_first,
                                  upper=upper)
    with contextlib.suppress(Exception):
        torch.export.load(str(evil))
    assert marker.exists()


@pytest.mark.parametrize(("entry", "evil_first", "upper"), LIVE)
def test_duplicate_entries_are_refused_without_running_them(tiny_pt2: Path, tmp_path: Path, entry: str,
                                                            evil_first: bool, upper: bool) -> None:
    marker = tmp_path / "MARKER"
    evil = mk.duplicate_entry_pt2(tiny_pt2, tmp_path / "dup.pt2", marker, entry=entry, evil_first=evil_first,
                                  upper=upper)
    with pytest.raises(SourceError) as info:
        load_source(str(evil))
    assert not marker.exists(), "the duplicated entry's payload ran"
    assert "twice" in str(info.value) and "\n" not in str(info.value)


def test_aotinductor_code_is_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="AOTInductor native code"):
        load_source(str(mk.aoti_pt2(tiny_pt2, tmp_path / "aoti.pt2")))


def test_entries_outside_the_archive_folder_are_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    """A top-level ``version`` entry would let torch fall back to its legacy loader (other entries, other rules)."""
    with pytest.raises(SourceError, match="not all in one folder"):
        load_source(str(mk.legacy_fallback_pt2(tiny_pt2, tmp_path / "legacy.pt2")))


def test_unknown_entries_are_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    top = "tiny"
    p = mk.add_zip_entry(tiny_pt2, tmp_path / "extra.pt2", f"{top}/data/other/thing.bin", b"x")
    with pytest.raises(SourceError, match="unexpected archive entry"):
        load_source(str(p))


def test_genuine_archive_still_loads_from_the_vetted_bytes(tiny_pt2: Path) -> None:
    spec = load_source(str(tiny_pt2))
    assert spec.input_names == ["features"]
    assert isinstance(spec.module(*spec.example_inputs), torch.Tensor)
