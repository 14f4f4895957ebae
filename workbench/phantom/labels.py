"""Physical properties of the phantom's tissue classes, keyed by the anatomical vocabulary.

The vocabulary itself (:class:`~workbench.anatomy.Label`, ``BONE_LABELS``, ``LEVEL_NAMES``) is
:mod:`workbench.anatomy`'s; the phantom writes its label maps in the workbench encoding
(:data:`PHANTOM_TABLE`). One property table, shared by the anatomy builder, the MRI synthesiser
and the ultrasound simulator, so a structure added to the anatomy is imaged consistently by both
modalities.

Sources for the property values
-------------------------------
- Acoustic impedance, speed of sound and attenuation: Duck FA, *Physical Properties of Tissue*
  (Academic Press, 1990), tables 4.1-4.20; Szabo TL, *Diagnostic Ultrasound Imaging*, 2nd ed.
  (2014), appendix B. Attenuation is in dB/(cm MHz).
- T2-weighted signal (relative to CSF = 1, at TE ~ 100-130 ms as in 3D SPACE/CUBE/VISTA): CSF,
  fat and the disc nucleus bright (fat slightly above CSF on fast spin echo); fat-free muscle,
  cortical bone and ligament nearly void; marrow intermediate (fatty marrow); Bushberg et al.,
  *The Essential Physics of Medical Imaging*, ch. 12, and T2 relaxation tables in Bojorquez et
  al., MRI 35 (2017) 69-80. Fat, muscle, nucleus and marrow are set so that the synthetic MRI's
  ROI contrasts match those measured on a real T2 lumbar MRI (docs/phantom.md,
  tools/phantom_vs_real_mri.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# The vocabulary (names, values, bone classes, levels) is not the phantom's: it lives in
# workbench.anatomy and is re-exported here so ``workbench.phantom.labels.Label`` keeps working.
from workbench.anatomy import BONE_LABELS, LEVEL_NAMES, WORKBENCH_TABLE, Label

__all__ = ["Label", "TissueProperties", "TISSUE", "BONE_LABELS", "LEVEL_NAMES", "PHANTOM_TABLE"]

#: Label table of the phantom's label maps (value -> vocabulary name): the workbench encoding.
PHANTOM_TABLE = WORKBENCH_TABLE


@dataclass(frozen=True)
class TissueProperties:
    """What a tissue class looks like to MRI and ultrasound.

    Attributes
    ----------
    t2_signal : float
        Relative T2-weighted signal, 0 (void), 1 (CSF); fat 1.1. Muscles: fat-free (the MRI
        synthesiser mixes in the phantom's muscle fat fraction).
    impedance_mrayl : float
        Acoustic impedance, MRayl (10^6 kg m^-2 s^-1).
    attenuation_db_cm_mhz : float
        Attenuation coefficient, dB / (cm MHz).
    backscatter : float
        Relative echogenicity of the speckle inside the tissue, 0..1.
    speed_m_s : float
        Speed of sound, m/s.
    """

    t2_signal: float
    impedance_mrayl: float
    attenuation_db_cm_mhz: float
    backscatter: float
    speed_m_s: float = 1540.0


_BONE = TissueProperties(t2_signal=0.05, impedance_mrayl=7.8, attenuation_db_cm_mhz=20.0, backscatter=0.9, speed_m_s=3500.0)

#: Properties of every label. Bone labels share cortical-bone acoustics; the MRI synthesiser
#: gives bone interiors (marrow) ``MARROW_T2_SIGNAL`` instead of the cortical value.
TISSUE: dict[Label, TissueProperties] = {
    Label.AIR: TissueProperties(0.0, 0.0004, 12.0, 0.0, 343.0),
    Label.SKIN: TissueProperties(0.35, 1.70, 2.5, 0.55, 1600.0),
    Label.FAT: TissueProperties(1.10, 1.38, 0.6, 0.20, 1450.0),
    Label.ERECTOR_SPINAE: TissueProperties(0.06, 1.65, 1.1, 0.35, 1580.0),
    Label.MULTIFIDUS: TissueProperties(0.06, 1.65, 1.1, 0.38, 1580.0),
    Label.QUADRATUS_LUMBORUM: TissueProperties(0.06, 1.65, 1.1, 0.35, 1580.0),
    Label.PSOAS: TissueProperties(0.07, 1.65, 1.1, 0.33, 1580.0),
    Label.SOFT_TISSUE: TissueProperties(0.30, 1.63, 0.7, 0.30, 1560.0),
    **{label: _BONE for label in BONE_LABELS},
    Label.FACET_JOINT: TissueProperties(0.55, 1.75, 1.0, 0.25, 1650.0),
    Label.DISC_ANNULUS: TissueProperties(0.18, 1.75, 1.5, 0.45, 1650.0),
    Label.DISC_NUCLEUS: TissueProperties(0.95, 1.60, 0.8, 0.15, 1550.0),
    Label.LIGAMENT: TissueProperties(0.08, 1.80, 1.8, 0.60, 1650.0),
    Label.DURA: TissueProperties(0.10, 1.70, 1.5, 0.55, 1600.0),
    Label.CSF: TissueProperties(1.00, 1.50, 0.002, 0.01, 1505.0),
    Label.NERVE_ROOT: TissueProperties(0.30, 1.65, 1.0, 0.40, 1600.0),
    Label.DORSAL_ROOT_GANGLION: TissueProperties(0.55, 1.65, 1.0, 0.30, 1600.0),
    Label.RADICULAR_ARTERY: TissueProperties(0.05, 1.66, 0.2, 0.02, 1580.0),  # flow void
    Label.AORTA: TissueProperties(0.05, 1.66, 0.2, 0.02, 1580.0),
    Label.IVC: TissueProperties(0.30, 1.66, 0.2, 0.03, 1580.0),
    Label.KIDNEY: TissueProperties(0.55, 1.64, 1.0, 0.30, 1560.0),
    Label.EPIDURAL_FAT: TissueProperties(1.10, 1.38, 0.6, 0.20, 1450.0),
    # classes of imported segmentations; the phantom never draws them
    Label.SPINAL_CORD: TissueProperties(0.45, 1.65, 1.0, 0.40, 1600.0),
    Label.SPINAL_CANAL: TissueProperties(1.00, 1.50, 0.002, 0.01, 1505.0),
    Label.DISC: TissueProperties(0.15, 1.75, 1.5, 0.45, 1650.0),
    Label.ENDPLATE: TissueProperties(0.15, 1.75, 1.5, 0.45, 1650.0),
    Label.UNLABELLED: TissueProperties(0.40, 1.63, 0.7, 0.30, 1560.0),
}

#: T2 signal of fatty bone marrow (bone interior deeper than the cortex).
MARROW_T2_SIGNAL = 0.50
#: Thickness of the cortical shell of vertebrae, mm (lumbar cortex ~ 0.4-1.5 mm; Silva et al. 1994).
CORTEX_THICKNESS_MM = 0.7

assert set(TISSUE) == set(Label), "every label needs tissue properties"
