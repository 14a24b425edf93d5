"""Referring-segmentation datasets: gRefCOCO and RefCOCO/+/g loaders, training samples, NSC."""

from .refer import ReferDataset, ReferSample, DataError, load_grefcoco, load_refcoco, decode_segmentation

__all__ = ["ReferDataset", "ReferSample", "DataError", "load_grefcoco", "load_refcoco", "decode_segmentation"]
