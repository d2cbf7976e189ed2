"""Where the downloadable datasets come from: URL, sha256 and licence, in one place.

URLs and hashes are the ones in anomalib's ``DownloadInfo`` of each datamodule. Adapters read these constants at call time, so tests can point them at local fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DownloadSource:
    """One archive to download: ``filename`` is the name it is stored under in ``<root>/downloads/``."""

    name: str
    url: str
    sha256: str
    filename: str
    licence: str


MVTEC_AD = DownloadSource(
    name="MVTec AD",
    url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
    "mvtec_anomaly_detection.tar.xz",
    sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
    filename="mvtec_anomaly_detection.tar.xz",
    licence="CC BY-NC-SA 4.0",
)

VISA = DownloadSource(
    name="VisA",
    url="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
    sha256="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
    filename="VisA_20220922.tar",
    licence="CC BY 4.0 (spot-diff README; anomalib's docstring says CC BY-NC-SA 4.0)",
)

BTAD = DownloadSource(
    name="BTAD",
    url="https://avires.dimi.uniud.it/papers/btad/btad.zip",
    sha256="461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
    filename="btad.zip",
    licence="CC BY-NC-SA 4.0 (anomalib)",
)

KOLEKTOR_SDD = DownloadSource(
    name="KolektorSDD",
    url="https://go.vicos.si/kolektorsdd",
    sha256="65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc",
    filename="KolektorSDD.zip",
    licence="CC BY-NC-SA 4.0",
)

# MPDD has no direct download link (a VUT SharePoint folder), hence no checksum either.
MPDD_README_URL = "https://github.com/stepanje/MPDD"
