"""Embeddings of a whole dataset, as GeoParquet: ``fusmae-fast embed``.

    fusmae-fast embed --ckpt RUN --data ROOT|STORE|sample --out embeddings.parquet

One row per patch: its names, split, labels, the encoder's embedding (CLS token, or the mean of the
patch tokens with ``--pool mean``) of the chosen inputs (``--inputs s1+s2|s1|s2``: a missing modality
as the model defines it), and its footprint in lon/lat from the patch's own GeoTIFF. The file opens in
GIS tools and ``geopandas.read_parquet``. A killed run continues when the same command is run again.

The parts:

    config.py       EmbedConfig and its choices
    footprint.py    a patch's GeoTIFF, its footprint in lon/lat, WKB
    geoparquet.py   the columns, the GeoParquet metadata, the resumable row groups and the final file
    driver.py       run_embed: encoder, datasets, checks, rows, the loop over row groups
    cli.py          fusmae-fast embed
"""

from fusmae_fast.embed.cli import add_arguments, run
from fusmae_fast.embed.config import EmbedConfig
from fusmae_fast.embed.driver import run_embed

__all__ = ["EmbedConfig", "add_arguments", "run", "run_embed"]
