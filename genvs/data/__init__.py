"""Datasets: SRN-format folders (real SRN cars or our synthetic cars) and the synthetic car generator."""

from genvs.data.srn import SRNDataset, SRNFormatError

__all__ = ["SRNDataset", "SRNFormatError"]
