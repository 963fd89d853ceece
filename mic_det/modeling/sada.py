"""SADA: scale-aware adversarial alignment of image-level and instance-level features.

Three losses, each computed over the source and target images of a step together:
- ``loss_sada_img``: image-level discriminator on every FPN level behind a GRL;
- ``loss_sada_ins``: instance-level discriminator on box-head features of proposals
  drawn uniformly from the RPN's (plus, as the reference does, the source images'
  ground-truth boxes and one whole-image box per target image: no target label is
  used), one MLP per pooling level, behind a GRL;
- ``loss_sada_cst``: L1 between the image-level probability pooled over each proposal
  and that proposal's instance-level probability. Its gradient reaches the detector
  scaled, not reversed.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import nn
from torch.nn import functional as F

from .gradient_reversal import scale_gradient
from .image_discriminator import ImageDomainDiscriminator
from .instance_discriminator import InstanceDomainDiscriminator


def whole_image_box(image_size: Tuple[int, int], device) -> Boxes:
    h, w = image_size
    return Boxes(torch.tensor([[0.0, 0.0, float(w), float(h)]], device=device))


def put_scalars(**scalars):
    """To the event storage, when there is one (training runs inside one)."""
    try:
        get_event_storage().put_scalars(**scalars)
    except AssertionError:  # no storage: a forward outside training
        pass


class SADAHeads(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        img_in_features: List[str],
        in_channels: int,
        img_hidden_dim: int,
        img_init_std: float,
        img_grl_weight: float,
        img_loss_weight: float,
        box_pooler: ROIPooler,
        box_in_features: List[str],
        box_feature_dim: int,
        ins_hidden_dim: int,
        ins_init_std: float,
        ins_dropout: float,
        ins_grl_weight: float,
        ins_loss_weight: float,
        ins_proposals_per_image: int,
        ins_append_boxes: bool,
        cst_loss_weight: float,
        cst_grad_scale: float,
        pooler_type: str = "ROIAlignV2",
        pooler_sampling_ratio: int = 0,
    ):
        """
        Args:
            box_pooler: the detector's ROI pooler; its level mapping routes proposals to
                instance MLPs, and a 1-channel pooler of the same kind (``pooler_type``,
                ``pooler_sampling_ratio``) pools image-level probabilities.
            box_in_features: feature names that ``box_pooler`` reads.
            ins_append_boxes: add the source ground truth and a whole-image box per target
                image to the proposals the instance level draws from.
        """
        super().__init__()
        missing = [f for f in box_in_features if f not in img_in_features]
        if cst_loss_weight > 0 and missing:
            raise ValueError(
                f"MODEL.SADA.IMG_IN_FEATURES={img_in_features} must contain every ROI feature "
                f"{box_in_features} for the consistency loss; missing {missing}."
            )
        self.img_discriminator = ImageDomainDiscriminator(img_in_features, in_channels, img_hidden_dim, img_init_std)
        self.ins_discriminator = InstanceDomainDiscriminator(
            len(box_in_features), box_feature_dim, ins_hidden_dim, ins_dropout, ins_init_std
        )
        self.ins_append_boxes = ins_append_boxes
        self.box_in_features = list(box_in_features)
        self.img_grl_weight = img_grl_weight
        self.ins_grl_weight = ins_grl_weight
        self.img_loss_weight = img_loss_weight
        self.ins_loss_weight = ins_loss_weight
        self.cst_loss_weight = cst_loss_weight
        self.cst_grad_scale = cst_grad_scale
        self.ins_proposals_per_image = ins_proposals_per_image
        self.level_mapping = dict(
            min_level=box_pooler.min_level,
            max_level=box_pooler.max_level,
            canonical_box_size=box_pooler.canonical_box_size,
            canonical_level=box_pooler.canonical_level,
        )
        # Pools a 1-channel probability map the same way the box pooler pools features.
        self.prob_pooler = ROIPooler(
            output_size=7,
            scales=[1.0 / 2**lvl for lvl in range(box_pooler.min_level, box_pooler.max_level + 1)],
            sampling_ratio=pooler_sampling_ratio,
            pooler_type=pooler_type,
            canonical_box_size=box_pooler.canonical_box_size,
            canonical_level=box_pooler.canonical_level,
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec], box_pooler, box_feature_dim):
        s = cfg.MODEL.SADA
        channels = {input_shape[f].channels for f in s.IMG_IN_FEATURES}
        if len(channels) != 1:
            raise ValueError(f"MODEL.SADA.IMG_IN_FEATURES {s.IMG_IN_FEATURES} differ in channels")
        return {
            "img_in_features": list(s.IMG_IN_FEATURES),
            "in_channels": channels.pop(),
            "img_hidden_dim": s.IMG_HIDDEN_DIM,
            "img_init_std": s.IMG_INIT_STD,
            "img_grl_weight": s.IMG_GRL_WEIGHT,
            "img_loss_weight": s.IMG_LOSS_WEIGHT,
            "box_pooler": box_pooler,
            "box_in_features": list(cfg.MODEL.ROI_HEADS.IN_FEATURES),
            "box_feature_dim": box_feature_dim,
            "ins_hidden_dim": s.INS_HIDDEN_DIM,
            "ins_init_std": s.INS_INIT_STD,
            "ins_dropout": s.INS_DROPOUT,
            "ins_grl_weight": s.INS_GRL_WEIGHT,
            "ins_loss_weight": s.INS_LOSS_WEIGHT,
            "ins_proposals_per_image": s.INS_PROPOSALS_PER_IMAGE,
            "ins_append_boxes": s.INS_APPEND_BOXES,
            "cst_loss_weight": s.CST_LOSS_WEIGHT,
            "cst_grad_scale": s.CST_GRAD_SCALE,
            "pooler_type": cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
            "pooler_sampling_ratio": cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
        }

    def sample_proposals(self, proposals: List[Instances], extra_boxes: Optional[List[Boxes]] = None) -> List[Boxes]:
        """Draw up to ``ins_proposals_per_image`` of each image's proposals (and its
        ``extra_boxes``), uniformly."""
        sampled = []
        for i, p in enumerate(proposals):
            boxes = p.proposal_boxes
            if extra_boxes is not None:
                boxes = Boxes.cat([boxes, extra_boxes[i].to(boxes.device)])
            if len(boxes) > self.ins_proposals_per_image:
                keep = torch.randperm(len(boxes), device=boxes.device)[: self.ins_proposals_per_image]
                boxes = boxes[keep]
            sampled.append(boxes)
        return sampled

    def forward(
        self,
        domains: List[Tuple[Dict[str, torch.Tensor], List[Instances], bool]],
        box_features_fn: Callable[[Dict[str, torch.Tensor], List[Boxes]], torch.Tensor],
        source_gt_boxes: Optional[List[Boxes]] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            domains: one ``(features, proposals, is_source)`` per batch of images, e.g.
                the source batch and the target batch of a step. Their feature maps may
                differ in size, so they are not concatenated.
            box_features_fn: maps (features, boxes per image) to box-head features (R, D).
            source_gt_boxes: the source images' ground truth (one ``Boxes`` per image),
                added to their proposals when ``ins_append_boxes``.
        Returns:
            the three SADA losses, each averaged over all images of all batches. Each
            discriminator's accuracy (logit > 0 for source) goes to the event storage as
            ``sada/img_acc`` and ``sada/ins_acc``: near 0.5 when alignment holds.
        """
        img_bce_sum = {k: 0.0 for k in self.img_discriminator.in_features}
        img_correct = {k: 0.0 for k in self.img_discriminator.in_features}
        img_numel = {k: 0 for k in self.img_discriminator.in_features}
        ins_logits, ins_labels, cst_terms = [], [], []
        for features, proposals, is_source in domains:
            label = 1.0 if is_source else 0.0
            logits = self.img_discriminator(
                {k: scale_gradient(features[k], -self.img_grl_weight) for k in img_bce_sum}
            )
            for k, x in logits.items():
                img_bce_sum[k] = img_bce_sum[k] + F.binary_cross_entropy_with_logits(
                    x, torch.full_like(x, label), reduction="sum"
                )
                img_correct[k] = img_correct[k] + ((x > 0) == is_source).sum()
                img_numel[k] += x.numel()

            extra = None
            if self.ins_append_boxes:
                extra = source_gt_boxes if is_source else [whole_image_box(p.image_size, p.proposal_boxes.device) for p in proposals]
            boxes = self.sample_proposals(proposals, extra)
            levels = assign_boxes_to_levels(boxes, **self.level_mapping)
            box_feats = box_features_fn(features, boxes)
            logits = self.ins_discriminator(scale_gradient(box_feats, -self.ins_grl_weight), levels)
            ins_logits.append(logits)
            ins_labels.append(torch.full_like(logits, label))

            if self.cst_loss_weight > 0:
                # A second pass of both discriminators whose gradient into the detector
                # is scaled, not reversed.
                img_scale = self.cst_grad_scale * self.img_grl_weight
                ins_scale = self.cst_grad_scale * self.ins_grl_weight
                img_probs = self.img_discriminator(
                    {k: scale_gradient(features[k], img_scale) for k in self.box_in_features}
                )
                pooled = self.prob_pooler([img_probs[k].sigmoid() for k in self.box_in_features], boxes)
                ins_probs = self.ins_discriminator(scale_gradient(box_feats, ins_scale), levels).sigmoid()
                cst_terms.append((pooled.mean(dim=(1, 2, 3)) - ins_probs).abs())

        img_loss = torch.stack([img_bce_sum[k] / max(img_numel[k], 1) for k in img_bce_sum]).mean()
        ins_logits, ins_labels = cat(ins_logits), cat(ins_labels)
        ins_loss = F.binary_cross_entropy_with_logits(ins_logits, ins_labels)
        img_acc = torch.stack([img_correct[k] / max(img_numel[k], 1) for k in img_correct]).mean()
        ins_acc = ((ins_logits > 0).to(ins_labels.dtype) == ins_labels).float().mean()
        put_scalars(**{"sada/img_acc": img_acc.item(), "sada/ins_acc": ins_acc.item()})
        losses = {
            "loss_sada_img": self.img_loss_weight * img_loss,
            "loss_sada_ins": self.ins_loss_weight * ins_loss,
        }
        if cst_terms:
            losses["loss_sada_cst"] = self.cst_loss_weight * cat(cst_terms).mean()
        return losses
