"""Exceptions raised for bad or missing data; every message names the offending file or folder."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file exists but its content is not what the format requires (shape, dtype, NaN, ...)."""


class NoGeoreferenceError(DatasetError):
    """A patch whose footprint is not known: a GeoTIFF without a CRS, or a store written before
    stores kept their patches' georeference."""


class MissingDataError(DatasetError, FileNotFoundError):
    """A file or folder that the dataset layout requires is absent."""
