"""What a person looks at: anomaly-map overlays on one colour scale per setup, and an HTML gallery, worst first."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsad.io import save_figure, write_text

OVERLAY_PIXELS = 256


@dataclass(frozen=True)
class ColourScale:
    """The map values the colour bar spans: the range of the benchmark run's saved test maps, shared by every image
    of an inspection (values outside it are shown at its ends), so that a normal image's map stays dark."""

    low: float
    high: float
    source: str

    @staticmethod
    def of_maps(maps: np.ndarray, source: str) -> "ColourScale":
        """The range of ``(N, S, S)`` maps."""
        values = np.asarray(maps, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        if not high > low:
            raise ValueError(f"{source}: every map value is {low}; no colour scale can be drawn from it")
        return ColourScale(low, high, source)


def write_overlay(image_path: str, anomaly_map: np.ndarray, scale: ColourScale, caption: str, path: str | Path) -> Path:
    """The image, its ``(S, S)`` anomaly map over it in ``scale`` and a colour bar, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from fsad.data.images import read_image

    image = np.asarray(read_image(image_path).resize((OVERLAY_PIXELS, OVERLAY_PIXELS)))
    figure, axis = plt.subplots(figsize=(3.6, 3.0), layout="constrained")
    axis.imshow(image)
    shown = axis.imshow(
        np.asarray(anomaly_map, dtype=np.float32), cmap="jet", alpha=0.45, vmin=scale.low, vmax=scale.high,
        extent=(0, OVERLAY_PIXELS, OVERLAY_PIXELS, 0), interpolation="bilinear",
    )
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(caption, fontsize=7)
    figure.colorbar(shown, ax=axis, shrink=0.8, label="anomaly map (setup's scale)")
    return save_figure(figure, path, dpi=100)


def _data_uri(path: str | Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def _thumbnail_uri(image_path: str) -> str:
    import io

    from fsad.data.images import read_image

    buffer = io.BytesIO()
    read_image(image_path).resize((OVERLAY_PIXELS, OVERLAY_PIXELS)).save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, na_rep="", border=0, classes="facts")


def write_gallery(
    scores: pd.DataFrame,
    overlays: dict[str, Path],
    thresholds: pd.DataFrame,
    unreadable: pd.DataFrame,
    title: str,
    notes: list[str],
    path: str | Path,
) -> Path:
    """One self-contained HTML page (images inline, so it works inside ``snakemake --report``): the thresholds,
    the unreadable files, then one card per image, highest score first: image, overlay, score, percentile, decision.

    Args:
        scores: the inspection's ``scores.csv`` rows (``image_id, file, score, normal_percentile, decision``).
        overlays: image id -> overlay PNG (empty for a method without maps).
    """
    cards = []
    for row in scores.sort_values("score", ascending=False).itertuples():
        overlay = f'<img src="{_data_uri(overlays[row.image_id])}" alt="overlay">' if row.image_id in overlays else "<p>no map (this method gives image scores only)</p>"
        cards.append(
            f'<div class="card {html.escape(row.decision)}"><h3>{html.escape(Path(row.file).name)}</h3>'
            f'<img src="{_thumbnail_uri(row.file)}" alt="image">{overlay}'
            f"<p>score <b>{row.score:.4g}</b> · normal percentile <b>{100 * row.normal_percentile:.0f} %</b> · "
            f"decision <b>{html.escape(row.decision)}</b></p></div>"
        )
    unreadable_part = _table(unreadable) if len(unreadable) else "<p>none</p>"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{font-family: sans-serif; margin: 1.5em;}} .card {{display: inline-block; vertical-align: top; margin: 0.5em;
padding: 0.5em; border: 3px solid #8a8; width: 560px;}} .card.anomalous {{border-color: #c33;}}
.card img {{width: 256px; margin-right: 4px;}} table.facts {{border-collapse: collapse; font-size: 90%;}}
table.facts td, table.facts th {{border: 1px solid #ccc; padding: 2px 6px; text-align: left;}}
</style></head><body>
<h1>{html.escape(title)}</h1>
{"".join(f"<p>{html.escape(note)}</p>" for note in notes)}
<h2>Thresholds (from what the setup saw, never from these images)</h2>
{_table(thresholds)}
<h2>Images that could not be read</h2>
{unreadable_part}
<h2>Images, highest score first</h2>
{"".join(cards)}
</body></html>
"""
    write_text(path, page)
    return Path(path)
