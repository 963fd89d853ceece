"""Model parts: the meta-architecture, SADA heads, the EMA teacher and the MIC loss."""
from .gradient_reversal import scale_gradient
from .masking import BlockMasker
from .meta_arch import DomainAdaptiveRCNN
from .mic_loss import MaskedImageConsistency, pseudo_label_losses
from .pseudo_labels import PseudoLabeler, pseudo_label_stats, select_pseudo_labels
from .sada import SADAHeads
from .teacher import EMATeacher

__all__ = [
    "BlockMasker",
    "DomainAdaptiveRCNN",
    "EMATeacher",
    "MaskedImageConsistency",
    "PseudoLabeler",
    "SADAHeads",
    "pseudo_label_losses",
    "pseudo_label_stats",
    "scale_gradient",
    "select_pseudo_labels",
]
