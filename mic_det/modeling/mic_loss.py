"""The MIC loss: the student, shown a masked target image, must reproduce the teacher's
pseudo-labels. Classification terms only by default (RPN objectness and ROI class),
each sample weighted by a quality estimate.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch.nn import functional as F

from .masking import BlockMasker
from .photometric import PhotometricAugmentation
from .rpn_outputs import rpn_outputs

QUALITY_WEIGHTS = ("teacher", "student", "none")


class MaskedImageConsistency:
    """Masks target images and computes the pseudo-label losses of a detector on them.

    Holds no parameters: it drives the student's own backbone, RPN and ROI heads.
    """

    @configurable
    def __init__(
        self,
        *,
        masker: BlockMasker,
        photometric: PhotometricAugmentation,
        loss_weight: float,
        quality_weight: str,
        box_regression: bool,
        mask_source: bool,
    ):
        if quality_weight not in QUALITY_WEIGHTS:
            raise ValueError(f"MIC.QUALITY_WEIGHT must be one of {QUALITY_WEIGHTS}, got {quality_weight!r}")
        self.masker = masker
        self.photometric = photometric
        self.loss_weight = loss_weight
        self.quality_weight = quality_weight
        self.box_regression = box_regression
        self.mask_source = mask_source

    @classmethod
    def from_config(cls, cfg):
        m = cfg.MIC
        return {
            "masker": BlockMasker(m.MASK_BLOCK_SIZE, m.MASK_RATIO),
            "photometric": PhotometricAugmentation(
                m.COLOR_JITTER_PROB, m.COLOR_JITTER_STRENGTH, m.BLUR_PROB, m.BLUR_SIGMA, cfg.INPUT.FORMAT
            ),
            "loss_weight": m.LOSS_WEIGHT,
            "quality_weight": m.QUALITY_WEIGHT,
            "box_regression": m.BOX_REGRESSION,
            "mask_source": m.MASK_SOURCE,
        }

    def masked_view(self, model, images: ImageList, return_mask: bool = False):
        """The masked view of ``images``: colour-jittered and blurred first, if configured,
        then masked, so that a masked block is exactly the pixel mean. With
        ``return_mask``, also the (N, 1, H, W) mask (1 kept, 0 masked)."""
        tensor = images.tensor
        if self.photometric.enabled:
            tensor = self.photometric(tensor, images.image_sizes, model.pixel_mean, model.pixel_std)
        masked, keep = self.masker(tensor, return_mask=True)
        view = ImageList(masked, images.image_sizes)
        return (view, keep) if return_mask else view

    def __call__(self, model, images: ImageList, pseudo_labels: List[Instances]) -> Dict[str, torch.Tensor]:
        """Losses of ``model`` on masked ``images`` (normalised, as the teacher saw them)
        against ``pseudo_labels``. Images without a pseudo-box are left out; if none has
        one, the losses are zero and no forward pass is run."""
        if not any(len(p) for p in pseudo_labels):
            return self._zero_losses(images.tensor)
        images, _, pseudo_labels = _with_pseudo_boxes(images, None, pseudo_labels)
        return self._losses(model, self.masked_view(model, images), None, pseudo_labels)

    def losses_on_view(
        self, model, view: ImageList, features: Dict[str, torch.Tensor], pseudo_labels: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """The same losses when the caller has already masked every target image and run
        the backbone on them (MRT's reconstruction shares that pass): the images without
        a pseudo-box are picked out of ``view`` and ``features``."""
        if not any(len(p) for p in pseudo_labels):
            return self._zero_losses(view.tensor)
        return self._losses(model, *_with_pseudo_boxes(view, features, pseudo_labels))

    def _zero_losses(self, like: torch.Tensor) -> Dict[str, torch.Tensor]:
        names = ["loss_mic_rpn_cls", "loss_mic_cls"] + (
            ["loss_mic_rpn_loc", "loss_mic_box_reg"] if self.box_regression else []
        )
        zero = like.new_zeros(())
        return {k: zero for k in names}

    def _losses(self, model, view, features, pseudo_labels) -> Dict[str, torch.Tensor]:
        # the ROI sampler logs its foreground count: under "mic/", not over the source's
        with get_event_storage().name_scope("mic"):
            losses = pseudo_label_losses(
                model, view, pseudo_labels, self.quality_weight, self.box_regression, features=features
            )
        return {k: v * self.loss_weight for k, v in losses.items()}


def _with_pseudo_boxes(images: ImageList, features: Optional[Dict[str, torch.Tensor]], pseudo_labels: List[Instances]):
    """``(images, features, pseudo_labels)`` restricted to the images that have at least
    one pseudo-box (unchanged when all have one; ``features`` may be None)."""
    used = [i for i, p in enumerate(pseudo_labels) if len(p) > 0]
    if len(used) == len(pseudo_labels):
        return images, features, pseudo_labels
    index = torch.as_tensor(used, device=images.tensor.device)
    images = ImageList(images.tensor[index], [images.image_sizes[i] for i in used])
    if features is not None:
        features = {k: v[index] for k, v in features.items()}
    return images, features, [pseudo_labels[i] for i in used]


@torch.no_grad()
def label_anchors(rpn, anchors: Boxes, targets: List[Instances]):
    """RPN anchor labels (1 / 0 / -1 ignored, after subsampling) as the stock RPN makes
    them (anchors crossing the image border ignored when MODEL.RPN.BOUNDARY_THRESH >= 0),
    plus each anchor's matched box and that box's teacher confidence."""
    labels, matched_boxes, confidences = [], [], []
    for t in targets:
        matched_idxs, lab = rpn.anchor_matcher(pairwise_iou(t.gt_boxes, anchors))
        lab = lab.to(t.gt_boxes.device)
        if rpn.anchor_boundary_thresh >= 0:
            lab[~anchors.inside_box(t.image_size, rpn.anchor_boundary_thresh)] = -1
        lab = rpn._subsample_labels(lab)
        labels.append(lab)
        matched_boxes.append(t.gt_boxes.tensor[matched_idxs])
        confidences.append(t.gt_scores[matched_idxs])
    return torch.stack(labels), matched_boxes, torch.stack(confidences)


def pseudo_label_losses(
    model,
    images: ImageList,
    targets: List[Instances],
    quality_weight: str,
    box_regression: bool,
    features: Optional[Dict[str, torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """Detection losses of ``model`` on ``images`` against pseudo-labels ``targets``
    (``gt_boxes``, ``gt_classes``, ``gt_scores``), with per-sample quality weights.

    Normalisation is as in detectron2's stock losses (RPN: sampled anchors per image x
    images; ROI: number of sampled proposals), so a weight of 1 everywhere reproduces
    ``loss_rpn_cls`` and ``loss_cls`` exactly, and a box's contribution is linear in
    its weight. ``features``: the backbone's features of ``images``, if already computed.
    """
    rpn, roi_heads = model.proposal_generator, model.roi_heads
    if features is None:
        features = model.backbone(images.tensor)
    out = rpn_outputs(rpn, images, features)
    losses = {}

    # --- RPN objectness -------------------------------------------------------------
    anchors = Boxes.cat(out.anchors)
    labels, matched_boxes, confidences = label_anchors(rpn, anchors, targets)
    logits = cat(out.objectness_logits, dim=1)
    valid = labels >= 0
    bce = F.binary_cross_entropy_with_logits(logits[valid], labels[valid].to(logits.dtype), reduction="none")
    if quality_weight == "teacher":
        bce = bce * torch.where(labels[valid] == 1, confidences[valid], torch.ones_like(bce))
    elif quality_weight == "student":
        bce = bce * logits[valid].sigmoid()  # not detached, as in the reference code
    normalizer = rpn.batch_size_per_image * len(targets)
    losses["loss_mic_rpn_cls"] = bce.sum() / normalizer * rpn.loss_weight.get("loss_rpn_cls", 1.0)
    if box_regression:
        loc = _dense_box_regression_loss(
            out.anchors, rpn.box2box_transform, out.anchor_deltas, matched_boxes, labels == 1,
            box_reg_loss_type=rpn.box_reg_loss_type, smooth_l1_beta=rpn.smooth_l1_beta,
        )
        losses["loss_mic_rpn_loc"] = loc / normalizer * rpn.loss_weight.get("loss_rpn_loc", 1.0)

    # --- ROI classification ---------------------------------------------------------
    proposals = roi_heads.label_and_sample_proposals(out.proposals, targets)
    box_features = roi_heads.box_pooler(
        [features[f] for f in roi_heads.box_in_features], [p.proposal_boxes for p in proposals]
    )
    scores, deltas = roi_heads.box_predictor(roi_heads.box_head(box_features))
    gt_classes = cat([p.gt_classes for p in proposals])
    ce = F.cross_entropy(scores, gt_classes, reduction="none")
    if quality_weight == "teacher":
        box_conf = cat([p.gt_scores for p in proposals])
        ce = ce * torch.where(gt_classes < roi_heads.num_classes, box_conf, torch.ones_like(ce))
    elif quality_weight == "student":
        ce = ce * F.softmax(scores, dim=1).max(dim=1).values.detach()
    predictor = roi_heads.box_predictor
    losses["loss_mic_cls"] = ce.sum() / max(ce.numel(), 1) * predictor.loss_weight.get("loss_cls", 1.0)
    if box_regression:
        losses["loss_mic_box_reg"] = predictor.box_reg_loss(
            cat([p.proposal_boxes.tensor for p in proposals]),
            cat([p.gt_boxes.tensor for p in proposals]),
            deltas,
            gt_classes,
        ) * predictor.loss_weight.get("loss_box_reg", 1.0)
    return losses
