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

BMAD = DownloadSource(
    name="BMAD (Benchmarks for Medical Anomaly Detection: Retina_OCT2017, Retina_RESC and four more)",
    url="https://huggingface.co/datasets/code-dev05/BMAD/resolve/main/bmad.zip",
    sha256="df655def31f3f638a91c567550de54d6e45a74b2368f666c13a6a3052c063165",
    filename="bmad.zip",
    licence="CC BY-NC-SA 4.0 (anomalib's BMAD module)",
)

# MPDD has no direct download link (a VUT SharePoint folder), hence no checksum either.
MPDD_README_URL = "https://github.com/stepanje/MPDD"


@dataclass(frozen=True)
class ManualSource:
    """A dataset without a stable download URL and published checksum: the user places its files by hand.

    ``how`` says where on ``page`` the files are (a form, a login, a cloud folder); ``licence`` is what the source
    states, "not stated" where it states nothing, or says that it was not verified.
    """

    name: str
    page: str
    how: str
    licence: str

    def missing(self, root, layout: str) -> str:
        """The error when the files are not at ``root``: what to download from where, and where to put it."""
        return (
            f"{root}: {self.name} not found (looked for {layout}). It has no download with a published checksum, so "
            f"it is placed by hand: open {self.page}, {self.how}, and unpack it so that {root} holds {layout} "
            "(directly or one or two folders down); or set the dataset's `root` to where the files already are."
        )


AITEX = ManualSource(
    name="AITEX Fabric Image Database (AFID)",
    page="https://www.aitex.es/afid/",
    how="download the database's archives from the AITEX page",
    licence="not verified (the source page could not be reached from here)",
)
DAGM = ManualSource(
    name="DAGM 2007",
    page="https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection",
    how="download the ten classes from the Heidelberg HCI page (or the Kaggle upload AnomalyCLIP reads, DAGM_KaggleUpload)",
    licence="not verified (the source page could not be reached from here)",
)
DTD_SYNTHETIC = ManualSource(
    name="DTD-Synthetic",
    page="https://drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1",
    how="download the DTD-Synthetic folder from the Google Drive folder that Aota et al. (Zero-Shot Versus Many-Shot, WACV 2023) name",
    licence="not verified (built from the Describable Textures Dataset; the source page could not be reached from here)",
)
MPDD = ManualSource(
    name="MPDD",
    page=MPDD_README_URL,
    how="follow its README's download link (a VUT / Brno University of Technology SharePoint folder)",
    licence="not stated (the README states no licence)",
)

# Medical sets (FAPrompt, One-to-Normal): pages named by the papers' code and dataset cards; none publishes a checksum.
_NOT_VERIFIED = "not verified (the source page could not be reached from here)"
BRAIN_MRI = ManualSource(
    name="BrainMRI (Brain MRI Images for Brain Tumor Detection)",
    page="https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
    how="download the Kaggle dataset (a Kaggle account is needed)",
    licence=_NOT_VERIFIED,
)
BR35H = ManualSource(
    name="Br35H (Brain Tumor Detection 2020)",
    page="https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection",
    how="download the Kaggle dataset (a Kaggle account is needed)",
    licence=_NOT_VERIFIED,
)
HEAD_CT = ManualSource(
    name="HeadCT (Head CT - hemorrhage)",
    page="https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage",
    how="download the Kaggle dataset (a Kaggle account is needed)",
    licence=_NOT_VERIFIED,
)
ISIC_2016 = ManualSource(
    name="ISIC 2016 (ISBI 2016 challenge, part 1, test data and ground truth)",
    page="https://challenge.isic-archive.com/data/",
    how="download the 2016 part 1 test data and its test ground truth",
    licence=_NOT_VERIFIED,
)
CVC_CLINICDB = ManualSource(
    name="CVC-ClinicDB",
    page="https://polyp.grand-challenge.org/CVCClinicDB/",
    how="request the dataset from the page; put the frames in images/ and their masks, with the same names, in masks/",
    licence=_NOT_VERIFIED,
)
CVC_COLONDB = ManualSource(
    name="CVC-ColonDB",
    page="https://polyp.grand-challenge.org/CVCColonDB/",
    how="request the dataset from the page; put the frames in images/ and their masks, with the same names, in masks/",
    licence=_NOT_VERIFIED,
)
KVASIR_SEG = ManualSource(
    name="Kvasir-SEG",
    page="https://datasets.simula.no/kvasir-seg/",
    how="download Kvasir-SEG (its zip holds images/ and masks/)",
    licence=_NOT_VERIFIED,
)
TN3K = ManualSource(
    name="TN3K (thyroid nodule ultrasound, test set)",
    page="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
    how="follow the README's download link for TN3K",
    licence=_NOT_VERIFIED,
)
ENDOTECT = ManualSource(
    name="Endo (EndoTect 2020 polyp segmentation test set)",
    page="https://endotect.com/",
    how="download the EndoTect 2020 segmentation test dataset (images and their polyp masks) from the challenge page",
    licence=_NOT_VERIFIED,
)
LAG = ManualSource(
    name="LAG (Large-scale Attention-based Glaucoma database, part 1)",
    page="https://github.com/smilell/AG-CNN",
    how="request LAG_database_part_1 from the authors as its README says (a Dropbox file under request, password by e-mail)",
    licence="not stated as a licence; the README allows academic use only and forbids re-uploading",
)
