"""Datasets: SRN-format folders (real SRN cars or our synthetic cars) and the synthetic car generator."""

from __future__ import annotations

import os
from pathlib import Path

from genvs.data.srn import SRNDataset, SRNFormatError

__all__ = ["SRNDataset", "SRNFormatError", "srn_fixture_dir"]


def srn_fixture_dir() -> Path | None:
    """The real SRN car used by tests and lessons (``shared/fixtures/srn_cars_sample``), or None.

    Looks at ``$GENVS_SRN_FIXTURE`` first, then ``../shared/fixtures/srn_cars_sample`` beside the
    repository. The images are ShapeNet renders (non-commercial terms) and are not shipped.
    """
    candidates = [os.environ.get("GENVS_SRN_FIXTURE"),
                  Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "srn_cars_sample"]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), None)
